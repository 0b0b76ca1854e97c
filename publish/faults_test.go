package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// startProxy puts a testenv.Proxy between the test and the shared broker,
// so a test can cut or freeze the sink's connection without touching the
// broker, and returns it with the broker's URL through it.
func startProxy(t *testing.T) (*testenv.Proxy, string) {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("parse broker URL: %v", err)
	}
	p := testenv.StartProxy(t, u.Host)
	u.Host = p.Addr()
	return p, u.String()
}

// TestAMQPConnectionCutAtRandomPoints drops the sink's connection many times
// at random moments of an entity, with FIN or RST: whatever the publish or
// the wait for confirms sees (a write error, EOF, a closed channel), the
// sink must reconnect and every row must arrive, any duplicate carrying the
// same message ID and body as its first copy.
func TestAMQPConnectionCutAtRandomPoints(t *testing.T) {
	proxy, brokerURL := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := DialAMQP(ctx, AMQPOptions{URL: brokerURL, ConfirmWindow: 32, ConnectionName: "dmfexport-test/" + t.Name()})
	if err != nil {
		t.Fatalf("DialAMQP through the proxy: %v", err)
	}
	defer func() { _ = s.Close() }()
	exchange, queue := testTopology(t, s, false)
	const rows, bs, cuts = 20000, 10, 25
	in, wantRows := genCSV(rows)

	// Cut after randomly chosen batches, a random moment later, so the
	// drop lands in a write, between writes or while confirms are awaited.
	cutAt := map[int64]bool{}
	for len(cutAt) < cuts {
		cutAt[1+rand.Int64N(rows/bs-1)] = true
	}
	var (
		cutter sync.WaitGroup
		cutMu  sync.Mutex
		cut    int
	)
	var confirmed int64
	st, err := PublishEntity(ctx, &slowReader{r: strings.NewReader(in), n: 4096, pause: time.Millisecond}, s, EntityOptions{
		Job: "j", RunID: "r", ExecutionID: "x", Entity: "E", Exchange: exchange, RoutingKey: "k",
		BatchSize: bs, Format: "csv",
		Progress: func(st EntityStats) {
			if !cutAt[st.Batches] {
				return
			}
			cutter.Go(func() {
				time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond) // the real connection is cut at a random moment of its traffic
				if n := proxy.Cut(rand.IntN(2) == 0); n > 0 {
					cutMu.Lock()
					cut++
					cutMu.Unlock()
				}
			})
		},
		Confirmed: func(i, through int64) { confirmed = through },
	})
	cutter.Wait()
	if cut < cuts/2 {
		t.Errorf("want at least %d connections cut, got %d", cuts/2, cut)
	}
	if err != nil {
		t.Fatalf("PublishEntity across %d cut connections: want no error, got %v", cut, err)
	}
	if st.Rows != rows || confirmed != rows {
		t.Errorf("want %d rows published and confirmed, got %d published, %d confirmed", rows, st.Rows, confirmed)
	}
	dels := drain(t, queue)
	// Copies of one batch carry the same body, and all but one (the
	// original, which the broker may queue after a republished copy when
	// it still held frames of the cut connection) the republished header.
	originals := map[string]int{}
	for _, d := range dels {
		if d.Headers[RepublishedHeader] != true {
			if originals[d.MessageId]++; originals[d.MessageId] > 1 {
				t.Errorf("%s: %d copies without header %s, want at most the original", d.MessageId, originals[d.MessageId], RepublishedHeader)
			}
		}
	}
	wantEveryRowOnce(t, dels, rows/bs, wantRows)
	t.Logf("%d cuts, %d reconnects, %d messages for %d batches", cut, s.Reconnects(), len(dels), rows/bs)
}

