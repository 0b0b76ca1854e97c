package deploy

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// imageFile is what the image must hold at a path, exactly.
type imageFile struct {
	dir      bool
	mode     int64
	uid, gid int
}

// wantImageFiles is every path of the image: nothing else (no shell, no
// package manager, no other program) may be in it.
var wantImageFiles = map[string]imageFile{
	"etc/":                              {dir: true, mode: 0o755},
	"etc/dmfexport/":                    {dir: true, mode: 0o755},
	"etc/group":                         {mode: 0o644},
	"etc/passwd":                        {mode: 0o644},
	"etc/ssl/":                          {dir: true, mode: 0o755},
	"etc/ssl/certs/":                    {dir: true, mode: 0o755},
	"etc/ssl/certs/ca-certificates.crt": {mode: 0o644},
	"tmp/":                              {dir: true, mode: 0o1777},
	"var/":                              {dir: true, mode: 0o755},
	"var/lib/":                          {dir: true, mode: 0o755},
	"var/lib/dmfexport/":                {dir: true, mode: 0o750, uid: UID, gid: GID},
	"usr/":                              {dir: true, mode: 0o755},
	"usr/local/":                        {dir: true, mode: 0o755},
	"usr/local/bin/":                    {dir: true, mode: 0o755},
	"usr/local/bin/dmfexport":           {mode: 0o755},
}

