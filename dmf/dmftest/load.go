package dmftest

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// LoadPackage reads a data package for Options.Packages: a zip file as it
// is, or a folder (an unzipped package, as under testdata/packages) zipped
// with every regular file at its relative path, Deflate-compressed, in name
// order, so the same folder always gives the same bytes.
func LoadPackage(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read package: %w", err)
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read package: %w", err)
		}
		return b, nil
	}
	var names []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(path, p)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read package folder: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("package folder %s holds no files; put Manifest.xml and the entity files in it", path)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(path, filepath.FromSlash(n)))
		if err != nil {
			return nil, fmt.Errorf("read package folder: %w", err)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, Modified: packageTime})
		if err != nil {
			return nil, fmt.Errorf("zip package folder: %w", err)
		}
		if _, err := w.Write(data); err != nil {
			return nil, fmt.Errorf("zip package folder: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip package folder: %w", err)
	}
	return buf.Bytes(), nil
}
