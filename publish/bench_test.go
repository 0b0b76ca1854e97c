package publish

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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

// benchXLSXRows are rows shaped like the bench command's XLSX entity: 20
// columns of F&O text (numbers with six decimals, dates as F&O writes them,
// some cells empty), rows of which repeat much as real data does.
func benchXLSXRows(n int) [][]string {
	cols := []string{"SALESORDERNUMBER", "LINENUMBER", "ITEMNUMBER", "LINEDESCRIPTION", "ORDEREDSALESQUANTITY",
		"SALESPRICE", "CURRENCYCODE", "SALESUNITSYMBOL", "SHIPPINGWAREHOUSEID", "REQUESTEDSHIPPINGDATE",
		"SALESORDERLINESTATUS", "CUSTOMERREQUISITIONNUMBER", "SHIPPINGSITEID", "LINEDISCOUNTPERCENTAGE", "ISDELIVERYADDRESSORDERSPECIFIC",
		"EXTRA0", "EXTRA1", "EXTRA2", "EXTRA3", "EXTRA4"}
	rows := [][]string{cols}
	for i := 0; i < n; i++ {
		rows = append(rows, []string{
			fmt.Sprintf("SO-%08d", i/4), strconv.Itoa(i%4 + 1), fmt.Sprintf("A%05d", i%9973), fmt.Sprintf("Item %d & co", i%9973),
			strconv.Itoa(i%100+1) + ".000000", fmt.Sprintf("%d.%06d", i%1000, i%7), "USD", "pcs", fmt.Sprintf("WH-%d", i%5),
			fmt.Sprintf("2025-02-%02d 00:00:00", 1+i%28), "Open", "", "SITE1", fmt.Sprintf("0.%04d", i%10000), "No",
			strconv.Itoa(0), strconv.Itoa(i), strconv.Itoa(2 * i), strconv.Itoa(3 * i), strconv.Itoa(4 * i),
		})
	}
	return rows
}

// BenchmarkXLSX publishes the same rows from a workbook as F&O writes it
// (every cell an inline string) and as Excel re-saves it (shared strings)
// to a discarding sink; run it with -cpu 1 for the one-core figures.
func BenchmarkXLSX(b *testing.B) {
	const rows = 50000
	data := benchXLSXRows(rows)
	shared, table := sharedXLSXRows(data)
	for _, bb := range []struct {
		name string
		book []byte
	}{
		{"inline", foWorkbook(b, "Lines", data, nil)},
		{"shared", foWorkbook(b, "Lines", shared, table)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.book)))
			b.ReportAllocs()
			var cpu time.Duration
			for b.Loop() {
				start := processCPU()
				st, err := PublishEntity(context.Background(), bytes.NewReader(bb.book), discardSink{}, EntityOptions{
					Job: "bench", ExecutionID: "e", Entity: "Lines", Format: "xlsx",
				})
				cpu += processCPU() - start
				if err != nil || st.Rows != rows {
					b.Fatalf("want %d rows and no error, got %d, %v", rows, st.Rows, err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			if cpu > 0 {
				b.ReportMetric(float64(rows)*float64(b.N)/cpu.Seconds(), "rows/cpu-s")
			}
		})
	}
}
