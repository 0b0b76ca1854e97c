package unpack

import (
	"context"
	"io"
	"testing"

	"github.com/dmfexport/dmfexport/store/storetest"
)

// TestPackageStoreInOrder: a Package stores its entities in the order
// asked (the rest after), reports each as it is done, reads each entity's
// bytes from the package file as stored, and stores the same objects when
// asked again.
func TestPackageStoreInOrder(t *testing.T) {
	ctx := context.Background()
	cust, vend := fixture(t, "Customers V3.csv"), fixture(t, "Vendors V2.csv")
	zp := writeZip(t, buildZip(t, tinyEntries(t, "")))
	pkg, err := Open(zp, ExplodeOptions{Prefix: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pkg.Close() }()
	planned := pkg.Entities()
	if len(planned) != 2 || planned[0].Entity != "Customers V3" || planned[0].SHA256 != "" || planned[0].Key == "" {
		t.Fatalf("planned entities %+v: want Customers V3 then Vendors V2, keys set, not yet hashed", planned)
	}
	if got := pkg.DeclaredSize(0); got != int64(len(cust)) {
		t.Errorf("declared size %d, want %d", got, len(cust))
	}
	want := map[int][]byte{0: cust, 1: vend}
	for i, b := range want {
		rc, err := pkg.OpenEntity(i)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || string(got) != string(b) {
			t.Errorf("entity %d read from the package: %v, %d bytes; want its %d bytes", i, err, len(got), len(b))
		}
	}
	for _, order := range [][]int{{1}, {1, 0}} { // the second time: stored again, same objects
		st := storetest.Dir(t)
		var seen []int
		err := pkg.Store(ctx, st, order, func(i int, o EntityObject) {
			seen = append(seen, i)
			if o.SHA256 != sha(want[i]) || o.Size != int64(len(want[i])) {
				t.Errorf("entity %d reported %d bytes, sha256 %s; want %d, %s", i, o.Size, o.SHA256, len(want[i]), sha(want[i]))
			}
			if b := storetest.ReadAll(t, st, o.Key); b != string(want[i]) {
				t.Errorf("entity %d not stored when reported", i)
			}
		})
		if err != nil || len(seen) != 2 || seen[0] != 1 || seen[1] != 0 {
			t.Fatalf("Store(order %v): %v, reported %v; want entity 1 then 0", order, err, seen)
		}
		if r := pkg.Result(); r.Entities[0].SHA256 != sha(cust) || r.Manifest == nil {
			t.Errorf("result after Store: %+v", r.Entities)
		}
	}
	if _, err := pkg.OpenEntity(5); err == nil {
		t.Error("OpenEntity of no such entity: want an error")
	}
}
