package publish

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// laggingSink stores a message only once lag later ones were published, as
// a broker confirming a window of messages does, and then gives its
// buffer back through OnStored. With burst it stores every held message
// at once, as a broker's multiple ack does.
type laggingSink struct {
	lag   int
	burst bool
	held  []Message
	body  int // largest body seen
}

func (s *laggingSink) Publish(_ context.Context, m Message) error {
	s.body = max(s.body, len(m.Body))
	s.held = append(s.held, m)
	if len(s.held) > s.lag {
		n := 1
		if s.burst {
			n = len(s.held)
		}
		for _, h := range s.held[:n] {
			if h.OnStored != nil {
				h.OnStored()
			}
		}
		s.held = s.held[n:]
	}
	return nil
}

func (s *laggingSink) Flush(context.Context) error {
	for _, m := range s.held {
		if m.OnStored != nil {
			m.OnStored()
		}
	}
	s.held = nil
	return nil
}

func (s *laggingSink) Close() error { return nil }

// TestBatchBuffersReused publishes an entity of 40 batches, then one of 80,
// through a sink that holds two unconfirmed: the batch buffers must come
// back into service, so what publishing allocates does not grow with the
// number of batches (allocating and zeroing a fresh multi-megabyte buffer
// per batch is what made publishing wide rows slow), and the first batch
// is not grown step by step.
func TestBatchBuffersReused(t *testing.T) {
	// A window of 8 confirmed at once: as the broker sink's default window
	// (16 MiB) holds of 2 MB batches, acknowledged by one multiple ack;
	// every buffer it gives back must be kept for reuse.
	for _, tt := range []struct {
		lag   int
		burst bool
	}{{2, false}, {8, true}} {
		lag := tt.lag
		t.Run(fmt.Sprintf("%d unconfirmed, burst %v", lag, tt.burst), func(t *testing.T) {
			alloc40, body := publishAllocs(t, 40, lag, tt.burst)
			alloc80, _ := publishAllocs(t, 80, lag, tt.burst)
			if more := int64(alloc80) - int64(alloc40); more > int64(2*body) {
				t.Errorf("40 more batches of about %d bytes allocated %d bytes more (%.1f batches' worth), want at most 2 batches' worth",
					body, more, float64(more)/float64(body))
			}
			if want := lag + 8; alloc40 > uint64(want*body) {
				t.Errorf("40 batches of about %d bytes allocated %d bytes (%.1f batches' worth), want at most %d", body, alloc40, float64(alloc40)/float64(body), want)
			}
		})
	}
}

// publishAllocs publishes a 30-column entity, its batches growing a little, of the given number of
// batches of 500 rows through a sink holding lag of them unconfirmed (all
// confirmed at once with burst), and
// returns the bytes allocated meanwhile and the largest message body.
func publishAllocs(t *testing.T, batches, lag int, burst bool) (uint64, int) {
	t.Helper()
	var b strings.Builder
	cols := make([]string, 30)
	for i := range cols {
		cols[i] = "COLUMN_" + strings.Repeat("X", i%7) + string(rune('A'+i%26))
	}
	b.WriteString(strings.Join(cols, ",") + "\r\n")
	for r := 0; r < batches*500; r++ {
		for i := range cols {
			if i > 0 {
				b.WriteByte(',')
			}
			// Numbers that grow make each batch a little bigger than
			// the one before, as in real entities.
			b.WriteString("value " + strconv.Itoa(r*7919))
			b.WriteString(strings.Repeat("v", (r+i)%9))
		}
		b.WriteString("\r\n")
	}
	in := b.String()
	sink := &laggingSink{lag: lag, burst: burst}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := PublishEntity(context.Background(), strings.NewReader(in), sink, EntityOptions{Entity: "W", BatchSize: 500, Format: "csv"})
	runtime.ReadMemStats(&after)
	if err != nil || st.Batches != int64(batches) {
		t.Fatalf("PublishEntity: %d batches, %v; want %d", st.Batches, err, batches)
	}
	return after.TotalAlloc - before.TotalAlloc, sink.body
}
