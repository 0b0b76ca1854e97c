package dmftest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultToken is the bearer token a Simulator accepts when Options.Token is empty.
const DefaultToken = "dmftest-token"

// DemoDefinitionGroup is the definition group (data project) name under which
// the demo and cmd/dmfsim serve DemoProject.
const DemoDefinitionGroup = "DemoExport"

// Status names as GetExecutionSummaryStatus answers them.
const (
	statusUnknown            = "Unknown"
	statusNotRun             = "NotRun"
	statusExecuting          = "Executing"
	statusSucceeded          = "Succeeded"
	statusPartiallySucceeded = "PartiallySucceeded"
	statusFailed             = "Failed"
	statusCanceled           = "Canceled"
)

// Action names, the last segment of each OData action path.
const (
	actionExport      = "ExportToPackage"
	actionStatus      = "GetExecutionSummaryStatus"
	actionPackageURL  = "GetExportedPackageUrl"
	actionErrors      = "GetExecutionErrors"
	actionSummaryPage = "GetExecutionSummaryPageUrl"
	// actionDownload is the Calls key for requests to package URLs.
	actionDownload = "download"
)

const (
	actionPrefix  = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
	blobPrefix    = "/dmf/"
	sasVersion    = "2024-08-04"
	maxBodyBytes  = 1 << 20
	odataJSONType = "application/json; odata.metadata=minimal"
)

// Library defaults of the Options knobs whose zero value means "as F&O".
const (
	// DefaultExecutionTime is how long an execution takes from registration
	// to its final status when Options.ExecutionTime is zero.
	DefaultExecutionTime = 300 * time.Millisecond
	// DefaultRegisterDelay is the "not registered yet" window after each
	// ExportToPackage when Options.RegisterDelay is zero: short, so tests
	// stay fast, yet long enough that a client polling at once meets it.
	DefaultRegisterDelay = time.Second
	// DefaultHistory is how long executions and their packages are kept
	// when Options.History is zero: F&O purges them after about 7 days.
	DefaultHistory = 7 * 24 * time.Hour
	// DefaultEmptyURLAsks is how many GetExportedPackageUrl asks answer ""
	// right after success when Options.EmptyURLAsks is zero.
	DefaultEmptyURLAsks = 1
	// DefaultPackageDelay is how long an execution's package blob answers
	// 404 after its first package URL was handed out, when
	// Options.PackageDelay is zero: the URL can be "not yet downloadable".
	DefaultPackageDelay = 200 * time.Millisecond
	// DefaultEmptyErrorsEvery makes every second Failed execution answer
	// GetExecutionErrors with "[]" when Options.EmptyErrorsEvery is zero.
	DefaultEmptyErrorsEvery = 2
)

// DefaultRefreshType values of the manifest.
const (
	FullPush        = "FullPush"        // every row of the entity
	IncrementalPush = "IncrementalPush" // change tracking: rows created or changed since the last export
)

// Entity is one data entity of a definition group: what the package's
// manifest lists and the file the package holds for it.
type Entity struct {
	// Name is the entity's label name, e.g. "Customers V3" or
	// "Country/regions"; spaces and "/" allowed.
	Name string
	// File is the file name inside the zip (the manifest's InputFilePath).
	// Default: Name with the characters invalid in file names dropped,
	// plus ".csv", ".xlsx" (Excel formats) or ".xml" (XML formats), as F&O
	// names it ("Country/regions" → "Countryregions.xlsx").
	File string
	// SourceFormat is the manifest's SourceFormat, e.g. "CSV-Unicode" (the
	// default), "CSV", "EXCEL", "XML-Element", "XML-Attribute"; any case.
	SourceFormat string
	// Sheet is the workbook's sheet name for Excel formats. The manifest's
	// ExcelSheetName records it as F&O does: with a trailing "$", cut to 31
	// characters. Empty: ExcelSheetName is empty (the data is on the first
	// sheet). Ignored for other formats, whose ExcelSheetName is empty.
	Sheet string
	// RefreshType is the manifest's DefaultRefreshType: FullPush (the
	// default) or IncrementalPush. OmitRefreshType leaves the element out,
	// as many real manifests do.
	RefreshType     string
	OmitRefreshType bool
	// Absent lists the entity in the manifest without putting any file in
	// the zip, as F&O does for entities with no rows in some packages.
	Absent bool
	// Data is the file's bytes exactly as written into the zip; empty gives
	// a 0-byte file.
	Data []byte
	// Fields are the entity's field names in upper case, e.g.
	// CUSTOMERACCOUNT: the manifest's EntityMapList lists them in
	// alphabetical order. Empty: an empty EntityMapList.
	Fields []string
	// OmitFields leaves the last N fields (alphabetically) out of the
	// EntityMapList, as real field maps may omit columns the file holds.
	OmitFields int
}

