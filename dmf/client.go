package dmf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/internal/loopback"
	"github.com/dmfexport/dmfexport/internal/redact"
)

// The OData actions of the Data management package REST API.
const (
	actionExport       = "ExportToPackage"
	actionStatus       = "GetExecutionSummaryStatus"
	actionPackageURL   = "GetExportedPackageUrl"
	actionErrors       = "GetExecutionErrors"
	actionSummaryPage  = "GetExecutionSummaryPageUrl"
	actionPathTemplate = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
)

// Actions are the OData actions the client calls, as ClientOptions.OnRetry
// names them.
func Actions() []string {
	return []string{actionExport, actionStatus, actionPackageURL, actionErrors, actionSummaryPage}
}

// ReasonThrottled is the reason ClientOptions.OnRetry gives for a call F&O
// throttled (429 Too Many Requests).
const ReasonThrottled = "HTTP 429"

// DefaultRequestTimeout bounds one HTTP request to F&O (when the caller
// gives no HTTP client of its own, or gives no timeout), so a hung call is
// retried instead of holding the run.
const DefaultRequestTimeout = 2 * time.Minute

const (
	defaultMaxRetries     = 5
	defaultRetryBaseDelay = time.Second
	defaultRetryMaxDelay  = 30 * time.Second

	// defaultRegisterWait and maxRegisterWait bound the waits between
	// status asks while an execution is not registered yet.
	defaultRegisterWait = 5 * time.Second
	maxRegisterWait     = 30 * time.Second

	// waitLogInterval is the time between two log lines of a wait on F&O
	// (for an execution to be registered, for a package URL): under a
	// minute, so that a slow status call does not push a line beyond it.
	waitLogInterval = 50 * time.Second

	// maxAnswerBytes bounds the body of a successful answer kept in memory.
	maxAnswerBytes = 8 << 20
	// maxErrorBodyBytes bounds the body of a failed answer kept in memory.
	maxErrorBodyBytes = 64 << 10
	// maxAPIMessage bounds an OData error code or message in an APIError.
	maxAPIMessage = 500
	// maxRawBodyInError bounds the raw body quoted when a failure is not OData.
	maxRawBodyInError = 200
)

// authHint is added to 401/403 errors: the usual cause is the missing
// registration of the application inside F&O, not the token itself.
func (e *APIError) authHint() string {
	if e.Identity == azauth.StaticTokenIdentity {
		// No application signs in: only the token itself can be wrong.
		return "the static token was refused: it may have expired, or be for another environment (its audience must be the F&O URL); get a new one"
	}
	who := "the token"
	if e.Identity != "" {
		who = "token for " + e.Identity
	}
	app := "the application"
	if e.ApplicationID != "" {
		app = "application " + e.ApplicationID
	}
	return who + " was refused: check that " + app + " is registered in F&O " +
		"(System administration > Setup > Microsoft Entra applications) and mapped to a user with data management roles"
}

// APIError is a non-2xx answer of F&O to one action. Code, Message and
// Details come from the error body: OData's {"error": {...}} (Details are
// the innererror message and its internalexception chain, where F&O puts
// the text a user can act on), or the {"Message": "..."} body of a refused
// token. A body that is neither leaves Message holding the status line and
// the start of the body. Each text is at most 500 characters; none ever
// holds the bearer token.
type APIError struct {
	Action     string   // OData action, e.g. ExportToPackage
	StatusCode int      // HTTP status code
	Code       string   // OData error code, may be empty
	Message    string   // OData error message, or status line and body start
	Details    []string // innererror messages, outermost first; at most maxInnerErrors

	// Identity and ApplicationID, set on 401 and 403 only, name who the
	// refused token stands for and the application to register in F&O
	// (from ClientOptions or the token's claims); either may be empty.
	Identity      string
	ApplicationID string
}

// Text returns F&O's own words for the error: its message and inner
// messages joined by ": ", without the generic "An error has occurred."
// when an inner message says more, and without repeats.
func (e *APIError) Text() string {
	parts := make([]string, 0, 1+len(e.Details))
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" || slices.Contains(parts, s) {
			return
		}
		parts = append(parts, s)
	}
	if !isGenericMessage(e.Message) || len(e.Details) == 0 {
		add(e.Message)
	}
	for _, d := range e.Details {
		add(d)
	}
	return strings.Join(parts, ": ")
}

// isGenericMessage reports whether msg is F&O's top-level message that says
// nothing ("An error has occurred.").
func isGenericMessage(msg string) bool {
	return strings.EqualFold(strings.TrimRight(strings.TrimSpace(msg), ". "), "An error has occurred")
}

// notRegistered reports whether F&O answered that it has no details for
// the execution asked about: HTTP 400 "Execution details were not found for
// execution id X", which it answers for a while after ExportToPackage,
// before it registers the execution.
func (e *APIError) notRegistered() bool {
	if e.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, s := range append([]string{e.Message}, e.Details...) {
		s = strings.ToLower(s)
		if strings.Contains(s, "execution details") && strings.Contains(s, "not found") {
			return true
		}
	}
	return false
}

// Error reads like "F&O ExportToPackage: HTTP 400: <code>: <text>" (see
// Text); for 401 and 403 it adds whose token was refused and what to check
// in F&O.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "F&O %s: HTTP %d", e.Action, e.StatusCode)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if text := e.Text(); text != "" {
		b.WriteString(": ")
		b.WriteString(text)
	}
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		b.WriteString("; ")
		b.WriteString(e.authHint())
	}
	return b.String()
}

