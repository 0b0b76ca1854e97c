package publish

import (
	"github.com/dmfexport/dmfexport/internal/testenv"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// tcpProxy forwards TCP connections to the test broker, so a test can cut
// or freeze the sink's connection without touching the shared broker.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn // both ends of every forwarded connection
	frozen bool       // stop forwarding bytes, as a blocked broker would
	down   bool       // close new connections at once, as a stopped broker would
	thaw   chan struct{}
}

func startProxy(t *testing.T) *tcpProxy {
	t.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("parse broker URL: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &tcpProxy{ln: ln, target: u.Host, thaw: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.unfreeze()
		p.cut(false)
	})
	return p
}

// url is the test broker's URL with the proxy's address.
func (p *tcpProxy) url(t *testing.T) string {
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("parse broker URL: %v", err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		go p.pipe(b, c)
		go p.pipe(c, b)
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			frozen, thaw := p.frozen, p.thaw
			p.mu.Unlock()
			if frozen {
				<-thaw
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// cut closes every forwarded connection; with reset, with a TCP RST (so
// the sink's next write fails) rather than an orderly FIN.
func (p *tcpProxy) cut(reset bool) int {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	return len(conns) / 2
}

// setDown makes the broker unreachable through the proxy (every connection
// cut, new ones closed at once) or reachable again.
func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut(true)
	}
}

// freeze stops forwarding bytes in both directions while keeping the
// connections open: the sink's writes fill the socket buffers and no
// answer (close-ok, confirm) ever comes, as with a blocked broker.
func (p *tcpProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

func (p *tcpProxy) unfreeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thaw)
		p.thaw = make(chan struct{})
	}
}

// TestAMQPConnectionCutAtRandomPoints drops the sink's connection many times
// at random moments of an entity, with FIN or RST: whatever the publish or
// the wait for confirms sees (a write error, EOF, a closed channel), the
// sink must reconnect and every row must arrive, any duplicate carrying the
// same message ID and body as its first copy.
func TestAMQPConnectionCutAtRandomPoints(t *testing.T) {
	proxy := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := DialAMQP(ctx, AMQPOptions{URL: proxy.url(t), ConfirmWindow: 32, ConnectionName: "dmfexport-test/" + t.Name()})
	if err != nil {
		t.Fatalf("DialAMQP through the proxy: %v", err)
	}
	defer s.Close()
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
				time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
				if n := proxy.cut(rand.IntN(2) == 0); n > 0 {
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
	first := map[string][]byte{}
	originals := map[string]int{}
	var bodies [][]byte
	for _, d := range dels {
		if d.Headers[RepublishedHeader] != true {
			if originals[d.MessageId]++; originals[d.MessageId] > 1 {
				t.Errorf("%s: %d copies without header %s, want at most the original", d.MessageId, originals[d.MessageId], RepublishedHeader)
			}
		}
		if prev, seen := first[d.MessageId]; seen {
			if !bytes.Equal(prev, d.Body) {
				t.Errorf("copies of %s differ in their body", d.MessageId)
			}
			continue
		}
		first[d.MessageId] = d.Body
		bodies = append(bodies, d.Body)
	}
	if len(first) != rows/bs {
		t.Fatalf("want %d distinct message IDs, got %d (of %d messages)", rows/bs, len(first), len(dels))
	}
	_, got := rowsOf(t, bodies)
	gotSet := map[string]bool{}
	for _, r := range got {
		gotSet[r[0]] = true
	}
	for _, r := range wantRows {
		if !gotSet[r[0]] {
			t.Fatalf("row %s never arrived", r[0])
		}
	}
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
			proxy := startProxy(t)
			s, err := DialAMQP(context.Background(), AMQPOptions{URL: proxy.url(t), ConfirmWindow: 1 << 20, MaxUnconfirmedBytes: 1 << 30})
			if err != nil {
				t.Fatalf("DialAMQP through the proxy: %v", err)
			}
			exchange, _ := testTopology(t, s, false)
			proxy.freeze()
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
				time.Sleep(500 * time.Millisecond)
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
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
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
	proxy := startProxy(t)
	var logs syncBuffer
	s, err := DialAMQP(context.Background(), AMQPOptions{URL: proxy.url(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("DialAMQP through the proxy: %v", err)
	}
	defer s.Close()
	exchange, _ := testTopology(t, s, false)
	proxy.freeze() // the confirm cannot come back
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
	time.Sleep(100 * time.Millisecond)
	blocked <- amqp.Blocking{Active: true, Reason: "disk alarm"}
	err = <-flushed
	if err == nil {
		t.Fatal("Flush with no confirm coming: want the context's error, got nil")
	}
	if !strings.Contains(logs.String(), "broker blocked publishing") || !strings.Contains(logs.String(), "disk alarm") {
		t.Errorf("want the blocked connection logged with its reason while waiting for confirms, got logs:\n%s", logs.String())
	}
	proxy.unfreeze()
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// TestAMQPReconnectTimeoutIsWaitedInFull cuts the broker for good, or for
// a while just short of broker.reconnect_timeout: the sink keeps trying for
// the whole timeout (it once gave up at 6.2 s of 10 s, a backoff step
// early), so a broker back before the timeout is used, and one that is not
// fails with ErrBrokerUnavailable no sooner than the timeout.
func TestAMQPReconnectTimeoutIsWaitedInFull(t *testing.T) {
	const timeout = 4 * time.Second
	tests := []struct {
		name   string
		downBy time.Duration // 0: never back
	}{
		{"broker back just before the timeout", 3500 * time.Millisecond},
		{"broker never back", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy := startProxy(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := DialAMQP(ctx, AMQPOptions{URL: proxy.url(t), ReconnectTimeout: timeout, ConnectionName: "dmfexport-test/" + t.Name()})
			if err != nil {
				t.Fatalf("DialAMQP through the proxy: %v", err)
			}
			defer s.Close()
			exchange, _ := testTopology(t, s, false)
			proxy.setDown(true)
			start := time.Now()
			if tt.downBy > 0 {
				time.AfterFunc(tt.downBy, func() { proxy.setDown(false) })
			}
			err = s.Publish(ctx, Message{Exchange: exchange, RoutingKey: "k", MessageID: "m1", Body: []byte(`{}`)})
			if err == nil {
				err = s.Flush(ctx)
			}
			took := time.Since(start)
			switch {
			case tt.downBy > 0 && err != nil:
				t.Errorf("broker back after %s of a %s reconnect timeout: want the message published, got %v after %s", tt.downBy, timeout, err, took)
			case tt.downBy == 0 && !errors.Is(err, ErrBrokerUnavailable):
				t.Errorf("broker gone for good: want ErrBrokerUnavailable, got %v", err)
			case tt.downBy == 0 && (took < timeout || took > timeout+minConnectTime+time.Second):
				t.Errorf("broker gone for good: want the sink to give up after the %s reconnect timeout, it gave up after %s", timeout, took)
			}
		})
	}
}