// Options configure a Simulator. The zero value of every knob is F&O's own
// behaviour (see the package documentation); set a knob to turn a behaviour
// off or tune it. The zero Options value serves no definition group, so
// every ExportToPackage fails; set Projects or Packages.
type Options struct {
	Token         string              // required bearer token; "" → DefaultToken
	Projects      map[string][]Entity // definition group → entities
	ExecutionTime time.Duration       // registered→NotRun→Executing→final takes this long; 0 → DefaultExecutionTime
	URLTTL        time.Duration       // lifetime of a package URL signature; 0 → 1h
	Logger        *slog.Logger        // nil → discard

	// Now is the simulator's clock; nil → time.Now. Tests set a fake clock
	// to step through status changes, URL expiry and the 7-day purge.
	Now func() time.Time

	// RegisterDelay is the "not registered yet" window after each
	// ExportToPackage: for its first half GetExecutionSummaryStatus of the
	// new ID answers HTTP 400 "Execution details were not found for
	// execution id <id>", for its second half the status Unknown; the
	// execution time starts when it ends. 0 → DefaultRegisterDelay;
	// negative → no window.
	RegisterDelay time.Duration
	// History is how long executions and packages are kept: after it, the
	// status is Unknown, the package URL "" and the package blob gone (404).
	// 0 → DefaultHistory (7 days); negative → kept forever.
	History time.Duration
	// ConcurrentExports lets a data project be exported while another
	// execution of it is still running; by default that is refused, as F&O
	// exports one data project by one execution at a time.
	ConcurrentExports bool
	// ConcurrentExcel lets executions holding Excel entities run at once.
	// By default, as F&O runs one import or export to Excel at a time per
	// environment (DMF2039), an execution of a data project with an EXCEL
	// entity takes the environment's one Excel slot: one started while
	// another holds it stays NotRun until that one ends, then runs its
	// full ExecutionTime.
	ConcurrentExcel bool

	// FinalStatus maps a definition group to the status its executions end
	// in: "Succeeded" (the default), "PartiallySucceeded", "Failed" or
	// "Canceled". Any other value is answered as given.
	FinalStatus map[string]string
	// EmptyURLAsks makes GetExportedPackageUrl answer "" this many times per
	// execution after it succeeded, as F&O does right after success.
	// 0 → DefaultEmptyURLAsks; negative → never.
	EmptyURLAsks int
	// PackageDelay is how long, after an execution's first package URL is
	// handed out, its blob is not yet downloadable: it answers 404
	// BlobNotFound, as right after success F&O's URL can point at a package
	// still being written. 0 → DefaultPackageDelay; negative → never.
	PackageDelay time.Duration
	// FullIncremental makes every export hold all rows of IncrementalPush
	// entities. By default, as with F&O's change tracking, only the first
	// export of a data project holds them all; later ones hold the rows
	// changed since, which the simulator models as none: the CSV file's
	// header line only.
	FullIncremental bool
	// EmptyErrorsEvery makes every Nth Failed execution (counted per
	// Simulator as they start) answer GetExecutionErrors with "[]", as F&O
	// has done for failed jobs. 0 → DefaultEmptyErrorsEvery; negative → never.
	EmptyErrorsEvery int
	// NestedValue answers ExportToPackage and GetExportedPackageUrl in the
	// nested {"value":{"value":"..."}} form the published documentation shows.
	NestedValue bool
	// Throttle, when above zero, answers every Nth API call with 429 and
	// Retry-After: 1. Calls are counted across all actions once they are
	// routed and authorized; a throttled call is not counted by Calls.
	Throttle int

	// F&O's service protection limits per user, enforced by default (the
	// Simulator's one token is one user; downloads are Azure Storage's, not
	// F&O's, and never count). A call over a limit is answered 429 with
	// Retry-After and is counted neither by Calls nor against the budgets.
	//
	// MaxConcurrentRequests is how many API calls may be in progress at
	// once: 0 → DefaultMaxConcurrentRequests (52); negative → no limit.
	MaxConcurrentRequests int
	// RequestBudget is how many API calls are accepted in any BudgetWindow:
	// 0 → DefaultRequestBudget (6,000); negative → no limit. Retry-After
	// says when the oldest accepted call leaves the window.
	RequestBudget int
	// ExecutionBudget is the combined time spent answering calls in any
	// BudgetWindow (time measured on the wall clock, answers delayed by
	// Faults included): 0 → DefaultExecutionBudget (1,200 s); negative →
	// no limit.
	ExecutionBudget time.Duration
	// BudgetWindow is the sliding window of both budgets, measured on the
	// Simulator's clock (Now): 0 → DefaultBudgetWindow (5 minutes).
	BudgetWindow time.Duration
	// Faults inject throttling bursts, server errors, slow answers, stuck
	// executions, expired URLs and damaged or slow downloads.
	Faults Faults
	// Packages serves prebuilt data packages: definition group → zip bytes,
	// handed out exactly as given (for packages shaped like real exports).
	// A group named here and in Projects is served from Packages.
	Packages map[string][]byte
}