// Cause is the whole error: F&O's answer, named by its action and status,
// is the cause of whatever failed with it.
func (e *APIError) Cause() string { return e.Error() }

// Client calls the Data management package REST API of one F&O environment.
// It is safe for concurrent use. It asks its credential for a token at
// every call and keeps none itself: azidentity's credentials cache tokens
// and renew them before they expire. It never writes a token to logs or
// errors.
type Client struct {
	base  string // environment URL without trailing slash
	scope string
	cred  azcore.TokenCredential
	hc    *http.Client
	log   *slog.Logger

	maxRetries int
	baseDelay  time.Duration
	maxDelay   time.Duration

	// Throttling and package URL waits; fields so tests can shorten them.
	throttleDefault time.Duration // wait after a 429 without Retry-After
	throttleMax     time.Duration // cap of a Retry-After wait
	urlWaitBase     time.Duration // first wait of WaitPackageURL
	urlWaitMax      time.Duration // cap of the WaitPackageURL backoff
	registerTimeout time.Duration // how long an execution may stay unknown to F&O
	registerWait    time.Duration // first wait between asks while it is
	waitLogEvery    time.Duration // most time a wait on F&O goes without a log line

	onRetry func(action, reason string)
	pacer   *Pacer // nil: calls are not paced

	identity string // who the token stands for, for 401/403 errors
	appID    string // application ID to register in F&O, for 401/403 errors
}

// NewClient returns a client for environment, e.g.
// "https://contoso.operations.dynamics.com" (a trailing slash is fine). The
// URL must be https; plain http is accepted only for a loopback host
// (127.0.0.0/8, ::1, localhost), as used by simulators. The URL may have a
// path (on-premises: .../namespaces/AXSF), which every call keeps. Tokens
// are asked of cred with the scope "<scheme>://<host>/.default" in lower
// case, without the path, unless opts.Scope sets another.
func NewClient(environment string, cred azcore.TokenCredential, opts *ClientOptions) (*Client, error) {
	if cred == nil {
		return nil, errors.New("new F&O client: no credential given")
	}
	base, err := parseEnvironment(environment)
	if err != nil {
		return nil, fmt.Errorf("new F&O client: %w", err)
	}
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	c := &Client{
		base:            base,
		scope:           strings.TrimSpace(o.Scope),
		cred:            cred,
		hc:              o.HTTPClient,
		log:             o.Logger,
		maxRetries:      o.MaxRetries,
		baseDelay:       o.RetryBaseDelay,
		maxDelay:        o.RetryMaxDelay,
		throttleDefault: 5 * time.Second,
		throttleMax:     5 * time.Minute,
		urlWaitBase:     500 * time.Millisecond,
		urlWaitMax:      30 * time.Second,
		registerTimeout: o.RegisterTimeout,
		registerWait:    o.RegisterInterval,
		waitLogEvery:    waitLogInterval,
		onRetry:         o.OnRetry,
		pacer:           o.Pacer,
		identity:        strings.TrimSpace(o.Identity),
		appID:           strings.TrimSpace(o.ApplicationID),
	}
	if c.scope == "" {
		c.scope = tokenScope(base)
	}
	if c.registerTimeout <= 0 {
		c.registerTimeout = DefaultRegisterTimeout
	}
	if c.registerWait <= 0 {
		c.registerWait = defaultRegisterWait
	}
	if o.PackageURLDelay > 0 {
		c.urlWaitBase = o.PackageURLDelay
	}
	if o.PackageURLMaxDelay > 0 {
		c.urlWaitMax = o.PackageURLMaxDelay
	}
	c.urlWaitMax = max(c.urlWaitMax, c.urlWaitBase)
	if o.MaxThrottleWait > 0 {
		c.throttleMax = o.MaxThrottleWait
		c.throttleDefault = min(c.throttleDefault, c.throttleMax)
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: DefaultRequestTimeout}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = defaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.baseDelay <= 0 {
		c.baseDelay = defaultRetryBaseDelay
	}
	if c.maxDelay <= 0 {
		c.maxDelay = defaultRetryMaxDelay
	}
	if c.maxDelay < c.baseDelay {
		c.maxDelay = c.baseDelay
	}
	return c, nil
}

