package publish

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

const csvBufferSize = 1 << 20

// csvSource reads a delimited text entity file.
type csvSource struct {
	r    *csv.Reader
	rows int // data rows returned so far
}

// newCSVSource detects the encoding from the BOM (UTF-8, UTF-16 LE or BE; no
// BOM means UTF-8) and, when delim is 0, the delimiter from the header line.
// UTF-8 input is read without a decoding pass: invalid bytes are replaced by
// U+FFFD when the values are encoded as JSON.
func newCSVSource(r io.Reader, delim rune) (*csvSource, error) {
	if delim != 0 && !validDelim(delim) {
		return nil, fmt.Errorf("delimiter %q is not supported: use a single character other than a quote or line break", delim)
	}
	raw := bufio.NewReaderSize(r, csvBufferSize)
	bom, _ := raw.Peek(3)
	var br *bufio.Reader
	switch {
	case bytes.HasPrefix(bom, []byte{0xFF, 0xFE}), bytes.HasPrefix(bom, []byte{0xFE, 0xFF}):
		dec := unicode.BOMOverride(unicode.UTF8.NewDecoder())
		br = bufio.NewReaderSize(transform.NewReader(raw, dec), csvBufferSize)
	case bytes.HasPrefix(bom, []byte{0xEF, 0xBB, 0xBF}):
		_, _ = raw.Discard(3)
		br = raw
	default:
		br = raw
	}
	if delim == 0 {
		head, _ := br.Peek(64 << 10)
		delim = detectDelimiter(head)
	}
	cr := csv.NewReader(br)
	cr.Comma = delim
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = false
	return &csvSource{r: cr}, nil
}

func validDelim(r rune) bool {
	return r != '"' && r != '\r' && r != '\n' && r != utf8.RuneError && utf8.ValidRune(r)
}

// detectDelimiter returns the candidate seen most often outside quotes in the
// first line of head (ties go to the earlier candidate; none seen: comma).
func detectDelimiter(head []byte) rune {
	candidates := [...]byte{',', ';', '\t', '|'}
	var counts [len(candidates)]int
	inQuotes := false
	for _, b := range head {
		if b == '"' {
			inQuotes = !inQuotes
			continue
		}
		if inQuotes {
			continue
		}
		if b == '\n' || b == '\r' {
			break
		}
		for i, c := range candidates {
			if b == c {
				counts[i]++
			}
		}
	}
	best := 0
	for i := range counts {
		if counts[i] > counts[best] {
			best = i
		}
	}
	return rune(candidates[best])
}

func (s *csvSource) header() ([]string, error) {
	rec, err := s.r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return append([]string(nil), rec...), nil
}

func (s *csvSource) next() ([]string, int, error) {
	rec, err := s.r.Read()
	if err == io.EOF {
		return nil, 0, io.EOF
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, pe.StartLine, fmt.Errorf("row %d: %w", s.rows+1, err)
		}
		return nil, 0, fmt.Errorf("row %d: read: %w", s.rows+1, err)
	}
	s.rows++
	line, _ := s.r.FieldPos(0)
	return rec, line, nil
}

func (s *csvSource) close() error { return nil }
