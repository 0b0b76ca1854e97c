package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// The batch decoder. A batch body is mostly its rows, objects of strings;
// decoding them through encoding/json into maps took three quarters of the
// sink's CPU. This scanner reads the event in one pass and lands every
// value of a batch in one block of text, so a batch costs a few
// allocations, not a few per value. It reads exactly what encoding/json
// reads (the same unescaping, invalid UTF-8 made U+FFFD, field names
// matched without regard to case), except that it refuses a field given
// twice in the event or its data, which encoding/json would merge:
// FuzzDecodeBatch holds it to that. A batch whose rows hold child records
// (a composite entity) is left to decodeStd.

// errComposite: a row holds child records; decodeStd reads the batch.
var errComposite = errors.New("composite rows")

// errTwice: a member of the event or its data is given twice.
var errTwice = errors.New("member given twice")

// maxDepth is encoding/json's limit on nesting.
const maxDepth = 10000

type scanner struct {
	b       []byte
	i       int
	scratch []byte
}

func (s *scanner) errorf(format string, args ...any) error {
	if s.i >= len(s.b) {
		return fmt.Errorf("unexpected end of JSON input: "+format, args...)
	}
	return fmt.Errorf("offset %d: "+format, append([]any{s.i}, args...)...)
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte that is not white space, 0 at the end.
func (s *scanner) peek() byte {
	s.skipSpace()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) consume(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) expect(c byte) error {
	if !s.consume(c) {
		return s.errorf("want %q", c)
	}
	return nil
}

// more reads what follows a member of an object (end '}') or an element of
// an array (end ']'): true after a comma, false at the end.
func (s *scanner) more(end byte) (bool, error) {
	switch s.peek() {
	case ',':
		s.i++
		return true, nil
	case end:
		s.i++
		return false, nil
	}
	return false, s.errorf("want ',' or %q", end)
}

// literal reads null, true or false.
func (s *scanner) literal(word string) bool {
	if bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		s.i += len(word)
		return true
	}
	return false
}

// null reads a null if one comes next.
func (s *scanner) null() bool {
	return s.peek() == 'n' && s.literal("null")
}

// appendString reads a JSON string and appends its text to dst: escapes
// resolved, a lone surrogate and each byte of invalid UTF-8 made U+FFFD,
// as encoding/json does.
func (s *scanner) appendString(dst []byte) ([]byte, error) {
	if s.peek() != '"' {
		return dst, s.errorf("want a string")
	}
	b := s.b
	i := s.i + 1
	start := i
	for {
		if i >= len(b) {
			s.i = i
			return dst, s.errorf("unterminated string")
		}
		c := b[i]
		if plain[c] {
			i++
			continue
		}
		dst = append(dst, b[start:i]...)
		switch {
		case c == '"':
			s.i = i + 1
			return dst, nil
		case c < 0x20:
			s.i = i
			return dst, s.errorf("control character %#x in string", c)
		case c == '\\':
			if i+1 >= len(b) {
				s.i = i
				return dst, s.errorf("unterminated string")
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(b[i+2:])
				if r < 0 {
					s.i = i
					return dst, s.errorf("invalid \\u escape")
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						r2 = hex4(b[i+2:])
					}
					if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
						r = d
						i += 6
					} else {
						r = unicode.ReplacementChar
					}
				}
				dst = utf8.AppendRune(dst, r)
				start = i
				continue
			default:
				s.i = i
				return dst, s.errorf("invalid escape \\%c", e)
			}
			i += 2
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, b[i:i+size]...)
			}
			i += size
		}
		start = i
	}
}

// hex4 reads the four hex digits of a \u escape, -1 if they are not.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// key reads an object's member name and its colon. The name is valid until
// the next call: a slice of the body when it has no escapes, else of
// scratch.
func (s *scanner) key() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.errorf("want a member name")
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		c := s.b[i]
		if c == '"' {
			s.i = i + 1
			return s.b[start:i], s.expect(':')
		}
		if c < 0x20 || c >= utf8.RuneSelf || c == '\\' {
			break
		}
	}
	var err error
	s.scratch, err = s.appendString(s.scratch[:0])
	if err != nil {
		return nil, err
	}
	return s.scratch, s.expect(':')
}

// str reads a string, or a null (ok false).
func (s *scanner) str() (v string, ok bool, err error) {
	if s.null() {
		return "", false, nil
	}
	s.scratch, err = s.appendString(s.scratch[:0])
	return string(s.scratch), err == nil, err
}