// parseEnvironment checks an environment URL and returns it without trailing slash.
func parseEnvironment(environment string) (string, error) {
	env := strings.TrimSpace(environment)
	if env == "" {
		return "", errors.New("environment URL is empty: set it to e.g. https://contoso.operations.dynamics.com")
	}
	u, err := url.Parse(env)
	if err != nil {
		return "", fmt.Errorf("environment URL %q cannot be parsed: %w", redact.URL(env), err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("environment URL %q has no host: set it to e.g. https://contoso.operations.dynamics.com", redact.URL(env))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("environment URL %q must not carry user info, a query or a fragment", redact.URL(env))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !loopback.Host(u.Hostname()) {
			return "", fmt.Errorf("environment URL %q uses http: use https (http is allowed only for a loopback simulator)", redact.URL(env))
		}
	default:
		return "", fmt.Errorf("environment URL %q must use https", redact.URL(env))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return strings.TrimRight(u.String(), "/"), nil
}

// tokenScope is the default OAuth scope of an environment: the token
// audience of F&O is scheme and host in lower case, with a non-default port
// kept, and neither path nor trailing slash.
func tokenScope(base string) string {
	u, err := url.Parse(base)
	if err != nil { // parseEnvironment accepted it: cannot happen
		return strings.ToLower(base) + "/.default"
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	scheme := strings.ToLower(u.Scheme)
	if p := u.Port(); p != "" && !(scheme == "https" && p == "443") && !(scheme == "http" && p == "80") {
		host += ":" + p
	}
	return scheme + "://" + host + "/.default"
}

// token returns a bearer token for the client's scope from its credential,
// which caches it.
func (c *Client) token(ctx context.Context) (string, error) {
	at, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err != nil {
		return "", fmt.Errorf("get token for scope %s: %w", c.scope, err)
	}
	if at.Token == "" {
		return "", fmt.Errorf("get token for scope %s: the credential returned an empty token", c.scope)
	}
	return at.Token, nil
}

// failKind says whether and how a failed attempt may be retried.
type failKind int

const (
	failFatal     failKind = iota // do not retry
	failThrottled                 // 429: the request was not accepted
	failNotSent                   // the request never reached the server
	failTransient                 // 5xx, timeout, reset: the server may have acted on it
)

// failure is one failed attempt.
type failure struct {
	err        error
	kind       failKind
	reason     string        // short text for the retry log
	retryAfter time.Duration // server-given delay, for failThrottled
	// answer describes a 2xx answer that could not be used (its size and
	// Content-Type, never its body), for the retry log; "" otherwise.
	answer string
}

// send makes one POST of action and returns the body of a 2xx answer and
// its description (see describeAnswer). A 2xx answer larger than
// maxAnswerBytes (a gzip bomb once decoded, a proxy's endless page) is a
// transient failure: it says nothing about the execution, so it is retried
// like a 5xx.
func (c *Client) send(ctx context.Context, action string, payload []byte) ([]byte, string, *failure) {
	// Wait for the turn first: a token taken before a long wait could lapse.
	if c.pacer != nil {
		release, err := c.pacer.acquire(ctx)
		if err != nil {
			return nil, "", &failure{err: fmt.Errorf("F&O %s: wait for the environment's pace: %w", action, err), kind: failFatal}
		}
		defer release()
	}
	tok, err := c.token(ctx)
	if err != nil {
		return nil, "", &failure{err: err, kind: failFatal}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+actionPathTemplate+action, bytes.NewReader(payload))
	if err != nil {
		return nil, "", &failure{err: fmt.Errorf("F&O %s: build request: %w", action, err), kind: failFatal}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("OData-Version", "4.0")
	req.Header.Set("OData-MaxVersion", "4.0")
	req.Header.Set("User-Agent", "dmfexport")

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", c.transportFailure(ctx, action, err)
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
		if err != nil {
			f := c.transportFailure(ctx, action, err)
			if f.kind == failNotSent {
				f.kind = failTransient // the server answered: it acted on the request
			}
			return nil, "", f
		}
		if len(body) > maxAnswerBytes {
			desc := describeAnswer(resp, -1)
			return nil, "", &failure{err: fmt.Errorf("F&O %s: answer larger than %d bytes (%s)", action, maxAnswerBytes, desc),
				kind: failTransient, reason: "oversize answer", answer: desc}
		}
		c.log.Debug("F&O call", "action", action, "status", resp.StatusCode, "duration", time.Since(start))
		if c.pacer != nil {
			c.pacer.succeeded()
		}
		return body, describeAnswer(resp, len(body)), nil
	}

	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	apiErr := newAPIError(action, resp, body, tok)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		apiErr.Identity, apiErr.ApplicationID = c.identity, c.appID
		tokApp, tokTenant := azauth.TokenIdentity(tok)
		if apiErr.ApplicationID == "" {
			apiErr.ApplicationID = tokApp
		}
		if apiErr.Identity == "" && tokApp != "" {
			apiErr.Identity = "app " + tokApp
			if tokTenant != "" {
				apiErr.Identity += " in tenant " + tokTenant
			}
		}
	}
	f := &failure{err: apiErr, kind: failFatal, reason: fmt.Sprintf("HTTP %d", resp.StatusCode)}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		// A credential that keeps tokens itself (azauth's, for the Azure
		// CLI) drops the refused one, so the next call asks anew.
		if f, ok := c.cred.(interface{ Forget(tok string) }); ok {
			f.Forget(tok)
		}
	case http.StatusTooManyRequests:
		f.kind = failThrottled
		f.retryAfter = c.retryAfter(resp.Header.Get("Retry-After"), time.Now())
		if c.pacer != nil {
			c.pacer.throttled(f.retryAfter)
		}
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		f.kind = failTransient
	}
	return nil, "", f
}

// describeAnswer names a 2xx answer for logs and errors without its body:
// its Content-Type, its size (n < 0: more than maxAnswerBytes) and whether
// it came gzip-encoded (decoded by the transport, as a gzip bomb would be).
func describeAnswer(resp *http.Response, n int) string {
	ct := strings.TrimSpace(resp.Header.Get("Content-Type"))
	if ct == "" {
		ct = "no Content-Type"
	} else {
		ct = "Content-Type " + truncate(strings.ToValidUTF8(ct, "?"), 80)
	}
	size := fmt.Sprintf("%d bytes", n)
	if n < 0 {
		size = fmt.Sprintf("more than %d bytes", maxAnswerBytes)
	}
	if resp.Uncompressed {
		size += " once gzip-decoded"
	}
	return ct + ", " + size
}

// transportFailure classifies an error of the HTTP exchange itself.
func (c *Client) transportFailure(ctx context.Context, action string, err error) *failure {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &failure{err: fmt.Errorf("F&O %s: %w", action, ctxErr), kind: failFatal}
	}
	f := &failure{err: fmt.Errorf("F&O %s: %w", action, networkCause(err)), kind: failFatal, reason: "transport error"}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		f.kind, f.reason = failNotSent, "name resolution failed"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		f.kind, f.reason = failNotSent, "connection failed"
	case errors.As(err, &netErr) && netErr.Timeout():
		f.kind, f.reason = failTransient, "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		f.kind, f.reason = failTransient, "connection reset"
	}
	return f
}

