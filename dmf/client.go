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
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
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

const (
	defaultMaxRetries     = 5
	defaultRetryBaseDelay = time.Second
	defaultRetryMaxDelay  = 30 * time.Second
	defaultHTTPTimeout    = 2 * time.Minute

	// tokenRefreshMargin is how long before its expiry a cached token is replaced.
	tokenRefreshMargin = 2 * time.Minute

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
	if e.Identity == staticTokenIdentity {
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

// APIError is a non-2xx answer of F&O to one action. Code and Message come
// from the OData error body when there is one (each at most 500 characters);
// otherwise Message holds the status line and the start of the body. Neither
// ever holds the bearer token.
type APIError struct {
	Action     string // OData action, e.g. ExportToPackage
	StatusCode int    // HTTP status code
	Code       string // OData error code, may be empty
	Message    string // OData error message, or status line and body start

	// Identity and ApplicationID, set on 401 and 403 only, name who the
	// refused token stands for and the application to register in F&O
	// (from ClientOptions or the token's claims); either may be empty.
	Identity      string
	ApplicationID string
}

// Error reads like "F&O ExportToPackage: HTTP 400: <code>: <message>"; for
// 401 and 403 it adds whose token was refused and what to check in F&O.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "F&O %s: HTTP %d", e.Action, e.StatusCode)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		b.WriteString("; ")
		b.WriteString(e.authHint())
	}
	return b.String()
}

// Client calls the Data management package REST API of one F&O environment.
// It is safe for concurrent use; it caches the bearer token until two
// minutes before it expires and never writes it to logs or errors.
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
	unknownLimit    int           // Unknown answers tolerated by PollStatus

	onRetry func(action, reason string)

	identity string // who the token stands for, for 401/403 errors
	appID    string // application ID to register in F&O, for 401/403 errors

	tokenLock chan struct{} // 1-slot semaphore guarding tok/tokExp; honours ctx
	tok       string
	tokExp    time.Time
}

// StaticToken returns a credential that always yields token, valid until the
// far future: for tests, simulators and tokens obtained elsewhere.
func StaticToken(token string) azcore.TokenCredential {
	return staticToken(token)
}

type staticToken string

func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{
		Token:     string(t),
		ExpiresOn: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
	}, nil
}

// NewClient returns a client for environment, e.g.
// "https://contoso.operations.dynamics.com" (a trailing slash is fine). The
// URL must be https; plain http is accepted only for a loopback host
// (127.0.0.0/8, ::1, localhost), as used by simulators. Tokens are asked of
// cred with the scope "<environment>/.default".
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
		scope:           base + "/.default",
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
		unknownLimit:    5,
		tokenLock:       make(chan struct{}, 1),
		onRetry:         o.OnRetry,
		identity:        strings.TrimSpace(o.Identity),
		appID:           strings.TrimSpace(o.ApplicationID),
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
		c.hc = &http.Client{Timeout: defaultHTTPTimeout}
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
		return "", fmt.Errorf("environment URL %q cannot be parsed: %w", RedactURL(env), err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("environment URL %q has no host: set it to e.g. https://contoso.operations.dynamics.com", RedactURL(env))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("environment URL %q must not carry user info, a query or a fragment", RedactURL(env))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return "", fmt.Errorf("environment URL %q uses http: use https (http is allowed only for a loopback simulator)", RedactURL(env))
		}
	default:
		return "", fmt.Errorf("environment URL %q must use https", RedactURL(env))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return strings.TrimRight(u.String(), "/"), nil
}

// token returns a bearer token, from the cache while it has more than
// tokenRefreshMargin left.
func (c *Client) token(ctx context.Context) (string, error) {
	select {
	case c.tokenLock <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-c.tokenLock }()
	if c.tok != "" && time.Now().Before(c.tokExp.Add(-tokenRefreshMargin)) {
		return c.tok, nil
	}
	at, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err != nil {
		return "", fmt.Errorf("get token for scope %s: %w", c.scope, err)
	}
	if at.Token == "" {
		return "", fmt.Errorf("get token for scope %s: the credential returned an empty token", c.scope)
	}
	c.tok, c.tokExp = at.Token, at.ExpiresOn
	return c.tok, nil
}

