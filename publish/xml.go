package publish

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// xmlMaxRecord caps the bytes of one record's names and values, as
// csvMaxRecord does for CSV: a record never ends in a broken file.
const xmlMaxRecord = 64 << 20

// xmlShape says where an XML entity file keeps a record's fields.
type xmlShape uint8

const (
	xmlShapeUnknown   xmlShape = iota // no record with fields seen yet
	xmlShapeElement                   // XML-Element: one child element per field
	xmlShapeAttribute                 // XML-Attribute: one attribute per field
)

func (s xmlShape) String() string {
	if s == xmlShapeAttribute {
		return "attributes"
	}
	return "child elements"
}

// xmlSource reads an XML-Element or XML-Attribute entity file: every child
// of the root element is a record, whatever its name. The shape is taken
// from the file, not from the manifest: the first record that has fields
// decides whether fields are child elements or attributes, and a later
// record holding its fields the other way fails the entity. A field's name
// is its local name (no prefix); its value is its text with entities
// decoded. A field element marked xsi:nil="true" is left out, like a field
// F&O omits for lack of a value: records carry only the fields they have.
// Namespace declarations and xsi: attributes are never fields.
//
// The file is decoded token by token, so memory is bounded by one record.
type xmlSource struct {
	dec   *xml.Decoder
	shape xmlShape
	root  bool // inside the root element
	stray bool // text seen before the root element: not XML
	done  bool
	rows  int
	names []string
	vals  []string
	text  []byte // scratch for a field's text
}

func newXMLSource(r io.Reader) *xmlSource {
	dec := xml.NewDecoder(utf8Text(r))
	// The text is UTF-8 by now whatever the declaration says.
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	return &xmlSource{dec: dec}
}

// utf8Text returns r as UTF-8: UTF-16 with a BOM, or without one when the
// document starts with "<" in UTF-16, is transcoded; a UTF-8 BOM is dropped.
func utf8Text(r io.Reader) io.Reader {
	br := bufio.NewReaderSize(r, 64<<10)
	b, _ := br.Peek(4)
	le, be := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		_, _ = br.Discard(2)
		return transform.NewReader(br, le.NewDecoder())
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		_, _ = br.Discard(2)
		return transform.NewReader(br, be.NewDecoder())
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		_, _ = br.Discard(3)
	case utf16NoBOM(b) == 'L':
		return transform.NewReader(br, le.NewDecoder())
	case utf16NoBOM(b) == 'B':
		return transform.NewReader(br, be.NewDecoder())
	}
	return br
}

// utf16NoBOM sniffs UTF-16 text without a BOM from its first two code
// units: ASCII text in UTF-16 has a zero in every other byte, which UTF-8
// text never has. It returns 'L' (little endian), 'B' (big endian) or 0.
func utf16NoBOM(b []byte) byte {
	if len(b) < 4 {
		return 0
	}
	switch {
	case b[0] != 0 && b[1] == 0 && b[2] != 0 && b[3] == 0 && b[0] < 0x80 && b[2] < 0x80:
		return 'L'
	case b[0] == 0 && b[1] != 0 && b[2] == 0 && b[3] != 0 && b[1] < 0x80 && b[3] < 0x80:
		return 'B'
	}
	return 0
}

// header returns no columns: XML records name their own fields (fields).
func (s *xmlSource) header() ([]string, error) { return nil, nil }

// fields names the values the last call of next returned.
func (s *xmlSource) fields() []string { return s.names }