// networkCause marks the network's answer inside err, an error of the HTTP
// client (a *url.Error, which it wraps in nothing), as its cause: "dial
// tcp …: connection refused", not the request line around it.
func networkCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		marked := *ue
		marked.Err = cause.Mark(ue.Err)
		return &marked
	}
	return cause.Mark(err)
}

// retryAfter reads a Retry-After header (seconds or HTTP date).
func (c *Client) retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	d := c.throttleDefault
	if h != "" {
		if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
			if secs < 0 {
				secs = 0
			}
			if secs > int64(c.throttleMax/time.Second) {
				return c.throttleMax
			}
			d = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(h); err == nil {
			d = max(t.Sub(now), 0)
		}
	}
	return min(d, c.throttleMax)
}

// backoff is the delay before retry number attempt (0-based) after a
// transient fault: base×2^attempt capped, then jittered to [d/2, d].
func (c *Client) backoff(attempt int) time.Duration {
	d := c.baseDelay
	for i := 0; i < attempt && d < c.maxDelay; i++ {
		d *= 2
	}
	d = min(d, c.maxDelay)
	half := d / 2
	return half + rand.N(d-half+1)
}

// delayFor is the wait before retrying after f.
func (c *Client) delayFor(f *failure, attempt int) time.Duration {
	if f.kind == failThrottled {
		return f.retryAfter
	}
	return c.backoff(attempt)
}

// call posts action with reqBody, retrying 429s and transient faults, and
// hands the unwrapped "value" of the answer to read. With retryUnreadable,
// a 2xx answer that cannot be read (not JSON, no value, or a value read
// refuses) is retried like a transient fault, within the same retry budget:
// for read-only actions, where a garbled answer under load says nothing
// about the execution.
func (c *Client) call(ctx context.Context, action string, reqBody any, retryUnreadable bool, read func(json.RawMessage) error) error {
	payload, err := json.Marshal(reqBody)
	if err != nil {
		return fmt.Errorf("F&O %s: encode request: %w", action, err)
	}
	for attempt := 0; ; attempt++ {
		body, desc, f := c.send(ctx, action, payload)
		if f == nil {
			v, err := parseValue(body)
			if err == nil {
				err = read(v)
			}
			if err == nil {
				return nil
			}
			f = &failure{err: fmt.Errorf("F&O %s: read answer (%s): %w", action, desc, err), kind: failFatal, reason: "unreadable answer", answer: desc}
			if retryUnreadable {
				f.kind = failTransient
			}
		}
		if f.kind == failFatal {
			return f.err
		}
		if attempt >= c.maxRetries {
			return retriesExhausted(f.err, attempt)
		}
		delay := c.delayFor(f, attempt)
		c.logRetry(action, f, delay, attempt)
		if err := ctxio.Sleep(ctx, delay); err != nil {
			return fmt.Errorf("F&O %s: %w", action, err)
		}
	}
}

func retriesExhausted(err error, retries int) error {
	if retries == 0 {
		return err
	}
	return fmt.Errorf("%w (gave up after %d retries)", err, retries)
}

func (c *Client) logRetry(action string, f *failure, delay time.Duration, attempt int) {
	args := []any{"action", action, "reason", f.reason, "delay", delay, "retry", attempt + 1, "max_retries", c.maxRetries}
	if f.answer != "" {
		args = append(args, "answer", f.answer)
	}
	c.log.Warn("F&O call failed, retrying", args...)
	if c.onRetry != nil {
		c.onRetry(action, f.reason)
	}
}

// pollSleep waits d between two asks about an execution: on the Pacer's
// poll ticker when the client has one, so polls of many executions go
// together.
func (c *Client) pollSleep(ctx context.Context, d time.Duration) error {
	if c.pacer == nil {
		return ctxio.Sleep(ctx, d)
	}
	return c.pacer.pollWait(ctx, d)
}

// exportBody is the JSON body of ExportToPackage.
type exportBody struct {
	DefinitionGroupID string `json:"definitionGroupId"`
	PackageName       string `json:"packageName"`
	ExecutionID       string `json:"executionId"`
	ReExecute         bool   `json:"reExecute"`
	LegalEntityID     string `json:"legalEntityId"`
}

// executionBody is the JSON body of the actions that take an execution ID.
type executionBody struct {
	ExecutionID string `json:"executionId"`
}

