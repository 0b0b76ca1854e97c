package unpack

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// MaxManifestBytes bounds how much of a Manifest.xml or PackageHeader.xml is
// read; real manifests are kilobytes, so more means a broken or hostile file.
const MaxManifestBytes = 64 << 20

// manifestLimit is MaxManifestBytes; tests lower it.
var manifestLimit int64 = MaxManifestBytes

// Manifest is what a package's Manifest.xml says it holds.
type Manifest struct {
	DefinitionGroup string // DefinitionGroupName: the data project
	Description     string
	Entities        []ManifestEntity // in document order; may be empty
}

// ManifestEntity is one DataManagementPackageEntityData entry. All strings
// are whitespace-trimmed; absent elements are "".
type ManifestEntity struct {
	Name         string // EntityName, the entity's label, e.g. "Customers V3"
	File         string // InputFilePath as written, '\' or '/' separated
	SourceFormat string // e.g. "CSV-Unicode", "Excel", "XML-Element"
	// Sheet is ExcelSheetName (or ExcelWorkSheetName, as some packages
	// spell it) as F&O recorded it: often with a trailing "$" the workbook
	// lacks, cut to 31 characters, or empty. The reader falls back to the
	// first sheet, so it is a hint, not an address.
	Sheet       string
	RefreshType string // DefaultRefreshType as written: FullPush or IncrementalPush ("" when absent)
	Disabled    bool   // Disable
	// Fields are the field names of the entity's field map (EntityMapList):
	// each entry's EntityField and, when it differs, its XMLField (the
	// name in the file), in document order. Real maps are alphabetical
	// and may leave fields out: they tell a header row from data, but do
	// not name a file's columns. The entry's element names are not
	// documented publicly; any child of EntityMapList holding those two
	// elements counts.
	Fields []string
}

// PackageHeader is what a package's PackageHeader.xml says.
type PackageHeader struct {
	Description, ManifestType, PackageType, PackageVersion string
}

