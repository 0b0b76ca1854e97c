package unpack

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"context"
	"fmt"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeBenchPackage writes a data package of entities CSV files of about
// perEntity bytes each to path and returns the total uncompressed size.
func writeBenchPackage(tb testing.TB, path string, entities int, perEntity int64) int64 {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(bw)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.BestSpeed) })
	var list string
	for e := range entities {
		name := fmt.Sprintf("Bench entity %d", e)
		list += entityXML(name, name+".csv", "CSV-Unicode", false)
	}
	w, err := zw.Create("Manifest.xml")
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = w.Write(entitiesManifest(list))
	var total int64
	row := make([]byte, 0, 256)
	for e := range entities {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("Bench entity %d.csv", e), Method: zip.Deflate})
		if err != nil {
			tb.Fatal(err)
		}
		hdr := "ACCOUNTNUM,NAME,STREET,CITY,COUNTRY,CREDITLIMIT,CREATED\r\n"
		io.WriteString(w, hdr)
		n := int64(len(hdr))
		for i := int64(0); n < perEntity; i++ {
			x := uint64(i)*2654435761 + uint64(e)
			row = append(row[:0], "US-"...)
			row = strconv.AppendInt(row, 1_000_000+i, 10)
			row = append(row, ",\"Customer "...)
			row = strconv.AppendUint(row, x%99991, 36)
			row = append(row, ", Inc\","...)
			row = strconv.AppendUint(row, x%9973, 10)
			row = append(row, " Main Street,Seattle,USA,"...)
			row = strconv.AppendUint(row, x%100000, 10)
			row = append(row, ".00,2026-11-24T20:15:"...)
			row = strconv.AppendInt(row, 10+i%50, 10)
			row = append(row, "Z\r\n"...)
			_, _ = w.Write(row)
			n += int64(len(row))
		}
		total += n
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	return total
}

// heapPeak samples HeapInuse until stop is called and returns the maximum.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// BenchmarkExplode200MB explodes a generated ~200 MB package (4 CSV entities)
// and reports throughput over the uncompressed bytes and the peak heap in
// use, which must stay far below the package size (target < 64 MiB).
func BenchmarkExplode200MB(b *testing.B) {
	zp := filepath.Join(b.TempDir(), "bench.zip")
	size := writeBenchPackage(b, zp, 4, 50<<20)
	if fi, err := os.Stat(zp); err == nil {
		b.Logf("package: %d MB uncompressed, %d MB zipped", size>>20, fi.Size()>>20)
	}
	stores := []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"dir", func(b *testing.B) store.Store {
			s, err := store.NewDirStore(filepath.Join(b.TempDir(), "store"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"azblob", func(b *testing.B) store.Store {
			return storetest.Blob(b, store.BlobOptions{BlockSize: store.DefaultBlobBlockSize, Concurrency: store.DefaultBlobConcurrency})
		}},
	}
	for _, sc := range stores {
		b.Run(sc.name, func(b *testing.B) {
			st := sc.open(b)
			ctx := context.Background()
			b.SetBytes(size)
			runtime.GC()
			stop := heapPeak()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				res, err := Explode(ctx, zp, st, ExplodeOptions{Prefix: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range res.Entities {
					if e.Err != nil {
						b.Fatal(e.Err)
					}
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			peak := stop()
			b.ReportMetric(float64(size)*float64(b.N)/elapsed.Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