// ExportToPackage starts the export of a data project and returns its
// execution ID. It posts at most once per ID while F&O may still register
// an earlier post: 429 answers (not accepted) are retried after
// Retry-After; after a fault that leaves it unknown whether F&O started the
// export (5xx, timeout, reset, an unreadable or oversize 2xx answer) with a chosen
// r.ExecutionID, the status of that ID is polled for the whole
// ClientOptions.RegisterTimeout window (F&O answers Unknown or HTTP 400
// "Execution details were not found" until it registers an execution): if
// F&O comes to know it, its ID is returned and no second export is
// started; only when the window passes is the POST made again. With
// r.ReExecute only NotRun or Executing count as proof, since the ID existed
// before. With an empty r.ExecutionID such a fault is returned as an error,
// never retried, because a retry could start a second export.
func (c *Client) ExportToPackage(ctx context.Context, r ExportRequest) (string, error) {
	if r.DefinitionGroupID == "" {
		return "", errors.New("export to package: no definition group (data project) given")
	}
	payload, err := json.Marshal(exportBody{ //nolint:staticcheck // S1016: a literal keeps the wire body apart from the exported request type
		DefinitionGroupID: r.DefinitionGroupID,
		PackageName:       r.PackageName,
		ExecutionID:       r.ExecutionID,
		ReExecute:         r.ReExecute,
		LegalEntityID:     r.LegalEntityID,
	})
	if err != nil {
		return "", fmt.Errorf("export to package: encode request: %w", err)
	}
	id := r.ExecutionID
	mayExist := false // an earlier attempt may have started the export
	for attempt := 0; ; attempt++ {
		body, desc, f := c.send(ctx, actionExport, payload)
		if f == nil {
			v, err := parseValue(body)
			var got string
			if err == nil {
				got, err = valueString(v)
			}
			if err == nil {
				if got == "" {
					if id == "" {
						return "", fmt.Errorf("export to package %q: F&O answered an empty execution ID: check its data management workspace for the job", r.DefinitionGroupID)
					}
					return id, nil
				}
				return got, nil
			}
			// F&O (or a proxy in front of it) answered 2xx with something
			// else than an execution ID: whether the export started is
			// unknown, as after a 5xx.
			f = &failure{err: fmt.Errorf("F&O %s: read answer (%s): %w", actionExport, desc, err),
				kind: failTransient, reason: "unreadable answer", answer: desc}
		}
		if f.kind == failFatal {
			if mayExist {
				// A retried POST refused (e.g. a reused ID): the first one may have worked.
				if st, err := c.ExecutionStatus(ctx, id); err == nil && startedBy(r, st) {
					c.log.Info("F&O export found after a refused retry", "execution_id", id, "status", string(st))
					return id, nil
				}
			}
			return "", fmt.Errorf("export to package %q: %w", r.DefinitionGroupID, f.err)
		}
		if f.kind == failTransient && id == "" {
			return "", fmt.Errorf("export to package %q: %w; the export may have started in F&O, so it was not retried "+
				"(no execution ID was chosen): check the data management workspace before running again", r.DefinitionGroupID, f.err)
		}
		if f.kind == failTransient {
			// F&O may have started the export and not registered it yet:
			// wait for the ID for the whole window before posting again.
			mayExist = true
			args := []any{"execution_id", id, "reason", f.reason, "window", c.registerTimeout}
			if f.answer != "" {
				args = append(args, "answer", f.answer)
			}
			c.log.Warn("F&O export may have started: waiting for F&O to register the execution before posting again", args...)
			st, err := c.AwaitExecution(ctx, id)
			switch {
			case errors.Is(err, ErrNotRegistered):
				if attempt >= c.maxRetries {
					return "", fmt.Errorf("export to package %q: %w; and then: %w", r.DefinitionGroupID, retriesExhausted(f.err, attempt), err)
				}
				c.log.Warn("F&O never registered the execution: posting the export again", "execution_id", id, "window", c.registerTimeout)
				c.logRetry(actionExport, f, 0, attempt)
				continue
			case err != nil:
				return "", fmt.Errorf("export to package %q: %w; then asking whether execution %q started failed: %w; "+
					"check its status in F&O before running again", r.DefinitionGroupID, f.err, id, err)
			case startedBy(r, st):
				c.log.Info("F&O export already started, not posting again", "execution_id", id, "status", string(st))
				return id, nil
			default: // a re-execution whose ID shows the earlier run's final state
				return "", fmt.Errorf("export to package %q: %w; execution %q is %s, so whether the re-execution started is unknown: "+
					"check its status in F&O before running again", r.DefinitionGroupID, f.err, id, st)
			}
		}
		// Throttled (429) or never sent: F&O did not take this request.
		if attempt >= c.maxRetries {
			if mayExist {
				return "", fmt.Errorf("export to package %q: %w; execution %q may exist in F&O: check its status before running again",
					r.DefinitionGroupID, retriesExhausted(f.err, attempt), id)
			}
			return "", fmt.Errorf("export to package %q: %w", r.DefinitionGroupID, retriesExhausted(f.err, attempt))
		}
		delay := c.delayFor(f, attempt)
		c.logRetry(actionExport, f, delay, attempt)
		if err := ctxio.Sleep(ctx, delay); err != nil {
			return "", fmt.Errorf("export to package %q: %w", r.DefinitionGroupID, err)
		}
		if mayExist {
			// An earlier post may have registered since its window closed.
			if st, err := c.ExecutionStatus(ctx, id); err == nil && startedBy(r, st) {
				c.log.Info("F&O export already started, not posting again", "execution_id", id, "status", string(st))
				return id, nil
			}
		}
	}
}

