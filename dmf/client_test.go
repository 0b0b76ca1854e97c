package dmf

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

const testToken = "test-token-5f0c2e"

// fakeFO is an httptest server answering the F&O actions through per-action
// handlers, counting calls and keeping the bodies it received.
type fakeFO struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	calls    map[string]int
	bodies   map[string][]string
	headers  map[string]http.Header
	handlers map[string]func(w http.ResponseWriter, body string, n int)
}

func newFakeFO(t *testing.T) *fakeFO {
	t.Helper()
	f := &fakeFO{
		t:        t,
		calls:    map[string]int{},
		bodies:   map[string][]string{},
		headers:  map[string]http.Header{},
		handlers: map[string]func(http.ResponseWriter, string, int){},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFO) serve(w http.ResponseWriter, r *http.Request) {
	action, ok := strings.CutPrefix(r.URL.Path, actionPathTemplate)
	if r.Method != http.MethodPost || !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls[action]++
	n := f.calls[action]
	f.bodies[action] = append(f.bodies[action], string(body))
	f.headers[action] = r.Header.Clone()
	h := f.handlers[action]
	f.mu.Unlock()
	if h == nil {
		writeODataError(w, http.StatusBadRequest, "NoHandler", "no handler for "+action)
		return
	}
	h(w, string(body), n)
}

// on sets the handler of an action; n counts that action's calls from 1.
func (f *fakeFO) on(action string, h func(w http.ResponseWriter, body string, n int)) {
	f.mu.Lock()
	f.handlers[action] = h
	f.mu.Unlock()
}

func (f *fakeFO) count(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[action]
}

func (f *fakeFO) header(action string) http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.headers[action]
}

func (f *fakeFO) body(action string, i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[action][i]
}

// writeValue answers the flat OData envelope with a string value.
func writeValue(w http.ResponseWriter, v string) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	b, _ := json.Marshal(map[string]any{"@odata.context": "https://env/data/$metadata#Edm.String", "value": v})
	_, _ = w.Write(b)
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func writeODataError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg,
		"innererror": map[string]any{"message": "inner", "type": "System.Exception"}}})
	writeRaw(w, status, string(b))
}

// resetConn closes the client's connection abruptly (TCP RST).
func resetConn(t *testing.T, w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// countingCred is a credential fake counting token requests.
type countingCred struct {
	mu     sync.Mutex
	calls  int
	scopes [][]string
	token  string
	ttl    time.Duration
}

func (c *countingCred) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.scopes = append(c.scopes, o.Scopes)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(c.ttl)}, nil
}

// newTestClient returns a client for f with tiny delays; logs go to the returned buffer.
func newTestClient(t *testing.T, f *fakeFO, opts *ClientOptions) (*Client, *testenv.SyncBuffer) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	o := ClientOptions{RetryBaseDelay: time.Millisecond, RetryMaxDelay: 4 * time.Millisecond}
	if opts != nil {
		o = *opts
	}
	if o.RegisterTimeout == 0 {
		o.RegisterTimeout = 30 * time.Millisecond
	}
	if o.RegisterInterval == 0 {
		o.RegisterInterval = time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := NewClient(f.srv.URL+"/", azauth.StaticToken(testToken), &o)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", f.srv.URL, err)
	}
	c.throttleDefault = 5 * time.Millisecond
	c.urlWaitBase = 2 * time.Millisecond
	return c, logs
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string // JSON of the value
		wantErr bool
	}{
		{name: "flat", body: `{"@odata.context":"https://e/data/$metadata#Edm.String","value":"Succeeded"}`, want: `"Succeeded"`},
		{name: "nested", body: `{"value":{"value":"id-1"}}`, want: `"id-1"`},
		{name: "nested with odata keys", body: `{"@odata.context":"x","value":{"@odata.type":"#Edm.String","@odata.context":"y","value":"id-2"}}`, want: `"id-2"`},
		{name: "null", body: `{"@odata.context":"x","value":null}`, want: `null`},
		{name: "nested null", body: `{"value":{"value":null}}`, want: `null`},
		{name: "extra fields", body: `{"a":1,"value":"v","b":[1,2],"c":{"value":"no"}}`, want: `"v"`},
		{name: "value case variant", body: `{"Value":"v"}`, want: `"v"`},
		{name: "list value", body: `{"value":["a","b"]}`, want: `["a","b"]`},
		{name: "empty string", body: `{"value":""}`, want: `""`},
		{name: "missing value", body: `{"@odata.context":"x"}`, wantErr: true},
		{name: "nested without value", body: `{"value":{"other":"x"}}`, wantErr: true},
		{name: "not JSON", body: `<html>busy</html>`, wantErr: true},
		{name: "array", body: `["value"]`, wantErr: true},
		{name: "json null", body: `null`, wantErr: true},
		{name: "empty body", body: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseValue([]byte(tt.body))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseValue(%s) = %s, want an error", tt.body, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseValue(%s): %v, want %s", tt.body, err, tt.want)
			}
			var compact bytes.Buffer
			_ = json.Compact(&compact, got)
			if compact.String() != tt.want {
				t.Errorf("parseValue(%s) = %s, want %s", tt.body, compact.String(), tt.want)
			}
		})
	}
}

