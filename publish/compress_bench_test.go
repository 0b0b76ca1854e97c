package publish

import (
	"bytes"
	"context"
	"testing"
)

func BenchmarkCompress(b *testing.B) {
	sink := &memSink{}
	if _, err := PublishEntity(context.Background(), bytes.NewReader(wideCSV(60, 5000)), sink, EntityOptions{Format: "csv"}); err != nil {
		b.Fatal(err)
	}
	body := sink.msgs[0].Body
	for _, name := range []string{"gzip", "zstd"} {
		b.Run(name, func(b *testing.B) {
			c, err := newCompressor(name, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			var out int
			for b.Loop() {
				z, err := c.compress(body)
				if err != nil {
					b.Fatal(err)
				}
				out = len(z)
			}
			b.ReportMetric(float64(len(body))/float64(out), "ratio")
		})
	}
}