// AwaitExecution asks the status of an execution this client started (or
// may have started) until F&O knows it, and returns its first status other
// than Unknown. F&O answers Unknown, or HTTP 400 "Execution details were
// not found", for a while after ExportToPackage; those answers are waited
// through for ClientOptions.RegisterTimeout (asking every
// RegisterInterval, growing), then the error wraps ErrNotRegistered and
// says what to check in F&O. Other failures of the status call are
// returned as they are.
func (c *Client) AwaitExecution(ctx context.Context, executionID string) (Status, error) {
	start := time.Now()
	wait := c.registerWait
	heard := waitLog{every: c.waitLogEvery, last: start}
	for asks := 1; ; asks++ {
		st, last, err := c.statusOf(ctx, executionID)
		if err != nil {
			return "", err
		}
		if canonicalStatus(st) != StatusUnknown {
			return st, nil
		}
		waited := time.Since(start)
		remaining := c.registerTimeout - waited
		if remaining <= 0 {
			return StatusUnknown, c.notRegisteredError(executionID, waited, asks, last)
		}
		if heard.due(time.Now()) {
			c.log.Info("still waiting for F&O to register the execution", "execution_id", executionID,
				"waited", waited.Round(time.Second), "window", c.registerTimeout, "asks", asks, "answer", last)
		}
		d := min(jitter(wait, 0.2), remaining, heard.untilDue(time.Now()))
		c.log.Debug("F&O does not know the execution yet", "execution_id", executionID, "answer", last, "delay", d)
		if err := c.pollSleep(ctx, d); err != nil {
			return StatusUnknown, fmt.Errorf("wait for F&O to register execution %q: %w", executionID, err)
		}
		wait = min(time.Duration(float64(wait)*1.5), max(maxRegisterWait, c.registerWait))
	}
}

// notRegisteredError says that F&O did not register an execution within
// the window: what was asked, for how long, the last answer, and what to
// check in F&O.
func (c *Client) notRegisteredError(executionID string, waited time.Duration, asks int, last string) error {
	return fmt.Errorf("F&O %s for execution %q: %w after %s (%d asks, last answer: %s): "+
		"check that the data project exists in F&O and look for execution %q in the data management workspace (Job history)",
		actionStatus, executionID, ErrNotRegistered, waited.Round(time.Millisecond), asks, last, executionID)
}

// startedBy reports whether status st of r.ExecutionID proves that r started.
// For a new execution any status but Unknown does. For a re-execution the ID
// existed before, so only a running state (NotRun, Executing) does: a final
// state may be the earlier run's.
func startedBy(r ExportRequest, st Status) bool {
	if !r.ReExecute {
		return strings.TrimSpace(string(st)) != "" && canonicalStatus(st) != StatusUnknown
	}
	switch canonicalStatus(st) {
	case StatusNotRun, StatusExecuting:
		return true
	}
	return false
}

// ExecutionStatus returns the status of an execution exactly as F&O names it,
// including names outside the contract (PollStatus judges them). F&O's HTTP
// 400 "Execution details were not found for execution id X", its answer
// before it registers a new execution, comes back as StatusUnknown: both
// mean "not known yet". A 2xx answer that cannot be read is retried like a
// transient fault.
func (c *Client) ExecutionStatus(ctx context.Context, executionID string) (Status, error) {
	st, _, err := c.statusOf(ctx, executionID)
	return st, err
}

// statusOf is ExecutionStatus that also returns, for StatusUnknown, F&O's
// answer in words ("status Unknown" or the 400's text), for errors.
func (c *Client) statusOf(ctx context.Context, executionID string) (Status, string, error) {
	s, err := c.callString(ctx, actionStatus, executionID)
	if err != nil {
		if apiErr, ok := errors.AsType[*APIError](err); ok && apiErr.notRegistered() {
			return StatusUnknown, apiErr.Error(), nil
		}
		return "", "", fmt.Errorf("status of execution %q: %w", executionID, err)
	}
	st := Status(strings.TrimSpace(s))
	return st, "status " + string(st), nil
}