// Simulator is an http.Handler speaking the F&O Data management package REST
// API and serving the packages it exports. It is safe for concurrent use.
type Simulator struct {
	opts   Options
	key    []byte // HMAC key for package URL signatures
	log    *slog.Logger
	now    func() time.Time
	random func() string // random suffix for IDs and blob names

	mu         sync.Mutex
	baseURL    string
	executions map[string]*execution
	blobs      map[string]*execution // blob name (unescaped, without prefix) → execution
	calls      map[string]int
	apiCalls   int // every authorized API call, for Throttle
	limits     limiter
	// Fault bookkeeping: calls matched per Faults.API rule, downloads that
	// met the download faults, expired URLs handed out.
	faultCounts     []int
	faultyDownloads int
	expiredURLs     int
	exports         int
	peakExecutions  int            // most executions not final at once, as counted at each start
	exported        map[string]int // exports started per definition group, for deltas
	downloads       int
	failedStarts    int // Failed executions started, for EmptyErrorsEvery
}

// execution is one run started by ExportToPackage.
type execution struct {
	id          string
	group       string
	packageName string
	legalEntity string
	started     time.Time
	final       string
	entities    []Entity
	blobName    string
	emptyAsks   int           // GetExportedPackageUrl asks answered "" after success
	firstURL    time.Time     // when the first package URL was handed out
	emptyErrors bool          // a Failed execution whose errors answer "[]"
	excel       bool          // holds an EXCEL entity: takes the Excel slot
	wait        time.Duration // NotRun after registration, waiting for the Excel slot
	zip         []byte        // built on first need, then reused
}

