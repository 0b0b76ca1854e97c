package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

func FuzzCSVEntity(f *testing.F) {
	seeds := []string{
		"", "A,B\r\n1,2\r\n", "\xef\xbb\xbfA;B\n1;2\n3;4\n", "A\n\"x\ny\"\n", "A,B\n\"1,2\n",
		"A|B\n1|2", "A\tB\n\"a\"\"b\"\tc\n", "A,A\n1,2\n", "\xff\xfeA\x00,\x00B\x00\n\x001\x00,\x002\x00", "A,B\n1\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, batch uint8) {
		sink := &memSink{}
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), sink, EntityOptions{
			Job: "j", Entity: "E", Format: "csv", BatchSize: int(batch%8) + 1,
		})
		if err != nil {
			return
		}
		var rows int64
		for i, m := range sink.msgs {
			if !json.Valid(m.Body) {
				t.Fatalf("message %d is not valid JSON: %s", i, m.Body)
			}
			var e event
			if err := json.Unmarshal(m.Body, &e); err != nil {
				t.Fatalf("message %d: decode: %v", i, err)
			}
			if e.Data.RowCount != len(e.Data.Rows) {
				t.Fatalf("message %d: row_count %d but %d rows", i, e.Data.RowCount, len(e.Data.Rows))
			}
			if e.Data.LastBatch != (i == len(sink.msgs)-1) {
				t.Fatalf("message %d of %d: last_batch %v", i, len(sink.msgs), e.Data.LastBatch)
			}
			rows += int64(e.Data.RowCount)
		}
		if len(sink.msgs) == 0 || rows != st.Rows {
			t.Fatalf("want at least one message and rows %d, got %d messages with %d rows", st.Rows, len(sink.msgs), rows)
		}
	})
}