// PackageURL returns the download URL of an execution's package, or "" while
// F&O has none yet. A non-empty URL is https (or http to a loopback host);
// it embeds a SAS token: log it only through RedactURL. A 2xx answer that
// cannot be read is retried like a transient fault.
func (c *Client) PackageURL(ctx context.Context, executionID string) (string, error) {
	s, err := c.callString(ctx, actionPackageURL, executionID)
	if err != nil {
		return "", fmt.Errorf("package URL of execution %q: %w", executionID, err)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if err := checkPackageURL(s); err != nil {
		return "", fmt.Errorf("package URL of execution %q: %w", executionID, err)
	}
	return s, nil
}

// ExecutionErrors returns the errors F&O recorded for an execution; none is
// an empty slice and a nil error. F&O answers a JSON-encoded string holding
// a list of {"RecordId", "Field", "ErrorMessage"}; a text that does not
// parse (F&O leaves quotes in messages unescaped) is kept as one error
// whose Message is that raw text. Other shapes (a plain list, strings,
// objects with a message) are read too.
func (c *Client) ExecutionErrors(ctx context.Context, executionID string) ([]ExecutionError, error) {
	var errs []ExecutionError
	err := c.call(ctx, actionErrors, executionBody{executionID}, false, func(v json.RawMessage) error {
		var err error
		errs, err = parseErrors(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("errors of execution %q: %w", executionID, err)
	}
	return errs, nil
}

// SummaryPageURL returns the link to the execution summary page in the F&O
// UI, for error messages; it may be "".
func (c *Client) SummaryPageURL(ctx context.Context, executionID string) (string, error) {
	s, err := c.callString(ctx, actionSummaryPage, executionID)
	if err != nil {
		return "", fmt.Errorf("summary page of execution %q: %w", executionID, err)
	}
	return strings.TrimSpace(s), nil
}

// callString calls a read-only action about one execution and returns its
// string value; unreadable answers are retried.
func (c *Client) callString(ctx context.Context, action, executionID string) (string, error) {
	var s string
	err := c.call(ctx, action, executionBody{executionID}, true, func(v json.RawMessage) error {
		var err error
		s, err = valueString(v)
		return err
	})
	return s, err
}

// maxInnerErrors bounds the innererror / internalexception levels kept.
const maxInnerErrors = 5

// errorBody is an error answer of F&O: OData's {"error": {...}} or, for a
// refused token, {"Message": "..."}. Keys match in any case; a message may
// be a string or OData v3's {"value": "..."}.
type errorBody struct {
	Error *struct {
		Code       json.RawMessage `json:"code"`
		Message    json.RawMessage `json:"message"`
		InnerError json.RawMessage `json:"innererror"`
	} `json:"error"`
	Message json.RawMessage `json:"message"`
}

// innerError is one level of OData's innererror; F&O chains the causes in
// internalexception (other servers nest innererror).
type innerError struct {
	Message           json.RawMessage `json:"message"`
	InternalException json.RawMessage `json:"internalexception"`
	InnerError        json.RawMessage `json:"innererror"`
}

// parseErrorBody reads F&O's words from an error body: code, message and
// inner messages. ok is false when the body is neither form.
func parseErrorBody(body []byte) (code, msg string, details []string, ok bool) {
	var env errorBody
	if json.Unmarshal(body, &env) != nil {
		return "", "", nil, false
	}
	if env.Error == nil {
		msg = jsonText(env.Message)
		return "", msg, nil, msg != ""
	}
	code, msg = jsonText(env.Error.Code), jsonText(env.Error.Message)
	next := env.Error.InnerError
	for range maxInnerErrors {
		if firstByte(next) != '{' {
			break
		}
		var in innerError
		if json.Unmarshal(next, &in) != nil {
			break
		}
		if m := jsonText(in.Message); m != "" {
			details = append(details, m)
		}
		next = in.InternalException
		if firstByte(next) != '{' {
			next = in.InnerError
		}
	}
	return code, msg, details, code != "" || msg != "" || len(details) > 0 || env.Error.InnerError != nil
}

// jsonText returns the text of a JSON string, number or {"value": "..."};
// anything else is "".
func jsonText(v json.RawMessage) string {
	switch firstByte(v) {
	case '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return strings.TrimSpace(s)
		}
	case '{':
		var m map[string]json.RawMessage
		if json.Unmarshal(v, &m) == nil {
			if iv, ok := lookupValue(m); ok && firstByte(iv) == '"' {
				return jsonText(iv)
			}
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			return n.String()
		}
	}
	return ""
}

// newAPIError builds the error for a non-2xx answer, scrubbing tok from it.
func newAPIError(action string, resp *http.Response, body []byte, tok string) *APIError {
	e := &APIError{Action: action, StatusCode: resp.StatusCode}
	clean := func(s string) string { return truncate(strings.ToValidUTF8(redact.Text(s, tok), "?"), maxAPIMessage) }
	if code, msg, details, ok := parseErrorBody(body); ok {
		e.Code, e.Message = clean(code), clean(msg)
		for _, d := range details {
			e.Details = append(e.Details, clean(d))
		}
		return e
	}
	msg := resp.Status
	if msg == "" {
		msg = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	raw := strings.TrimSpace(strings.ToValidUTF8(redact.Text(string(body), tok), "?"))
	if raw != "" {
		msg += ": " + strings.TrimSpace(truncate(raw, maxRawBodyInError))
	}
	e.Message = msg
	return e
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// parseValue reads an OData action answer and returns the JSON of its
// "value": flat {"value": X} or nested {"value": {"value": X}}, with any
// @odata keys and extra properties ignored. A missing or null value yields
// the JSON null.
func parseValue(body []byte) (json.RawMessage, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, fmt.Errorf("answer is not a JSON object: %w", err)
	}
	if outer == nil {
		return nil, errors.New("answer is null, want a JSON object with a value")
	}
	v, ok := lookupValue(outer)
	if !ok {
		return nil, errors.New("answer has no value property")
	}
	// The documented nested form: "value": {"value": X}.
	if t := firstByte(v); t == '{' {
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(v, &inner); err != nil {
			return nil, fmt.Errorf("answer value is not a JSON object: %w", err)
		}
		iv, ok := lookupValue(inner)
		if !ok {
			return nil, errors.New("answer value is an object without a value property")
		}
		v = iv
	}
	return v, nil
}

// lookupValue finds "value", then any case variant of it.
func lookupValue(m map[string]json.RawMessage) (json.RawMessage, bool) {
	if v, ok := m["value"]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, "value") {
			return v, true
		}
	}
	return nil, false
}

// firstByte returns the first non-space byte of a JSON text, or 0.
func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// valueString turns an answer value into a string: null → "".
func valueString(v json.RawMessage) (string, error) {
	switch firstByte(v) {
	case 0, 'n':
		if len(bytes.TrimSpace(v)) == 0 || string(bytes.TrimSpace(v)) == "null" {
			return "", nil
		}
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("answer value: %w", err)
		}
		return s, nil
	}
	return "", fmt.Errorf("answer value is %s, want a string", jsonKind(v))
}