// number reads a JSON number and returns its text.
func (s *scanner) number() ([]byte, error) {
	s.skipSpace()
	b, start := s.b, s.i
	i := start
	digits := func() bool {
		n := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		s.i = i
		return nil, s.errorf("want a value")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			s.i = i
			return nil, s.errorf("want a digit")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			s.i = i
			return nil, s.errorf("want a digit")
		}
	}
	s.i = i
	return b[start:i], nil
}

// integer reads an integer into *v; a null leaves *v alone, as
// encoding/json does.
func (s *scanner) integer(v *int) (set bool, err error) {
	if s.null() {
		return false, nil
	}
	if c := s.peek(); c != '-' && (c < '0' || c > '9') {
		if err := s.skip(1); err != nil {
			return false, err
		}
		return false, errors.New("want a number")
	}
	num, err := s.number()
	if err != nil {
		return false, err
	}
	n, err := strconv.ParseInt(string(num), 10, 0)
	if err != nil {
		return false, fmt.Errorf("number %s is not an integer", num)
	}
	*v = int(n)
	return true, nil
}

// skip reads any value, checking it is JSON.
func (s *scanner) skip(depth int) error {
	switch s.peek() {
	case '"':
		var err error
		s.scratch, err = s.appendString(s.scratch[:0])
		return err
	case '{', '[':
		if depth > maxDepth {
			return s.errorf("exceeded max depth")
		}
		end := byte('}')
		if s.b[s.i] == '[' {
			end = ']'
		}
		s.i++
		if s.consume(end) {
			return nil
		}
		for {
			if end == '}' {
				if _, err := s.key(); err != nil {
					return err
				}
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			more, err := s.more(end)
			if err != nil || !more {
				return err
			}
		}
	case 't':
		if s.literal("true") {
			return nil
		}
	case 'f':
		if s.literal("false") {
			return nil
		}
	case 'n':
		if s.literal("null") {
			return nil
		}
	default:
		_, err := s.number()
		return err
	}
	return s.errorf("invalid literal")
}

// field returns the index in names of a member name, matched as
// encoding/json matches struct fields (exactly, else without regard to
// case), or -1.
func field(key []byte, names []string) int {
	for i, n := range names {
		if string(key) == n {
			return i
		}
	}
	for i, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return i
		}
	}
	return -1
}

var (
	eventFields = []string{"specversion", "type", "id", "time", "refreshtype", "data", "traceparent"}
	dataFields  = []string{"version", "job", "run_id", "execution_id", "entity", "batch_index", "batch_count", "last_batch",
		"first_row", "row_count", "columns", "rows"}
)

// header is what an event says besides its rows.
type header struct {
	Type, ID, RefreshType string
	TraceParent           string
	Time                  time.Time
	HasData               bool
	Version               int
	Job, RunID, ExecID    string
	Entity                string
	BatchIndex            int
	BatchCount            *int
	LastBatch             bool
	FirstRow, RowCount    int
	Columns               []string
}

