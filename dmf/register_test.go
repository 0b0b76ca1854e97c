package dmf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dmfexport/dmfexport/azauth"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run the client against F&O as real environments answer
// (dmf-api.md): a new execution is first unknown to GetExecutionSummaryStatus
// (HTTP 400 "Execution details were not found", then Unknown) for minutes.
// They run in a synctest bubble with an in-memory transport, so windows of
// the real size (10 minutes) pass on the fake clock in no time.

// memFO answers the F&O actions in memory. Its handler sees the action, the
// request body and how long ago (fake time) the script started.
type memFO struct {
	t      *testing.T
	start  time.Time
	mu     sync.Mutex
	calls  map[string][]time.Duration // when each call of an action came
	handle func(action, body string, at time.Duration) (status int, answer string, err error)
}

func newMemFO(t *testing.T, handle func(action, body string, at time.Duration) (int, string, error)) *memFO {
	return &memFO{t: t, start: time.Now(), calls: map[string][]time.Duration{}, handle: handle}
}

func (m *memFO) RoundTrip(req *http.Request) (*http.Response, error) {
	const prefix = "/namespaces/AXSF" + actionPathTemplate
	action, ok := strings.CutPrefix(req.URL.Path, prefix)
	if !ok {
		m.t.Errorf("request to %s, want a path under %s", req.URL.Path, prefix)
	}
	body, _ := io.ReadAll(req.Body)
	at := time.Since(m.start)
	m.mu.Lock()
	m.calls[action] = append(m.calls[action], at)
	m.mu.Unlock()
	status, answer, err := m.handle(action, string(body), at)
	if err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	rec.WriteHeader(status)
	io.WriteString(rec, answer)
	return rec.Result(), nil
}

// times returns when each call of action came, from the script's start.
func (m *memFO) times(action string) []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.calls[action]...)
}

// memClient is a client of an on-premises style URL (with a path) over m.
func memClient(t *testing.T, m *memFO, o ClientOptions) *Client {
	t.Helper()
	o.HTTPClient = &http.Client{Transport: m}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := NewClient("https://ax.contoso.com/namespaces/AXSF", azauth.StaticToken(testToken), &o)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func value(v string) string {
	b, _ := json.Marshal(map[string]any{"@odata.context": "https://ax.contoso.com/data/$metadata#Edm.String", "value": v})
	return string(b)
}

// notFound is F&O's answer about an execution it has not registered yet.
func notFound(id string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": "", "message": "An error has occurred.",
		"innererror": map[string]any{"message": "Execution details were not found for execution id " + id,
			"type": "System.Exception", "stacktrace": "   at Dynamics.AX.Application.DMFDataPackager..."}}})
	return string(b)
}

// registering answers the status of a new execution as F&O does: 400 "not
// found" until notFoundFor, Unknown until unknownUntil, NotRun for a
// minute, Executing for two, then Succeeded.
func registering(id string, notFoundFor, unknownUntil time.Duration, since func() time.Duration) (int, string) {
	at := since()
	switch {
	case at < notFoundFor:
		return 400, notFound(id)
	case at < unknownUntil:
		return 200, value("Unknown")
	case at < unknownUntil+time.Minute:
		return 200, value("NotRun")
	case at < unknownUntil+3*time.Minute:
		return 200, value("Executing")
	}
	return 200, value("Succeeded")
}

func TestPollStatusWaitsForRegistration(t *testing.T) {
	tests := []struct {
		name        string
		notFoundFor time.Duration
		unknownTill time.Duration
		window      time.Duration // 0: the default
		want        Status
		wantErr     error
		minWait     time.Duration // PollStatus returns no sooner
	}{
		{name: "400 then Unknown then running, within the default window", notFoundFor: 90 * time.Second, unknownTill: 4 * time.Minute,
			want: StatusSucceeded},
		{name: "400 for nine minutes", notFoundFor: 9 * time.Minute, unknownTill: 9 * time.Minute, want: StatusSucceeded},
		{name: "400 beyond the default window", notFoundFor: time.Hour, unknownTill: time.Hour,
			want: StatusUnknown, wantErr: ErrNotRegistered, minWait: DefaultRegisterTimeout},
		{name: "Unknown beyond a short window", notFoundFor: 0, unknownTill: time.Hour, window: 2 * time.Minute,
			want: StatusUnknown, wantErr: ErrNotRegistered, minWait: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var m *memFO //nolint:staticcheck // S1021: the callback below refers to m, so it is declared first
				m = newMemFO(t, func(action, body string, at time.Duration) (int, string, error) {
					if action != actionStatus {
						return 400, notFound("?"), nil
					}
					st, ans := registering("G-1", tt.notFoundFor, tt.unknownTill, func() time.Duration { return at })
					return st, ans, nil
				})
				c := memClient(t, m, ClientOptions{RegisterTimeout: tt.window})
				start := time.Now()
				got, err := c.PollStatus(context.Background(), "G-1", PollOptions{Interval: 10 * time.Second, MaxInterval: 30 * time.Second, Deadline: 2 * time.Hour})
				if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
					t.Fatalf("PollStatus = %s, %v; want %s, %v", got, err, tt.want, tt.wantErr)
				}
				if waited := time.Since(start); waited < tt.minWait {
					t.Errorf("PollStatus gave up after %s, want at least %s", waited, tt.minWait)
				}
				if tt.wantErr != nil {
					msg := err.Error()
					for _, want := range []string{actionStatus, `"G-1"`, "data project exists", "data management workspace"} {
						if !strings.Contains(msg, want) {
							t.Errorf("error %q does not say %q", msg, want)
						}
					}
					if tt.notFoundFor > 0 && !strings.Contains(msg, "Execution details were not found for execution id G-1") {
						t.Errorf("error %q does not quote F&O's answer", msg)
					}
				}
			})
		})
	}
}

