package jobs

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// The tests' F&O is dmftest's simulator (or a handler standing for F&O)
// served over an in-memory network: the HTTP clients a Runner makes reach
// it through net.Pipe, with no socket. So a run can go in a
// testing/synctest bubble, where every wait — of the run, of the F&O
// client and of the simulator — passes on the bubble's clock at once, and
// a test of what F&O does over minutes takes milliseconds.

// simServer is a simulator on the in-memory network.
type simServer struct {
	*dmftest.Simulator
	URL string // http://127.0.0.1:<port>
	srv *httptest.Server
}

// Close shuts the simulator down, with every connection to it.
func (s *simServer) Close() { s.srv.Close() }

// newSim starts a simulator for opts on the in-memory network. It may be
// called inside a synctest bubble, and must then be closed there.
func newSim(opts dmftest.Options) *simServer {
	sim := dmftest.New(opts)
	srv := serveInMemory(sim)
	sim.SetBaseURL(srv.URL)
	return &simServer{Simulator: sim, URL: srv.URL, srv: srv}
}

// serveInMemory starts an HTTP server of h on the in-memory network.
func serveInMemory(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = memListen()
	srv.Start()
	return srv
}

// memNet is the in-memory network: loopback addresses on ports no test
// binds, each served by a memListener.
var memNet struct {
	mu        sync.Mutex
	next      int
	listeners map[string]*memListener
}

func init() {
	// Every Runner's client is a clone of the default transport: through
	// it, an address of the in-memory network is dialled in memory, any
	// other over the real network.
	tr := http.DefaultTransport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		memNet.mu.Lock()
		l := memNet.listeners[addr]
		memNet.mu.Unlock()
		if l == nil {
			return dial(ctx, network, addr)
		}
		return l.dial(ctx)
	}
}

// memListen returns a listener on a new address of the in-memory network.
func memListen() *memListener {
	memNet.mu.Lock()
	defer memNet.mu.Unlock()
	if memNet.listeners == nil {
		memNet.listeners = map[string]*memListener{}
	}
	memNet.next++
	l := &memListener{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 60000 + memNet.next},
		conns: make(chan net.Conn), closed: make(chan struct{})}
	memNet.listeners[l.addr.String()] = l
	return l
}

// memListener accepts the connections dialled to its address.
type memListener struct {
	addr   *net.TCPAddr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		memNet.mu.Lock()
		delete(memNet.listeners, l.addr.String())
		memNet.mu.Unlock()
		close(l.closed)
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

// dial connects to the listener, as a refused connection once it is
// closed.
func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, fmt.Errorf("dial %s: %w", l.addr, syscall.ECONNREFUSED)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// bubble runs f in a synctest bubble, for a test whose F&O is on the
// in-memory network. Before the bubble ends it lets the F&O clients' pace
// tickers, which stop at their first tick with no poll waiting, see that
// none waits.
func bubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		f(t)
		time.Sleep(dmf.DefaultPollTick) // on the bubble's clock: no real wait
	})
}

// quick is opts with F&O answering at once where opts leaves it to the
// simulator's defaults: no register window, the package URL and the
// package there at the first ask. It is for tests of what comes after
// F&O that run on real time (a real broker, a skewed clock): what F&O
// does on its own time is tested in bubbles.
func quick(opts dmftest.Options) dmftest.Options {
	for _, d := range []*time.Duration{&opts.RegisterDelay, &opts.PackageDelay} {
		if *d == 0 {
			*d = -1
		}
	}
	if opts.EmptyURLAsks == 0 {
		opts.EmptyURLAsks = -1
	}
	return opts
}
