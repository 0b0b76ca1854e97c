package publish

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
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

// xmlMaxDepth caps how deep child records nest: a top-level record is
// level 1, its child records level 2. F&O's composite entities nest two or
// three levels; the cap bounds the reader's recursion on any input.
const xmlMaxDepth = 16

// xmlNodeCost is what a child record counts toward xmlMaxRecord besides
// its name and fields: the memory its node takes, so that a file of
// millions of empty child records is refused like a huge field.
const xmlNodeCost = 128

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
// A record of a composite entity holds its child entity's records as
// nested elements, recursively (at most xmlMaxDepth levels). In attribute
// shape every child element of a record is a child record, its attributes
// its fields. In element shape a child element holding elements is a child
// record and one holding only text is a field; an element holding both
// non-whitespace text and elements fails the entity. An empty element
// (no text, or only whitespace) is an empty field "", unless an element of
// that name has already been read as a child record in this file: then it
// is a child record without fields. (A child record F&O wrote without any
// field, before the first one of its name with fields, is read as a field.)
// A child record's name must differ from its parent's field names.
//
// The file is decoded token by token, so memory is bounded by one record
// with its child records (xmlMaxRecord).
type xmlSource struct {
	dec   *xml.Decoder
	shape xmlShape
	root  bool // inside the root element
	stray bool // text seen before the root element: not XML
	done  bool
	rows  int
	// tree holds the last record read, node 0, and its child records. Its
	// nodes and their slices are reused from record to record.
	tree []rowNode
	rec  xml.StartElement // the top-level record being read, for errors
	size int              // bytes of rec's names and values so far
	// childNames holds the element names read as child records so far:
	// an empty element of such a name is an empty child record.
	childNames map[string]struct{}
	text       []byte // scratch for a field's text
}

// newXMLSource reads r, UTF-8 text (see newTextReader).
func newXMLSource(r io.Reader) *xmlSource {
	dec := xml.NewDecoder(r)
	// The text is UTF-8 by now whatever the declaration says.
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	return &xmlSource{dec: dec}
}

// header returns no columns: XML records name their own fields (fields).
func (s *xmlSource) header() ([]string, error) { return nil, nil }

// fields names the values the last call of next returned.
func (s *xmlSource) fields() []string {
	if len(s.tree) == 0 {
		return nil
	}
	return s.tree[0].names
}

// nested returns the last record read with its child records, node 0 the
// record, or nil when it has none; valid until the next call of next.
func (s *xmlSource) nested() []rowNode {
	if len(s.tree) == 0 || len(s.tree[0].kids) == 0 {
		return nil
	}
	return s.tree
}

func (s *xmlSource) next() ([]string, int, error) {
	if s.done {
		return nil, 0, io.EOF
	}
	for {
		tok, err := s.dec.Token()
		if errors.Is(err, io.EOF) {
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
			return s.tree[0].vals, line, nil
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

// record reads the record that start opens, up to its end tag, with its
// child records, into s.tree.
func (s *xmlSource) record(start xml.StartElement) error {
	s.rec, s.size = start, 0
	s.tree = s.tree[:0]
	s.newNode(start.Name.Local)
	attrs := false
	for _, a := range start.Attr {
		if fieldAttr(a) {
			attrs = true
			break
		}
	}
	switch {
	case attrs && s.shape == xmlShapeElement:
		return s.mixed(xmlShapeAttribute)
	case attrs:
		s.shape = xmlShapeAttribute
		return s.attrRecord(0, start, 1)
	case s.shape == xmlShapeAttribute:
		return s.attrRecord(0, start, 1) // a record without fields
	}
	return s.elementRecord(0, 1, false)
}

// token returns the next token inside the record being read.
func (s *xmlSource) token() (xml.Token, error) {
	tok, err := s.dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("xml: record %d (<%s>): the document ends inside the record", s.rows+1, s.rec.Name.Local)
	}
	if err != nil {
		return nil, s.syntax(err)
	}
	return tok, nil
}

// elementRecord reads the content of record node p, in element shape, up
// to its end tag. level is p's nesting level (1: a record of the root);
// elems says an element of p has been read already.
func (s *xmlSource) elementRecord(p int32, level int, elems bool) error {
	text := false
	for {
		tok, err := s.token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if !text && !xmlBlank(t) {
				if text = true; elems {
					return s.mixedText(p)
				}
			}
		case xml.StartElement:
			if elems = true; text {
				return s.mixedText(p)
			}
			if s.shape == xmlShapeUnknown {
				s.shape = xmlShapeElement
			}
			if err := s.elementChild(p, t, level); err != nil {
				return err
			}
		case xml.EndElement:
			return nil
		}
	}
}

// elementChild reads child element start of record node p, in element
// shape, up to its end tag: a field, or a child record once it holds an
// element.
func (s *xmlSource) elementChild(p int32, start xml.StartElement, level int) error {
	s.text = s.text[:0]
	for {
		tok, err := s.token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(s.text)+len(t) > xmlMaxRecord {
				return fmt.Errorf("xml: record %d: field %q is larger than %d MiB", s.rows+1, start.Name.Local, xmlMaxRecord>>20)
			}
			s.text = append(s.text, t...)
		case xml.StartElement:
			k, err := s.childRecord(p, start, level+1)
			if err != nil {
				return err
			}
			if !xmlBlank(s.text) {
				return s.mixedText(k)
			}
			if err := s.elementChild(k, t, level+1); err != nil {
				return err
			}
			return s.elementRecord(k, level+1, true)
		case xml.EndElement:
			if xsiNil(start) {
				return nil
			}
			if len(s.childNames) > 0 && xmlBlank(s.text) && s.isChildName(start.Name.Local) {
				_, err := s.childRecord(p, start, level+1)
				return err
			}
			return s.addField(p, start.Name.Local, string(s.text))
		}
	}
}