func TestEnvelopeVariantsThroughClient(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    Status
		wantErr bool
	}{
		{name: "flat", body: `{"@odata.context":"c","value":"Executing"}`, want: StatusExecuting},
		{name: "nested", body: `{"value":{"value":"Succeeded"}}`, want: StatusSucceeded},
		{name: "nested with odata keys", body: `{"@odata.context":"c","value":{"@odata.context":"d","value":"Failed"}}`, want: StatusFailed},
		{name: "null", body: `{"value":null}`, want: ""},
		{name: "extra fields", body: `{"value":"NotRun","ExecutionId":"x","extra":{"a":1}}`, want: StatusNotRun},
		{name: "name outside the contract", body: `{"value":"Paused"}`, want: "Paused"},
		{name: "number", body: `{"value":3}`, wantErr: true},
		{name: "garbage", body: `oops`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeRaw(w, 200, tt.body) })
			c, _ := newTestClient(t, f, nil)
			got, err := c.ExecutionStatus(context.Background(), "exec-1")
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ExecutionStatus with answer %s = %q, want an error", tt.body, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ExecutionStatus with answer %s = %q, %v; want %q, nil", tt.body, got, err, tt.want)
			}
			if body := f.body(actionStatus, 0); body != `{"executionId":"exec-1"}` {
				t.Errorf("request body = %s, want {\"executionId\":\"exec-1\"}", body)
			}
		})
	}
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		name      string
		env       string
		wantBase  string
		wantScope string // "" means wantBase + "/.default"
		wantError bool
	}{
		{name: "https", env: "https://contoso.operations.dynamics.com", wantBase: "https://contoso.operations.dynamics.com"},
		{name: "https trailing slash", env: "https://contoso.operations.dynamics.com/", wantBase: "https://contoso.operations.dynamics.com"},
		{name: "sandbox", env: " https://contoso-uat.sandbox.operations.dynamics.com ", wantBase: "https://contoso-uat.sandbox.operations.dynamics.com"},
		{name: "upper case scheme", env: "HTTPS://contoso.operations.dynamics.com", wantBase: "https://contoso.operations.dynamics.com"},
		{name: "http localhost", env: "http://localhost:8080/", wantBase: "http://localhost:8080"},
		{name: "http 127.0.0.1", env: "http://127.0.0.1:1234", wantBase: "http://127.0.0.1:1234"},
		{name: "http 127.1.2.3", env: "http://127.1.2.3", wantBase: "http://127.1.2.3"},
		{name: "http ::1", env: "http://[::1]:99", wantBase: "http://[::1]:99"},
		{name: "mixed case host", env: "https://Contoso.Operations.Dynamics.com/", wantBase: "https://Contoso.Operations.Dynamics.com",
			wantScope: "https://contoso.operations.dynamics.com/.default"},
		{name: "on-premises path kept for calls, dropped from the scope", env: "https://AX.contoso.com/namespaces/AXSF/",
			wantBase: "https://AX.contoso.com/namespaces/AXSF", wantScope: "https://ax.contoso.com/.default"},
		{name: "non-default port kept", env: "https://ax.contoso.com:8443/namespaces/AXSF", wantBase: "https://ax.contoso.com:8443/namespaces/AXSF",
			wantScope: "https://ax.contoso.com:8443/.default"},
		{name: "default port dropped from the scope", env: "https://contoso.operations.dynamics.com:443", wantBase: "https://contoso.operations.dynamics.com:443",
			wantScope: "https://contoso.operations.dynamics.com/.default"},
		{name: "http non-loopback", env: "http://contoso.operations.dynamics.com", wantError: true},
		{name: "http private address", env: "http://10.0.0.5", wantError: true},
		{name: "http localhost lookalike", env: "http://localhost.evil.com", wantError: true},
		{name: "ftp", env: "ftp://contoso.operations.dynamics.com", wantError: true},
		{name: "no scheme", env: "contoso.operations.dynamics.com", wantError: true},
		{name: "empty", env: "", wantError: true},
		{name: "query", env: "https://contoso.operations.dynamics.com/?token=abc", wantError: true},
		{name: "user info", env: "https://user:pw@contoso.operations.dynamics.com", wantError: true},
		{name: "unparsable", env: "https://%zz", wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.env, azauth.StaticToken("t"), nil)
			if tt.wantError {
				if err == nil {
					t.Fatalf("NewClient(%q) = base %q, want an error", tt.env, c.base)
				}
				if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "pw") {
					t.Errorf("NewClient(%q) error %q leaks a secret", tt.env, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient(%q): %v, want base %q", tt.env, err, tt.wantBase)
			}
			wantScope := tt.wantScope
			if wantScope == "" {
				wantScope = tt.wantBase + "/.default"
			}
			if c.base != tt.wantBase || c.scope != wantScope {
				t.Errorf("NewClient(%q) base, scope = %q, %q; want %q, %q", tt.env, c.base, c.scope, tt.wantBase, wantScope)
			}
		})
	}
	c, err := NewClient("https://ax.contoso.com/namespaces/AXSF", azauth.StaticToken("t"), &ClientOptions{Scope: " https://adfs-audience/.default "})
	if err != nil || c.scope != "https://adfs-audience/.default" {
		t.Errorf("NewClient with Scope: scope %q, %v; want the given scope", c.scope, err)
	}
	if _, err := NewClient("https://contoso.operations.dynamics.com", nil, nil); err == nil {
		t.Errorf("NewClient with a nil credential: no error, want one")
	}
}

// TestAuthHeaderAndTokenRequests checks the client asks its credential for
// every call (the credential caches: azidentity's, or azauth's own for the
// Azure CLI, see azauth's TestTokenCache) and sends the token it gets.
func TestAuthHeaderAndTokenRequests(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		calls     int
		wantToken int // GetToken calls wanted
	}{
		{name: "long-lived token", ttl: time.Hour, calls: 4, wantToken: 4},
		{name: "token near expiry", ttl: 90 * time.Second, calls: 3, wantToken: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeValue(w, "Executing") })
			cred := &countingCred{token: "tok-abc", ttl: tt.ttl}
			c, err := NewClient(f.srv.URL, cred, nil)
			if err != nil {
				t.Fatal(err)
			}
			for range tt.calls {
				if _, err := c.ExecutionStatus(context.Background(), "e"); err != nil {
					t.Fatalf("ExecutionStatus: %v", err)
				}
			}
			if cred.calls != tt.wantToken {
				t.Errorf("GetToken called %d times for %d calls, want %d", cred.calls, tt.calls, tt.wantToken)
			}
			wantScope := []string{f.srv.URL + "/.default"}
			for _, s := range cred.scopes {
				if !reflect.DeepEqual(s, wantScope) {
					t.Errorf("token scopes = %q, want %q", s, wantScope)
				}
			}
			h := f.header(actionStatus)
			for k, want := range map[string]string{
				"Authorization": "Bearer tok-abc",
				"Accept":        "application/json",
				"Content-Type":  "application/json",
				"Odata-Version": "4.0",
				"User-Agent":    "dmfexport",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestUnauthorizedError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{name: "401 OData error echoing the token", status: 401, body: `{"error":{"code":"Unauthorized","message":"token Bearer ` + testToken + ` refused"}}`},
		{name: "401 empty body", status: 401, body: ``},
		{name: "403 plain text", status: 403, body: `Forbidden for ` + testToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeRaw(w, tt.status, tt.body) })
			c, logs := newTestClient(t, f, nil)
			_, err := c.ExecutionStatus(context.Background(), "e")
			if err == nil {
				t.Fatal("ExecutionStatus on 401/403: no error, want one")
			}
			msg := err.Error()
			if strings.Contains(msg, testToken) || strings.Contains(logs.String(), testToken) {
				t.Errorf("error or logs contain the token: %q", msg)
			}
			if !strings.Contains(msg, "Microsoft Entra applications") || !strings.Contains(msg, "data management roles") {
				t.Errorf("error %q lacks the registration hint", msg)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status || apiErr.Action != actionStatus {
				t.Errorf("errors.As(APIError) = %+v, want status %d action %s", apiErr, tt.status, actionStatus)
			}
			if n := f.count(actionStatus); n != 1 {
				t.Errorf("%d calls, want 1 (no retry on %d)", n, tt.status)
			}
		})
	}
}