// forgetToken drops a cached token that F&O refused, so the next call asks anew.
func (c *Client) forgetToken(tok string) {
	c.tokenLock <- struct{}{}
	if c.tok == tok {
		c.tok, c.tokExp = "", time.Time{}
	}
	<-c.tokenLock
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
}

// send makes one POST of action and returns the body of a 2xx answer.
func (c *Client) send(ctx context.Context, action string, payload []byte) ([]byte, *failure) {
	tok, err := c.token(ctx)
	if err != nil {
		return nil, &failure{err: err, kind: failFatal}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+actionPathTemplate+action, bytes.NewReader(payload))
	if err != nil {
		return nil, &failure{err: fmt.Errorf("F&O %s: build request: %w", action, err), kind: failFatal}
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
		return nil, c.transportFailure(ctx, action, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
		if err != nil {
			f := c.transportFailure(ctx, action, err)
			if f.kind == failNotSent {
				f.kind = failTransient // the server answered: it acted on the request
			}
			return nil, f
		}
		if len(body) > maxAnswerBytes {
			return nil, &failure{err: fmt.Errorf("F&O %s: answer larger than %d bytes", action, maxAnswerBytes), kind: failFatal}
		}
		c.log.Debug("F&O call", "action", action, "status", resp.StatusCode, "duration", time.Since(start))
		return body, nil
	}

	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	apiErr := newAPIError(action, resp, body, tok)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		apiErr.Identity, apiErr.ApplicationID = c.identity, c.appID
		tokApp, tokTenant := tokenIdentity(tok)
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
	case http.StatusTooManyRequests:
		f.kind = failThrottled
		f.retryAfter = c.retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		f.kind = failTransient
	case http.StatusUnauthorized:
		c.forgetToken(tok)
	}
	return nil, f
}

