package publish

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/xuri/excelize/v2"
)

// xlsxSource reads one sheet of a workbook through excelize's streaming row
// iterator, on a temporary copy of the input (excelize needs random access;
// its OpenReader would hold the whole file in memory).
//
// Values are the raw cell values: text as written, numbers as stored (no
// number formatting, so no rounding). Cells of the ISO date type come out as
// their ISO text. A number shown as a date through its cell style comes out
// as its serial number (for example "45352.5"), because the streaming
// iterator does not expose cell styles; F&O writes dates as text in the
// formats we have seen.
type xlsxSource struct {
	tmp   string
	f     *excelize.File
	rows  *excelize.Rows
	width int
	line  int // sheet row of the last row read
	buf   []string
}

func newXLSXSource(ctx context.Context, r io.Reader, sheet string) (src *xlsxSource, err error) {
	tf, err := os.CreateTemp("", "dmfexport-*.xlsx")
	if err != nil {
		return nil, fmt.Errorf("xlsx: create temporary copy: %w", err)
	}
	s := &xlsxSource{tmp: tf.Name()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	_, err = io.Copy(tf, readerWithContext{ctx, r})
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s, fmt.Errorf("xlsx: copy to temporary file: %w", err)
	}
	s.f, err = excelize.OpenFile(s.tmp, excelize.Options{RawCellValue: true})
	if err != nil {
		return s, fmt.Errorf("xlsx: open workbook: %w", err)
	}
	sheets := s.f.GetSheetList()
	if sheet == "" {
		if len(sheets) == 0 {
			return s, fmt.Errorf("xlsx: the workbook has no sheets")
		}
		sheet = sheets[0]
	} else if !contains(sheets, sheet) {
		return s, fmt.Errorf("xlsx: sheet %q not found (the workbook has %s): fix the sheet name", sheet, strings.Join(quoteAll(sheets), ", "))
	}
	s.rows, err = s.f.Rows(sheet)
	if err != nil {
		return s, fmt.Errorf("xlsx: read sheet %q: %w", sheet, err)
	}
	return s, nil
}

// readerWithContext stops a copy when ctx is done.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func quoteAll(list []string) []string {
	q := make([]string, len(list))
	for i, v := range list {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}

// nextNonEmpty returns the next row with at least one non-empty cell. Empty
// rows are skipped: in a sheet they cannot be told from absent rows.
func (s *xlsxSource) nextNonEmpty() ([]string, error) {
	for s.rows.Next() {
		s.line++
		cells, err := s.rows.Columns(excelize.Options{RawCellValue: true})
		if err != nil {
			return nil, fmt.Errorf("xlsx: sheet row %d: %w", s.line, err)
		}
		for _, c := range cells {
			if c != "" {
				return cells, nil
			}
		}
	}
	if err := s.rows.Error(); err != nil {
		return nil, fmt.Errorf("xlsx: after sheet row %d: %w", s.line, err)
	}
	return nil, io.EOF
}

func (s *xlsxSource) header() ([]string, error) {
	cells, err := s.nextNonEmpty()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.width = len(cells)
	return cells, nil
}

func (s *xlsxSource) next() ([]string, int, error) {
	cells, err := s.nextNonEmpty()
	if err != nil {
		return nil, 0, err
	}
	if len(cells) < s.width {
		s.buf = append(s.buf[:0], cells...)
		for len(s.buf) < s.width {
			s.buf = append(s.buf, "")
		}
		cells = s.buf
	}
	return cells, s.line, nil
}

func (s *xlsxSource) close() error {
	var err error
	if s.rows != nil {
		err = s.rows.Close()
	}
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
	}
	if s.tmp != "" {
		_ = os.Remove(s.tmp)
	}
	return err
}