// decodeFast reads an event whose rows hold text only.
func decodeFast(raw []byte) (*Batch, error) {
	s := &scanner{b: raw}
	var h header
	rowsAt := -1 // where the rows start in raw, when read after the data
	seenColumns := false
	rows := [][]*string{}
	if err := s.object(0, eventFields, func(f int) error {
		var err error
		switch f {
		case 0: // specversion: read, not checked
			_, _, err = s.str()
		case 1:
			h.Type, _, err = s.str()
		case 2:
			h.ID, _, err = s.str()
		case 3:
			if s.null() {
				return nil
			}
			start := s.i
			if err := s.skip(2); err != nil {
				return err
			}
			return h.Time.UnmarshalJSON(raw[start:s.i])
		case 4:
			h.RefreshType, _, err = s.str()
		case 6:
			// Kept when it is a string, never checked; any other value is
			// read as encoding/json reads it into an interface.
			if s.peek() == '"' {
				h.TraceParent, _, err = s.str()
				return err
			}
			start := s.i
			if err := s.skip(2); err != nil {
				return err
			}
			var v any
			return json.Unmarshal(raw[start:s.i], &v)
		case 5:
			if s.null() {
				return nil
			}
			if s.peek() != '{' {
				return s.errorf("data is not an object")
			}
			h.HasData = true
			return s.object(1, dataFields, func(f int) error {
				var err error
				switch f {
				case 0:
					_, err = s.integer(&h.Version)
				case 1:
					h.Job, _, err = s.str()
				case 2:
					h.RunID, _, err = s.str()
				case 3:
					h.ExecID, _, err = s.str()
				case 4:
					h.Entity, _, err = s.str()
				case 5:
					_, err = s.integer(&h.BatchIndex)
				case 6:
					var n int
					if ok, e := s.integer(&n); ok {
						h.BatchCount = &n
					} else {
						err = e
					}
				case 7:
					switch {
					case s.null():
					case s.peek() == 't' && s.literal("true"):
						h.LastBatch = true
					case s.peek() == 'f' && s.literal("false"):
						h.LastBatch = false
					default:
						return s.errorf("last_batch is not a boolean")
					}
				case 8:
					_, err = s.integer(&h.FirstRow)
				case 9:
					_, err = s.integer(&h.RowCount)
				case 10:
					h.Columns, err = s.columns()
				case 11:
					// Rows are read where they are when the columns came
					// first, as dmfexport writes them; else after the data.
					if seenColumns {
						rows, err = s.rows(dedupe(h.Columns), h.RowCount)
						return err
					}
					s.skipSpace()
					rowsAt = s.i
					err = s.skip(3)
				}
				seenColumns = seenColumns || f == 10
				return err
			})
		}
		return err
	}); err != nil {
		return nil, err
	}
	if s.skipSpace(); s.i != len(raw) {
		return nil, s.errorf("data after the event")
	}
	b, err := h.batch()
	if err != nil {
		return nil, err
	}
	if rowsAt >= 0 {
		s.i = rowsAt
		if rows, err = s.rows(b.Columns, h.RowCount); err != nil {
			return nil, err
		}
	}
	b.Rows = rows
	if len(b.Rows) != h.RowCount {
		return nil, fmt.Errorf("%w: row_count %d but %d rows", ErrMalformed, h.RowCount, len(b.Rows))
	}
	return b, nil
}

// object reads an object whose members are names, calling member with
// the index of each member's name to read its value; other members are
// skipped. A name given twice is refused.
func (s *scanner) object(depth int, names []string, member func(int) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.consume('}') {
		return nil
	}
	var seen uint64
	for {
		k, err := s.key()
		if err != nil {
			return err
		}
		f := field(k, names)
		if f < 0 {
			err = s.skip(depth + 2)
		} else if seen&(1<<f) != 0 {
			return fmt.Errorf("%w: %q", errTwice, names[f])
		} else {
			seen |= 1 << f
			err = member(f)
		}
		if err != nil {
			return err
		}
		more, err := s.more('}')
		if err != nil || !more {
			return err
		}
	}
}

// columns reads the column names; a null name is "", as encoding/json
// reads it.
func (s *scanner) columns() ([]string, error) {
	if s.null() {
		return nil, nil
	}
	if err := s.expect('['); err != nil {
		return nil, err
	}
	cols := []string{}
	if s.consume(']') {
		return cols, nil
	}
	for {
		c, _, err := s.str()
		if err != nil {
			return nil, err
		}
		cols = append(cols, c)
		more, err := s.more(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return cols, nil
		}
	}
}

// quotedName is a member name as JSON writes it when it needs no escape,
// quotes included; nil when it would.
func quotedName(name string) []byte {
	for i := 0; i < len(name); i++ {
		if !plain[name[i]] {
			return nil
		}
	}
	return []byte(`"` + name + `"`)
}

// plain holds the bytes a JSON string holds as they are: printable ASCII
// but the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// span locates a value in a batch's text; end < 0: the row has no such
// field.
type span struct{ off, end int32 }