// ParseManifest reads a Manifest.xml.
//
// It accepts UTF-8 with or without BOM, UTF-16 LE or BE with BOM, and UTF-16
// without BOM (detected from NUL bytes); an encoding declaration that
// contradicts the bytes is ignored. Elements are matched by local name in any
// namespace and in any order; unknown elements are ignored. At most
// MaxManifestBytes are read. A manifest listing no entities is valid.
func ParseManifest(r io.Reader) (*Manifest, error) {
	m := &Manifest{Entities: []ManifestEntity{}}
	var cur *ManifestEntity
	var disable string
	err := walkXML(r, "DataManagementPackageManifest", func(path []string, text string) error {
		switch {
		case len(path) == 2 && path[1] == "DefinitionGroupName":
			m.DefinitionGroup = text
		case len(path) == 2 && path[1] == "Description":
			m.Description = text
		case len(path) == 3 && path[1] == "PackageEntityList" && path[2] == "DataManagementPackageEntityData":
			// End of one entity: cur holds its fields.
			if cur == nil {
				cur = &ManifestEntity{} // an entry without fields is still listed
			}
			{
				d, err := parseBool(disable)
				if err != nil {
					return fmt.Errorf("entity %q: Disable: %w", cur.Name, err)
				}
				cur.Disabled = d
				m.Entities = append(m.Entities, *cur)
				cur, disable = nil, ""
			}
		case len(path) == 6 && path[1] == "PackageEntityList" && path[2] == "DataManagementPackageEntityData" &&
			path[3] == "EntityMapList" && (path[5] == "EntityField" || path[5] == "XMLField"):
			if cur == nil {
				cur = &ManifestEntity{}
			}
			if text != "" && !slices.Contains(cur.Fields, text) {
				cur.Fields = append(cur.Fields, text)
			}
		case len(path) == 4 && path[1] == "PackageEntityList" && path[2] == "DataManagementPackageEntityData":
			if cur == nil {
				cur = &ManifestEntity{}
			}
			switch path[3] {
			case "EntityName":
				cur.Name = text
			case "InputFilePath":
				cur.File = text
			case "SourceFormat":
				cur.SourceFormat = text
			case "ExcelSheetName", "ExcelWorkSheetName":
				if text != "" || cur.Sheet == "" {
					cur.Sheet = text
				}
			case "DefaultRefreshType":
				cur.RefreshType = text
			case "Disable":
				disable = text
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse Manifest.xml: %w", err)
	}
	return m, nil
}

// ParsePackageHeader reads a PackageHeader.xml, accepting the same encodings
// and namespace variants as ParseManifest.
func ParsePackageHeader(r io.Reader) (*PackageHeader, error) {
	h := &PackageHeader{}
	err := walkXML(r, "DataManagementPackageHeader", func(path []string, text string) error {
		if len(path) != 2 {
			return nil
		}
		switch path[1] {
		case "Description":
			h.Description = text
		case "ManifestType":
			h.ManifestType = text
		case "PackageType":
			h.PackageType = text
		case "PackageVersion":
			h.PackageVersion = text
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse PackageHeader.xml: %w", err)
	}
	return h, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "false", "no", "0":
		return false, nil
	case "true", "yes", "1":
		return true, nil
	}
	return false, fmt.Errorf("%q is not true/false/yes/no/1/0", s)
}

// walkXML decodes an XML document whose root element has local name root and
// calls fn at the end of every element below the root with the local names
// from the root down and the element's own trimmed text (character data
// directly inside it, not in its children).
func walkXML(r io.Reader, root string, fn func(path []string, text string) error) error {
	dec := xml.NewDecoder(decodeText(&limitedReader{r: r, left: manifestLimit}))
	// The text is already UTF-8 here, whatever the declaration claims.
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	var path []string
	var texts [][]byte // character data of each open element
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if len(path) == 0 {
				return fmt.Errorf("not an XML document: no %s element", root)
			}
			return fmt.Errorf("not a complete XML document: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			if errors.Is(err, errTooLarge) {
				return err
			}
			return fmt.Errorf("not a valid XML document: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(path) == 0 && t.Name.Local != root {
				return fmt.Errorf("root element is %q, want %s", t.Name.Local, root)
			}
			path = append(path, t.Name.Local)
			texts = append(texts, nil)
		case xml.CharData:
			if n := len(texts); n > 0 && len(path) <= 6 {
				texts[n-1] = append(texts[n-1], t...)
			}
		case xml.EndElement:
			text := strings.TrimSpace(string(texts[len(texts)-1]))
			if len(path) > 1 {
				if err := fn(path, text); err != nil {
					return err
				}
			}
			path = path[:len(path)-1]
			texts = texts[:len(texts)-1]
			if len(path) == 0 {
				return nil // the rest of the input is not the document's
			}
		}
	}
}

var errTooLarge = fmt.Errorf("larger than %d MiB: not a package manifest", MaxManifestBytes>>20)

// limitedReader fails, rather than silently stopping, past its limit.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Probe one byte so a document of exactly the limit still passes.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// decodeText returns r as UTF-8, detecting UTF-16 LE/BE (with or without
// BOM) and stripping a UTF-8 BOM.
func decodeText(r io.Reader) io.Reader {
	br := bufio.NewReaderSize(r, 4096)
	b, _ := br.Peek(4)
	var enc *unicode.Endianness
	le, be := unicode.LittleEndian, unicode.BigEndian
	switch {
	case len(b) >= 2 && b[0] == 0xFF && b[1] == 0xFE:
		_, _ = br.Discard(2)
		enc = &le
	case len(b) >= 2 && b[0] == 0xFE && b[1] == 0xFF:
		_, _ = br.Discard(2)
		enc = &be
	case len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF:
		_, _ = br.Discard(3)
	case len(b) >= 4 && b[0] != 0 && b[1] == 0 && b[2] != 0 && b[3] == 0:
		enc = &le
	case len(b) >= 4 && b[0] == 0 && b[1] != 0 && b[2] == 0 && b[3] != 0:
		enc = &be
	}
	if enc == nil {
		return br
	}
	return transform.NewReader(br, unicode.UTF16(*enc, unicode.IgnoreBOM).NewDecoder())
}
