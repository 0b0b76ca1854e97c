// Package dmf speaks the Data management package REST API of Dynamics 365
// Finance & Operations: ExportToPackage, GetExecutionSummaryStatus,
// GetExportedPackageUrl, GetExecutionErrors and GetExecutionSummaryPageUrl,
// with polling until an execution reaches a final state. Throttling (429) and
// transient faults are retried with backoff; an export whose answer was lost
// is recovered through its caller-chosen execution ID instead of being
// started twice. NewCredential builds the Microsoft Entra ID credential a
// Client uses from AuthOptions (client secret, certificate, managed or
// workload identity, Azure CLI, the default chain, or a static token).
// It knows nothing about storage or brokers.
package dmf

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Status is an execution state as GetExecutionSummaryStatus names it.
type Status string

// The status values the contract documents.
const (
	StatusUnknown            Status = "Unknown"
	StatusNotRun             Status = "NotRun"
	StatusExecuting          Status = "Executing"
	StatusSucceeded          Status = "Succeeded"
	StatusPartiallySucceeded Status = "PartiallySucceeded"
	StatusFailed             Status = "Failed"
	StatusCanceled           Status = "Canceled"
)

// ExportRequest is the body of ExportToPackage.
type ExportRequest struct {
	DefinitionGroupID string // data project name in F&O
	PackageName       string // name F&O gives the package file
	ExecutionID       string // caller-chosen ID; empty lets F&O choose (not recommended: not recoverable)
	ReExecute         bool
	LegalEntityID     string // company, e.g. USMF
}

// PollOptions bound PollStatus.
type PollOptions struct {
	Interval    time.Duration // first wait between two status asks; 0 means 10 s
	MaxInterval time.Duration // backoff cap; 0 means 1 min
	Deadline    time.Duration // total time allowed; 0 means none beyond ctx
	// OnStatus, if set, is called after each answer (for progress output).
	OnStatus func(Status, time.Duration)
}

// ErrUnexpectedStatus is wrapped when F&O answers a status name not in the contract.
var ErrUnexpectedStatus = errors.New("unexpected execution status")

// ErrDeadline is wrapped by PollStatus when PollOptions.Deadline passes
// before the execution reaches a final state; the error names the last
// status seen and how long polling lasted.
var ErrDeadline = errors.New("execution did not finish before the deadline")

// ErrPackageNotReady is wrapped by WaitPackageURL when F&O still answers an
// empty package URL after the allowed time; the error says how long it waited.
var ErrPackageNotReady = errors.New("package URL not ready")

// ClientOptions tune a Client; the zero value is usable.
type ClientOptions struct {
	HTTPClient *http.Client // default: a client with a 2 minute timeout per request
	Logger     *slog.Logger // default: slog.Default()

	// MaxRetries bounds the retries of one call after a 429, a 5xx, a timeout
	// or a connection reset: 0 means 5, a negative value means none.
	MaxRetries int
	// RetryBaseDelay is the first backoff delay after a transient fault
	// (doubled at each retry, with jitter); 0 means 1 s.
	RetryBaseDelay time.Duration
	// RetryMaxDelay caps the backoff delay; 0 means 30 s.
	RetryMaxDelay time.Duration
	// MaxThrottleWait caps the wait after a 429, whatever Retry-After asks;
	// 0 means 5 min. A 429 without Retry-After waits 5 s (or this cap if lower).
	MaxThrottleWait time.Duration

	// PackageURLDelay is the first wait of WaitPackageURL between two asks
	// answered with an empty URL (doubled each time, with jitter); 0 means
	// 500 ms. PackageURLMaxDelay caps it; 0 means 30 s.
	PackageURLDelay    time.Duration
	PackageURLMaxDelay time.Duration

	// Identity names who the token stands for (AuthOptions.Describe); it
	// appears in the errors of refused calls (401, 403). Never a secret.
	Identity string
	// ApplicationID is the application (client) ID behind the token
	// (AuthOptions.ApplicationID), named in 401/403 errors as the one to
	// register in F&O. When empty, the appid claim of the token is used.
	ApplicationID string

	// OnRetry, if set, is called before each retry of a call, with the
	// action and the reason ("HTTP 429", "HTTP 503", "timeout", "unreadable
	// answer", ...), for metrics. It must not block.
	OnRetry func(action, reason string)

	// RegisterTimeout is how long an execution this client started (or may
	// have started) may stay unknown to F&O, answered with the status
	// Unknown or HTTP 400 "Execution details were not found", before that
	// is an error wrapping ErrNotRegistered; 0 means DefaultRegisterTimeout.
	// It is a time window, not a count of answers: F&O takes minutes to
	// register an execution under load.
	RegisterTimeout time.Duration
	// RegisterInterval is the first wait between two status asks while
	// AwaitExecution (and ExportToPackage after a lost answer) waits for
	// F&O to register an execution, growing ×1.5 up to 30 s; 0 means 5 s.
	RegisterInterval time.Duration

	// Pacer, if set, paces every call of the client together with those
	// of the other clients given the same Pacer (one per F&O environment),
	// and its poll ticker times the waits of PollStatus, AwaitExecution
	// and WaitPackageURL. A 429 then holds back every client of the Pacer
	// for its Retry-After.
	Pacer *Pacer

	// Scope is the OAuth scope tokens are asked for. Empty means
	// "<scheme>://<host>/.default" from the environment URL, in lower case,
	// without its path (the token audience of F&O is the bare host, also
	// for on-premises URLs ending in /namespaces/AXSF); set it for AD FS or
	// an audience registered otherwise.
	Scope string
}

// DefaultRegisterTimeout is the window F&O gets to register an execution
// when ClientOptions.RegisterTimeout is 0.
const DefaultRegisterTimeout = 10 * time.Minute

// ErrNotRegistered is wrapped when F&O still does not know an execution
// (status Unknown, or HTTP 400 "Execution details were not found") after
// ClientOptions.RegisterTimeout; the error names the action, the execution
// ID, how long it waited and what to check in F&O.
var ErrNotRegistered = errors.New("execution not registered by F&O")
