// Package deploy is what dmfexport ships with beside the binary: the
// container image (built here without a Docker daemon, and described again
// by the top-level Dockerfile), the systemd units under systemd/ and the
// Kubernetes manifests under kubernetes/. Its tests hold each of them
// against the others and against the binary itself.
package deploy

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image holds and how it runs. The Dockerfile says the same
// (TestDockerfileMatchesImage), and the Kubernetes manifests and systemd
// units use the same paths and ports (their tests).
const (
	// ImageName is the repository the image is published under.
	ImageName = "ghcr.io/dmfexport/dmfexport"
	// BinaryPath is the binary inside the image, and where the systemd
	// units expect it on a host.
	BinaryPath = "/usr/local/bin/dmfexport"
	// CABundlePath holds the CA certificates the binary trusts for Entra ID,
	// F&O and Azure Storage; Go reads it there on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// ConfigPath is where the image looks for its configuration
	// (DMFEXPORT_CONFIG): mount the file there.
	ConfigPath = "/etc/dmfexport/dmfexport.yaml"
	// StatePath is the working directory and the place for a directory
	// store, writable by the image's user.
	StatePath = "/var/lib/dmfexport"
	// UID and GID are the image's user, numeric so that a runtime can tell it
	// is not root without reading /etc/passwd (Kubernetes' runAsNonRoot).
	UID = 65532
	GID = 65532
	// UserName names UID in the image's /etc/passwd.
	UserName = "dmfexport"
	// MetricsPort is where "run" serves /healthz, /readyz, /metrics and the
	// status page (/) in the image (--listen :9310; on a host the default
	// is 127.0.0.1:9310), and SinkMetricsPort where "sink" serves the first
	// three (--listen :9311).
	MetricsPort     = 9310
	SinkMetricsPort = 9311
	// DefaultCABundle is the build machine's CA bundle (Debian's
	// ca-certificates), copied into the image.
	DefaultCABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// ImageConfig is the runtime configuration of the image of version and
// revision (a commit, or empty): a non-root user, the binary as
// entrypoint, "run" listening on all interfaces by default.
func ImageConfig(version, revision string) v1.Config {
	return v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   []string{BinaryPath},
		Cmd:          []string{"run", "--listen", fmt.Sprintf(":%d", MetricsPort)},
		Env:          []string{"PATH=" + path.Dir(BinaryPath), "DMFEXPORT_CONFIG=" + ConfigPath},
		WorkingDir:   StatePath,
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", MetricsPort): {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "dmfexport",
			"org.opencontainers.image.description": "Exports D365 F&O data packages on a schedule and publishes their rows to RabbitMQ",
			"org.opencontainers.image.source":      "https://github.com/dmfexport/dmfexport",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    revision,
		},
	}
}

// GoBuildArgs are the arguments after "go build" that make the image's
// binary (run with GoBuildEnv): no paths of the build machine, time zones
// embedded (the image has no zoneinfo; schedules name zones), no symbol
// tables (stack traces keep their lines), the version stamped.
func GoBuildArgs(version string) []string {
	return []string{"-trimpath", "-tags", "timetzdata", "-ldflags", "-s -w -X main.Version=" + version}
}

// GoBuildEnv is the environment, beside the caller's, of GoBuildArgs: a
// static binary for linux/arch.
func GoBuildEnv(arch string) []string {
	return []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
}

// BuildBinary builds ./cmd/dmfexport of the module in moduleDir into out,
// as the image holds it.
func BuildBinary(ctx context.Context, moduleDir, out, version, arch string) error {
	args := append([]string{"build"}, GoBuildArgs(version)...)
	args = append(args, "-o", out, "./cmd/dmfexport")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), GoBuildEnv(arch)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the image's binary (go %s in %s): %w\n%s", strings.Join(args, " "), moduleDir, err, b)
	}
	return nil
}

// ImageOptions says what goes into an image.
type ImageOptions struct {
	// Binary is a static Linux dmfexport binary (BuildBinary makes one).
	Binary string
	// CABundle is a PEM file of CA certificates; DefaultCABundle if empty.
	CABundle string
	// Version and Revision label the image; Version should be the one
	// stamped into Binary.
	Version, Revision string
	// Arch is Binary's GOARCH; runtime.GOARCH if empty.
	Arch string
	// Created is the time of the image and of every file in it; the Unix
	// epoch if zero, so that the same inputs give the same image digest.
	Created time.Time
}

