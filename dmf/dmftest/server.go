package dmftest

import "net/http/httptest"

// Server is a Simulator listening on a random loopback port, like
// httptest.Server. URL is its base, e.g. "http://127.0.0.1:41234": use it as
// the F&O environment URL. The package URLs it hands out point at the same
// server.
type Server struct {
	URL string // base URL of the server, without a trailing slash
	*Simulator
	srv *httptest.Server
}

// NewServer starts a Simulator for opts on 127.0.0.1 and a random port. The
// caller must Close it.
func NewServer(opts Options) *Server {
	sim := New(opts)
	srv := httptest.NewServer(sim)
	sim.SetBaseURL(srv.URL)
	return &Server{URL: srv.URL, Simulator: sim, srv: srv}
}

// Close shuts the server down, blocking until every request in flight has
// finished.
func (s *Server) Close() {
	s.srv.Close()
}