func TestAPIErrorText(t *testing.T) {
	long := strings.Repeat("x", 900)
	html := "<html><body>" + strings.Repeat("gateway trouble ", 40) + "</body></html>"
	tests := []struct {
		name     string
		status   int
		body     string
		want     []string
		wantNot  []string
		maxLen   int
		wantCode string
	}{
		{name: "OData error", status: 400, body: `{"error":{"code":"0x1","message":"Definition group 'X' not found","innererror":{"message":"m","type":"T"}}}`,
			want: []string{"F&O ExportToPackage: HTTP 400: 0x1: Definition group 'X' not found"}, wantCode: "0x1"},
		{name: "OData message truncated", status: 400, body: `{"error":{"code":"C","message":"` + long + `"}}`,
			want: []string{"HTTP 400: C: xxx"}, maxLen: 700, wantCode: "C"},
		{name: "inner message only", status: 409, body: `{"error":{"code":"","message":"","innererror":{"message":"dup"}}}`,
			want: []string{"HTTP 409: dup"}},
		{name: "F&O generic message with innererror", status: 500,
			body: `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Data project 'Customers' does not exist","type":"System.Exception","stacktrace":"   at X.Y()"}}}`,
			want: []string{"F&O ExportToPackage: HTTP 500: Data project 'Customers' does not exist"}, wantNot: []string{"An error has occurred", "at X.Y", "System.Exception"}},
		{name: "internalexception chain", status: 400,
			body: `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Export failed","type":"System.Exception","internalexception":{"message":"Legal entity 'XXXX' not found","internalexception":{"message":"Table DataArea: no record"}}}}}`,
			want: []string{"HTTP 400: Export failed: Legal entity 'XXXX' not found: Table DataArea: no record"}},
		{name: "code kept with inner message", status: 400,
			body: `{"error":{"code":"0x80131500","message":"An error has occurred.","innererror":{"message":"Model state is invalid"}}}`,
			want: []string{"HTTP 400: 0x80131500: Model state is invalid"}, wantCode: "0x80131500"},
		{name: "generic message alone is kept", status: 500, body: `{"error":{"code":"","message":"An error has occurred."}}`,
			want: []string{"HTTP 500: An error has occurred."}},
		{name: "OData v3 message object", status: 400, body: `{"odata.error":{},"error":{"code":"C","message":{"lang":"en-US","value":"v3 text"}}}`,
			want: []string{"HTTP 400: C: v3 text"}, wantCode: "C"},
		{name: "401 Message body", status: 401, body: `{"Message":"Authentication failed."}`,
			want: []string{"HTTP 401: Authentication failed.; "}, wantNot: []string{"{"}},
		{name: "not OData", status: 404, body: html,
			want: []string{"HTTP 404: 404 Not Found: <html><body>gateway"}, wantNot: []string{"</html>"}},
		{name: "SAS in body redacted", status: 400, body: `see https://a.blob.core.windows.net/dmf/p.zip?sv=1&sig=SECRETSIG`,
			want: []string{"sig=REDACTED"}, wantNot: []string{"SECRETSIG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionExport, func(w http.ResponseWriter, _ string, _ int) { writeRaw(w, tt.status, tt.body) })
			c, _ := newTestClient(t, f, nil)
			_, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "X", ExecutionID: "id"})
			if err == nil {
				t.Fatal("ExportToPackage: no error, want one")
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v is not an APIError", err)
			}
			msg := apiErr.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(msg, w) {
					t.Errorf("error %q contains %q", msg, w)
				}
			}
			if tt.maxLen > 0 && len(msg) > tt.maxLen {
				t.Errorf("error is %d bytes, want at most %d", len(msg), tt.maxLen)
			}
			if apiErr.Code != tt.wantCode {
				t.Errorf("Code = %q, want %q", apiErr.Code, tt.wantCode)
			}
			if n := f.count(actionExport); n != 1 {
				t.Errorf("%d POSTs, want 1", n)
			}
		})
	}
}

func TestTransientRetried(t *testing.T) {
	tests := []struct {
		name string
		fail func(t *testing.T, w http.ResponseWriter)
	}{
		{name: "500", fail: func(_ *testing.T, w http.ResponseWriter) { writeRaw(w, 500, "boom") }},
		{name: "502", fail: func(_ *testing.T, w http.ResponseWriter) { writeRaw(w, 502, "bad gateway") }},
		{name: "503", fail: func(_ *testing.T, w http.ResponseWriter) { writeODataError(w, 503, "Busy", "try later") }},
		{name: "504", fail: func(_ *testing.T, w http.ResponseWriter) { writeRaw(w, 504, "") }},
		{name: "429 without Retry-After", fail: func(_ *testing.T, w http.ResponseWriter) { writeRaw(w, 429, "") }},
		{name: "connection reset", fail: resetConn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionPackageURL, func(w http.ResponseWriter, _ string, n int) {
				if n <= 3 {
					tt.fail(t, w)
					return
				}
				writeValue(w, "https://acct.blob.core.windows.net/dmf/p.zip?sv=2020&sig=abc")
			})
			c, logs := newTestClient(t, f, nil)
			got, err := c.PackageURL(context.Background(), "e")
			if err != nil {
				t.Fatalf("PackageURL after 3 faults: %v, want the URL", err)
			}
			if !strings.HasPrefix(got, "https://acct.blob.core.windows.net/") {
				t.Errorf("PackageURL = %q, want the blob URL", got)
			}
			if n := f.count(actionPackageURL); n != 4 {
				t.Errorf("%d calls, want 4", n)
			}
			if w := strings.Count(logs.String(), "level=WARN"); w != 3 {
				t.Errorf("%d Warn logs, want 3 (one per retry):\n%s", w, logs)
			}
			if !strings.Contains(logs.String(), "action="+actionPackageURL) || !strings.Contains(logs.String(), "delay=") {
				t.Errorf("retry logs lack action or delay:\n%s", logs)
			}
			if strings.Contains(logs.String(), "sig=abc") || strings.Contains(logs.String(), testToken) {
				t.Errorf("logs leak a secret:\n%s", logs)
			}
		})
	}
}

