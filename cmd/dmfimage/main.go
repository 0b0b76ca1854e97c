// Command dmfimage builds the dmfexport container image without a Docker
// daemon: the image the top-level Dockerfile describes (a static binary on
// an empty base, CA certificates, a non-root user), written as a
// docker-archive tarball and as an OCI image layout. "make image" runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/dmfexport/dmfexport/deploy"
)

const usage = `Usage: dmfimage [-version V] [-revision COMMIT] [-binary FILE] [-tar FILE] [-oci DIR]

Builds the dmfexport container image (see Dockerfile) from the module in the current directory,
or from -binary, and writes it to -tar (docker load -i FILE) and -oci (an OCI image layout:
skopeo copy oci:DIR docker://REGISTRY/...). SOURCE_DATE_EPOCH, when set, dates the image and its
files (default: the Unix epoch), so the same inputs give the same digest.

`

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "dmfimage: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("dmfimage", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	version := fs.String("version", "dev", "version stamped into the binary and the image's tag and labels")
	revision := fs.String("revision", "", "commit the image is built from (label org.opencontainers.image.revision)")
	binary := fs.String("binary", "", "a static Linux dmfexport binary to use (default: built with go build, as the Dockerfile does)")
	arch := fs.String("arch", runtime.GOARCH, "GOARCH of the image")
	ca := fs.String("ca-bundle", deploy.DefaultCABundle, "PEM file of the CA certificates the image trusts")
	tarFile := fs.String("tar", "bin/dmfexport-image.tar", "docker-archive tarball to write (empty: none)")
	ociDir := fs.String("oci", "bin/dmfexport-oci", "OCI image layout directory to write (empty: none)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "dmfimage: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		os.Exit(2)
	}
	var created time.Time
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds: unset it or give one", s)
		}
		created = time.Unix(sec, 0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ref, err := deploy.ImageRef(*version)
	if err != nil {
		return fmt.Errorf("-version %q: %w", *version, err)
	}
	if *binary == "" {
		dir, err := os.MkdirTemp("", "dmfimage-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		*binary = filepath.Join(dir, "dmfexport")
		start := time.Now()
		if err := deploy.BuildBinary(ctx, ".", *binary, *version, *arch); err != nil {
			return err
		}
		fmt.Printf("built the image's binary for linux/%s in %s\n", *arch, time.Since(start).Round(100*time.Millisecond))
	}
	img, err := deploy.BuildImage(deploy.ImageOptions{
		Binary: *binary, CABundle: *ca, Version: *version, Revision: *revision, Arch: *arch, Created: created,
	})
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	for _, out := range []struct {
		path  string
		write func(string) error
	}{
		{*tarFile, func(p string) error { return deploy.WriteDockerArchive(p, ref, img) }},
		{*ociDir, func(p string) error { return deploy.WriteOCILayout(p, ref, img) }},
	} {
		if out.path == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(out.path), 0o755); err != nil {
			return err
		}
		if err := out.write(out.path); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", out.path)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image layers: %w", err)
	}
	var size int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return fmt.Errorf("image layer size: %w", err)
		}
		size += n
	}
	fmt.Printf("image %s %s (%d layers, %.1f MB compressed)\n", ref, digest, len(layers), float64(size)/1e6)
	return nil
}
