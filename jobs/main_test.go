package jobs

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine started by them is
// still running after the last test. A keep-alive connection idle in an
// HTTP transport's pool (azcore's shared client, a test's client) is not
// one: the pool closes it after its idle timeout, which a run of the
// package shorter than that timeout does not reach.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"))
}