// New returns a Simulator serving opts.Projects. The entities' Data slices
// are used as they are: do not modify them afterwards.
func New(opts Options) *Simulator {
	if opts.Token == "" {
		opts.Token = DefaultToken
	}
	if opts.ExecutionTime <= 0 {
		opts.ExecutionTime = DefaultExecutionTime
	}
	opts.RegisterDelay = orDefault(opts.RegisterDelay, DefaultRegisterDelay)
	opts.History = orDefault(opts.History, DefaultHistory)
	opts.EmptyURLAsks = int(orDefault(int64(opts.EmptyURLAsks), DefaultEmptyURLAsks))
	opts.PackageDelay = orDefault(opts.PackageDelay, DefaultPackageDelay)
	opts.EmptyErrorsEvery = int(orDefault(int64(opts.EmptyErrorsEvery), DefaultEmptyErrorsEvery))
	opts.MaxConcurrentRequests = int(orDefault(int64(opts.MaxConcurrentRequests), DefaultMaxConcurrentRequests))
	opts.RequestBudget = int(orDefault(int64(opts.RequestBudget), DefaultRequestBudget))
	opts.ExecutionBudget = orDefault(opts.ExecutionBudget, DefaultExecutionBudget)
	if opts.BudgetWindow <= 0 {
		opts.BudgetWindow = DefaultBudgetWindow
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.URLTTL <= 0 {
		opts.URLTTL = time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	projects := make(map[string][]Entity, len(opts.Projects))
	for group, ents := range opts.Projects {
		cp := make([]Entity, len(ents))
		for i, e := range ents {
			cp[i] = withDefaults(e)
		}
		projects[group] = cp
	}
	opts.Projects = projects
	pkgs := make(map[string][]byte, len(opts.Packages))
	for group, b := range opts.Packages {
		pkgs[group] = b
	}
	opts.Packages = pkgs
	final := make(map[string]string, len(opts.FinalStatus))
	for g, st := range opts.FinalStatus {
		final[g] = st
	}
	opts.FinalStatus = final
	opts.Faults.API = append([]APIFault(nil), opts.Faults.API...)

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &Simulator{
		opts:        opts,
		key:         key,
		log:         log,
		now:         now,
		random:      randomGUID,
		executions:  make(map[string]*execution),
		exported:    make(map[string]int),
		blobs:       make(map[string]*execution),
		calls:       make(map[string]int),
		faultCounts: make([]int, len(opts.Faults.API)),
	}
}

// orDefault maps a knob's zero value to its default and a negative one
// (off) to zero.
func orDefault[T ~int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func withDefaults(e Entity) Entity {
	if e.SourceFormat == "" {
		e.SourceFormat = "CSV-Unicode"
	}
	if e.File == "" {
		e.File = FileName(e.Name, e.SourceFormat)
	}
	if e.RefreshType == "" {
		e.RefreshType = FullPush
	}
	return e
}

// FileName is the file name F&O gives an entity's file in a package: the
// label name with the characters invalid in (Windows) file names dropped,
// plus ".xlsx" for Excel formats, ".xml" for XML formats and ".csv"
// otherwise. "Country/regions" in EXCEL → "Countryregions.xlsx".
func FileName(label, sourceFormat string) string {
	name := strings.Map(func(r rune) rune {
		if r < 0x20 || strings.ContainsRune(`<>:"/\|?*`, r) {
			return -1
		}
		return r
	}, label)
	switch f := strings.ToUpper(sourceFormat); {
	case strings.HasPrefix(f, "EXCEL"):
		return name + ".xlsx"
	case strings.HasPrefix(f, "XML"):
		return name + ".xml"
	}
	return name + ".csv"
}

// randomGUID returns a random lower-case GUID-shaped string.
func randomGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// SetBaseURL sets the base (scheme://host[:port], no trailing slash needed)
// of the URLs the simulator hands out: package URLs, summary page URLs and
// @odata.context. By default each answer derives it from the request's Host.
func (s *Simulator) SetBaseURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.baseURL = strings.TrimRight(u, "/")
}

// Exports reports how many executions ExportToPackage has started
// (including re-executions).
func (s *Simulator) Exports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports
}

// Calls reports how many authorized calls an action received, whatever
// their outcome, including those answered with an injected fault
// (Options.Faults) but not those refused by Options.Throttle; action is an
// OData action name such as "GetExecutionSummaryStatus", or "download" for
// every request to a package URL (including refused ones).
func (s *Simulator) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// PeakExecutions reports the most executions that were running at once
// (not yet in a final state), as counted each time one started.
func (s *Simulator) PeakExecutions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakExecutions
}

// Downloads reports how many package downloads were served (200 or 206).
func (s *Simulator) Downloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads
}

// ServeHTTP answers the OData actions under /data/ and package downloads
// under /dmf/; everything else gets 404.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	action := ""
	switch {
	case strings.HasPrefix(r.URL.Path, actionPrefix):
		action = strings.TrimPrefix(r.URL.Path, actionPrefix)
		s.serveAction(rw, r, action)
	case strings.HasPrefix(r.URL.Path, blobPrefix):
		action = actionDownload
		s.serveBlob(rw, r)
	default:
		s.odataError(rw, http.StatusNotFound,
			fmt.Sprintf("No HTTP resource was found that matches the request URI %q.", r.URL.Path))
	}
	// Never log the query (it holds the SAS signature) or headers (the token).
	s.log.Info("dmftest request", "method", r.Method, "path", r.URL.Path, "action", action, "status", rw.status)
}

