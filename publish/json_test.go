package publish

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendJSONString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"plain", "abc 123", `"abc 123"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"named controls", "\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"other controls", "\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"invalid utf8", "a\xffb\xc3", `"a\ufffdb\ufffd"`},
		{"line separators", "x\u2028y\u2029z", `"x\u2028y\u2029z"`},
		{"multibyte kept", "Zürich 東京 😀", `"Zürich 東京 😀"`},
		{"html kept", "<a&b>", `"<a&b>"`},
		{"replacement char kept", "\ufffd", "\"\ufffd\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendJSONString(nil, tt.in))
			if got != tt.want {
				t.Errorf("appendJSONString(%q): want %s, got %s", tt.in, tt.want, got)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("appendJSONString(%q) = %s is not valid JSON", tt.in, got)
			}
		})
	}
}

// TestJSONStringRoundTrip checks that nasty strings survive encoding and
// decoding exactly (valid UTF-8) or with U+FFFD in place of bad bytes.
func TestJSONStringRoundTrip(t *testing.T) {
	nasty := []string{
		"", `"`, `\`, `\"`, "\\u0000", "\x00", "line1\r\nline2", "tab\there",
		"\u2028\u2029", "😀", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xffb",
		strings.Repeat("x\"\\\n", 1000), "}{][,:", "\u007f\u0080\u009f",
	}
	for _, s := range nasty {
		b := appendJSONString([]byte("prefix"), s)[len("prefix"):]
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("decode %s (from %q): %v", b, s, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if !utf8.ValidString(s) {
			// Go's decoder and ours both replace each bad byte: compare
			// against the per-byte replacement.
			want = perByteReplacement(s)
		}
		if got != want {
			t.Errorf("round trip of %q: want %q, got %q", s, want, got)
		}
	}
}

func perByteReplacement(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00\n\u2028", "\xff", "😀", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("not valid JSON for %q: %s", s, b)
		}
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if want := perByteReplacement(s); got != want {
			t.Fatalf("round trip of %q: want %q, got %q", s, want, got)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("valid UTF-8 %q decoded as %q", s, got)
		}
	})
}

func TestPlain8(t *testing.T) {
	naive := func(w [8]byte) bool {
		for _, c := range w {
			if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
				return false
			}
		}
		return true
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	special := []byte{0, 0x1f, 0x20, '"', '\\', 0x7f, 0x80, 0xff, 'a', '!', '#', '[', ']'}
	for i := 0; i < 200000; i++ {
		var w [8]byte
		for k := range w {
			if rnd.IntN(2) == 0 {
				w[k] = special[rnd.IntN(len(special))]
			} else {
				w[k] = byte(rnd.IntN(256))
			}
		}
		if got, want := plain8(binary.LittleEndian.Uint64(w[:])), naive(w); got != want {
			t.Fatalf("plain8(%q): want %v, got %v", w, want, got)
		}
	}
}

func TestCompressionLevels(t *testing.T) {
	body := bytes.Repeat([]byte(`{"CUSTOMERACCOUNT":"000123","NAME":"Contoso, Ltd."},`), 2000)
	tests := []struct {
		name    string
		codec   string
		level   int
		wantErr string
	}{
		{"zstd default", CompressionZstd, 0, ""},
		{"zstd best", CompressionZstd, 4, ""},
		{"zstd out of range", CompressionZstd, 5, "zstd level 5"},
		{"gzip default", CompressionGzip, 0, ""},
		{"gzip 9", CompressionGzip, 9, ""},
		{"gzip out of range", CompressionGzip, 10, "gzip level 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newCompressor(tt.codec, tt.level)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("newCompressor(%s, %d) = %v, want an error containing %q", tt.codec, tt.level, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newCompressor(%s, %d): %v", tt.codec, tt.level, err)
			}
			out, err := c.compress(body)
			if err != nil || len(out) == 0 || len(out) >= len(body)/4 {
				t.Errorf("compress: %d bytes from %d (%v), want well under a quarter", len(out), len(body), err)
			}
		})
	}
}

// TestCompressionKeepsBatchOrder: batches compressed by several goroutines
// reach the sink in batch order, each with its own rows, and Confirmed
// reports every batch once, in order.
func TestCompressionKeepsBatchOrder(t *testing.T) {
	in, wantRows := genCSV(2000)
	for _, c := range []string{CompressionGzip, CompressionZstd} {
		t.Run(c, func(t *testing.T) {
			sink := &memSink{}
			var confirmed []int64
			st, err := PublishEntity(context.Background(), strings.NewReader(in), sink, EntityOptions{
				ExecutionID: "x", Entity: "E", BatchSize: 7, Format: "csv", Compression: c,
				Confirmed: func(b, _ int64) { confirmed = append(confirmed, b) },
			})
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			var bodies [][]byte
			for i, m := range sink.msgs {
				if want := fmt.Sprintf("x/E/%d", i); m.MessageID != want {
					t.Fatalf("message %d: want id %s, got %s", i, want, m.MessageID)
				}
				if m.ContentEncoding != c {
					t.Fatalf("message %d: want content_encoding %s, got %q", i, c, m.ContentEncoding)
				}
				bodies = append(bodies, decompress(t, m.ContentEncoding, m.Body))
			}
			if _, got := rowsOf(t, bodies); !reflect.DeepEqual(got, wantRows) {
				t.Errorf("rows: want the %d rows in order, got %d", len(wantRows), len(got))
			}
			if int64(len(confirmed)) != st.Batches || len(confirmed) != len(sink.msgs) {
				t.Fatalf("confirmed: want %d batches, got %d", len(sink.msgs), len(confirmed))
			}
			for i, b := range confirmed {
				if b != int64(i) {
					t.Fatalf("confirmed: want batch %d at %d, got %d", i, i, b)
				}
			}
		})
	}
}

// TestRowKeysOfEveryLength encodes rows whose column names are around and
// far over the width a key is padded to, some needing escapes, with values
// long, short, empty and escaped: every row must decode to its values under
// its column names.
func TestRowKeysOfEveryLength(t *testing.T) {
	header := []string{"A", strings.Repeat("B", 57), strings.Repeat("C", 58), strings.Repeat("D", 59),
		strings.Repeat("E", 300), "F\"quoted\\name", "G\tü", strings.Repeat("H\"", 40)}
	var in strings.Builder
	quoted := make([]string, len(header))
	for i, h := range header {
		quoted[i] = `"` + strings.ReplaceAll(h, `"`, `""`) + `"`
	}
	in.WriteString(strings.Join(quoted, ",") + "\r\n")
	var want [][]string
	for r := 0; r < 50; r++ {
		row := make([]string, len(header))
		for i := range row {
			switch (r + i) % 5 {
			case 0:
				row[i] = ""
			case 1:
				row[i] = strings.Repeat("v", r*7)
			case 2:
				row[i] = "x\\y\"z"
			case 3:
				row[i] = "é" + strings.Repeat("w", r)
			default:
				row[i] = "12.50"
			}
		}
		want = append(want, row)
		for i, v := range row {
			quoted[i] = `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
		}
		in.WriteString(strings.Join(quoted, ",") + "\r\n")
	}
	sink := &memSink{}
	if _, err := PublishEntity(context.Background(), strings.NewReader(in.String()), sink, EntityOptions{Entity: "E", Format: "csv", BatchSize: 7}); err != nil {
		t.Fatal(err)
	}
	cols, rows := rowsOf(t, bodiesOf(sink.msgs))
	if !reflect.DeepEqual(cols, header) {
		t.Errorf("columns %q, want %q", cols, header)
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows differ:\n got %q\nwant %q", rows, want)
	}
}
