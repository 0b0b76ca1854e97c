package publish

import (
	"errors"
	"io"
)

type textReader struct{ r io.Reader }

func newTextReader(r io.Reader, encoding, sourceFormat string) (*textReader, error) {
	return &textReader{r: utf8Text(r)}, nil
}
func (t *textReader) Read(p []byte) (int, error) { return t.r.Read(p) }
func (t *textReader) encoding() string           { return "utf-8" }
func (t *textReader) defaulted() bool            { return false }
func ParseEncoding(s string) (string, error)     { return s, nil }

type fixedOptions struct {
	Widths  []int
	Header  bool
	Columns []string
}
type fixedSource struct{ emptySource }

func newFixedSource(r io.Reader, o fixedOptions) (*fixedSource, error) {
	return nil, errors.New("todo")
}
