package dmftest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestPrebuiltPackageServedAsIs(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "packages", "tiny")
	zipped, err := LoadPackage(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadPackage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zipped, again) {
		t.Fatal("LoadPackage of the same folder gave different bytes")
	}
	files, _ := openZip(t, zipped)
	for _, name := range []string{"Manifest.xml", "PackageHeader.xml", "Customers V3.csv", "Vendors V2.csv"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(files[name], want) {
			t.Errorf("zip entry %q differs from the folder's file", name)
		}
	}

	clock := newFakeClock()
	s := newTestServer(t, Options{Packages: map[string][]byte{"Tiny": zipped}}, clock)
	runToEnd(t, s, clock, "Tiny", "tiny-1")
	u := pkgURL(t, s.URL, "tiny-1")
	r := get(t, u, nil)
	if r.status != 200 || !bytes.Equal(r.body, zipped) {
		t.Fatalf("download: want the prebuilt package as given (%d bytes), got status %d and %d bytes", len(zipped), r.status, len(r.body))
	}

	if _, err := LoadPackage(t.TempDir()); err == nil {
		t.Error("LoadPackage of an empty folder: want an error")
	}
}