func (s *xmlSource) next() ([]string, int, error) {
	if s.done {
		return nil, 0, io.EOF
	}
	for {
		tok, err := s.dec.Token()
		if err == io.EOF {
			s.done = true
			if s.root {
				return nil, 0, fmt.Errorf("xml: after record %d: the document ends inside the root element", s.rows)
			}
			if s.stray {
				return nil, 0, errors.New("xml: no root element, only text: the file is not an XML document")
			}
			return nil, 0, io.EOF // prolog only: no records
		}
		if err != nil {
			return nil, 0, s.syntax(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if !s.root && len(bytes.TrimSpace(t)) > 0 {
				s.stray = true
			}
		case xml.StartElement:
			if !s.root {
				s.root = true
				continue
			}
			line, _ := s.dec.InputPos()
			if err := s.record(t); err != nil {
				return nil, line, err
			}
			s.rows++
			return s.vals, line, nil
		case xml.EndElement:
			// The root's end: what follows is not the document's.
			s.done = true
			return nil, 0, io.EOF
		}
	}
}

func (s *xmlSource) syntax(err error) error {
	var se *xml.SyntaxError
	if errors.As(err, &se) && se.Msg == "unexpected EOF" {
		return fmt.Errorf("xml: after record %d: the file ends before the document does (truncated?)", s.rows)
	}
	return fmt.Errorf("xml: after record %d: %w: the file is not a well-formed XML document", s.rows, err)
}

// record reads the record that start opens, up to its end tag, into
// s.names and s.vals.
func (s *xmlSource) record(start xml.StartElement) error {
	s.names, s.vals = s.names[:0], s.vals[:0]
	size := 0
	add := func(name, value string) error {
		for _, n := range s.names {
			if n == name {
				return fmt.Errorf("xml: record %d (<%s>): field %q occurs twice: every field name must be unique in a record", s.rows+1, start.Name.Local, name)
			}
		}
		size += len(name) + len(value)
		if size > xmlMaxRecord {
			return fmt.Errorf("xml: record %d (<%s>) is larger than %d MiB", s.rows+1, start.Name.Local, xmlMaxRecord>>20)
		}
		s.names, s.vals = append(s.names, name), append(s.vals, value)
		return nil
	}
	var attrs int
	for _, a := range start.Attr {
		if fieldAttr(a) {
			attrs++
		}
	}
	children := 0
	for {
		tok, err := s.dec.Token()
		if err == io.EOF {
			return fmt.Errorf("xml: record %d (<%s>): the document ends inside the record", s.rows+1, start.Name.Local)
		}
		if err != nil {
			return s.syntax(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			children++
			if s.shape == xmlShapeUnknown {
				s.shape = xmlShapeElement
			}
			if s.shape != xmlShapeElement {
				return s.mixed(start, xmlShapeElement)
			}
			v, isNil, err := s.fieldText(t)
			if err != nil {
				return err
			}
			if !isNil {
				if err := add(t.Name.Local, v); err != nil {
					return err
				}
			}
		case xml.EndElement:
			if attrs > 0 {
				if s.shape == xmlShapeUnknown && children == 0 {
					s.shape = xmlShapeAttribute
				}
				if s.shape != xmlShapeAttribute {
					return s.mixed(start, xmlShapeAttribute)
				}
				for _, a := range start.Attr {
					if fieldAttr(a) {
						if err := add(a.Name.Local, a.Value); err != nil {
							return err
						}
					}
				}
			}
			return nil
		}
	}
}

func (s *xmlSource) mixed(start xml.StartElement, got xmlShape) error {
	return fmt.Errorf("xml: record %d (<%s>) holds fields as %s, but the file's first records hold them as %s: the file mixes XML-Element and XML-Attribute records",
		s.rows+1, start.Name.Local, got, s.shape)
}

// fieldText reads a field element's text up to its end tag. isNil reports
// xsi:nil="true".
func (s *xmlSource) fieldText(start xml.StartElement) (v string, isNil bool, err error) {
	for _, a := range start.Attr {
		if a.Name.Local == "nil" && a.Name.Space != "" && (a.Value == "true" || a.Value == "1") {
			isNil = true
		}
	}
	s.text = s.text[:0]
	for {
		tok, err := s.dec.Token()
		if err == io.EOF {
			return "", false, fmt.Errorf("xml: record %d: the document ends inside field %q", s.rows+1, start.Name.Local)
		}
		if err != nil {
			return "", false, s.syntax(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(s.text)+len(t) > xmlMaxRecord {
				return "", false, fmt.Errorf("xml: record %d: field %q is larger than %d MiB", s.rows+1, start.Name.Local, xmlMaxRecord>>20)
			}
			s.text = append(s.text, t...)
		case xml.StartElement:
			return "", false, fmt.Errorf("xml: record %d: field %q holds element <%s>: a field must hold text only", s.rows+1, start.Name.Local, t.Name.Local)
		case xml.EndElement:
			return string(s.text), isNil, nil
		}
	}
}

// fieldAttr reports whether a is a field rather than a namespace
// declaration or an XML Schema instance attribute (xsi:type, xsi:nil).
func fieldAttr(a xml.Attr) bool {
	switch {
	case a.Name.Space == "xmlns", a.Name.Space == "" && a.Name.Local == "xmlns":
		return false
	case a.Name.Space == "http://www.w3.org/2001/XMLSchema-instance":
		return false
	case a.Name.Space == "xml" || a.Name.Space == "http://www.w3.org/XML/1998/namespace":
		return false // xml:space, xml:lang
	}
	return true
}

func (s *xmlSource) close() error { return nil }