// TestImage builds the image as make image does, writes it both ways,
// reads it back, unpacks its layers and runs the binary from them: in a
// chroot of the unpacked image as its user when the test runs as root, so
// that what the container would lack (a CA bundle, zoneinfo, a writable
// working directory) shows.
func TestImage(t *testing.T) {
	bin := testBinary(t)
	if _, err := os.Stat(DefaultCABundle); err != nil {
		t.Skipf("no CA bundle at %s to put into the image (apt-get install ca-certificates): %v", DefaultCABundle, err)
	}
	const revision = "0123456789abcdef0123456789abcdef01234567"
	opts := ImageOptions{Binary: bin, Version: testVersion, Revision: revision}
	img, err := BuildImage(opts)
	if err != nil {
		t.Fatal(err)
	}
	digest := mustDigest(t, img)

	t.Run("reproducible", func(t *testing.T) {
		again, err := BuildImage(opts)
		if err != nil {
			t.Fatal(err)
		}
		if d := mustDigest(t, again); d != digest {
			t.Errorf("the same inputs gave two images: %s, then %s", digest, d)
		}
	})

	t.Run("refuses a dynamic binary", func(t *testing.T) {
		dyn := "/bin/true"
		f, err := elf.Open(dyn)
		if err != nil {
			t.Skipf("no ELF %s to try: %v", dyn, err)
		}
		interp := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
		_ = f.Close()
		if !interp {
			t.Skipf("%s is static here", dyn)
		}
		_, err = BuildImage(ImageOptions{Binary: dyn, Version: testVersion})
		if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("BuildImage of the dynamic %s: %v, want a refusal saying CGO_ENABLED=0", dyn, err)
		}
	})

	ref, err := ImageRef(testVersion)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	archive, ociDir := filepath.Join(out, "image.tar"), filepath.Join(out, "oci")
	if err := WriteDockerArchive(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCILayout(ociDir, ref, img); err != nil {
		t.Fatal(err)
	}
	t.Run("written", func(t *testing.T) {
		fromLayout := readLayout(t, ociDir)
		if d := mustDigest(t, fromLayout); d != digest {
			t.Errorf("the OCI layout holds image %s, built %s", d, digest)
		}
		fromArchive, err := tarball.ImageFromPath(archive, &ref)
		if err != nil {
			t.Fatalf("read the docker archive back as %s: %v", ref, err)
		}
		for what, read := range map[string]v1.Image{"OCI layout": fromLayout, "docker archive": fromArchive} {
			sameLayers(t, what, read, img)
		}
		// Written again over the first, the layout is replaced, not added to.
		if err := WriteOCILayout(ociDir, ref, img); err != nil {
			t.Fatal(err)
		}
		readLayout(t, ociDir)
		if err := WriteOCILayout(out, ref, img); err == nil {
			t.Errorf("WriteOCILayout into a directory holding other files (%s) did not refuse", out)
		}
	})

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("config", func(t *testing.T) {
		c := cf.Config
		var uid, gid int
		if _, err := fmt.Sscanf(c.User, "%d:%d", &uid, &gid); err != nil || uid == 0 || gid == 0 {
			t.Errorf("User = %q, want a numeric non-root uid:gid", c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{BinaryPath}) {
			t.Errorf("Entrypoint = %q, want [%s] (exec form: there is no shell)", c.Entrypoint, BinaryPath)
		}
		if len(c.Cmd) == 0 || c.Cmd[0] != "run" {
			t.Errorf("Cmd = %q, want run first", c.Cmd)
		}
		if _, ok := c.ExposedPorts[fmt.Sprintf("%d/tcp", MetricsPort)]; !ok {
			t.Errorf("ExposedPorts = %v, want %d/tcp", slices.Collect(maps.Keys(c.ExposedPorts)), MetricsPort)
		}
		for k, want := range map[string]string{"org.opencontainers.image.version": testVersion, "org.opencontainers.image.revision": revision} {
			if c.Labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
			}
		}
		if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
			t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
		}
		if len(cf.History) != len(cf.RootFS.DiffIDs) {
			t.Errorf("%d history entries for %d layers", len(cf.History), len(cf.RootFS.DiffIDs))
		}
	})

	root := t.TempDir()
	files := unpack(t, img, root)
	t.Run("files", func(t *testing.T) {
		for p, h := range files {
			if strings.Contains(p, "sh") && slices.Contains([]string{"sh", "bash", "ash", "dash", "busybox"}, path.Base(strings.TrimSuffix(p, "/"))) {
				t.Errorf("the image holds a shell: /%s", p)
			}
			w, ok := wantImageFiles[p]
			if !ok {
				t.Errorf("the image holds /%s, which it should not", p)
				continue
			}
			got := imageFile{dir: h.Typeflag == tar.TypeDir, mode: h.Mode, uid: h.Uid, gid: h.Gid}
			if got != w {
				t.Errorf("/%s: got %+v, want %+v", p, got, w)
			}
		}
		for p := range wantImageFiles {
			if _, ok := files[p]; !ok {
				t.Errorf("the image lacks /%s", p)
			}
		}
	})
	t.Run("static binary", func(t *testing.T) {
		f, err := elf.Open(filepath.Join(root, BinaryPath))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s asks for a dynamic loader (PT_INTERP): the empty base has none; build it with CGO_ENABLED=0", BinaryPath)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %q, which the image does not have", BinaryPath, libs)
		}
	})
	t.Run("CA bundle", func(t *testing.T) {
		pem, err := os.ReadFile(filepath.Join(root, CABundlePath))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("%s in the image holds no PEM certificate", CABundlePath)
		}
		if n := bytes.Count(pem, []byte("-----BEGIN CERTIFICATE-----")); n < 10 {
			t.Errorf("%s holds %d certificates: not a CA bundle", CABundlePath, n)
		}
	})
	t.Run("user", func(t *testing.T) {
		passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s:x:%d:%d:", UserName, UID, GID)
		if !strings.Contains(string(passwd), "\n"+want) {
			t.Errorf("/etc/passwd does not name user %d as %s:\n%s", UID, UserName, passwd)
		}
	})

	t.Run("runs", func(t *testing.T) {
		chroot := os.Geteuid() == 0
		if !chroot {
			t.Log("not root: the binary runs outside a chroot of the image, so what the image lacks does not show")
		}
		out, err := runInImage(t, root, cf.Config, chroot, nil, "version")
		if err != nil {
			t.Fatalf("dmfexport version from the image: %v\n%s", err, out)
		}
		want := fmt.Sprintf("dmfexport %s (go", testVersion)
		if !strings.HasPrefix(out, want) || !strings.Contains(out, "linux/"+runtime.GOARCH) {
			t.Errorf("dmfexport version from the image printed %q, want %q... linux/%s", out, want, runtime.GOARCH)
		}
		if !chroot {
			return
		}
		// A schedule in a time zone needs zoneinfo, which only the binary
		// brings (-tags timetzdata).
		if err := os.WriteFile(filepath.Join(root, ConfigPath), []byte(testConfig(StatePath)), 0o644); err != nil {
			t.Fatal(err)
		}
		env := []string{"FO_TOKEN=dummy"}
		out, err = runInImage(t, root, cf.Config, true, env, "validate")
		if err != nil || !strings.Contains(out, "valid, 1 exports") {
			t.Errorf("dmfexport validate of %s in the image: %v\n%s", ConfigPath, err, out)
		}
		// The scheduler starts and answers its probes; the sink writes its
		// SQLite file into the working directory, which is the user's.
		for _, args := range [][]string{
			{"run", "--listen", "127.0.0.1:0"},
			{"sink", "--listen", "127.0.0.1:0"},
		} {
			s := startServing(t, imageCommand(t, root, cf.Config, true, env, args...))
			s.awaitReady(t, "/readyz")
			for _, p := range []string{"/healthz", "/metrics"} {
				if code := s.get(t, p); code != 200 {
					t.Errorf("%s in the image: GET %s = %d, want 200\n%s", args[0], p, code, s.output)
				}
			}
			if args[0] == "sink" {
				// Its database is opened once the listener is up, then
				// it consumes (here: dials the closed broker port again
				// and again).
				s.await(t, "its database "+StatePath+"/probe.db, created as the image's user", func() bool {
					_, err := os.Stat(filepath.Join(root, StatePath, "probe.db"))
					return err == nil
				})
				s.await(t, "consumer dialling its broker", func() bool { return strings.Contains(s.output.String(), "reconnecting") })
			}
			if code := s.stop(t); code != 0 {
				t.Errorf("%s in the image exited %d after SIGTERM, want 0\n%s", args[0], code, s.output)
			}
		}
	})
}