func TestTransientExhausted(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int
		wantCalls  int
	}{
		{name: "default 5 retries", maxRetries: 0, wantCalls: 6},
		{name: "2 retries", maxRetries: 2, wantCalls: 3},
		{name: "no retries", maxRetries: -1, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeRaw(w, 503, "unavailable") })
			c, _ := newTestClient(t, f, &ClientOptions{MaxRetries: tt.maxRetries, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 2 * time.Millisecond})
			_, err := c.ExecutionStatus(context.Background(), "e")
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
				t.Fatalf("ExecutionStatus = %v, want an APIError with status 503", err)
			}
			if n := f.count(actionStatus); n != tt.wantCalls {
				t.Errorf("%d calls, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	tests := []struct {
		name    string
		header  func() string
		minWait time.Duration
	}{
		{name: "seconds", header: func() string { return "1" }, minWait: 900 * time.Millisecond},
		{name: "HTTP date", header: func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, minWait: 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.header())
					writeODataError(w, 429, "TooManyRequests", "slow down")
					return
				}
				writeValue(w, "Succeeded")
			})
			c, logs := newTestClient(t, f, nil)
			start := time.Now()
			got, err := c.ExecutionStatus(context.Background(), "e")
			if err != nil || got != StatusSucceeded {
				t.Fatalf("ExecutionStatus = %q, %v; want Succeeded, nil", got, err)
			}
			if waited := time.Since(start); waited < tt.minWait || waited > 5*time.Second {
				t.Errorf("waited %s, want at least %s and well under the 5 min cap", waited, tt.minWait)
			}
			if n := f.count(actionStatus); n != 2 {
				t.Errorf("%d calls, want 2", n)
			}
			if !strings.Contains(logs.String(), "reason=\"HTTP 429\"") {
				t.Errorf("no Warn log naming the 429:\n%s", logs)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &Client{throttleDefault: 5 * time.Second, throttleMax: 5 * time.Minute}
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{name: "seconds", header: "7", want: 7 * time.Second},
		{name: "zero", header: "0", want: 0},
		{name: "negative", header: "-3", want: 0},
		{name: "missing", header: "", want: 5 * time.Second},
		{name: "garbage", header: "soon", want: 5 * time.Second},
		{name: "above cap", header: "100000", want: 5 * time.Minute},
		{name: "huge", header: "99999999999999999", want: 5 * time.Minute},
		{name: "date", header: now.Add(30 * time.Second).Format(http.TimeFormat), want: 30 * time.Second},
		{name: "past date", header: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "far date", header: now.Add(24 * time.Hour).Format(http.TimeFormat), want: 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.retryAfter(tt.header, now); got != tt.want {
				t.Errorf("retryAfter(%q) = %s, want %s", tt.header, got, tt.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	c := &Client{baseDelay: time.Second, maxDelay: 30 * time.Second}
	for attempt, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second} {
		for range 50 {
			if got := c.backoff(attempt); got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", attempt, got, want/2, want)
			}
		}
	}
	if got := c.backoff(1000); got > 30*time.Second {
		t.Errorf("backoff(1000) = %s, want at most 30s", got)
	}
}

func TestExportToPackage(t *testing.T) {
	type exportFn func(w http.ResponseWriter, n int, record func())
	tests := []struct {
		name         string
		chosenID     string
		export       exportFn
		status       func(started, posts int) string // status answer given the exports recorded and the POSTs made
		wantID       string
		wantErr      bool
		wantPosts    int
		wantStarted  int
		wantStatuses int // -1: any
	}{
		{
			name: "chosen ID answered", chosenID: "proj-1",
			export: func(w http.ResponseWriter, n int, record func()) { record(); writeValue(w, "proj-1") },
			wantID: "proj-1", wantPosts: 1, wantStarted: 1,
		},
		{
			name: "chosen ID, empty answer value", chosenID: "proj-2",
			export: func(w http.ResponseWriter, n int, record func()) { record(); writeValue(w, "") },
			wantID: "proj-2", wantPosts: 1, wantStarted: 1,
		},
		{
			name: "chosen ID, nested null answer", chosenID: "proj-3",
			export: func(w http.ResponseWriter, n int, record func()) {
				record()
				writeRaw(w, 200, `{"value":{"value":null}}`)
			},
			wantID: "proj-3", wantPosts: 1, wantStarted: 1,
		},
		{
			name: "F&O chooses the ID",
			export: func(w http.ResponseWriter, n int, record func()) {
				record()
				writeRaw(w, 200, `{"value":{"value":"FO-77"}}`)
			},
			wantID: "FO-77", wantPosts: 1, wantStarted: 1,
		},
		{
			name: "chosen ID, 503 after recording: found, not posted again", chosenID: "proj-4",
			export: func(w http.ResponseWriter, n int, record func()) { record(); writeRaw(w, 503, "unavailable") },
			status: func(started, _ int) string {
				if started > 0 {
					return "Executing"
				}
				return "Unknown"
			},
			wantID: "proj-4", wantPosts: 1, wantStarted: 1, wantStatuses: 1,
		},
		{
			name: "chosen ID, reset after recording: found", chosenID: "proj-5",
			export: func(w http.ResponseWriter, n int, record func()) { record(); resetConn(t, w) },
			status: func(started, _ int) string { return "NotRun" },
			wantID: "proj-5", wantPosts: 1, wantStarted: 1, wantStatuses: 1,
		},
		{
			name: "chosen ID, 503 before recording: posted again", chosenID: "proj-6",
			export: func(w http.ResponseWriter, n int, record func()) {
				if n == 1 {
					writeRaw(w, 503, "unavailable")
					return
				}
				record()
				writeValue(w, "proj-6")
			},
			status: func(started, _ int) string { return "Unknown" },
			wantID: "proj-6", wantPosts: 2, wantStarted: 1, wantStatuses: -1,
		},
		{
			name: "chosen ID, retry refused as duplicate but first POST worked", chosenID: "proj-7",
			export: func(w http.ResponseWriter, n int, record func()) {
				if n == 1 {
					record()
					writeRaw(w, 502, "")
					return
				}
				writeODataError(w, 400, "Duplicate", "execution ID already used")
			},
			// The first status ask comes too early to see the export.
			// F&O registers the first export only after its window closed.
			status: func(_, posts int) string {
				if posts < 2 {
					return "Unknown"
				}
				return "Executing"
			},
			wantID: "proj-7", wantPosts: 2, wantStarted: 1, wantStatuses: -1,
		},
		{
			name: "chosen ID, 503 forever and never recorded", chosenID: "proj-8",
			export:  func(w http.ResponseWriter, n int, record func()) { writeRaw(w, 503, "") },
			status:  func(int, int) string { return "Unknown" },
			wantErr: true, wantPosts: 6, wantStarted: 0, wantStatuses: -1,
		},
		{
			name:    "empty ID, 503: not retried",
			export:  func(w http.ResponseWriter, n int, record func()) { record(); writeRaw(w, 503, "") },
			wantErr: true, wantPosts: 1, wantStarted: 1, wantStatuses: 0,
		},
		{
			name:    "empty ID, reset: not retried",
			export:  func(w http.ResponseWriter, n int, record func()) { record(); resetConn(t, w) },
			wantErr: true, wantPosts: 1, wantStarted: 1, wantStatuses: 0,
		},
		{
			name: "empty ID, 429 then accepted",
			export: func(w http.ResponseWriter, n int, record func()) {
				if n == 1 {
					w.Header().Set("Retry-After", "0")
					writeRaw(w, 429, "")
					return
				}
				record()
				writeValue(w, "FO-1")
			},
			wantID: "FO-1", wantPosts: 2, wantStarted: 1, wantStatuses: 0,
		},
		{
			name: "chosen ID, 429 then accepted: no status ask", chosenID: "proj-9",
			export: func(w http.ResponseWriter, n int, record func()) {
				if n == 1 {
					writeRaw(w, 429, "")
					return
				}
				record()
				writeValue(w, "proj-9")
			},
			wantID: "proj-9", wantPosts: 2, wantStarted: 1, wantStatuses: 0,
		},
		{
			name:    "empty ID, empty answer",
			export:  func(w http.ResponseWriter, n int, record func()) { record(); writeValue(w, "") },
			wantErr: true, wantPosts: 1, wantStarted: 1,
		},
		{
			name: "chosen ID, unreadable 200 but recorded", chosenID: "proj-10",
			export: func(w http.ResponseWriter, n int, record func()) { record(); writeRaw(w, 200, "<html>") },
			status: func(int, int) string { return "Executing" },
			wantID: "proj-10", wantPosts: 1, wantStarted: 1, wantStatuses: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			var mu sync.Mutex
			started := 0
			record := func() { mu.Lock(); started++; mu.Unlock() }
			f.on(actionExport, func(w http.ResponseWriter, _ string, n int) { tt.export(w, n, record) })
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) {
				if tt.status == nil {
					writeValue(w, "Unknown")
					return
				}
				mu.Lock()
				s := started
				mu.Unlock()
				writeValue(w, tt.status(s, f.count(actionExport)))
			})
			c, _ := newTestClient(t, f, nil)
			got, err := c.ExportToPackage(context.Background(), ExportRequest{
				DefinitionGroupID: "Customers export", PackageName: "pkg", ExecutionID: tt.chosenID, LegalEntityID: "USMF",
			})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ExportToPackage = %q, want an error", got)
				}
			} else if err != nil || got != tt.wantID {
				t.Fatalf("ExportToPackage = %q, %v; want %q, nil", got, err, tt.wantID)
			}
			if n := f.count(actionExport); n != tt.wantPosts {
				t.Errorf("%d POSTs of ExportToPackage, want %d", n, tt.wantPosts)
			}
			mu.Lock()
			gotStarted := started
			mu.Unlock()
			if gotStarted != tt.wantStarted {
				t.Errorf("%d exports started, want %d", gotStarted, tt.wantStarted)
			}
			if tt.wantStatuses >= 0 {
				if n := f.count(actionStatus); n != tt.wantStatuses {
					t.Errorf("%d status asks, want %d", n, tt.wantStatuses)
				}
			}
		})
	}
}

