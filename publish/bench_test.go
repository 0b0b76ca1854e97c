package publish

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

// wideCSV generates a CSV of cols columns and rows rows with F&O-like values.
func wideCSV(cols, rows int) []byte {
	var b bytes.Buffer
	for c := 0; c < cols; c++ {
		if c > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "FIELDNAME%02d", c)
	}
	b.WriteString("\r\n")
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			if c > 0 {
				b.WriteByte(',')
			}
			switch c % 6 {
			case 0:
				fmt.Fprintf(&b, "%08d", r)
			case 1:
				fmt.Fprintf(&b, "\"Customer %d, Inc.\"", r)
			case 2:
				b.WriteString("2024-03-01T00:00:00")
			case 3:
				fmt.Fprintf(&b, "%d.%02d", r*7, c)
			case 4:
				// empty
			default:
				b.WriteString("USMF")
			}
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func BenchmarkEncodeCSV(b *testing.B) {
	const cols, rows = 60, 20000
	in := wideCSV(cols, rows)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), discardSink{}, EntityOptions{
			Job: "bench", ExecutionID: "e", Entity: "Wide", Format: "csv",
		})
		if err != nil || st.Rows != rows {
			b.Fatalf("want %d rows and no error, got %d, %v", rows, st.Rows, err)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(rows)*float64(b.N)/sec, "rows/s")
	b.ReportMetric(float64(len(in))*float64(b.N)/sec/1e6, "MB/s")
}

// BenchmarkEntityFile publishes the file named by DMFEXPORT_BENCH_FILE (for
// example one made by cmd/dmfbench) to a discarding sink.
func BenchmarkEntityFile(b *testing.B) {
	path := os.Getenv("DMFEXPORT_BENCH_FILE")
	if path == "" {
		b.Skip("set DMFEXPORT_BENCH_FILE to an entity file")
	}
	in, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	format := "csv"
	if strings.HasSuffix(path, ".xlsx") {
		format = "xlsx"
	}
	b.SetBytes(int64(len(in)))
	var rows int64
	for b.Loop() {
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), discardSink{}, EntityOptions{ExecutionID: "e", Entity: "E", Format: format})
		if err != nil {
			b.Fatal(err)
		}
		rows += st.Rows
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