// attrRecord reads record node p, in attribute shape, up to its end tag:
// start's attributes are its fields, its child elements child records.
func (s *xmlSource) attrRecord(p int32, start xml.StartElement, level int) error {
	for _, a := range start.Attr {
		if fieldAttr(a) {
			if err := s.addField(p, a.Name.Local, a.Value); err != nil {
				return err
			}
		}
	}
	text, elems := false, false
	for {
		tok, err := s.token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if text || xmlBlank(t) {
				continue
			}
			if level > 1 {
				// A child holding text is a field: element shape.
				return s.mixed(xmlShapeElement)
			}
			if text = true; elems {
				return s.mixedText(p)
			}
		case xml.StartElement:
			if elems = true; text {
				return s.mixedText(p)
			}
			k, err := s.childRecord(p, t, level+1)
			if err != nil {
				return err
			}
			if err := s.attrRecord(k, t, level+1); err != nil {
				return err
			}
		case xml.EndElement:
			return nil
		}
	}
}

// newNode adds a node for a record named elem to s.tree, reusing the
// slices of a node of an earlier record.
func (s *xmlSource) newNode(elem string) int32 {
	i := len(s.tree)
	if i < cap(s.tree) {
		s.tree = s.tree[:i+1]
		n := &s.tree[i]
		n.elem, n.names, n.vals, n.kids = elem, n.names[:0], n.vals[:0], n.kids[:0]
	} else {
		s.tree = append(s.tree, rowNode{elem: elem})
	}
	return int32(i)
}

// childRecord adds a child record named after start to record node p and
// returns its node; level is the child's nesting level.
func (s *xmlSource) childRecord(p int32, start xml.StartElement, level int) (int32, error) {
	name := start.Name.Local
	if level > xmlMaxDepth {
		return 0, fmt.Errorf("xml: %s: child record <%s> is nested %d levels deep, more than the %d a record may have", s.where(p), name, level, xmlMaxDepth)
	}
	s.size += len(name) + xmlNodeCost
	if s.size > xmlMaxRecord {
		return 0, s.tooLarge()
	}
	parent := &s.tree[p]
	for _, f := range parent.names {
		if f == name {
			return 0, s.sameName(p, name)
		}
	}
	g := -1
	for i := range parent.kids {
		if parent.kids[i].name == name {
			g = i
			break
		}
	}
	if g < 0 {
		g = len(parent.kids)
		if g < cap(parent.kids) {
			parent.kids = parent.kids[:g+1]
			parent.kids[g].name, parent.kids[g].nodes = name, parent.kids[g].nodes[:0]
		} else {
			parent.kids = append(parent.kids, rowKids{name: name})
		}
	}
	k := s.newNode(name) // may move s.tree: parent is not used after
	s.tree[p].kids[g].nodes = append(s.tree[p].kids[g].nodes, k)
	if _, ok := s.childNames[name]; !ok {
		if s.childNames == nil {
			s.childNames = map[string]struct{}{}
		}
		s.childNames[name] = struct{}{}
	}
	return k, nil
}

// addField adds a field to record node p.
func (s *xmlSource) addField(p int32, name, value string) error {
	n := &s.tree[p]
	for _, f := range n.names {
		if f == name {
			return fmt.Errorf("xml: %s: field %q occurs twice: every field name must be unique in a record", s.where(p), name)
		}
	}
	for i := range n.kids {
		if n.kids[i].name == name {
			return s.sameName(p, name)
		}
	}
	s.size += len(name) + len(value)
	if s.size > xmlMaxRecord {
		return s.tooLarge()
	}
	n.names, n.vals = append(n.names, name), append(n.vals, value)
	return nil
}

// where names record node p for errors: the top-level record by its
// number and element, a child record by its element too.
func (s *xmlSource) where(p int32) string {
	if p == 0 {
		return fmt.Sprintf("record %d (<%s>)", s.rows+1, s.rec.Name.Local)
	}
	return fmt.Sprintf("record %d (<%s>), child record <%s>", s.rows+1, s.rec.Name.Local, s.tree[p].elem)
}

func (s *xmlSource) tooLarge() error {
	return fmt.Errorf("xml: record %d (<%s>) is larger than %d MiB with its child records", s.rows+1, s.rec.Name.Local, xmlMaxRecord>>20)
}

func (s *xmlSource) sameName(p int32, name string) error {
	return fmt.Errorf("xml: %s: field %q and child records <%s> share a name: a child entity's element name must differ from its parent's field names",
		s.where(p), name, name)
}

func (s *xmlSource) mixedText(p int32) error {
	return fmt.Errorf("xml: %s holds both text and elements: an element holds either a field's text or fields and child records",
		s.where(p))
}

func (s *xmlSource) mixed(got xmlShape) error {
	return fmt.Errorf("xml: record %d (<%s>) holds fields as %s, but the file's first records hold them as %s: the file mixes XML-Element and XML-Attribute records",
		s.rows+1, s.rec.Name.Local, got, s.shape)
}

// isChildName reports whether elements named name have been read as child
// records in this file.
func (s *xmlSource) isChildName(name string) bool {
	_, ok := s.childNames[name]
	return ok
}

// xsiNil reports whether start is marked xsi:nil="true".
func xsiNil(start xml.StartElement) bool {
	for _, a := range start.Attr {
		if a.Name.Local == "nil" && a.Name.Space != "" && (a.Value == "true" || a.Value == "1") {
			return true
		}
	}
	return false
}

// xmlBlank reports whether b holds only XML white space.
func xmlBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
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
