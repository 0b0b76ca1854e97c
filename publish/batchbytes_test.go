package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// csvOfWidths is a CSV file with columns ID and V whose row i (from 1) has
// a V of widths[i-1] bytes. Its row i encodes as 16+len(ID)+len(V) bytes
// of JSON ({"ID":"1","V":"…"}), and rows are joined by a comma.
func csvOfWidths(widths ...int) string {
	var b strings.Builder
	b.WriteString("ID,V\r\n")
	for i, w := range widths {
		fmt.Fprintf(&b, "%d,%s\r\n", (i+1)%10, strings.Repeat(string(rune('a'+i%26)), w))
	}
	return b.String()
}

// rowsJSON returns the encoded rows of a batch body: what max_batch_bytes
// measures.
func rowsJSON(t *testing.T, body []byte) []byte {
	t.Helper()
	i := bytes.Index(body, []byte(`"rows":[`))
	if i < 0 || !bytes.HasSuffix(body, []byte("]}}")) {
		t.Fatalf("body without rows: %.200s", body)
	}
	return body[i+len(`"rows":[`) : len(body)-len("]}}")]
}

func TestMaxBatchBytes(t *testing.T) {
	repeat := func(n, w int) []int { return slices.Repeat([]int{w}, n) }
	tests := []struct {
		name       string
		format     string
		in         string
		batchSize  int
		batchBytes int
		want       []int // rows per batch
	}{
		// Rows of 50 bytes: two make 101, three 152.
		{"closed by bytes", "csv", csvOfWidths(repeat(6, 33)...), 100, 120, []int{2, 2, 2}},
		{"closed by rows first", "csv", csvOfWidths(repeat(6, 33)...), 4, 1000, []int{4, 2}},
		{"exactly the budget", "csv", csvOfWidths(repeat(5, 33)...), 100, 101, []int{2, 2, 1}},
		{"one byte under two rows", "csv", csvOfWidths(repeat(4, 33)...), 100, 100, []int{1, 1, 1, 1}},
		{"no byte limit", "csv", csvOfWidths(repeat(6, 33)...), 4, NoBatchByteLimit, []int{4, 2}},
		// 27, 217, 27 and 27 bytes: the big row is a batch of its own.
		{"a row bigger than the budget", "csv", csvOfWidths(10, 200, 10, 10), 100, 100, []int{1, 1, 2}},
		{"the first row bigger than the budget", "csv", csvOfWidths(200, 10), 100, 100, []int{1, 1}},
		{"the last row bigger than the budget", "csv", csvOfWidths(10, 10, 200), 100, 100, []int{2, 1}},
		{"rows of varying width", "csv", csvOfWidths(5, 60, 5, 5, 80, 1, 1, 1, 1), 100, 110, []int{2, 2, 1, 4}},
		// A row that starts a new batch takes its new columns along: the
		// batch it did not fit in never lists them.
		{"XML: columns follow the rows", "xml",
			`<Document><E><A>` + strings.Repeat("x", 40) + `</A></E><E><B>` + strings.Repeat("y", 40) + `</B></E><E><A>1</A><C>2</C></E></Document>`,
			100, 80, []int{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			var confirmed [][2]int64
			st, err := PublishEntity(context.Background(), strings.NewReader(tt.in), sink, EntityOptions{
				ExecutionID: "x", Entity: "E", Format: tt.format, BatchSize: tt.batchSize, MaxBatchBytes: tt.batchBytes,
				Confirmed: func(i, through int64) { confirmed = append(confirmed, [2]int64{i, through}) },
			})
			if err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			var got []int
			var next int64 = 1
			for i, m := range sink.msgs {
				e := decodeEvent(t, m.Body)
				got = append(got, e.Data.RowCount)
				rows := rowsJSON(t, m.Body)
				if tt.batchBytes > 0 && e.Data.RowCount > 1 && len(rows) > tt.batchBytes {
					t.Errorf("batch %d: %d rows in %d bytes, over the budget of %d", i, e.Data.RowCount, len(rows), tt.batchBytes)
				}
				if e.Data.BatchIndex != int64(i) || e.Data.FirstRow != next || e.Data.LastBatch != (i == len(sink.msgs)-1) {
					t.Errorf("batch %d: want index %d, first row %d, last %v; got %d, %d, %v",
						i, i, next, i == len(sink.msgs)-1, e.Data.BatchIndex, e.Data.FirstRow, e.Data.LastBatch)
				}
				var used []string
				for _, r := range e.Data.Rows {
					for k := range r {
						if !slices.Contains(used, k) {
							used = append(used, k)
						}
					}
				}
				slices.Sort(used)
				cols := slices.Sorted(slices.Values(e.Data.Columns))
				if tt.format == "xml" && !slices.Equal(cols, used) {
					t.Errorf("batch %d: columns %v, but its rows use %v", i, e.Data.Columns, used)
				}
				next += int64(e.Data.RowCount)
				if i < len(confirmed) && confirmed[i] != [2]int64{int64(i), next - 1} {
					t.Errorf("Confirmed: want batch %d through row %d, got %v", i, next-1, confirmed[i])
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("rows per batch: want %v, got %v", tt.want, got)
			}
			if st.Batches != int64(len(tt.want)) || len(confirmed) != len(tt.want) {
				t.Errorf("want %d batches, got stats %+v and %d confirmed", len(tt.want), st, len(confirmed))
			}
		})
	}
}

// TestMaxBatchBytesKeepsRows checks that cutting batches by bytes neither
// loses, repeats nor reorders a row, whatever the budget.
func TestMaxBatchBytesKeepsRows(t *testing.T) {
	var widths []int
	for i := range 200 {
		widths = append(widths, (i*37)%300)
	}
	in := csvOfWidths(widths...)
	for _, budget := range []int{1, 64, 300, 1000, 5000, 1 << 20} {
		t.Run(fmt.Sprint(budget), func(t *testing.T) {
			sink := &memSink{}
			if _, err := PublishEntity(context.Background(), strings.NewReader(in), sink, EntityOptions{
				ExecutionID: "x", Entity: "E", Format: "csv", BatchSize: 50, MaxBatchBytes: budget,
			}); err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			var vs []int
			for _, m := range sink.msgs {
				var rows []map[string]string
				if err := json.Unmarshal(rowsJSONArray(t, m.Body), &rows); err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					vs = append(vs, len(r["V"]))
				}
			}
			if !slices.Equal(vs, widths) {
				t.Errorf("want the %d rows in order, got %d rows: %v", len(widths), len(vs), vs)
			}
		})
	}
}

func rowsJSONArray(t *testing.T, body []byte) []byte {
	return append(append([]byte{'['}, rowsJSON(t, body)...), ']')
}