// timeoutError is what a client-side HTTP timeout looks like.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestExportAfterLostAnswerWaitsForRegistration(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	faults := []struct {
		name string
		fail func() (int, string, error) // the answer to the first POST, which F&O did act on
	}{
		{name: "503", fail: func() (int, string, error) { return 503, "Service Unavailable", nil }},
		{name: "500 OData", fail: func() (int, string, error) { return 500, notFound("x"), nil }},
		{name: "timeout", fail: func() (int, string, error) { return 0, "", timeoutError{} }},
		{name: "connection reset", fail: func() (int, string, error) { return 0, "", reset }},
		{name: "unreadable 200", fail: func() (int, string, error) { return 200, "<html>gateway</html>", nil }},
	}
	for _, fault := range faults {
		for _, registersAfter := range []time.Duration{3 * time.Minute, 9*time.Minute + 30*time.Second} {
			t.Run(fmt.Sprintf("%s, registered after %s", fault.name, registersAfter), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var m *memFO //nolint:staticcheck // S1021: the callback below refers to m, so it is declared first
					m = newMemFO(t, func(action, body string, at time.Duration) (int, string, error) {
						switch action {
						case actionExport:
							return fault.fail()
						case actionStatus:
							st, ans := registering("G-1", registersAfter/2, registersAfter, func() time.Duration { return at })
							return st, ans, nil
						}
						return 400, notFound("?"), nil
					})
					c := memClient(t, m, ClientOptions{})
					id, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "G", PackageName: "G-1", ExecutionID: "G-1", LegalEntityID: "USMF"})
					if err != nil || id != "G-1" {
						t.Fatalf("ExportToPackage = %q, %v; want G-1, nil", id, err)
					}
					if n := len(m.times(actionExport)); n != 1 {
						t.Errorf("%d ExportToPackage calls, want exactly 1", n)
					}
					st, err := c.PollStatus(context.Background(), id, PollOptions{Interval: 10 * time.Second, MaxInterval: 30 * time.Second})
					if err != nil || st != StatusSucceeded {
						t.Errorf("PollStatus = %s, %v; want Succeeded", st, err)
					}
				})
			})
		}
	}
}

func TestExportPostsAgainOnlyAfterTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		accepted := time.Duration(-1) // when F&O took the export
		var m *memFO
		m = newMemFO(t, func(action, body string, at time.Duration) (int, string, error) {
			mu.Lock()
			defer mu.Unlock()
			switch action {
			case actionExport:
				if len(m.calls[actionExport]) == 1 {
					return 503, "", nil // lost before F&O acted on it
				}
				accepted = at
				return 200, value("G-1"), nil
			case actionStatus:
				if accepted < 0 || at-accepted < time.Minute {
					return 400, notFound("G-1"), nil
				}
				return 200, value("Executing"), nil
			}
			return 400, notFound("?"), nil
		})
		c := memClient(t, m, ClientOptions{RegisterTimeout: 5 * time.Minute})
		id, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "G", ExecutionID: "G-1"})
		if err != nil || id != "G-1" {
			t.Fatalf("ExportToPackage = %q, %v; want G-1, nil", id, err)
		}
		posts := m.times(actionExport)
		if len(posts) != 2 {
			t.Fatalf("%d ExportToPackage calls, want 2 (the second after the window)", len(posts))
		}
		if gap := posts[1] - posts[0]; gap < 5*time.Minute {
			t.Errorf("posted again %s after the lost answer, want no sooner than the 5m window", gap)
		}
	})
}

func TestExportNeverRegisteredGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemFO(t, func(action, body string, at time.Duration) (int, string, error) {
			if action == actionExport {
				return 504, "", nil
			}
			return 400, notFound("G-1"), nil
		})
		c := memClient(t, m, ClientOptions{RegisterTimeout: time.Minute, MaxRetries: 2})
		start := time.Now()
		_, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "G", ExecutionID: "G-1"})
		if !errors.Is(err, ErrNotRegistered) {
			t.Fatalf("ExportToPackage = %v, want an error wrapping ErrNotRegistered", err)
		}
		if n := len(m.times(actionExport)); n != 3 {
			t.Errorf("%d ExportToPackage calls, want 3 (one per window)", n)
		}
		if d := time.Since(start); d < 3*time.Minute {
			t.Errorf("gave up after %s, want three whole windows", d)
		}
		for _, want := range []string{`"G"`, "HTTP 504", "Execution details were not found", "data management workspace"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

func TestAwaitExecution(t *testing.T) {
	tests := []struct {
		name    string
		answers func(at time.Duration) (int, string)
		want    Status
		wantErr error
	}{
		{name: "known at once", answers: func(time.Duration) (int, string) { return 200, value("Succeeded") }, want: StatusSucceeded},
		{name: "400 then Executing", answers: func(at time.Duration) (int, string) {
			if at < 4*time.Minute {
				return 400, notFound("G-1")
			}
			return 200, value("Executing")
		}, want: StatusExecuting},
		{name: "never known", answers: func(time.Duration) (int, string) { return 200, value("Unknown") }, want: StatusUnknown, wantErr: ErrNotRegistered},
		{name: "other 400 is an error at once", answers: func(time.Duration) (int, string) {
			return 400, `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Data project 'G' does not exist"}}}`
		}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newMemFO(t, func(_, _ string, at time.Duration) (int, string, error) {
					st, ans := tt.answers(at)
					return st, ans, nil
				})
				c := memClient(t, m, ClientOptions{})
				got, err := c.AwaitExecution(context.Background(), "G-1")
				switch {
				case errors.Is(tt.wantErr, errAny) && err == nil, tt.wantErr == nil && err != nil,
					tt.wantErr != nil && !errors.Is(tt.wantErr, errAny) && !errors.Is(err, tt.wantErr):
					t.Fatalf("AwaitExecution = %s, %v; want error %v", got, err, tt.wantErr)
				case !errors.Is(tt.wantErr, errAny) && got != tt.want:
					t.Fatalf("AwaitExecution = %s, want %s", got, tt.want)
				}
				if errors.Is(tt.wantErr, errAny) && !strings.Contains(err.Error(), "Data project 'G' does not exist") {
					t.Errorf("error %q does not quote F&O", err)
				}
			})
		})
	}
}

func TestUnreadableAnswersRetried(t *testing.T) {
	bad := []string{"<html>proxy</html>", `{"@odata.context":"x"}`, `{"value":42}`, ``}
	tests := []struct {
		name    string
		action  string
		badFor  int // this many unreadable answers first
		wantErr bool
	}{
		{name: "status, a few", action: actionStatus, badFor: 3},
		{name: "package URL, a few", action: actionPackageURL, badFor: 4},
		{name: "status, forever", action: actionStatus, badFor: 1000, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var m *memFO
				m = newMemFO(t, func(action, _ string, _ time.Duration) (int, string, error) {
					if n := len(m.times(action)); n <= tt.badFor {
						return 200, bad[(n-1)%len(bad)], nil
					}
					if action == actionStatus {
						return 200, value("Succeeded"), nil
					}
					return 200, value("https://acct.blob.core.windows.net/dmf/p.zip?sv=1&sig=abc"), nil
				})
				c := memClient(t, m, ClientOptions{})
				var err error
				if tt.action == actionStatus {
					var st Status
					st, err = c.PollStatus(context.Background(), "G-1", PollOptions{Interval: time.Second})
					if err == nil && st != StatusSucceeded {
						t.Errorf("PollStatus = %s, want Succeeded", st)
					}
				} else {
					_, err = c.WaitPackageURL(context.Background(), "G-1", time.Minute)
				}
				if tt.wantErr != (err != nil) {
					t.Fatalf("error %v, want error: %v", err, tt.wantErr)
				}
				n := len(m.times(tt.action))
				if tt.wantErr {
					if n != defaultMaxRetries+1 || !strings.Contains(err.Error(), "read answer") {
						t.Errorf("%d asks and error %q; want %d asks and an error saying the answer was unreadable", n, err, defaultMaxRetries+1)
					}
				} else if n != tt.badFor+1 {
					t.Errorf("%d asks, want %d", n, tt.badFor+1)
				}
			})
		})
	}
}
