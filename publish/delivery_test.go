package publish

import (
	"github.com/dmfexport/dmfexport/internal/testenv"

	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	amqp "github.com/rabbitmq/amqp091-go"
)

// drain consumes queue until it stays empty for a second.
func drain(t *testing.T, queue string) []amqp.Delivery {
	t.Helper()
	dels := deliveries(t, queue)
	var got []amqp.Delivery
	for {
		select {
		case d := <-dels:
			got = append(got, d)
		case <-time.After(time.Second):
			return got
		}
	}
}

// closeConnectionsNamed closes, from the broker side, every connection whose
// client-provided name is name, using rabbitmqctl.
func closeConnectionsNamed(t *testing.T, name string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v: %s", err, out)
	}
	closed := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `"`+name+`"`) {
			continue
		}
		pid := strings.Fields(line)[0]
		if o, err := exec.CommandContext(t.Context(), "rabbitmqctl", "close_connection", pid, "test kills the connection").CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl close_connection %s: %v: %s", pid, err, o)
		}
		closed++
	}
	if closed == 0 {
		t.Fatalf("no connection named %q in: %s", name, out)
	}
}

func TestAMQPConnectionKilledMidEntity(t *testing.T) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl is not installed: cannot close a connection from the broker side")
	}
	name := uniqueName(t, "conn")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := DialAMQP(ctx, AMQPOptions{URL: testenv.AMQPURL(), ConnectionName: name, ConfirmWindow: 32})
	if err != nil {
		t.Fatalf("DialAMQP: %v", err)
	}
	defer func() { _ = s.Close() }()
	exchange, queue := testTopology(t, s, false)
	const rows, bs = 3000, 10
	in, wantRows := genCSV(rows)
	var (
		mu        sync.Mutex
		confirmed []int64
		killed    bool
		kill      sync.WaitGroup
	)
	// The file trickles in, so the kill lands while batches are in flight.
	st, err := PublishEntity(ctx, &slowReader{r: strings.NewReader(in), n: 256, pause: 4 * time.Millisecond}, s, EntityOptions{
		Job: "j", RunID: "r", ExecutionID: "x", Entity: "E", Exchange: exchange, RoutingKey: "k",
		BatchSize: bs, Format: "csv",
		Progress: func(st EntityStats) {
			if st.Batches == 20 && !killed {
				killed = true
				kill.Go(func() { closeConnectionsNamed(t, name) })
			}
			if st.Batches == 40 {
				kill.Wait() // later batches go out after the kill for sure
			}
		},
		Confirmed: func(i, through int64) {
			mu.Lock()
			defer mu.Unlock()
			if through != min((i+1)*bs, rows) {
				t.Errorf("Confirmed(%d): want rows through %d, got %d", i, min((i+1)*bs, rows), through)
			}
			confirmed = append(confirmed, i)
		},
	})
	kill.Wait()
	if err != nil {
		t.Fatalf("PublishEntity across a killed connection: want no error, got %v", err)
	}
	if st.Batches != rows/bs || s.Reconnects() < 1 {
		t.Errorf("want %d batches and at least 1 reconnect, got %d batches, %d reconnects", rows/bs, st.Batches, s.Reconnects())
	}
	for i, b := range confirmed {
		if b != int64(i) {
			t.Fatalf("Confirmed calls: want 0..%d in order, got %v", rows/bs-1, confirmed)
		}
	}
	if len(confirmed) != rows/bs {
		t.Errorf("Confirmed calls: want %d, got %d", rows/bs, len(confirmed))
	}
	dels := drain(t, queue)
	seen := map[string]bool{}
	dups := 0
	for _, d := range dels {
		if seen[d.MessageId] {
			dups++
			if d.Headers[RepublishedHeader] != true {
				t.Errorf("duplicate of %s lacks header %s: true", d.MessageId, RepublishedHeader)
			}
		}
		seen[d.MessageId] = true
	}
	bodies := wantEveryRowOnce(t, dels, rows/bs, wantRows)
	t.Logf("%d messages, %d distinct, %d duplicates, %d reconnects", len(dels), len(bodies), dups, s.Reconnects())
}