// testConfig is a configuration the binary can load and run without any
// service, its files under dir: the export is disabled, the sink's broker
// is a closed port (it keeps dialling it), its database an SQLite file.
func testConfig(dir string) string {
	return fmt.Sprintf(`fo:
  url: https://contoso.operations.dynamics.com
  auth:
    method: token
    token: ${FO_TOKEN}
store:
  type: dir
  path: %[1]s/store
broker:
  type: file
  path: %[1]s/batches
exports:
  - name: paris
    schedule: "CRON_TZ=Europe/Paris 0 2 * * *"
    definition_group: CustomerExport
    legal_entity: USMF
    enabled: false
sinks:
  - name: probe
    queue: dmfexport.deploytest
    broker:
      url: amqp://guest:guest@127.0.0.1:1/
    database_url: sqlite:%[1]s/probe.db
`, dir)
}

func TestImageRef(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"v1.4.0", ImageName + ":v1.4.0"},
		{"v1.4.0-3-gafdacac-dirty", ImageName + ":v1.4.0-3-gafdacac-dirty"},
		{"v1.4.0+build/7", ImageName + ":v1.4.0-build-7"},
		{".hidden", ImageName + ":hidden"},
		{"", ImageName + ":dev"},
		{strings.Repeat("a", 200), ImageName + ":" + strings.Repeat("a", 128)},
	} {
		ref, err := ImageRef(tc.version)
		if err != nil || ref.String() != tc.want {
			t.Errorf("ImageRef(%q) = %v, %v; want %s", tc.version, ref, err, tc.want)
		}
	}
}

// runInImage runs the binary of the image unpacked in root with args, the
// image's environment (and env), user and working directory, in a chroot
// of root when chroot is set. It returns stdout and stderr together.
func runInImage(t *testing.T, root string, c v1.Config, chroot bool, env []string, args ...string) (string, error) {
	t.Helper()
	out, err := imageCommand(t, root, c, chroot, env, args...).CombinedOutput()
	return string(out), err
}

// imageCommand is the command runInImage runs.
func imageCommand(t *testing.T, root string, c v1.Config, chroot bool, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(root, c.Entrypoint[0]), args...)
	cmd.Env = append(slices.Clone(c.Env), env...)
	if chroot {
		var uid, gid uint32
		if _, err := fmt.Sscanf(c.User, "%d:%d", &uid, &gid); err != nil {
			t.Fatalf("image user %q: %v", c.User, err)
		}
		cmd.Path = c.Entrypoint[0]
		cmd.Dir = c.WorkingDir
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	return cmd
}

// unpack writes the image's file system into root (owners too when run as
// root) and returns the tar header of each path, directories ending in /.
func unpack(t *testing.T, img v1.Image, root string) map[string]*tar.Header {
	t.Helper()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	files := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the image's layers: %v", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if !filepath.IsLocal(name) {
			t.Fatalf("the image holds a path outside its root: %q", h.Name)
		}
		dst := filepath.Join(root, name)
		switch h.Typeflag {
		case tar.TypeDir:
			files[name+"/"] = h
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			files[name] = h
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		default:
			files[name] = h
			t.Errorf("the image holds %s of tar type %q: only files and directories are expected", name, h.Typeflag)
			continue
		}
		if err := os.Chmod(dst, os.FileMode(h.Mode&0o777)|tarModeBits(h.Mode)); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(dst, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return files
}

// tarModeBits turns the setuid, setgid and sticky bits of a tar mode into
// Go's.
func tarModeBits(mode int64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// sameLayers checks that read, an image read back from what was written,
// holds the config and the layers of built, byte for byte: each layer's
// bytes hash to its digest, the built layer's (whose diff ID was computed
// from the files). validate.Image would inflate every layer again, ten
// times slower under the race detector.
func sameLayers(t *testing.T, what string, read, built v1.Image) {
	t.Helper()
	if err := validate.Image(read, validate.Fast); err != nil {
		t.Errorf("the image in the %s does not hold together: %v", what, err)
	}
	if c, want := mustConfigName(t, read), mustConfigName(t, built); c != want {
		t.Errorf("the %s holds config %s, built %s", what, c, want)
	}
	got, err := read.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want, err := built.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the %s holds %d layers, built %d", what, len(got), len(want))
	}
	for i, l := range got {
		wantDigest, err := want[i].Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("the %s: layer %d: %v", what, i, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("the %s: read layer %d: %v", what, i, err)
		}
		if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != wantDigest.String() {
			t.Errorf("the %s: layer %d hashes to %s, built %s", what, i, d, wantDigest)
		}
	}
}

func readLayout(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read the OCI layout %s: %v", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("the OCI layout %s holds %d images, want 1", dir, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustConfigName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
