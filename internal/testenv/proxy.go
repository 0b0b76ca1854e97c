package testenv

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a service (the broker), so a test can
// cut, refuse, freeze or slow a client's connection without touching the
// service, which other tests share.
//
// Bytes are forwarded in chunks of up to 16 KiB, each direction on its own;
// SetDelay's pause applies to each chunk.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn    // both ends of every forwarded connection
	down   bool          // close new connections at once, as a stopped service would
	delay  time.Duration // pause before forwarding each chunk: a slow link
	frozen bool          // forward nothing, as a blocked service would
	thaw   chan struct{} // closed by Unfreeze
}

// proxyChunk is the most one forwarding step reads and writes.
const proxyChunk = 16 << 10

// StartProxy listens on a free loopback port and forwards every connection
// to target (host:port). When the test ends it stops listening, unfreezes
// and resets every connection.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, thaw: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Unfreeze()
		p.Cut(true)
	})
	return p
}

// Addr is the host:port clients dial instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		b, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		go p.pipe(b, c)
		go p.pipe(c, b)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, proxyChunk)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			frozen, thaw, delay := p.frozen, p.thaw, p.delay
			p.mu.Unlock()
			if frozen {
				<-thaw
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				_ = src.Close()
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

// Cut closes every forwarded connection and returns how many client
// connections it cut. With reset each end is closed with a TCP RST (the
// client's next write fails at once), else with an orderly FIN.
func (p *Proxy) Cut(reset bool) int {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	return len(conns) / 2
}

// SetDown makes the target unreachable through the proxy, as if it had
// stopped (every connection reset, new ones closed at once), or reachable
// again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut(true)
	}
}

// SetDelay pauses d before forwarding each chunk, in both directions, as
// on a slow link; 0 forwards at once.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Freeze stops forwarding bytes in both directions while keeping the
// connections open: the client's writes fill the socket buffers and no
// answer ever comes, as with a blocked broker.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

// Unfreeze forwards again what Freeze held back, and what comes after.
func (p *Proxy) Unfreeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thaw)
		p.thaw = make(chan struct{})
	}
}