// rows reads the rows array, cols being the batch's columns, every value
// in one string; rowCount is a hint of their number.
func (s *scanner) rows(cols []string, rowCount int) ([][]*string, error) {
	if s.null() {
		return [][]*string{}, nil
	}
	if err := s.expect('['); err != nil {
		return nil, err
	}
	index := make(map[string]int, len(cols))
	quoted := make([][]byte, len(cols))
	for i, c := range cols {
		index[c] = i
		quoted[i] = quotedName(c)
	}
	n := len(cols)
	hint := min(max(rowCount, 0), len(s.b)/(2*n+2))
	spans := make([]span, 0, hint*n)
	// Values are about a quarter of a body: the rest is member names,
	// quotes and punctuation.
	text := make([]byte, 0, len(s.b)/4)
	rows := 0
	for !s.consume(']') {
		if rows > 0 {
			if err := s.expect(','); err != nil {
				return nil, err
			}
		}
		base := len(spans)
		for range n {
			spans = append(spans, span{-1, -1})
		}
		rows++
		if s.null() {
			continue
		}
		if err := s.expect('{'); err != nil {
			return nil, err
		}
		next := 0 // the column expected next: rows name them in order
		for first := true; !s.consume('}'); first = false {
			if !first {
				if err := s.expect(','); err != nil {
					return nil, err
				}
			}
			// Rows name their members in the columns' order: the name
			// expected next is matched where it stands, in one compare.
			j := -1
			var k []byte
			if s.skipSpace(); next < n && quoted[next] != nil && bytes.HasPrefix(s.b[s.i:], quoted[next]) {
				s.i += len(quoted[next])
				k, j = quoted[next][1:len(quoted[next])-1], next
				if err := s.expect(':'); err != nil {
					return nil, err
				}
			} else {
				var err error
				if k, err = s.key(); err != nil {
					return nil, err
				}
				if x, ok := index[string(k)]; ok {
					j = x
				}
			}
			switch s.peek() {
			case '"':
			case '[':
				return nil, errComposite
			default:
				return nil, fmt.Errorf("%w: row %d of the batch: field %q holds neither a string nor child records", ErrMalformed, rows, k)
			}
			if j < 0 {
				return nil, fmt.Errorf("%w: row %d of the batch has field %q that columns does not list", ErrMalformed, rows, k)
			}
			off := len(text)
			var err error
			if text, err = s.appendString(text); err != nil {
				return nil, err
			}
			if len(text) > 1<<31-1 {
				return nil, errors.New("batch text over 2 GiB")
			}
			spans[base+j] = span{int32(off), int32(len(text))}
			next = j + 1
		}
	}
	// The values are read from text, which nothing writes to again: one
	// string over it instead of a copy.
	all := unsafe.String(unsafe.SliceData(text), len(text))
	vals := make([]string, len(spans))
	ptrs := make([]*string, len(spans))
	for k, sp := range spans {
		if sp.end >= 0 {
			vals[k] = all[sp.off:sp.end]
			ptrs[k] = &vals[k]
		}
	}
	out := make([][]*string, rows)
	for r := range out {
		out[r] = ptrs[r*n : (r+1)*n : (r+1)*n]
	}
	return out, nil
}

// batch checks the header and makes the batch it describes, without rows.
func (h *header) batch() (*Batch, error) {
	switch {
	case h.Type != EventType:
		return nil, fmt.Errorf("%w: event type %q, want %q", ErrMalformed, h.Type, EventType)
	case !h.HasData:
		return nil, fmt.Errorf("%w: no data", ErrMalformed)
	case h.Version != DataVersion:
		return nil, fmt.Errorf("%w: data version %d, this sink reads version %d", ErrMalformed, h.Version, DataVersion)
	case h.ID == "" || h.RunID == "" || h.Entity == "":
		return nil, fmt.Errorf("%w: id, run_id or entity missing", ErrMalformed)
	case h.BatchIndex < 0 || h.FirstRow < 0:
		return nil, fmt.Errorf("%w: negative batch_index or first_row", ErrMalformed)
	case h.LastBatch && (h.BatchCount == nil || *h.BatchCount != h.BatchIndex+1):
		return nil, fmt.Errorf("%w: last batch %d without batch_count %d", ErrMalformed, h.BatchIndex, h.BatchIndex+1)
	}
	b := &Batch{
		MessageID: h.ID, Export: h.Job, RunID: h.RunID, ExecutionID: h.ExecID, Entity: h.Entity,
		RefreshType: h.RefreshType, BatchIndex: h.BatchIndex, LastBatch: h.LastBatch, FirstRow: h.FirstRow,
		TraceParent: h.TraceParent,
	}
	if h.BatchCount != nil {
		b.BatchCount = *h.BatchCount
	}
	b.Time = h.Time.UTC()
	b.RunTime = b.Time
	if len(h.RunID) >= len(runIDTime) {
		if t, err := time.Parse(runIDTime, h.RunID[:len(runIDTime)]); err == nil {
			b.RunTime = t
		}
	}
	b.Columns = dedupe(h.Columns)
	return b, nil
}

// dedupe returns the names without repeats, in order; nil for none.
func dedupe(names []string) []string {
	var out []string
	seen := make(map[string]bool, len(names))
	for _, c := range names {
		if !seen[c] {
			out = append(out, c)
		}
		seen[c] = true
	}
	return out
}
