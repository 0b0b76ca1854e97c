package publish

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// publishRun is what PublishEntity did with one input.
type publishRun struct {
	msgs []Message
	st   EntityStats
	err  error
}

// publishCSV publishes in with the one-pass CSV path on or off, at a fixed
// time, reading at most chunk bytes at a time (0: all at once).
func publishCSV(in []byte, o EntityOptions, chunk int, onePass bool) publishRun {
	defer func(was bool) { onePassCSV = was }(onePassCSV)
	onePassCSV = onePass
	o.Job, o.RunID, o.ExecutionID, o.Entity, o.Format = "j", "r", "e", "E", "csv"
	o.Clock = clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	sink := &memSink{}
	var r io.Reader = bytes.NewReader(in)
	if chunk > 0 {
		r = &chunkReader{b: in, n: chunk}
	}
	st, err := PublishEntity(context.Background(), r, sink, o)
	return publishRun{msgs: sink.msgs, st: st, err: err}
}

// checkOnePass fails unless in publishes to the same messages, stats and
// error with the one-pass path as without it.
func checkOnePass(t *testing.T, in []byte, o EntityOptions, chunk int) {
	t.Helper()
	got, want := publishCSV(in, o, chunk, true), publishCSV(in, o, chunk, false)
	if fmt.Sprint(got.err) != fmt.Sprint(want.err) {
		t.Fatalf("one pass: error %v, want %v (input %.300q)", got.err, want.err, in)
	}
	if got.st != want.st {
		t.Fatalf("one pass: stats %+v, want %+v", got.st, want.st)
	}
	if len(got.msgs) != len(want.msgs) {
		t.Fatalf("one pass: %d messages, want %d", len(got.msgs), len(want.msgs))
	}
	for i := range got.msgs {
		g, w := got.msgs[i], want.msgs[i]
		g.OnStored, w.OnStored = nil, nil
		if !bytes.Equal(g.Body, w.Body) {
			t.Fatalf("one pass: message %d body\n%.2000s\nwant\n%.2000s", i, g.Body, w.Body)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("one pass: message %d %+v, want %+v", i, g, w)
		}
	}
}

// plainRecords generates n records of cols fields, most of them plain
// (every length from 0 to 20 bytes, some quoted), some not: doubled
// quotes, line breaks, backslashes, non-ASCII, a lone CR, empty lines,
// and records longer than plainMaxRecord.
func plainRecords(r *rand.Rand, n, cols int, delim byte) []byte {
	var b bytes.Buffer
	for c := range cols {
		if c > 0 {
			b.WriteByte(delim)
		}
		fmt.Fprintf(&b, "COLUMN%d", c)
	}
	b.WriteString("\r\n")
	d := string(delim)
	for i := range n {
		for c := range cols {
			if c > 0 {
				b.WriteByte(delim)
			}
			v := strings.Repeat(string(rune('a'+(i+c)%26)), r.IntN(21))
			switch k := r.IntN(200); {
			case k < 20:
				v = `"` + v + d + `x"`
			case k < 40:
				v = `"` + v + `"`
			case k == 40:
				v = `"a""b"`
			case k == 41:
				v = "\"line\r\nbreak\""
			case k == 42:
				v = `back\slash`
			case k == 43:
				v = "Zürich"
			case k == 44:
				v = "lone\rcr"
			case k == 45:
				v = `"unclosed"x`
			case k == 46 && i%50 == 0:
				v = strings.Repeat("long", plainMaxRecord/4)
			}
			b.WriteString(v)
		}
		switch r.IntN(40) {
		case 0:
			b.WriteString("\n")
		case 1:
			b.WriteString("\r\n\r\n")
		default:
			b.WriteString("\r\n")
		}
	}
	return b.Bytes()
}

// TestCSVOnePassMatches publishes files with the one-pass path and
// without: the messages must be the same to the byte. The generated file
// is over twice the reader's buffer, so records straddle its refills.
func TestCSVOnePassMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	big := plainRecords(r, 30000, 15, ',')
	tests := []struct {
		name  string
		in    string
		o     EntityOptions
		chunk int
	}{
		{"generated", string(big), EntityOptions{}, 0},
		{"generated, reads of 4093 bytes", string(big), EntityOptions{}, 4093},
		{"generated, rows only", string(big), EntityOptions{MaxBatchBytes: NoBatchByteLimit, BatchSize: 777}, 0},
		{"generated, small batches by bytes", string(big), EntityOptions{MaxBatchBytes: 5000}, 0},
		{"generated, resumed", string(big), EntityOptions{MaxBatchBytes: NoBatchByteLimit, BatchSize: 1000, ResumeFrom: 7}, 0},
		{"semicolon", string(plainRecords(r, 3000, 4, ';')), EntityOptions{}, 0},
		{"tab", string(plainRecords(r, 3000, 4, '\t')), EntityOptions{Delimiter: '\t'}, 0},
		{"backslash delimiter", string(plainRecords(r, 3000, 4, '\\')), EntityOptions{Delimiter: '\\'}, 0},
		{"no qualifier", string(plainRecords(r, 3000, 4, ',')), EntityOptions{TextQualifier: "none"}, 0},
		{"other qualifier", string(plainRecords(r, 3000, 4, ',')), EntityOptions{TextQualifier: "'"}, 0},
		{"strict quotes", string(plainRecords(r, 3000, 4, ',')), EntityOptions{StrictQuotes: true}, 0},
		{"byte by byte", "A,B\r\n1,2\r\n\"3\",\"4\"\r\n5,\"\"\n", EntityOptions{}, 1},
		{"no final line break", "A,B\r\n1,2\r\n3,4", EntityOptions{}, 0},
		{"quoted at the end", "A,B\r\n1,2\r\n3,\"4\"", EntityOptions{}, 0},
		{"lone CR at the end", "A,B\r\n1,2\r", EntityOptions{}, 0},
		{"a field too few", "A,B\r\n1,2\r\n3\r\n", EntityOptions{}, 0},
		{"a field too many", "A,B\r\n1,2\r\n3,4,5\r\n", EntityOptions{}, 0},
		{"one column, empty lines", "A\r\n1\r\n\r\n2\n\n3", EntityOptions{}, 0},
		{"NUL bytes", "A,B\r\n\x00,\"\x00\"\r\n", EntityOptions{TextQualifier: "none"}, 0},
		{"quote in an unquoted value", "A,B\r\n1,x\"y\r\n", EntityOptions{}, 0},
		{"DEL and tilde", "A,B\r\n\x7f~,\"~\x7f\"\r\n", EntityOptions{}, 0},
		{"long key", strings.Repeat("K", 80) + ",B\r\n1,2\r\n", EntityOptions{}, 0},
		{"header only", "A,B\r\n", EntityOptions{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOnePass(t, []byte(tt.in), tt.o, tt.chunk)
		})
	}
}