// jsonKind names the kind of a JSON value (object, array, number, ...)
// for errors, which never quote an answer's body.
func jsonKind(v json.RawMessage) string {
	switch firstByte(v) {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return "not a JSON value"
}

// maxErrorsDepth bounds how many JSON-in-string layers parseErrors unwraps.
const maxErrorsDepth = 4

// parseErrors reads the value of GetExecutionErrors: a string holding a
// JSON list of {"RecordId", "Field", "ErrorMessage"} (F&O's form), such a
// list as it is, a plain message, or null/empty for none. A string whose
// content is not valid JSON (F&O leaves quotes inside messages unescaped)
// is kept whole as one error. List elements may be strings or objects; an
// object yields its message field (prefixed by its entity name if it has
// one) or else its JSON.
func parseErrors(v json.RawMessage) ([]ExecutionError, error) {
	errs, err := appendErrors(nil, v, 0)
	if err != nil {
		return nil, err
	}
	if errs == nil {
		errs = []ExecutionError{}
	}
	return errs, nil
}

func appendErrors(errs []ExecutionError, v json.RawMessage, depth int) ([]ExecutionError, error) {
	switch firstByte(v) {
	case 0:
		return errs, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, fmt.Errorf("error list: %w", err)
		}
		for _, it := range items {
			var err error
			if errs, err = appendErrorItem(errs, it); err != nil {
				return nil, err
			}
		}
		return errs, nil
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("error text: %w", err)
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return errs, nil
		}
		if depth < maxErrorsDepth && json.Valid([]byte(s)) {
			switch s[0] {
			case '[', '"', '{':
				return appendErrors(errs, json.RawMessage(s), depth+1)
			case 'n':
				return errs, nil // "null"
			}
		}
		if found := unescapedErrorList(s); len(found) > 0 {
			return append(errs, found...), nil
		}
		return append(errs, ExecutionError{Message: s}), nil
	case '{':
		return appendErrorItem(errs, v)
	default:
		if !json.Valid(v) {
			return nil, errors.New("error value is not valid JSON")
		}
		if string(bytes.TrimSpace(v)) == "null" {
			return errs, nil
		}
		return append(errs, ExecutionError{Message: string(bytes.TrimSpace(v))}), nil
	}
}

// errorListKey finds the keys of F&O's error objects, with the quote that
// opens each and the colon after it.
var errorListKey = regexp.MustCompile(`(?i)"(RecordId|Field|ErrorMessage)"\s*:\s*`)

// unescapedErrorList reads F&O's list of {"RecordId","Field","ErrorMessage"}
// objects when it is not valid JSON because F&O leaves the quotes inside
// messages unescaped: each value runs from its key to the next key (or the
// end), without the quotes and separators around it. A key met again starts
// the next object; objects without a message are left out. It returns nil
// when no object has a message, so the caller keeps the raw text.
func unescapedErrorList(s string) []ExecutionError {
	if s == "" || (s[0] != '[' && s[0] != '{') {
		return nil
	}
	locs := errorListKey.FindAllStringSubmatchIndex(s, -1)
	var out []ExecutionError
	var cur ExecutionError
	seen := map[string]bool{}
	for i, loc := range locs {
		key := strings.ToLower(s[loc[2]:loc[3]])
		end := len(s)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		if seen[key] {
			if cur.Message != "" {
				out = append(out, cur)
			}
			cur, seen = ExecutionError{}, map[string]bool{}
		}
		seen[key] = true
		v := unquoteLoose(s[loc[1]:end])
		switch key {
		case "recordid":
			cur.RecordID = v
		case "field":
			cur.Field = v
		case "errormessage":
			cur.Message = v
		}
	}
	if cur.Message != "" {
		out = append(out, cur)
	}
	return out
}

// unquoteLoose turns the text between two keys of a broken JSON object into
// the value it holds: separators and brackets after it dropped, the quotes
// around it removed and JSON escapes undone where they are well formed.
func unquoteLoose(v string) string {
	v = strings.TrimRight(v, " \t\r\n,{}[]")
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		inner := v[1 : len(v)-1]
		var u string
		if json.Unmarshal([]byte(`"`+inner+`"`), &u) == nil {
			return strings.TrimSpace(u)
		}
		return strings.TrimSpace(inner)
	}
	if v == "null" {
		return ""
	}
	return v
}

// messageKeys are the properties of an error object holding its text, in
// order of preference (compared case-insensitively).
var messageKeys = []string{"errormessage", "message", "error", "description", "text"}

func appendErrorItem(errs []ExecutionError, it json.RawMessage) ([]ExecutionError, error) {
	switch firstByte(it) {
	case '"':
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return nil, fmt.Errorf("error text: %w", err)
		}
		if s = strings.TrimSpace(s); s != "" {
			errs = append(errs, ExecutionError{Message: s})
		}
		return errs, nil
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(it, &obj); err != nil {
			return nil, fmt.Errorf("error object: %w", err)
		}
		e := ExecutionError{RecordID: objectText(obj, "recordid"), Field: objectText(obj, "field"), Message: objectMessage(obj)}
		if e.Message == "" {
			var compact bytes.Buffer
			if err := json.Compact(&compact, it); err != nil {
				return nil, fmt.Errorf("error object: %w", err)
			}
			e.Message = compact.String()
		}
		return append(errs, e), nil
	case 'n':
		if string(bytes.TrimSpace(it)) == "null" {
			return errs, nil
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, it); err != nil {
		return nil, fmt.Errorf("error item: %w", err)
	}
	return append(errs, ExecutionError{Message: compact.String()}), nil
}

// objectText returns the text of property key (any case) of an error
// object: a string, or a number as written; "" otherwise.
func objectText(obj map[string]json.RawMessage, key string) string {
	if v, ok := obj[key]; ok {
		return jsonText(v)
	}
	for k, v := range obj {
		if strings.EqualFold(k, key) {
			if s := jsonText(v); s != "" {
				return s
			}
		}
	}
	return ""
}

// objectMessage returns the message of an error object, or "".
func objectMessage(obj map[string]json.RawMessage) string {
	for _, key := range messageKeys {
		if msg := objectText(obj, key); msg != "" {
			if entity := objectText(obj, "entityname"); entity != "" {
				return entity + ": " + msg
			}
			return msg
		}
	}
	return ""
}