// wantEveryRowOnce checks what a publisher that republished across cut
// connections delivered: batches distinct message IDs, the copies of one
// batch alike in their body, and every row of want (by its first column)
// in them. It returns the body of each batch, in order of first arrival.
func wantEveryRowOnce(t *testing.T, dels []amqp.Delivery, batches int, want [][]string) [][]byte {
	t.Helper()
	first := map[string][]byte{}
	var bodies [][]byte
	for _, d := range dels {
		if prev, seen := first[d.MessageId]; seen {
			if !bytes.Equal(prev, d.Body) {
				t.Errorf("copies of %s differ in their body", d.MessageId)
			}
			continue
		}
		first[d.MessageId] = d.Body
		bodies = append(bodies, d.Body)
	}
	if len(first) != batches {
		t.Fatalf("want %d distinct message IDs, got %d (of %d messages)", batches, len(first), len(dels))
	}
	_, got := rowsOf(t, bodies)
	gotSet := map[string]bool{}
	for _, r := range got {
		gotSet[r[0]] = true
	}
	for _, r := range want {
		if !gotSet[r[0]] {
			t.Fatalf("row %s never arrived", r[0])
		}
	}
	return bodies
}

func TestAMQPCompressionRoundTrip(t *testing.T) {
	s := dialTest(t)
	in, wantRows := genCSV(25)
	for _, c := range []string{"", "none", "gzip", "zstd"} {
		t.Run("compression "+c, func(t *testing.T) {
			exchange, queue := testTopology(t, s, false)
			st, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
				ExecutionID: "x", Entity: "E", Exchange: exchange, RoutingKey: "k", BatchSize: 10, Format: "csv", Compression: c,
			})
			if err != nil {
				t.Fatalf("PublishEntity: want no error, got %v", err)
			}
			dels := consume(t, queue, 3)
			var bodies [][]byte
			var out int64
			for _, d := range dels {
				want := c
				if c == "none" {
					want = ""
				}
				if d.ContentEncoding != want {
					t.Errorf("content_encoding: want %q, got %q", want, d.ContentEncoding)
				}
				out += int64(len(d.Body))
				bodies = append(bodies, decompress(t, d.ContentEncoding, d.Body))
			}
			if out != st.BytesOut {
				t.Errorf("BytesOut: want the %d bytes sent, got %d", out, st.BytesOut)
			}
			_, got := rowsOf(t, bodies)
			if !reflect.DeepEqual(got, wantRows) {
				t.Errorf("rows after decompression: want %q, got %q", wantRows, got)
			}
		})
	}
	if _, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{Format: "csv", Compression: "brotli"}); err == nil || !strings.Contains(err.Error(), `compression "brotli" is not supported`) {
		t.Errorf("unknown compression: want a clear error, got %v", err)
	}
}

func decompress(t testing.TB, encoding string, b []byte) []byte {
	t.Helper()
	switch encoding {
	case "":
		return b
	case "gzip":
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		return out
	case "zstd":
		d, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		out, err := d.DecodeAll(b, nil)
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		return out
	}
	t.Fatalf("unknown content encoding %q", encoding)
	return nil
}