// statusRecorder remembers the status code for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func knownAction(a string) bool {
	switch a {
	case actionExport, actionStatus, actionPackageURL, actionErrors, actionSummaryPage:
		return true
	}
	return false
}

func (s *Simulator) serveAction(w http.ResponseWriter, r *http.Request, action string) {
	if !knownAction(action) {
		s.odataError(w, http.StatusNotFound,
			fmt.Sprintf("No HTTP resource was found that matches the request URI %q.", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.odataError(w, http.StatusMethodNotAllowed,
			fmt.Sprintf("The requested resource does not support http method '%s'.", r.Method))
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		// Not OData: F&O's authentication layer answers before OData does.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"Message":"Authentication failed."}`)
		return
	}
	if limit, retryAfter := s.admit(); limit != "" {
		s.refuse(w, limit, retryAfter)
		return
	}
	began := time.Now()
	defer func() { s.done(time.Since(began)) }()
	s.mu.Lock()
	s.calls[action]++
	s.mu.Unlock()

	if f := s.faultOf(action); f != nil {
		if f.Delay > 0 {
			// Read the body first: only then does the server notice a
			// client that gives up during the delay.
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
			if err != nil {
				s.odataError(w, http.StatusBadRequest, "The request body is invalid: "+err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if !delay(r.Context(), f.Delay) {
			return
		}
		if f.failsAnswer(false) {
			if f.Apply {
				s.handleAction(&discardWriter{}, r, action)
			}
			s.writeFault(w, r, f, false)
			return
		}
	}
	s.handleAction(w, r, action)
}

// handleAction decodes the body of an authorized call and answers it.
func (s *Simulator) handleAction(w http.ResponseWriter, r *http.Request, action string) {
	var req actionRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.odataError(w, http.StatusBadRequest, "The request body is invalid: "+err.Error())
		return
	}
	if action == actionExport {
		if len(req.missing) > 0 {
			s.odataError(w, http.StatusBadRequest, fmt.Sprintf(
				"Model state is invalid. The request body lacks %s; ExportToPackage needs every parameter: definitionGroupId, packageName, executionId (\"\" for a new one), reExecute and legalEntityId.",
				strings.Join(req.missing, ", ")))
			return
		}
		s.exportToPackage(w, r, req)
		return
	}
	if req.ExecutionID == "" {
		s.odataError(w, http.StatusBadRequest, "The parameter 'executionId' is required.")
		return
	}
	switch action {
	case actionStatus:
		st := s.statusOf(req.ExecutionID)
		if st == notRegistered {
			s.odataError(w, http.StatusBadRequest, "Execution details were not found for execution id "+req.ExecutionID)
			return
		}
		s.answer(w, r, st, false)
	case actionPackageURL:
		s.answer(w, r, s.packageURL(r, req.ExecutionID), s.opts.NestedValue)
	case actionErrors:
		s.answer(w, r, s.executionErrors(req.ExecutionID), false)
	case actionSummaryPage:
		s.answer(w, r, s.base(r)+"/?mi=DMFExecutionSummary&executionId="+url.QueryEscape(req.ExecutionID), false)
	}
}

// actionRequest is the union of every action's body; unknown keys are ignored.
type actionRequest struct {
	DefinitionGroupID string `json:"definitionGroupId"`
	PackageName       string `json:"packageName"`
	ExecutionID       string `json:"executionId"`
	ReExecute         bool   `json:"reExecute"`
	LegalEntityID     string `json:"legalEntityId"`

	// missing lists the ExportToPackage parameters the body lacks or sends
	// as null, in exportParams order.
	missing []string
}

// exportParams are ExportToPackage's parameters, every one required.
var exportParams = []string{"definitionGroupId", "packageName", "executionId", "reExecute", "legalEntityId"}

func decodeBody(w http.ResponseWriter, r *http.Request, v *actionRequest) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the body is empty; send a JSON object")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(raw, &keys) // an object or null: Decode accepted it
	for _, p := range exportParams {
		sent := false
		for k, val := range keys {
			if strings.EqualFold(k, p) && string(val) != "null" {
				sent = true
			}
		}
		if !sent {
			v.missing = append(v.missing, p)
		}
	}
	return nil
}

func (s *Simulator) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	tok := strings.TrimSpace(h[len(prefix):])
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) == 1
}

func (s *Simulator) exportToPackage(w http.ResponseWriter, r *http.Request, req actionRequest) {
	ents, ok := s.opts.Projects[req.DefinitionGroupID]
	raw, prebuilt := s.opts.Packages[req.DefinitionGroupID]
	if !ok && !prebuilt {
		s.odataError(w, http.StatusBadRequest,
			fmt.Sprintf("Data project '%s' does not exist; create the export project in Data management first.", req.DefinitionGroupID))
		return
	}
	now := s.now()
	s.mu.Lock()
	id := req.ExecutionID
	if id != "" && !req.ReExecute && s.known(id, now) {
		s.mu.Unlock()
		s.odataError(w, http.StatusBadRequest,
			fmt.Sprintf("The execution ID '%s' already exists; choose a new execution ID or set reExecute to true.", id))
		return
	}
	if !s.opts.ConcurrentExports {
		if busy := s.running(req.DefinitionGroupID, now); busy != nil {
			s.mu.Unlock()
			s.odataError(w, http.StatusBadRequest,
				fmt.Sprintf("Data project '%s' is being exported by execution '%s'; one data project is exported by one execution at a time: wait until it ends.",
					req.DefinitionGroupID, busy.id))
			return
		}
	}
	if id == "" {
		id = req.DefinitionGroupID + "-" + now.UTC().Format(generatedIDLayout)
		if s.known(id, now) {
			s.mu.Unlock()
			s.odataError(w, http.StatusBadRequest,
				fmt.Sprintf("The execution ID '%s' already exists: two exports of the data project started in the same second; retry, or choose the execution ID yourself.", id))
			return
		}
	}
	final := s.opts.FinalStatus[req.DefinitionGroupID]
	if final == "" {
		final = statusSucceeded
	}
	name := req.PackageName
	if name == "" {
		name = req.DefinitionGroupID
	}
	ex := &execution{
		id:          id,
		group:       req.DefinitionGroupID,
		packageName: name,
		legalEntity: req.LegalEntityID,
		started:     now,
		final:       final,
		entities:    ents,
		blobName:    s.random() + "-" + name + ".zip",
	}
	if final == statusFailed {
		s.failedStarts++
		ex.emptyErrors = s.opts.EmptyErrorsEvery > 0 && s.failedStarts%s.opts.EmptyErrorsEvery == 0
	}
	if prebuilt {
		ex.entities, ex.zip = nil, raw
	} else if s.exported[req.DefinitionGroupID] > 0 && !s.opts.FullIncremental {
		ex.entities = deltas(ents)
	}
	s.exported[req.DefinitionGroupID]++
	ex.excel = holdsExcel(ex.entities)
	if ex.excel && !s.opts.ConcurrentExcel {
		delete(s.executions, id) // a re-executed ID gives up its place
		if free := s.excelFree(now); free.After(s.runFrom(ex)) {
			ex.wait = free.Sub(s.runFrom(ex))
		}
	}
	s.executions[id] = ex
	s.blobs[ex.blobName] = ex
	s.exports++
	running := 0
	for _, other := range s.executions {
		switch s.status(other, now) {
		case notRegistered, statusUnknown, statusNotRun, statusExecuting:
			running++
		}
	}
	s.peakExecutions = max(s.peakExecutions, running)
	s.mu.Unlock()
	// One line per execution started, so a client's exports can be counted
	// from the log of a separate dmfsim process (a refused or reset call
	// starts none).
	s.log.Info("dmftest execution started", "execution", id, "definition_group", ex.group)
	s.answer(w, r, id, s.opts.NestedValue)
}

// generatedIDLayout shapes the execution IDs F&O makes for an empty
// executionId, after the group name and "-": "11/15/2018 02:57:10 pm".
const generatedIDLayout = "01/02/2006 03:04:05 pm"

// notRegistered is the internal status of an execution in the first half of
// its "not registered yet" window, answered as HTTP 400.
const notRegistered = "(not registered)"

// purged reports whether the execution is older than Options.History.
func (s *Simulator) purged(ex *execution, now time.Time) bool {
	return s.opts.History > 0 && now.Sub(ex.started) >= s.opts.History
}

// known reports whether an execution ID is in the (unpurged) history; s.mu
// must be held.
func (s *Simulator) known(id string, now time.Time) bool {
	ex, ok := s.executions[id]
	return ok && !s.purged(ex, now)
}

// running returns an execution of group that has not reached its final
// status, or nil; s.mu must be held.
func (s *Simulator) running(group string, now time.Time) *execution {
	for _, ex := range s.executions {
		if ex.group != group {
			continue
		}
		switch s.status(ex, now) {
		case notRegistered, statusUnknown, statusNotRun, statusExecuting:
			if !s.purged(ex, now) {
				return ex
			}
		}
	}
	return nil
}

// holdsExcel reports whether an execution of ents exports to Excel.
func holdsExcel(ents []Entity) bool {
	for _, e := range ents {
		if strings.HasPrefix(strings.ToUpper(e.SourceFormat), "EXCEL") {
			return true
		}
	}
	return false
}

// runFrom is when an execution is registered and its execution time would
// start, before any wait for the Excel slot.
func (s *Simulator) runFrom(ex *execution) time.Time {
	return ex.started.Add(s.opts.RegisterDelay)
}

// excelFree is when the last execution holding the Excel slot ends (zero
// if none does); s.mu must be held. Executions end after ExecutionTime,
// whether or not a stuck-execution fault keeps them Executing.
func (s *Simulator) excelFree(now time.Time) time.Time {
	var free time.Time
	for _, ex := range s.executions {
		if !ex.excel || s.purged(ex, now) {
			continue
		}
		if end := s.runFrom(ex).Add(ex.wait + s.opts.ExecutionTime); end.After(free) {
			free = end
		}
	}
	return free
}

// status reports the execution's state at time now; s.mu must be held.
func (s *Simulator) status(ex *execution, now time.Time) string {
	el := now.Sub(ex.started)
	reg := s.opts.RegisterDelay
	switch {
	case s.purged(ex, now):
		return statusUnknown
	case el < reg/2:
		return notRegistered
	case el < reg:
		return statusUnknown
	case el-reg < ex.wait+s.opts.ExecutionTime/10:
		return statusNotRun
	case el-reg-ex.wait < s.opts.ExecutionTime || s.opts.Faults.StuckExecution:
		return statusExecuting
	default:
		return ex.final
	}
}

func (s *Simulator) statusOf(id string) string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ex, ok := s.executions[id]
	if !ok {
		return statusUnknown
	}
	return s.status(ex, now)
}