// TestAMQPStopWhileBrokerFrozen checks that a stop is honoured promptly when
// the broker no longer reads or answers (as when it blocks the connection on
// a memory or disk alarm): a Publish stuck writing returns once its context
// ends, and Close returns within its bounded wait instead of waiting for a
// close-ok that never comes (at once when the block was announced).
func TestAMQPStopWhileBrokerFrozen(t *testing.T) {
	tests := []struct {
		name      string
		stuck     bool // a Publish is stuck in a write when the stop comes
		announced bool // the broker sent connection.blocked first
		maxClose  time.Duration
	}{
		{name: "publish stuck in a write", stuck: true, maxClose: closeTimeout + 2*closeGrace + 2*time.Second},
		{name: "idle connection, no close-ok", maxClose: closeTimeout + 2*closeGrace + 2*time.Second},
		{name: "blocked connection announced", announced: true, maxClose: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy, brokerURL := startProxy(t)
			s, err := DialAMQP(context.Background(), AMQPOptions{URL: brokerURL, ConfirmWindow: 1 << 20, MaxUnconfirmedBytes: 1 << 30})
			if err != nil {
				t.Fatalf("DialAMQP through the proxy: %v", err)
			}
			exchange, _ := testTopology(t, s, false)
			proxy.Freeze()
			if tt.announced {
				s.mu.Lock()
				blocked := s.blocked
				s.mu.Unlock()
				blocked <- amqp.Blocking{Active: true, Reason: "test alarm"}
			}
			if tt.stuck {
				ctx, cancel := context.WithCancel(context.Background())
				published := make(chan error, 1)
				go func() {
					body := bytes.Repeat([]byte("x"), 1<<20)
					for i := 0; ; i++ { // until the socket buffers are full and a write blocks
						if err := s.Publish(ctx, Message{Exchange: exchange, RoutingKey: "k", MessageID: fmt.Sprint("m", i), Body: body}); err != nil {
							published <- err
							return
						}
					}
				}()
				time.Sleep(500 * time.Millisecond) // the real socket's buffers fill until a write blocks
				cancel()
				select {
				case err := <-published:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Publish stuck in a write, then stopped: want context.Canceled, got %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Publish still stuck in a write 5 s after its context ended")
				}
			}
			start := time.Now()
			closed := make(chan struct{})
			go func() {
				_ = s.Close() // may fail against a broker that does not answer: its timing is the test
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(tt.maxClose):
				t.Fatalf("Close still waiting after %s for a broker that does not answer", time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

// TestAMQPBlockedLoggedWhileWaitingForConfirms checks that a broker alarm
// reported while the sink waits for confirms is logged when it starts.
func TestAMQPBlockedLoggedWhileWaitingForConfirms(t *testing.T) {
	proxy, brokerURL := startProxy(t)
	var logs testenv.SyncBuffer
	s, err := DialAMQP(context.Background(), AMQPOptions{URL: brokerURL, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("DialAMQP through the proxy: %v", err)
	}
	defer func() { _ = s.Close() }()
	exchange, _ := testTopology(t, s, false)
	proxy.Freeze() // the confirm cannot come back
	if err := s.Publish(context.Background(), Message{Exchange: exchange, RoutingKey: "k", MessageID: "m", Body: []byte("{}")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	s.mu.Lock()
	blocked := s.blocked
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	flushed := make(chan error, 1)
	go func() { flushed <- s.Flush(ctx) }()
	time.Sleep(100 * time.Millisecond) // Flush is waiting on the real broker's confirms when the alarm comes
	blocked <- amqp.Blocking{Active: true, Reason: "disk alarm"}
	err = <-flushed
	if err == nil {
		t.Fatal("Flush with no confirm coming: want the context's error, got nil")
	}
	if !strings.Contains(logs.String(), "broker blocked publishing") || !strings.Contains(logs.String(), "disk alarm") {
		t.Errorf("want the blocked connection logged with its reason while waiting for confirms, got logs:\n%s", logs.String())
	}
	proxy.Unfreeze()
}

var _ io.Writer = (*testenv.SyncBuffer)(nil)

// TestAMQPReconnectTimeoutIsWaitedInFull cuts the broker for good, or for
// a while just short of broker.reconnect_timeout: the sink keeps trying for
// the whole timeout (it once gave up at 6.2 s of 10 s, a backoff step
// early), so a broker back before the timeout is used, and one that is not
// fails with ErrBrokerUnavailable no sooner than the timeout. A broker
// back for one second of a flapping link, between two attempts of a
// backoff doubling to seconds (at 1.4 s and 3.0 s), is met too: attempts
// are at most a tenth of the timeout apart.
func TestAMQPReconnectTimeoutIsWaitedInFull(t *testing.T) {
	const timeout = 4 * time.Second
	type change struct {
		after time.Duration
		down  bool
	}
	tests := []struct {
		name    string
		changes []change // the broker's ups and downs after the cut; none: never back
	}{
		{"broker back just before the timeout", []change{{3500 * time.Millisecond, false}}},
		{"broker back from 1.6 s to 2.6 s, then from 4.5 s", []change{{1600 * time.Millisecond, false}, {2600 * time.Millisecond, true}, {4500 * time.Millisecond, false}}},
		{"broker never back", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy, brokerURL := startProxy(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := DialAMQP(ctx, AMQPOptions{URL: brokerURL, ReconnectTimeout: timeout, ConnectionName: "dmfexport-test/" + t.Name()})
			if err != nil {
				t.Fatalf("DialAMQP through the proxy: %v", err)
			}
			defer func() { _ = s.Close() }()
			exchange, _ := testTopology(t, s, false)
			proxy.SetDown(true)
			start := time.Now()
			for _, c := range tt.changes {
				timer := time.AfterFunc(c.after, func() { proxy.SetDown(c.down) })
				defer timer.Stop()
			}
			err = s.Publish(ctx, Message{Exchange: exchange, RoutingKey: "k", MessageID: "m1", Body: []byte(`{}`)})
			if err == nil {
				err = s.Flush(ctx)
			}
			took := time.Since(start)
			back := len(tt.changes) > 0
			switch {
			case back && err != nil:
				t.Errorf("%s, of a %s reconnect timeout: want the message published, got %v after %s", tt.name, timeout, err, took)
			case !back && !errors.Is(err, ErrBrokerUnavailable):
				t.Errorf("broker gone for good: want ErrBrokerUnavailable, got %v", err)
			case !back && (took < timeout || took > timeout+minConnectTime+time.Second):
				t.Errorf("broker gone for good: want the sink to give up after the %s reconnect timeout, it gave up after %s", timeout, took)
			}
		})
	}
}