func TestAMQPBlockedConnectionPauses(t *testing.T) {
	s := dialTest(t)
	exchange, queue := testTopology(t, s, false)
	s.mu.Lock()
	blocked := s.blocked
	s.mu.Unlock()
	blocked <- amqp.Blocking{Active: true, Reason: "test alarm"}
	done := make(chan error, 1)
	go func() {
		done <- s.Publish(context.Background(), Message{Exchange: exchange, RoutingKey: "k", MessageID: "m", Body: []byte("{}")})
	}()
	select {
	case err := <-done:
		t.Fatalf("Publish while blocked: want it to wait, it returned %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	blocked <- amqp.Blocking{Active: false}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Publish after unblock: want no error, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish still waiting after the broker unblocked")
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	consume(t, queue, 1)

	// A context ending while blocked ends the wait with a clear error.
	blocked <- amqp.Blocking{Active: true}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Publish(ctx, Message{Exchange: exchange, RoutingKey: "k", MessageID: "m2", Body: []byte("{}")})
	if err == nil || !strings.Contains(err.Error(), "unblock") {
		t.Errorf("Publish with an expiring context while blocked: want an unblock error, got %v", err)
	}
	blocked <- amqp.Blocking{Active: false}
}

func TestPermanentChannelErrors(t *testing.T) {
	tests := []struct {
		name string
		e    *amqp.Error
		want bool
	}{
		{"unknown", nil, false},
		{"connection forced", &amqp.Error{Code: amqp.ConnectionForced}, false},
		{"not found", &amqp.Error{Code: amqp.NotFound}, true},
		{"oversize message", &amqp.Error{Code: amqp.PreconditionFailed, Reason: "message size 2097152 is larger than configured max size 1048576"}, true},
		{"access refused", &amqp.Error{Code: amqp.AccessRefused}, true},
		{"internal error", &amqp.Error{Code: amqp.InternalError}, false},
	}
	for _, tt := range tests {
		if got := permanent(tt.e); got != tt.want {
			t.Errorf("%s: permanent(%v): want %v, got %v", tt.name, tt.e, tt.want, got)
		}
	}
}

func TestResumeFrom(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	const bs = 3
	// Rows of genCSV encode to about 70 bytes: a budget of 150 makes
	// batches of two rows, shorter than bs, so by-row arithmetic would
	// resume at the wrong row.
	for _, budget := range []int{NoBatchByteLimit, 150, DefaultMaxBatchBytes} {
		for _, rows := range []int{0, 1, bs, bs + 1, 2*bs + 1} {
			in, _ := genCSV(rows)
			full := &memSink{}
			through := []int64{0} // rows through the batch before each index
			o := EntityOptions{ExecutionID: "x", Entity: "E", BatchSize: bs, MaxBatchBytes: budget, Format: "csv", Clock: clock,
				Confirmed: func(_, r int64) { through = append(through, r) }}
			if _, err := PublishEntity(context.Background(), strings.NewReader(in), full, o); err != nil {
				t.Fatalf("%d rows, full run: %v", rows, err)
			}
			total := len(full.msgs)
			for from := 0; from <= total+1; from++ {
				t.Run(fmt.Sprintf("budget %d, %d rows from batch %d", budget, rows, from), func(t *testing.T) {
					sink := &memSink{}
					o := o
					o.ResumeFrom = int64(from)
					if budget != NoBatchByteLimit {
						o.ResumeRows = int64(rows + 1) // past the end: the file changed
						if from <= total {
							o.ResumeRows = through[from]
						}
					}
					var confirmed []int64
					o.Confirmed = func(i, _ int64) { confirmed = append(confirmed, i) }
					st, err := PublishEntity(context.Background(), strings.NewReader(in), sink, o)
					if from > total {
						if err == nil || !strings.Contains(err.Error(), "changed since the checkpoint") {
							t.Fatalf("want a checkpoint mismatch error, got %v", err)
						}
						return
					}
					if err != nil {
						t.Fatalf("want no error, got %v", err)
					}
					if len(sink.msgs) != total-from {
						t.Fatalf("want the %d missing batches, got %d", total-from, len(sink.msgs))
					}
					for i, m := range sink.msgs {
						w := full.msgs[from+i]
						if m.MessageID != w.MessageID || !bytes.Equal(m.Body, w.Body) || fmt.Sprint(m.Headers) != fmt.Sprint(w.Headers) {
							t.Errorf("batch %d: want the full run's message %s, got %s: %s", from+i, w.MessageID, m.MessageID, m.Body)
						}
						if confirmed[i] != int64(from+i) {
							t.Errorf("Confirmed: want batch %d, got %d", from+i, confirmed[i])
						}
					}
					if len(confirmed) != total-from {
						t.Errorf("Confirmed: want %d calls, got %v", total-from, confirmed)
					}
					if wantSkipped := through[from]; st.SkippedRows != wantSkipped || st.Rows+st.SkippedRows != int64(rows) {
						t.Errorf("stats: want %d skipped and %d in all, got %+v", wantSkipped, rows, st)
					}
				})
			}
		}
	}
}

func TestConfirmedWithFileSink(t *testing.T) {
	sink, err := NewFileSink(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sink.Close() }()
	in, _ := genCSV(7)
	var got [][2]int64
	_, err = PublishEntity(context.Background(), strings.NewReader(in), sink, EntityOptions{
		ExecutionID: "x", Entity: "E", BatchSize: 3, Format: "csv",
		Confirmed: func(i, through int64) { got = append(got, [2]int64{i, through}) },
	})
	if err != nil {
		t.Fatalf("PublishEntity: %v", err)
	}
	if want := [][2]int64{{0, 3}, {1, 6}, {2, 7}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Confirmed calls: want %v, got %v", want, got)
	}
}

// slowReader returns at most n bytes per Read, pausing before each.
type slowReader struct {
	r     io.Reader
	n     int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause) // real time, so the broker's confirms and the test's cuts of its connection land between reads
	return s.r.Read(p[:min(len(p), s.n)])
}