func TestReExecuteRecovery(t *testing.T) {
	tests := []struct {
		name      string
		status    string
		wantErr   bool
		wantPosts int
	}{
		{name: "running again: found", status: "Executing", wantPosts: 1},
		{name: "queued again: found", status: "NotRun", wantPosts: 1},
		{name: "earlier run's final state: ambiguous", status: "Succeeded", wantErr: true, wantPosts: 1},
		{name: "unknown: posted again", status: "Unknown", wantPosts: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionExport, func(w http.ResponseWriter, _ string, n int) {
				if n == 1 {
					writeRaw(w, 503, "")
					return
				}
				writeValue(w, "old-id")
			})
			f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeValue(w, tt.status) })
			c, _ := newTestClient(t, f, nil)
			got, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "g", ExecutionID: "old-id", ReExecute: true})
			if tt.wantErr != (err != nil) || (!tt.wantErr && got != "old-id") {
				t.Fatalf("ExportToPackage re-execute with status %s = %q, %v; want error %v", tt.status, got, err, tt.wantErr)
			}
			if n := f.count(actionExport); n != tt.wantPosts {
				t.Errorf("%d POSTs, want %d", n, tt.wantPosts)
			}
		})
	}
}

func TestExportToPackageRequestBody(t *testing.T) {
	f := newFakeFO(t)
	f.on(actionExport, func(w http.ResponseWriter, _ string, _ int) { writeValue(w, "id 1/2:3") })
	c, _ := newTestClient(t, f, nil)
	if _, err := c.ExportToPackage(context.Background(), ExportRequest{
		DefinitionGroupID: "Cust export", PackageName: "id 1/2:3", ExecutionID: "id 1/2:3", ReExecute: true, LegalEntityID: "USMF",
	}); err != nil {
		t.Fatalf("ExportToPackage: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(f.body(actionExport, 0)), &got); err != nil {
		t.Fatalf("request body is not JSON: %v", err)
	}
	want := map[string]any{"definitionGroupId": "Cust export", "packageName": "id 1/2:3", "executionId": "id 1/2:3", "reExecute": true, "legalEntityId": "USMF"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request body = %v, want %v", got, want)
	}
	if _, err := c.ExportToPackage(context.Background(), ExportRequest{}); err == nil {
		t.Errorf("ExportToPackage without definition group: no error, want one")
	}
}

func TestExportTimeoutRecovered(t *testing.T) {
	f := newFakeFO(t)
	var mu sync.Mutex
	started := 0
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.on(actionExport, func(w http.ResponseWriter, _ string, _ int) {
		mu.Lock()
		started++
		mu.Unlock()
		select { // answer only after the client gave up
		case <-release:
		case <-time.After(5 * time.Second):
		}
		writeValue(w, "late")
	})
	f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeValue(w, "Executing") })
	c, logs := newTestClient(t, f, &ClientOptions{HTTPClient: &http.Client{Timeout: 100 * time.Millisecond},
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 2 * time.Millisecond})
	got, err := c.ExportToPackage(context.Background(), ExportRequest{DefinitionGroupID: "g", ExecutionID: "chosen"})
	if err != nil || got != "chosen" {
		t.Fatalf("ExportToPackage after a timeout = %q, %v; want chosen, nil", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if started != 1 {
		t.Errorf("%d exports started, want 1", started)
	}
	if !strings.Contains(logs.String(), "reason=timeout") {
		t.Errorf("no retry log naming the timeout:\n%s", logs)
	}
}

func TestContextCancelDuringRetry(t *testing.T) {
	f := newFakeFO(t)
	f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) {
		w.Header().Set("Retry-After", "300")
		writeRaw(w, 429, "")
	})
	c, _ := newTestClient(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ExecutionStatus(ctx, "e")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ExecutionStatus = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %s, want promptly after the context ended", d)
	}
}