// BuildImage builds the image the Dockerfile describes from o: an empty
// base, a layer of system files (CA bundle, passwd and group naming the
// user, /tmp, the state directory owned by the user) and a layer with the
// binary. There is no shell nor any other program in it.
func BuildImage(o ImageOptions) (v1.Image, error) {
	if o.CABundle == "" {
		o.CABundle = DefaultCABundle
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	ca, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("read the CA bundle for the image: %w (install ca-certificates, or give another PEM file with -ca-bundle)", err)
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("read the image's binary: %w", err)
	}
	if err := checkStatic(bin, o.Arch); err != nil {
		return nil, fmt.Errorf("the image's binary %s: %w", o.Binary, err)
	}

	base := newLayerWriter(created)
	base.dir("etc/", 0o755, 0, 0)
	base.dir("etc/dmfexport/", 0o755, 0, 0)
	base.file("etc/group", 0o644, []byte(etcGroup()))
	base.file("etc/passwd", 0o644, []byte(etcPasswd()))
	base.parents(strings.TrimPrefix(CABundlePath, "/"))
	base.file(strings.TrimPrefix(CABundlePath, "/"), 0o644, ca)
	base.dir("tmp/", 0o1777, 0, 0)
	base.parents(strings.TrimPrefix(StatePath, "/"))
	base.dir(strings.TrimPrefix(StatePath, "/")+"/", 0o750, UID, GID)
	app := newLayerWriter(created)
	app.parents(strings.TrimPrefix(BinaryPath, "/"))
	app.file(strings.TrimPrefix(BinaryPath, "/"), 0o755, bin)

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range []struct {
		w   *layerWriter
		why string
	}{
		{base, "CA certificates, passwd and group of user " + UserName + ", /tmp, " + StatePath},
		{app, BinaryPath + " " + o.Version},
	} {
		layer, err := l.w.layer()
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:   layer,
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "dmfimage: " + l.why},
		})
		if err != nil {
			return nil, fmt.Errorf("add a layer to the image: %w", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = o.Arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = ImageConfig(o.Version, o.Revision)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set the image config: %w", err)
	}
	return img, nil
}

// elfMachines are the ELF machines of the GOARCHes an image is built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// checkStatic returns an error unless bin is a Linux executable for arch
// that needs no dynamic loader nor shared library: the image has none.
func checkStatic(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not a Linux executable (ELF): %w", err)
	}
	defer func() { _ = f.Close() }()
	if want, ok := elfMachines[arch]; ok && f.Machine != want {
		return fmt.Errorf("built for %s, not for %s (GOARCH=%s)", f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (it asks for a loader, which the image does not have): build it with CGO_ENABLED=0, or leave -binary out")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %q, which the image does not have: build it with CGO_ENABLED=0", libs)
	}
	return nil
}

// etcPasswd names the image's user (and root), so that os/user and tools
// reading the image can tell who UID is.
func etcPasswd() string {
	return fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:%s:/sbin/nologin\n", UserName, UID, GID, UserName, StatePath)
}

// etcGroup names the image's group (and root's).
func etcGroup() string {
	return fmt.Sprintf("root:x:0:\n%s:x:%d:\n", UserName, GID)
}

// layerWriter builds one layer's tar in memory (the binary is the largest
// file, some tens of MB).
type layerWriter struct {
	buf     bytes.Buffer
	tw      *tar.Writer
	created time.Time
	seen    map[string]bool
	err     error
}

func newLayerWriter(created time.Time) *layerWriter {
	w := &layerWriter{created: created, seen: map[string]bool{}}
	w.tw = tar.NewWriter(&w.buf)
	return w
}

// parents adds the directories above file p (root-owned, 0755) not added yet.
func (w *layerWriter) parents(p string) {
	var dirs []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		dirs = append(dirs, d+"/")
	}
	for _, d := range slices.Backward(dirs) {
		w.dir(d, 0o755, 0, 0)
	}
}

func (w *layerWriter) dir(p string, mode int64, uid, gid int) {
	if w.seen[p] {
		return
	}
	w.seen[p] = true
	w.write(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: mode, Uid: uid, Gid: gid}, nil)
}

func (w *layerWriter) file(p string, mode int64, data []byte) {
	w.write(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}, data)
}

func (w *layerWriter) write(h *tar.Header, data []byte) {
	if w.err != nil {
		return
	}
	h.ModTime = w.created
	h.Format = tar.FormatPAX
	if w.err = w.tw.WriteHeader(h); w.err == nil && data != nil {
		_, w.err = w.tw.Write(data)
	}
}

func (w *layerWriter) layer() (v1.Layer, error) {
	if w.err == nil {
		w.err = w.tw.Close()
	}
	if w.err != nil {
		return nil, fmt.Errorf("write an image layer: %w", w.err)
	}
	data := w.buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// ImageRef is the image's reference for version: ImageName, tagged with
// the version made a valid tag ("dev" when empty).
func ImageRef(version string) (name.Tag, error) {
	tag := strings.TrimLeft(tagUnsafe.ReplaceAllString(version, "-"), ".-")
	if len(tag) > 128 {
		tag = tag[:128]
	}
	if tag == "" {
		tag = "dev"
	}
	return name.NewTag(ImageName + ":" + tag)
}

// WriteDockerArchive writes img tagged ref as a docker-archive tarball at
// file ("docker load -i FILE", "podman load -i FILE", "skopeo copy
// docker-archive:FILE ...").
func WriteDockerArchive(file string, ref name.Tag, img v1.Image) error {
	if err := tarball.WriteToFile(file, ref, img); err != nil {
		return fmt.Errorf("write the image to %s: %w", file, err)
	}
	return nil
}

// WriteOCILayout writes img, annotated with ref, as the only image of an
// OCI image layout in dir ("skopeo copy oci:DIR docker://...", "crane push
// DIR ..."). An earlier layout in dir is replaced; a dir holding anything
// else is refused.
func WriteOCILayout(dir string, ref name.Tag, img v1.Image) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if !slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() == "oci-layout" }) {
			return fmt.Errorf("write the image layout: %s is a directory that is not an OCI layout: name another (-oci)", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("replace the image layout in %s: %w", dir, err)
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err == nil {
		err = p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.TagStr(),
			"io.containerd.image.name":          ref.Name(),
		}))
	}
	if err != nil {
		return fmt.Errorf("write the image layout to %s: %w", dir, err)
	}
	return nil
}