func (s *Simulator) packageURL(r *http.Request, id string) string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ex, ok := s.executions[id]
	if !ok {
		return ""
	}
	st := s.status(ex, now)
	if st != statusSucceeded && st != statusPartiallySucceeded {
		return ""
	}
	if ex.emptyAsks < s.opts.EmptyURLAsks {
		ex.emptyAsks++
		return ""
	}
	if ex.firstURL.IsZero() {
		ex.firstURL = now
	}
	expiry := now.Add(s.opts.URLTTL)
	if s.expiredURLs < s.opts.Faults.ExpiredURLs {
		s.expiredURLs++
		expiry = now.Add(-time.Minute)
	}
	se := expiry.UTC().Truncate(time.Second).Format(time.RFC3339)
	return s.baseLocked(r) + blobPrefix + url.PathEscape(ex.blobName) +
		"?sv=" + sasVersion + "&sr=b&sp=r&se=" + url.QueryEscape(se) +
		"&sig=" + s.sign(blobPrefix+ex.blobName, se)
}

// sign returns the signature of a package path (unescaped) and expiry.
func (s *Simulator) sign(path, se string) string {
	m := hmac.New(sha256.New, s.key)
	io.WriteString(m, path)
	io.WriteString(m, "\n")
	io.WriteString(m, se)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// executionErrors answers GetExecutionErrors: a JSON array of
// {"RecordId","Field","ErrorMessage"} written as F&O does, without escaping
// the quotes inside messages, so the text may not parse as JSON.
func (s *Simulator) executionErrors(id string) string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ex, ok := s.executions[id]
	if !ok {
		return "[]"
	}
	name := ex.group
	switch s.status(ex, now) {
	case statusFailed:
		if ex.emptyErrors {
			return "[]"
		}
		if len(ex.entities) > 0 {
			name = ex.entities[0].Name
		}
	case statusPartiallySucceeded:
		if n := len(ex.entities); n > 0 {
			name = ex.entities[n-1].Name
		}
	default:
		return "[]"
	}
	recs := [][3]string{
		{"5637144576", "", "Entity '" + name + "': simulated failure in the export step"},
		{"5637144577", "DATAAREAID", `Value "usmf" of field DATAAREAID in entity '` + name + `' is not valid (simulated)`},
	}
	var b strings.Builder
	b.WriteString("[")
	for i, rec := range recs {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"RecordId":"%s","Field":"%s","ErrorMessage":"%s"}`, rec[0], rec[1], rec[2])
	}
	b.WriteString("]")
	return b.String()
}

func (s *Simulator) base(r *http.Request) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseLocked(r)
}

// baseLocked returns the URL base for answers; s.mu must be held.
func (s *Simulator) baseLocked(r *http.Request) string {
	if s.baseURL != "" {
		return s.baseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// answer writes the OData envelope of an Edm.String result.
func (s *Simulator) answer(w http.ResponseWriter, r *http.Request, value string, nested bool) {
	var body any
	ctx := s.base(r) + "/data/$metadata#Edm.String"
	if nested {
		body = struct {
			Context string `json:"@odata.context"`
			Value   struct {
				Value string `json:"value"`
			} `json:"value"`
		}{Context: ctx, Value: struct {
			Value string `json:"value"`
		}{value}}
	} else {
		body = struct {
			Context string `json:"@odata.context"`
			Value   string `json:"value"`
		}{ctx, value}
	}
	writeJSON(w, http.StatusOK, body)
}

// odataError writes an OData error as F&O does: an empty code, the generic
// top-level message, and the cause a user can act on in innererror.
func (s *Simulator) odataError(w http.ResponseWriter, status int, msg string) {
	type inner struct {
		Message    string `json:"message"`
		Type       string `json:"type"`
		StackTrace string `json:"stacktrace"`
	}
	var body struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError inner  `json:"innererror"`
		} `json:"error"`
	}
	body.Error.Message = "An error has occurred."
	body.Error.InnerError = inner{Message: msg, Type: "System.Exception", StackTrace: simulatedStack}
	writeJSON(w, status, body)
}

// simulatedStack is the innererror stacktrace of every OData error.
const simulatedStack = "   at Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataActionHandler.Invoke() (simulated by dmftest)\r\n" +
	"   at System.Web.OData.ODataActionHandler.SendAsync() (simulated by dmftest)"

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // URLs keep their & as is
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encode answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	w.Header().Set("Content-Type", odataJSONType)
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// deltas returns ents as a later export of a data project holds them: an
// IncrementalPush entity with a CSV file keeps only its header line (no row
// changed since the last export); other entities are unchanged.
func deltas(ents []Entity) []Entity {
	out := make([]Entity, len(ents))
	for i, e := range ents {
		if e.RefreshType == IncrementalPush && !e.Absent && len(e.Data) > 0 &&
			strings.Contains(strings.ToLower(e.SourceFormat), "csv") {
			e.Data = headerLine(e.Data)
		}
		out[i] = e
	}
	return out
}

// headerLine returns the first line of a CSV file, line end included, in
// its own encoding (UTF-8, or UTF-16 with a BOM).
func headerLine(data []byte) []byte {
	nl, step := []byte("\n"), 1
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		nl, step = []byte("\n\x00"), 2
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		nl, step = []byte("\x00\n"), 2
	}
	for off := 0; off < len(data); {
		i := bytes.Index(data[off:], nl)
		if i < 0 {
			break
		}
		if (off+i)%step == 0 {
			return data[:off+i+len(nl)]
		}
		off += i + 1
	}
	return data
}