func TestPollStatus(t *testing.T) {
	tests := []struct {
		name     string
		answers  []string // the last one repeats
		deadline time.Duration
		// register is the client's RegisterTimeout: long, unless the case
		// waits it out, so a loaded machine never runs past it between asks.
		register  time.Duration
		want      Status
		wantErr   error // sentinel wanted, or errAny
		wantAsks  int   // -1: do not check
		errSubstr string
	}{
		{name: "Succeeded", answers: []string{"Succeeded"}, want: StatusSucceeded, wantAsks: 1},
		{name: "PartiallySucceeded", answers: []string{"PartiallySucceeded"}, want: StatusPartiallySucceeded, wantAsks: 1},
		{name: "Failed", answers: []string{"Failed"}, want: StatusFailed, wantAsks: 1},
		{name: "Canceled", answers: []string{"Canceled"}, want: StatusCanceled, wantAsks: 1},
		{name: "other case", answers: []string{"succeeded"}, want: StatusSucceeded, wantAsks: 1},
		{name: "NotRun then Executing then Succeeded", answers: []string{"NotRun", "Executing", "Executing", "Succeeded"}, want: StatusSucceeded, wantAsks: 4},
		{name: "Unknown twice then Executing then Succeeded", answers: []string{"Unknown", "Unknown", "Executing", "Succeeded"}, want: StatusSucceeded, wantAsks: 4},
		{name: "Unknown resets after Executing", answers: []string{"Unknown", "Unknown", "Unknown", "Unknown", "Executing", "Unknown", "Unknown", "Failed"}, want: StatusFailed, wantAsks: 8},
		{name: "Unknown forever", answers: []string{"Unknown"}, register: 30 * time.Millisecond, wantErr: ErrNotRegistered, wantAsks: -1, errSubstr: "not registered by F&O after"},
		{name: "unexpected name", answers: []string{"Executing", "Paused"}, wantErr: ErrUnexpectedStatus, wantAsks: 2, errSubstr: "Paused"},
		{name: "empty name", answers: []string{""}, wantErr: ErrUnexpectedStatus, wantAsks: 1},
		{name: "deadline", answers: []string{"Executing"}, deadline: 30 * time.Millisecond, wantErr: ErrDeadline, wantAsks: -1, errSubstr: "still Executing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionStatus, func(w http.ResponseWriter, _ string, n int) {
				writeValue(w, tt.answers[min(n, len(tt.answers))-1])
			})
			c, _ := newTestClient(t, f, &ClientOptions{RetryBaseDelay: time.Millisecond, RetryMaxDelay: 4 * time.Millisecond,
				RegisterTimeout: cmp.Or(tt.register, 10*time.Second)})
			var seen []Status
			got, err := c.PollStatus(context.Background(), "exec-9", PollOptions{
				Interval: time.Millisecond, MaxInterval: 3 * time.Millisecond, Deadline: tt.deadline,
				OnStatus: func(s Status, _ time.Duration) { seen = append(seen, s) },
			})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("PollStatus = %q, %v; want %q, nil", got, err, tt.want)
			case tt.wantErr == nil && got != tt.want:
				t.Fatalf("PollStatus = %q, want %q", got, tt.want)
			case errors.Is(tt.wantErr, errAny) && err == nil, tt.wantErr != nil && !errors.Is(tt.wantErr, errAny) && !errors.Is(err, tt.wantErr):
				t.Fatalf("PollStatus = %q, %v; want error %v", got, err, tt.wantErr)
			}
			if tt.errSubstr != "" && !strings.Contains(err.Error(), tt.errSubstr) {
				t.Errorf("error %q does not contain %q", err, tt.errSubstr)
			}
			asks := f.count(actionStatus)
			if tt.wantAsks >= 0 && asks != tt.wantAsks {
				t.Errorf("%d status asks, want %d", asks, tt.wantAsks)
			}
			if len(seen) != asks {
				t.Errorf("OnStatus called %d times for %d answers", len(seen), asks)
			}
		})
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")