// transportFailure classifies an error of the HTTP exchange itself.
func (c *Client) transportFailure(ctx context.Context, action string, err error) *failure {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &failure{err: fmt.Errorf("F&O %s: %w", action, ctxErr), kind: failFatal}
	}
	f := &failure{err: fmt.Errorf("F&O %s: %w", action, err), kind: failFatal, reason: "transport error"}
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
// returns the unwrapped "value" of the answer.
func (c *Client) call(ctx context.Context, action string, reqBody any) (json.RawMessage, error) {
	payload, err := json.Marshal(reqBody)
	if err != nil {
		return nil, fmt.Errorf("F&O %s: encode request: %w", action, err)
	}
	for attempt := 0; ; attempt++ {
		body, f := c.send(ctx, action, payload)
		if f == nil {
			v, err := parseValue(body)
			if err != nil {
				return nil, fmt.Errorf("F&O %s: read answer: %w", action, err)
			}
			return v, nil
		}
		if f.kind == failFatal {
			return nil, f.err
		}
		if attempt >= c.maxRetries {
			return nil, retriesExhausted(f.err, attempt)
		}
		delay := c.delayFor(f, attempt)
		c.logRetry(action, f, delay, attempt)
		if err := sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("F&O %s: %w", action, err)
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
	c.log.Warn("F&O call failed, retrying",
		"action", action, "reason", f.reason, "delay", delay, "retry", attempt+1, "max_retries", c.maxRetries)
	if c.onRetry != nil {
		c.onRetry(action, f.reason)
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
// execution ID. 429 answers are retried after Retry-After. With a chosen
// r.ExecutionID, a fault after which F&O may have started the export (5xx,
// timeout, reset) is followed by a status ask for that ID: if F&O knows it,
// its ID is returned and no second export is started; otherwise the POST is
// retried. With r.ReExecute only NotRun or Executing count as proof, since
// the ID existed before. With an empty r.ExecutionID such a fault is returned
// as an error, never retried, because a retry could start a second export.
func (c *Client) ExportToPackage(ctx context.Context, r ExportRequest) (string, error) {
	if r.DefinitionGroupID == "" {
		return "", errors.New("export to package: no definition group (data project) given")
	}
	payload, err := json.Marshal(exportBody{
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
		body, f := c.send(ctx, actionExport, payload)
		if f == nil {
			v, err := parseValue(body)
			var got string
			if err == nil {
				got, err = valueString(v)
			}
			if err != nil {
				return c.exportUnreadable(ctx, r, fmt.Errorf("F&O %s: read answer: %w", actionExport, err))
			}
			if got == "" {
				if id == "" {
					return "", fmt.Errorf("export to package %q: F&O answered an empty execution ID: check its data management workspace for the job", r.DefinitionGroupID)
				}
				return id, nil
			}
			return got, nil
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
		if attempt >= c.maxRetries {
			if f.kind == failTransient || mayExist {
				return "", fmt.Errorf("export to package %q: %w; execution %q may exist in F&O: check its status before running again",
					r.DefinitionGroupID, retriesExhausted(f.err, attempt), id)
			}
			return "", fmt.Errorf("export to package %q: %w", r.DefinitionGroupID, retriesExhausted(f.err, attempt))
		}
		delay := c.delayFor(f, attempt)
		c.logRetry(actionExport, f, delay, attempt)
		if err := sleep(ctx, delay); err != nil {
			return "", fmt.Errorf("export to package %q: %w", r.DefinitionGroupID, err)
		}
		if f.kind == failTransient || mayExist {
			mayExist = true
			st, err := c.ExecutionStatus(ctx, id)
			if err != nil {
				return "", fmt.Errorf("export to package %q: %w; then asking whether execution %q started failed: %w; "+
					"check its status in F&O before running again", r.DefinitionGroupID, f.err, id, err)
			}
			if startedBy(r, st) {
				c.log.Info("F&O export already started, not posting again", "execution_id", id, "status", string(st))
				return id, nil
			}
			if r.ReExecute && canonicalStatus(st) != StatusUnknown { // the earlier run's state
				return "", fmt.Errorf("export to package %q: %w; execution %q is %s, so whether the re-execution started is unknown: "+
					"check its status in F&O before running again", r.DefinitionGroupID, f.err, id, st)
			}
		}
	}
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

// exportUnreadable handles a 2xx answer to ExportToPackage that cannot be
// read: with a chosen ID the export is confirmed through its status.
func (c *Client) exportUnreadable(ctx context.Context, r ExportRequest, err error) (string, error) {
	if r.ExecutionID != "" {
		if st, serr := c.ExecutionStatus(ctx, r.ExecutionID); serr == nil && startedBy(r, st) {
			c.log.Warn("F&O export answer unreadable, execution found by its ID", "execution_id", r.ExecutionID, "error", err)
			return r.ExecutionID, nil
		}
	}
	return "", fmt.Errorf("export to package %q: %w; the export may have started in F&O: check the data management workspace before running again", r.DefinitionGroupID, err)
}

// ExecutionStatus returns the status of an execution exactly as F&O names it,
// including names outside the contract (PollStatus judges them).
func (c *Client) ExecutionStatus(ctx context.Context, executionID string) (Status, error) {
	s, err := c.callString(ctx, actionStatus, executionID)
	if err != nil {
		return "", fmt.Errorf("status of execution %q: %w", executionID, err)
	}
	return Status(strings.TrimSpace(s)), nil
}

// PackageURL returns the download URL of an execution's package, or "" while
// F&O has none yet. A non-empty URL is https (or http to a loopback host);
// it embeds a SAS token: log it only through RedactURL.
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

// ExecutionErrors returns the error messages F&O recorded for an execution;
// none is an empty slice and a nil error.
func (c *Client) ExecutionErrors(ctx context.Context, executionID string) ([]string, error) {
	v, err := c.call(ctx, actionErrors, executionBody{executionID})
	if err != nil {
		return nil, fmt.Errorf("errors of execution %q: %w", executionID, err)
	}
	msgs, err := parseErrors(v)
	if err != nil {
		return nil, fmt.Errorf("errors of execution %q: read answer: %w", executionID, err)
	}
	return msgs, nil
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

func (c *Client) callString(ctx context.Context, action, executionID string) (string, error) {
	v, err := c.call(ctx, action, executionBody{executionID})
	if err != nil {
		return "", err
	}
	s, err := valueString(v)
	if err != nil {
		return "", fmt.Errorf("F&O %s: read answer: %w", action, err)
	}
	return s, nil
}

// newAPIError builds the error for a non-2xx answer, scrubbing tok from it.
func newAPIError(action string, resp *http.Response, body []byte, tok string) *APIError {
	e := &APIError{Action: action, StatusCode: resp.StatusCode}
	var env struct {
		Error *struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError *struct {
				Message string `json:"message"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != nil && (env.Error.Code != "" || env.Error.Message != "" || env.Error.InnerError != nil) {
		msg := env.Error.Message
		if msg == "" && env.Error.InnerError != nil {
			msg = env.Error.InnerError.Message
		}
		e.Code = truncate(scrub(env.Error.Code, tok), maxAPIMessage)
		e.Message = truncate(scrub(msg, tok), maxAPIMessage)
		return e
	}
	msg := resp.Status
	if msg == "" {
		msg = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	raw := strings.TrimSpace(strings.ToValidUTF8(scrub(string(body), tok), "?"))
	if raw != "" {
		msg += ": " + strings.TrimSpace(truncate(raw, maxRawBodyInError))
	}
	e.Message = msg
	return e
}

// scrub removes the token and SAS-like secrets from text shown to users.
func scrub(s, tok string) string {
	if tok != "" && strings.Contains(s, tok) {
		s = strings.ReplaceAll(s, tok, "REDACTED")
	}
	return redactText(s)
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
	return "", fmt.Errorf("answer value is %s, want a string", truncate(string(v), 80))
}

// maxErrorsDepth bounds how many JSON-in-string layers parseErrors unwraps.
const maxErrorsDepth = 4

// parseErrors reads the value of GetExecutionErrors: a JSON list, a string
// holding such a list as JSON, a plain message, or null/empty for none.
// List elements may be strings or objects; an object yields its message
// field (prefixed by its entity name if it has one) or else its JSON.
func parseErrors(v json.RawMessage) ([]string, error) {
	msgs, err := appendErrors(nil, v, 0)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []string{}
	}
	return msgs, nil
}

func appendErrors(msgs []string, v json.RawMessage, depth int) ([]string, error) {
	switch firstByte(v) {
	case 0:
		return msgs, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, fmt.Errorf("error list: %w", err)
		}
		for _, it := range items {
			var err error
			if msgs, err = appendErrorItem(msgs, it); err != nil {
				return nil, err
			}
		}
		return msgs, nil
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("error text: %w", err)
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return msgs, nil
		}
		if depth < maxErrorsDepth && json.Valid([]byte(s)) {
			switch s[0] {
			case '[', '"', '{':
				return appendErrors(msgs, json.RawMessage(s), depth+1)
			case 'n':
				return msgs, nil // "null"
			}
		}
		return append(msgs, s), nil
	case '{':
		return appendErrorItem(msgs, v)
	default:
		if !json.Valid(v) {
			return nil, errors.New("error value is not valid JSON")
		}
		if string(bytes.TrimSpace(v)) == "null" {
			return msgs, nil
		}
		return append(msgs, string(bytes.TrimSpace(v))), nil
	}
}

// messageKeys are the properties of an error object holding its text, in
// order of preference (compared case-insensitively).
var messageKeys = []string{"message", "errormessage", "error", "description", "text"}

func appendErrorItem(msgs []string, it json.RawMessage) ([]string, error) {
	switch firstByte(it) {
	case '"':
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return nil, fmt.Errorf("error text: %w", err)
		}
		if s = strings.TrimSpace(s); s != "" {
			msgs = append(msgs, s)
		}
		return msgs, nil
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(it, &obj); err != nil {
			return nil, fmt.Errorf("error object: %w", err)
		}
		if msg := objectMessage(obj); msg != "" {
			return append(msgs, msg), nil
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, it); err != nil {
			return nil, fmt.Errorf("error object: %w", err)
		}
		return append(msgs, compact.String()), nil
	case 'n':
		if string(bytes.TrimSpace(it)) == "null" {
			return msgs, nil
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, it); err != nil {
		return nil, fmt.Errorf("error item: %w", err)
	}
	return append(msgs, compact.String()), nil
}

// objectMessage returns the message of an error object, or "".
func objectMessage(obj map[string]json.RawMessage) string {
	str := func(key string) string {
		for k, v := range obj {
			if strings.EqualFold(k, key) {
				var s string
				if json.Unmarshal(v, &s) == nil {
					return strings.TrimSpace(s)
				}
			}
		}
		return ""
	}
	for _, key := range messageKeys {
		if msg := str(key); msg != "" {
			if entity := str("entityname"); entity != "" {
				return entity + ": " + msg
			}
			return msg
		}
	}
	return ""
}