// TestEncodePlain checks which records the one-pass path takes: a record
// it leaves must leave the reader and the batch as they were.
func TestEncodePlain(t *testing.T) {
	tests := []struct {
		name, in string
		qual     byte
		want     plainOutcome
	}{
		{"unquoted", "a,bcdefghijklmnopq,\r\n", '"', plainDone},
		{"quoted", "\"a,b\",\"\",\"cdefghijklmnopq\"\n", '"', plainDone},
		{"no qualifier", "a,b,c\n", 0, plainDone},
		{"other qualifier", "a,b,c\n", '\'', plainNo},
		{"quote without qualifier", "\"a\",b,c\n", 0, plainNo},
		{"doubled quote", "\"a\"\"\",b,c\n", '"', plainNo},
		{"escaped byte", "a,b\\,c\n", '"', plainNo},
		{"non-ASCII", "a,é,c\n", '"', plainNo},
		{"a field too few", "a,b\n", '"', plainNo},
		{"a field too many", "a,b,c,d\n", '"', plainNo},
		{"not wholly buffered", "a,b,c", '"', plainNo},
		{"lone CR", "a,b,c\rd\n", '"', plainNo},
		{"empty line", "\r\na,b,c\n", '"', plainNo},
		{"too long", "a,b," + strings.Repeat("c", plainMaxRecord) + "\n", '"', plainNo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := newCSVReader(strings.NewReader(tt.in), ',')
			cr.qual = tt.qual
			if _, err := cr.peek(len(tt.in)); err != nil {
				t.Fatal(err)
			}
			var e batchEncoder
			e.init(EntityOptions{Entity: "E", BatchSize: 10}, []string{"A", "B", "C"})
			e.start()
			e.buf = slices.Grow(e.buf, 1<<20)
			before := string(e.buf)
			got := cr.encodePlain(&e, math.MaxInt)
			if got != tt.want {
				t.Fatalf("encodePlain(%q) = %d, want %d", tt.in, got, tt.want)
			}
			if got == plainNo && (cr.pos != 0 || cr.line != 0 || string(e.buf) != before || e.rows != 0) {
				t.Fatalf("encodePlain(%q) left the record but moved: pos %d, line %d, rows %d", tt.in, cr.pos, cr.line, e.rows)
			}
			if got == plainDone && (cr.pos != len(tt.in) || cr.line != 1 || e.rows != 1) {
				t.Fatalf("encodePlain(%q) took the record: pos %d of %d, line %d, rows %d", tt.in, cr.pos, len(tt.in), cr.line, e.rows)
			}
		})
	}
}

// FuzzCSVOnePass checks that the one-pass path encodes any input, with any
// delimiter, qualifier, batch limits and read sizes, as the two-pass one.
func FuzzCSVOnePass(f *testing.F) {
	f.Add([]byte("A,B\r\n1,2\r\n\"3\",\"4\"\r\n"), byte(','), uint8(0), uint8(2), uint16(0), uint16(0))
	f.Add([]byte("A;B\n1;\"x;y\"\n\n3;\"a\"\"b\"\n"), byte(';'), uint8(0), uint8(1), uint16(40), uint16(3))
	f.Add([]byte("A\tB\n12345678\t123456789\n\"\"\t\n"), byte('\t'), uint8(1), uint8(5), uint16(0), uint16(7))
	f.Add([]byte("A,B\n'1',\"2\"\r\n3,4\r"), byte(','), uint8(2), uint8(3), uint16(30), uint16(0))
	f.Add([]byte("A,B\nx\\y,z\r\nZ\xc3\xbcrich,\x00\n1,2,3\n"), byte(','), uint8(0), uint8(4), uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, delim byte, qual, batch uint8, batchBytes, chunk uint16) {
		if !validDelim(rune(delim)) {
			delim = ','
		}
		o := EntityOptions{Delimiter: rune(delim), BatchSize: int(batch%8) + 1, MaxBatchBytes: int(batchBytes)}
		switch qual % 3 {
		case 1:
			o.TextQualifier = "none"
		case 2:
			if delim != '\'' {
				o.TextQualifier = "'"
			}
		}
		checkOnePass(t, in, o, int(chunk%64))
	})
}