func TestPollStatusCancel(t *testing.T) {
	f := newFakeFO(t)
	f.on(actionStatus, func(w http.ResponseWriter, _ string, _ int) { writeValue(w, "Executing") })
	c, _ := newTestClient(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.PollStatus(ctx, "e", PollOptions{Interval: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PollStatus after cancel = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("PollStatus returned %s after start, want promptly after cancel", d)
	}
}

func TestPollIntervalsGrow(t *testing.T) {
	f := newFakeFO(t)
	var mu sync.Mutex
	var at []time.Time
	f.on(actionStatus, func(w http.ResponseWriter, _ string, n int) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if n < 6 {
			writeValue(w, "Executing")
			return
		}
		writeValue(w, "Succeeded")
	})
	c, _ := newTestClient(t, f, nil)
	if _, err := c.PollStatus(context.Background(), "e", PollOptions{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Waits: 20, 30, 45, 50, 50 ms ±20%, capped at 50.
	for i, ms := range []int{20, 30, 45, 50, 50} {
		want := time.Duration(ms) * time.Millisecond
		got := at[i+1].Sub(at[i])
		if got < time.Duration(float64(want)*0.8)-2*time.Millisecond || got > 50*time.Millisecond+150*time.Millisecond {
			t.Errorf("wait %d = %s, want about %s (±20%%, at most 50ms)", i+1, got, want)
		}
	}
}

func TestWaitPackageURL(t *testing.T) {
	const sas = "https://acct.blob.core.windows.net/dmf/pkg.zip?sv=2020-08-04&se=2026&sr=b&sp=r&sig=SECRETSIG%3D"
	tests := []struct {
		name      string
		answers   []string // the last one repeats
		timeout   time.Duration
		want      string
		wantErr   error
		wantAsks  int
		errSubstr string
	}{
		{name: "empty twice then URL", answers: []string{"", "", sas}, timeout: 5 * time.Second, want: sas, wantAsks: 3},
		{name: "at once", answers: []string{sas}, timeout: time.Second, want: sas, wantAsks: 1},
		{name: "loopback http", answers: []string{"http://127.0.0.1:10000/devstoreaccount1/dmf/p.zip?sig=x"}, timeout: time.Second, want: "http://127.0.0.1:10000/devstoreaccount1/dmf/p.zip?sig=x", wantAsks: 1},
		{name: "timeout", answers: []string{""}, timeout: 60 * time.Millisecond, wantErr: ErrPackageNotReady, wantAsks: -1, errSubstr: "after"},
		{name: "plain http refused", answers: []string{"http://acct.blob.core.windows.net/dmf/p.zip?sig=SECRETSIG"}, timeout: time.Second, wantErr: errAny, wantAsks: 1},
		{name: "file URL refused", answers: []string{"file:///etc/passwd"}, timeout: time.Second, wantErr: errAny, wantAsks: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionPackageURL, func(w http.ResponseWriter, _ string, n int) {
				writeRaw(w, 200, fmt.Sprintf(`{"value":{"value":%q}}`, tt.answers[min(n, len(tt.answers))-1]))
			})
			c, logs := newTestClient(t, f, nil)
			got, err := c.WaitPackageURL(context.Background(), "e", tt.timeout)
			switch {
			case tt.wantErr == nil && (err != nil || got != tt.want):
				t.Fatalf("WaitPackageURL = %q, %v; want %q, nil", redact.URL(got), err, redact.URL(tt.want))
			case errors.Is(tt.wantErr, errAny) && err == nil, tt.wantErr != nil && !errors.Is(tt.wantErr, errAny) && !errors.Is(err, tt.wantErr):
				t.Fatalf("WaitPackageURL = %q, %v; want error %v", redact.URL(got), err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "SECRETSIG") {
				t.Errorf("error %q leaks the signature", err)
			}
			if strings.Contains(logs.String(), "SECRETSIG") {
				t.Errorf("logs leak the signature:\n%s", logs)
			}
			if tt.errSubstr != "" && !strings.Contains(err.Error(), tt.errSubstr) {
				t.Errorf("error %q does not contain %q", err, tt.errSubstr)
			}
			if n := f.count(actionPackageURL); tt.wantAsks >= 0 && n != tt.wantAsks {
				t.Errorf("%d asks, want %d", n, tt.wantAsks)
			}
		})
	}
}

func TestExecutionErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{name: "JSON list", body: `{"value":["Row 1 failed","Row 2 failed"]}`, want: []string{"Row 1 failed", "Row 2 failed"}},
		{name: "JSON-encoded list in a string", body: `{"value":"[\"a\",\"b\"]"}`, want: []string{"a", "b"}},
		{name: "nested envelope with encoded list", body: `{"value":{"value":"[\"x\"]"}}`, want: []string{"x"}},
		{name: "plain string", body: `{"value":"Something went wrong"}`, want: []string{"Something went wrong"}},
		{name: "empty string", body: `{"value":""}`, want: []string{}},
		{name: "null", body: `{"value":null}`, want: []string{}},
		{name: "empty list", body: `{"value":[]}`, want: []string{}},
		{name: "encoded empty list", body: `{"value":"[]"}`, want: []string{}},
		{name: "objects", body: `{"value":[{"EntityName":"Customers V3","ErrorMessage":"Field X invalid"},{"Message":"general"},{"Code":7}]}`,
			want: []string{"Customers V3: Field X invalid", "general", `{"Code":7}`}},
		{name: "encoded objects", body: `{"value":"[{\"message\":\"m1\"}]"}`, want: []string{"m1"}},
		{name: "string that looks like JSON number", body: `{"value":"42"}`, want: []string{"42"}},
		{name: "doubly encoded", body: `{"value":"\"[\\\"deep\\\"]\""}`, want: []string{"deep"}},
		{name: "F&O form", body: `{"@odata.context":"https://env/data/$metadata#Edm.String","value":"[{\"RecordId\":\"5637144577\",\"Field\":\"CUSTGROUP\",\"ErrorMessage\":\"Group 'X' does not exist\"},{\"RecordId\":\"\",\"Field\":\"\",\"ErrorMessage\":\"Results. 1 records failed\"}]"}`,
			want: []string{"record 5637144577, field CUSTGROUP: Group 'X' does not exist", "Results. 1 records failed"}},
		{name: "F&O form, numeric record ID", body: `{"value":"[{\"RecordId\":5637144577,\"Field\":\"NAME\",\"ErrorMessage\":\"too long\"}]"}`,
			want: []string{"record 5637144577, field NAME: too long"}},
		{name: "F&O form with unescaped quotes: read by its keys", body: `{"value":"[{\"RecordId\":\"1\",\"Field\":\"NAME\",\"ErrorMessage\":\"Value \"A\" is invalid\"},{\"RecordId\":\"2\",\"Field\":\"\",\"ErrorMessage\":\"Say \"no\", then \"yes\"\"}]"}`,
			want: []string{`record 1, field NAME: Value "A" is invalid`, `record 2: Say "no", then "yes"`}},
		{name: "broken text without F&O's keys: raw text kept", body: `{"value":"[{\"Code\":\"1\",\"Text\":\"Value \"A\" is invalid\"}]"}`,
			want: []string{`[{"Code":"1","Text":"Value "A" is invalid"}]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			f.on(actionErrors, func(w http.ResponseWriter, _ string, _ int) { writeRaw(w, 200, tt.body) })
			c, _ := newTestClient(t, f, nil)
			got, err := c.ExecutionErrors(context.Background(), "e")
			if err != nil {
				t.Fatalf("ExecutionErrors with answer %s: %v", tt.body, err)
			}
			texts := make([]string, len(got))
			for i, e := range got {
				texts[i] = e.String()
			}
			if got == nil || !reflect.DeepEqual(texts, tt.want) {
				t.Errorf("ExecutionErrors with answer %s = %q, want %q", tt.body, texts, tt.want)
			}
		})
	}
}

func TestSummaryPageURL(t *testing.T) {
	f := newFakeFO(t)
	f.on(actionSummaryPage, func(w http.ResponseWriter, body string, _ int) {
		if body != `{"executionId":"e 1"}` {
			writeODataError(w, 400, "Bad", "body "+body)
			return
		}
		writeValue(w, "https://contoso.operations.dynamics.com/?mi=DMFExecutionSummary&id=e%201")
	})
	c, _ := newTestClient(t, f, nil)
	got, err := c.SummaryPageURL(context.Background(), "e 1")
	if err != nil || got != "https://contoso.operations.dynamics.com/?mi=DMFExecutionSummary&id=e%201" {
		t.Fatalf("SummaryPageURL = %q, %v; want the page link", got, err)
	}
}

func TestExecutionReportText(t *testing.T) {
	many := make([]ExecutionError, 12)
	for i := range many {
		many[i] = ExecutionError{RecordID: fmt.Sprint(5637144570 + i), Field: "CUSTGROUP", Message: fmt.Sprintf("error %d", i)}
	}
	tests := []struct {
		name    string
		rep     ExecutionReport
		want    []string
		wantNot []string
		// wantCause is F&O's verdict alone: no execution ID, no link.
		wantCause string
	}{
		{name: "Failed with no details", rep: ExecutionReport{ExecutionID: "G-1", Status: StatusFailed, Errors: []ExecutionError{},
			SummaryURL: "https://env/?mi=DMFExecutionSummary"},
			want:      []string{"G-1 ended Failed", "F&O gave no error details", "execution summary: https://env/?mi=DMFExecutionSummary"},
			wantCause: "F&O execution ended Failed; F&O gave no error details (GetExecutionErrors answered none)"},
		{name: "Canceled with no details and no link", rep: ExecutionReport{ExecutionID: "G-1", Status: StatusCanceled, Errors: []ExecutionError{}},
			want:      []string{"ended Canceled", "no error details", "Job history"},
			wantCause: "F&O execution ended Canceled; F&O gave no error details (GetExecutionErrors answered none)"},
		{name: "one error", rep: ExecutionReport{ExecutionID: "G-1", Status: StatusFailed, Errors: []ExecutionError{{Message: "raw [text"}}},
			want: []string{"with 1 error: raw [text;"}, wantCause: "F&O execution ended Failed with 1 error: raw [text"},
		{name: "many errors: count and the first five", rep: ExecutionReport{ExecutionID: "G-1", Status: StatusPartiallySucceeded, Errors: many},
			want:    []string{"with 12 errors: record 5637144570, field CUSTGROUP: error 0; ", "error 4 (and 7 more)"},
			wantNot: []string{"error 5"},
			wantCause: "F&O execution ended PartiallySucceeded with 12 errors: record 5637144570, field CUSTGROUP: error 0; record 5637144571, field CUSTGROUP: error 1; " +
				"record 5637144572, field CUSTGROUP: error 2; record 5637144573, field CUSTGROUP: error 3; record 5637144574, field CUSTGROUP: error 4 (and 7 more)"},
		{name: "errors not fetched", rep: ExecutionReport{ExecutionID: "G-1", Status: StatusFailed, ErrorsErr: errors.New("x")},
			want: []string{"could not be fetched"}, wantNot: []string{"no error details"},
			wantCause: "F&O execution ended Failed (its error messages could not be fetched)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.rep.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("report %q does not contain %q", msg, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(msg, w) {
					t.Errorf("report %q contains %q", msg, w)
				}
			}
			if got := cause.Of(fmt.Errorf("run: %w", &tt.rep)); got != tt.wantCause {
				t.Errorf("cause %q, want %q", got, tt.wantCause)
			}
		})
	}
}

// TestErrorCause: an error of the client carries, as its cause, F&O's
// answer named by its action and status, or the network's answer without
// the request line around it.
func TestErrorCause(t *testing.T) {
	tests := []struct {
		name      string
		closed    bool // F&O's server is gone
		wantCause string
	}{
		{"F&O's answer", false, "F&O GetExecutionSummaryStatus: HTTP 400: NoHandler: no handler for GetExecutionSummaryStatus: inner"},
		{"the network's answer", true, "dial tcp 127.0.0.1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFO(t)
			c, _ := newTestClient(t, f, &ClientOptions{MaxRetries: -1})
			if tt.closed {
				f.srv.Close()
			}
			_, err := c.ExecutionStatus(context.Background(), "G-1")
			if got := cause.Of(err); !strings.HasPrefix(got, tt.wantCause) || strings.Contains(got, "http://") {
				t.Errorf("cause %q of %v, want it to start with %q and hold no request URL", got, err, tt.wantCause)
			}
		})
	}
}