// TestAMQPRepublishUnconfirmed cuts the connection's socket right after
// publishing, before the confirms can arrive: the sink must reconnect and
// publish the unconfirmed messages again, marked, with the same IDs. The
// broker may confirm all of them before the cut (the test's goroutine
// can be descheduled between the last publish and the cut); such an
// attempt does not reach the path under test and is repeated, up to 10.
func TestAMQPRepublishUnconfirmed(t *testing.T) {
	ctx := context.Background()
	const n = 50
	for attempt := 1; ; attempt++ {
		s, err := DialAMQP(ctx, AMQPOptions{URL: testenv.AMQPURL(), ConfirmWindow: 100})
		if err != nil {
			t.Fatalf("DialAMQP: %v", err)
		}
		exchange, queue := testTopology(t, s, false)
		var stored []string
		for i := range n {
			id := fmt.Sprintf("m%02d", i)
			if err := s.Publish(ctx, Message{Exchange: exchange, RoutingKey: "k", MessageID: id, Body: []byte(`{"i":` + fmt.Sprint(i) + `}`),
				OnStored: func() { stored = append(stored, id) }}); err != nil {
				t.Fatalf("Publish %s: %v", id, err)
			}
		}
		s.mu.Lock()
		outstanding := 0
		for _, p := range s.pending {
			select {
			case <-p.dc.Done():
			default:
				outstanding++
			}
		}
		_ = s.sock.Close() // the socket goes while confirms are outstanding
		s.mu.Unlock()
		if outstanding == 0 && attempt < 10 {
			_ = s.Close()
			continue
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush after the connection dropped: want the sink to reconnect, got %v", err)
		}
		if s.Reconnects() != 1 {
			t.Errorf("want 1 reconnect, got %d (%d confirms outstanding at the cut, attempt %d)", s.Reconnects(), outstanding, attempt)
		}
		if len(stored) != n || stored[0] != "m00" || stored[n-1] != fmt.Sprintf("m%02d", n-1) {
			t.Errorf("OnStored: want %d calls in order, got %v", n, stored)
		}
		_ = s.Close()
		seen := map[string]int{}
		republished := 0
		for _, d := range drain(t, queue) {
			seen[d.MessageId]++
			if d.Headers[RepublishedHeader] == true {
				republished++
			}
			if seen[d.MessageId] > 1 && d.Headers[RepublishedHeader] != true {
				t.Errorf("second copy of %s is not marked %s", d.MessageId, RepublishedHeader)
			}
		}
		if len(seen) != n {
			t.Errorf("want all %d message IDs in the queue, got %d", n, len(seen))
		}
		t.Logf("attempt %d: %d confirms outstanding at the cut, %d republished", attempt, outstanding, republished)
		return
	}
}

func TestConfirmTrackerNeverSkipsAFailedBatch(t *testing.T) {
	var got []int64
	c := confirmTracker{fn: func(i, _ int64) { got = append(got, i) }}
	for i := int64(0); i < 4; i++ {
		c.add(batchMark{index: i, rowsThrough: 10 * (i + 1)})
	}
	c.stored(0)
	c.stored(2) // batch 1 failed: 2 must wait
	c.stored(3)
	if want := []int64{0}; !reflect.DeepEqual(got, want) {
		t.Fatalf("with batch 1 unstored: want reports %v, got %v", want, got)
	}
	c.stored(1)
	if want := []int64{0, 1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after batch 1 stored: want reports %v, got %v", want, got)
	}
}
