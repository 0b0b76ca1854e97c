package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/store"
)

// State is where a run is in its lifecycle. A run moves forward only:
// pending → exporting → downloading → unpacking → publishing → one of the
// final states; a run kept out by another run of its data project goes
// straight to skipped.
type State string

// Run states, in lifecycle order.
const (
	StatePending            State = "pending"
	StateExporting          State = "exporting"
	StateDownloading        State = "downloading"
	StateUnpacking          State = "unpacking"
	StatePublishing         State = "publishing"
	StateSucceeded          State = "succeeded"
	StatePartiallySucceeded State = "partially_succeeded"
	StateFailed             State = "failed"
	// StateSkipped is a run that never started because another run was
	// exporting the same data project; its error names that run.
	StateSkipped State = "skipped"
	// StateAbandoned is an unfinished run an operator ended on purpose
	// (dmfexport abandon); its error says who, when and why. It is never
	// resumed.
	StateAbandoned State = "abandoned"
)

// Final reports whether no more work will happen for a run in this state.
func (s State) Final() bool {
	return s == StateSucceeded || s == StatePartiallySucceeded || s == StateFailed || s == StateSkipped || s == StateAbandoned
}

// known reports whether s is one of the run states above.
func (s State) known() bool {
	switch s {
	case StatePending, StateExporting, StateDownloading, StateUnpacking, StatePublishing:
		return true
	}
	return s.Final()
}

// RunRecord is the durable account of one run of one export, written to the
// store at every state change so an operator (and a later resume) can see
// exactly how far it got. It never holds secrets: the package URL is stored
// redacted.
//
// In JSON the export's name is "export"; records also carry it as "job",
// the name earlier versions wrote and read, so those versions (a replica
// not yet upgraded, a script reading status --json) keep working. Records
// written with only "job" are read as before.
type RunRecord struct {
	Job         string    `json:"export"` // the export's name
	RunID       string    `json:"run_id"`
	Trigger     string    `json:"trigger"` // "schedule", "manual" or "demo"
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	StartedAt   time.Time `json:"started_at"`
	// QueuedAt is when the run began to wait for an execution slot of its
	// F&O environment (fo.max_concurrent_exports); zero if it never waited.
	QueuedAt   time.Time `json:"queued_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	State      State     `json:"state"`
	Error      string    `json:"error,omitempty"`
	// Warnings are problems that did not fail the run, such as F&O's errors
	// of a PartiallySucceeded export published under partial: publish.
	Warnings []string `json:"warnings,omitempty"`

	DefinitionGroup string `json:"definition_group"`
	LegalEntity     string `json:"legal_entity"`
	ExecutionID     string `json:"execution_id,omitempty"`
	ExecutionStatus string `json:"execution_status,omitempty"`
	PackageURL      string `json:"package_url,omitempty"` // redacted
	PackageKey      string `json:"package_key,omitempty"`
	PackageBytes    int64  `json:"package_bytes,omitempty"`
	PackageSHA256   string `json:"package_sha256,omitempty"`
	Unpacked        bool   `json:"unpacked"`          // true only once every entity object is written
	Resumes         int    `json:"resumes,omitempty"` // times the run was taken up again after an interruption
	// OwnerGen is the lease generation of the replica that wrote the
	// record (1 for the run's first owner, higher after every takeover),
	// also kept in the record's metadata: a replica whose generation is
	// lower has lost the run and writes nothing more (see lease.go).
	OwnerGen int `json:"owner_gen,omitempty"`
	// Waiting names what an unfinished run stopped to wait for
	// (WaitingForBroker, WaitingForQueue, WaitingForQueueSpace,
	// WaitingForExecution); the run
	// service takes it up again with backoff. Empty while it runs.
	Waiting string `json:"waiting,omitempty"`
	// Abandoned says who ended the run on purpose, when and why (state
	// abandoned: dmfexport abandon).
	Abandoned *Abandonment `json:"abandoned,omitempty"`

	// ExecutionErrors are the first errors F&O recorded for an execution
	// that did not simply succeed (GetExecutionErrors), at most
	// maxRecordedExecutionErrors; ExecutionErrorCount is how many F&O gave.
	ExecutionErrors     []ExecutionError `json:"execution_errors,omitempty"`
	ExecutionErrorCount int              `json:"execution_error_count,omitempty"`
	// Batching holds the settings that decide which rows go in which
	// message, as they were when the run started; a resumed run and a
	// replay use these, not the current configuration, so a message ID
	// always names the same rows. Nil in records of earlier versions.
	Batching *BatchSettings `json:"batching,omitempty"`

	Entities []EntityRecord `json:"entities,omitempty"`

	Durations map[string]string `json:"durations,omitempty"` // per step, e.g. "export": "12.5s"
}

// runRecordFields is RunRecord without its JSON methods.
type runRecordFields RunRecord

// MarshalJSON writes the record with the export's name both as "export"
// and, for earlier versions, as "job".
func (r RunRecord) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		runRecordFields
		LegacyJob string `json:"job"`
	}{runRecordFields(r), r.Job})
}

// UnmarshalJSON reads a record of any version: the export's name comes
// from "export", or from "job" in records written before "export".
func (r *RunRecord) UnmarshalJSON(b []byte) error {
	v := struct {
		*runRecordFields
		LegacyJob string `json:"job"`
	}{runRecordFields: (*runRecordFields)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if r.Job == "" {
		r.Job = v.LegacyJob
	}
	return nil
}

// BatchSettings are the export settings that shape batches: how rows are
// read (delimiter), how many go in one message, how bodies are encoded.
type BatchSettings struct {
	BatchSize   int    `json:"batch_size"`
	Delimiter   string `json:"delimiter,omitempty"` // "" detects it from the header
	Compression string `json:"compression,omitempty"`
}

// EntityRecord is one entity's part of a run.
type EntityRecord struct {
	Entity       string `json:"entity"`
	File         string `json:"file"`
	SourceFormat string `json:"source_format"`
	Format       string `json:"format"`
	Sheet        string `json:"sheet,omitempty"`
	// RefreshType is the manifest's DefaultRefreshType (FullPush or
	// IncrementalPush), passed on with every batch.
	RefreshType string `json:"refresh_type,omitempty"`
	// Fields are the field names of the manifest's field map, which tell a
	// header row from data (publish.EntityOptions.FieldNames).
	Fields []string `json:"fields,omitempty"`
	// Read are the settings the file is read with, fixed when the run
	// unpacks so a resumed run reads it as the first attempt did; nil in
	// records of earlier versions (Batching.Delimiter then applies).
	Read *ReadSettings `json:"read,omitempty"`
	// Encoding is the character set the file was read with; LooseQuotes
	// counts the text qualifiers kept as data because they were not
	// doubled (see publish.EntityStats).
	Encoding    string `json:"encoding,omitempty"`
	LooseQuotes int64  `json:"loose_quotes,omitempty"`
	// Absent: the manifest lists File but the package does not hold it.
	// Under absent_files: empty the entity is published without rows and
	// succeeds; under fail it fails. Key is then empty.
	Absent bool   `json:"absent,omitempty"`
	Key    string `json:"key"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	State  State  `json:"state"`
	// Rows and Batches count what the broker confirmed, never what was
	// only handed to it.
	Rows    int64 `json:"rows"`
	Batches int64 `json:"batches"`
	// LastBatch is the index of the last batch the broker confirmed, in
	// order (-1: none yet); a resumed run publishes from the one after it.
	LastBatch int64  `json:"last_batch"`
	Error     string `json:"error,omitempty"`
}

// ExecutionError is one error F&O recorded for the run's execution: the
// record and field it concerns, when F&O names them, and its message (or
// F&O's raw text when its list could not be parsed).
type ExecutionError struct {
	RecordID string `json:"record_id,omitempty"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
}

// maxRecordedExecutionErrors bounds the F&O errors a run record keeps;
// maxExecutionErrorBytes bounds each message.
const (
	maxRecordedExecutionErrors = 100
	maxExecutionErrorBytes     = 2000
)

// recordExecutionErrors keeps the first of F&O's errors and their count.
func (rec *RunRecord) recordExecutionErrors(errs []dmf.ExecutionError) {
	rec.ExecutionErrorCount = len(errs)
	rec.ExecutionErrors = nil
	for _, e := range errs[:min(len(errs), maxRecordedExecutionErrors)] {
		msg := e.Message
		if len(msg) > maxExecutionErrorBytes {
			msg = strings.ToValidUTF8(msg[:maxExecutionErrorBytes], "") + "…"
		}
		rec.ExecutionErrors = append(rec.ExecutionErrors, ExecutionError{RecordID: e.RecordID, Field: e.Field, Message: msg})
	}
}

// runPrefix is the store folder of one run: "<prefix>/<export>/<run id>".
func runPrefix(storePrefix, job, runID string) string {
	return path.Join(storePrefix, store.EscapeName(job), store.EscapeName(runID))
}

// recordKey is where a run's record lives.
func recordKey(storePrefix, job, runID string) string {
	return path.Join(runPrefix(storePrefix, job, runID), "run.json")
}

// saveRecord writes rec as indented JSON; the store makes the write atomic,
// so a reader sees the previous or the new record, never a torn one.
func saveRecord(ctx context.Context, st store.Store, storePrefix string, rec *RunRecord) error {
	b, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	return putRecord(ctx, st, storePrefix, rec, b)
}

func encodeRecord(rec *RunRecord) ([]byte, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode run record: %w", err)
	}
	return b, nil
}

// putRecord writes an encoded record of rec.
func putRecord(ctx context.Context, st store.Store, storePrefix string, rec *RunRecord, b []byte) error {
	if _, err := st.Put(ctx, recordKey(storePrefix, rec.Job, rec.RunID), bytes.NewReader(b), recordMeta(rec)); err != nil {
		return fmt.Errorf("write run record %s/%s: %w", rec.Job, rec.RunID, err)
	}
	return nil
}

func recordMeta(rec *RunRecord) map[string]string {
	meta := map[string]string{"export": rec.Job, "job": rec.Job, "run": rec.RunID, "state": string(rec.State)}
	if rec.ExecutionID != "" {
		// Where the metadata outlives the bytes (a directory store's
		// sidecar), a damaged record's run is rebuilt from it (damaged.go).
		meta["executionid"] = rec.ExecutionID
	}
	if rec.OwnerGen > 0 {
		meta[ownerGenMeta] = strconv.Itoa(rec.OwnerGen)
	}
	return meta
}

// putOwnedRecord writes an encoded record of rec for its owner, lease
// generation rec.OwnerGen: where the store can (store.GuardedPutter),
// only if the stored record was not written by a newer generation at the
// moment of the write, so an owner paused between its check and its
// write still cannot overwrite an adopter's record; the error then wraps
// ErrLeaseLost.
func putOwnedRecord(ctx context.Context, st store.Store, storePrefix string, rec *RunRecord, b []byte) error {
	gp, ok := st.(store.GuardedPutter)
	if !ok || rec.OwnerGen == 0 {
		return putRecord(ctx, st, storePrefix, rec, b)
	}
	mine := rec.OwnerGen
	guard := func(current map[string]string) error {
		if g, err := strconv.Atoi(current[ownerGenMeta]); err == nil && g > mine {
			return fmt.Errorf("%w: the record was written by lease generation %d, this process holds %d", ErrLeaseLost, g, mine)
		}
		return nil
	}
	if _, err := gp.PutGuarded(ctx, recordKey(storePrefix, rec.Job, rec.RunID), b, recordMeta(rec), guard); err != nil {
		return fmt.Errorf("write run record %s/%s: %w", rec.Job, rec.RunID, err)
	}
	return nil
}

// Records returns the newest limit run records of one export (all when
// limit <= 0), newest first. Damaged records among them are left out: see
// RunHistory.
func Records(ctx context.Context, exp *Export, limit int) ([]*RunRecord, error) {
	h, err := RunHistory(ctx, exp, limit)
	if err != nil {
		return nil, err
	}
	return h.Records, nil
}

// History is what the store holds of an export's runs: the records that
// read as records, and those that do not.
type History struct {
	Records []*RunRecord // newest first
	// Damaged are the records among the newest limit that cannot be read,
	// and the quarantined records of runs left without one, newest first.
	Damaged []DamagedRecord
}

// RunHistory reads the newest limit run records of one export (all when
// limit <= 0). A damaged record never fails it: it is listed in Damaged,
// so one unreadable record does not hide the others. It only reads.
func RunHistory(ctx context.Context, exp *Export, limit int) (*History, error) {
	st, err := openStoreReading(ctx, exp.Store)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	refs, quarantined, err := listRuns(ctx, st, exp.Store.Prefix, exp.Name)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	hasRecord := map[string]bool{}
	for _, ref := range refs {
		hasRecord[ref.runID] = true
	}
	if limit > 0 && len(refs) > limit {
		refs = refs[:limit]
	}
	recs, damaged, err := readRecords(ctx, st, refs)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	for _, q := range quarantined {
		// A rebuilt record says in its warnings that it replaced one.
		if !hasRecord[q.runID] {
			damaged = append(damaged, DamagedRecord{Job: exp.Name, RunID: q.runID, Key: q.key, Quarantined: true,
				StartedAt: runStart(q.runID), Cause: q.meta["cause"], Lost: q.meta["lost"]})
		}
	}
	slices.SortStableFunc(damaged, func(a, b DamagedRecord) int { return strings.Compare(b.RunID, a.RunID) })
	return &History{Records: recs, Damaged: damaged}, nil
}

// LoadRecords returns the run records of job (every job when job is ""),
// newest first; damaged records are left out.
func LoadRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]*RunRecord, error) {
	refs, err := listRecords(ctx, st, storePrefix, job)
	if err != nil {
		return nil, err
	}
	recs, _, err := readRecords(ctx, st, refs)
	return recs, err
}

// recordRef is where a run record is and the state its metadata shows
// ("" when the store lost it), so callers read only the records they need.
type recordRef struct {
	key   string
	runID string
	state State
	meta  map[string]string
}

// listRecords lists the run records of job (every job when job is ""),
// newest first: run IDs start with their UTC start time.
func listRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]recordRef, error) {
	refs, _, err := listRuns(ctx, st, storePrefix, job)
	return refs, err
}

// listRuns lists the run records of job (every job when job is ""), and
// the quarantined copies of damaged ones (see quarantineKey), each newest
// first.
func listRuns(ctx context.Context, st store.Store, storePrefix, job string) (records, quarantined []recordRef, err error) {
	prefix := storePrefix
	if job != "" {
		prefix = path.Join(storePrefix, store.EscapeName(job)) + "/"
	} else if prefix != "" {
		prefix += "/"
	}
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list run records: %w", err)
	}
	for _, o := range objs {
		// A record is "<export>/<run>/run.json" under the store prefix, never
		// deeper: an entity's object named run.json is not a record.
		rel := strings.TrimPrefix(o.Key, storePrefix)
		if storePrefix != "" {
			rel = strings.TrimPrefix(rel, "/")
		}
		parts := strings.Split(rel, "/")
		if len(parts) != 3 {
			continue
		}
		id, _ := store.UnescapeName(parts[1])
		ref := recordRef{key: o.Key, runID: id, state: State(o.Meta["state"]), meta: o.Meta}
		switch {
		case parts[2] == "run.json":
			records = append(records, ref)
		case strings.HasPrefix(parts[2], quarantineSuffix):
			ref.state = ""
			quarantined = append(quarantined, ref)
		}
	}
	newest := func(a, b recordRef) int { return strings.Compare(b.runID, a.runID) }
	slices.SortStableFunc(records, newest)
	slices.SortStableFunc(quarantined, newest)
	return records, quarantined, nil
}

// readRecords reads the records refs point to, in the same order, and
// describes those that are damaged. Only a store that cannot be read
// fails it.
func readRecords(ctx context.Context, st store.Store, refs []recordRef) ([]*RunRecord, []DamagedRecord, error) {
	recs := make([]*RunRecord, 0, len(refs))
	var damaged []DamagedRecord
	for _, ref := range refs {
		rec, err := readRecord(ctx, st, ref.key)
		var de *damagedError
		switch {
		case errors.As(err, &de):
			job, _ := store.UnescapeName(path.Base(path.Dir(path.Dir(ref.key))))
			damaged = append(damaged, DamagedRecord{Job: job, RunID: ref.runID, Key: ref.key, State: ref.state,
				StartedAt: runStart(ref.runID), Cause: de.cause})
		case errors.Is(err, store.ErrNotExist):
			// Deleted since the listing (retention, a quarantine).
		case err != nil:
			return nil, nil, err
		default:
			recs = append(recs, rec)
		}
	}
	return recs, damaged, nil
}

// activeKey marks a run as unfinished: written before its first record,
// deleted once its record is final.
func activeKey(storePrefix, job, runID string) string {
	return path.Join(storePrefix, "_active", store.EscapeName(job), store.EscapeName(runID))
}

// damagedRun is a run marked active whose record is damaged.
type damagedRun struct {
	runID  string
	key    string       // its record
	marker store.Object // its active marker
	cause  string
}

// unfinishedRecords reads the records of job that are not in a final state,
// oldest first, and lists those marked active whose record is damaged
// apart, for the caller to quarantine. It reads only the runs marked
// active; a marker whose record is final (its deletion failed) or missing
// is removed.
func unfinishedRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]*RunRecord, []damagedRun, error) {
	objs, err := st.List(ctx, path.Join(storePrefix, "_active", store.EscapeName(job))+"/")
	if err != nil {
		return nil, nil, fmt.Errorf("list active runs: %w", err)
	}
	var out []*RunRecord
	var damaged []damagedRun
	for _, o := range objs { // keys sort by run ID: oldest first
		id, err := store.UnescapeName(path.Base(o.Key))
		if err != nil {
			continue
		}
		key := recordKey(storePrefix, job, id)
		rec, err := readRecord(ctx, st, key)
		var de *damagedError
		switch {
		case errors.Is(err, store.ErrNotExist):
			// A run being started writes its marker just before its first
			// record; only a marker left alone for long is stale.
			if time.Since(o.ModTime) > 10*time.Minute {
				_ = st.Delete(ctx, o.Key)
			}
		case errors.As(err, &de):
			damaged = append(damaged, damagedRun{runID: id, key: key, marker: o, cause: de.cause})
		case err == nil && rec.State.Final():
			_ = st.Delete(ctx, o.Key)
		case err != nil:
			return nil, nil, err
		default:
			out = append(out, rec)
		}
	}
	return out, damaged, nil
}

// ErrDamagedRecord is wrapped by the error of reading a run record that
// is not one: truncated, empty, not JSON, JSON of another shape, or
// missing what a run needs (its run ID, its export, a known state, its
// start, the execution ID of a run past pending).
var ErrDamagedRecord = errors.New("run record is damaged")

// damagedError is a damaged record: where it is and what is wrong.
type damagedError struct {
	key, cause string
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("read run record %s: damaged: %s", e.key, e.cause)
}

func (e *damagedError) Unwrap() error { return ErrDamagedRecord }

// DamagedRecord is a run record that cannot be read as one, as status
// shows it.
type DamagedRecord struct {
	Job   string // the export, from the record's key
	RunID string // from the record's key
	// Key is where the damaged bytes are: the run's run.json, or, once
	// quarantined, the copy beside it (Quarantined).
	Key         string
	Quarantined bool
	State       State     // the state the store's metadata of run.json gives; "" when unknown
	StartedAt   time.Time // from the run ID; zero when it does not start with a time
	Cause       string    // why it cannot be read
	Lost        string    // of a quarantined record: what became of its run
}

func readRecord(ctx context.Context, st store.Store, key string) (*RunRecord, error) {
	rc, err := st.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read run record %s: %w", key, err)
	}
	defer rc.Close()
	// Only the bytes can be damaged: a read the store cut short is its
	// error, and reading again may succeed.
	src := &readErr{r: rc}
	var rec RunRecord
	if err := json.NewDecoder(src).Decode(&rec); err != nil {
		switch {
		case src.err != nil:
			return nil, fmt.Errorf("read run record %s: %w", key, src.err)
		case errors.Is(err, io.EOF):
			return nil, &damagedError{key: key, cause: "empty"}
		default:
			return nil, &damagedError{key: key, cause: "not a JSON run record: " + err.Error()}
		}
	}
	if cause := checkRecord(&rec, key); cause != "" {
		return nil, &damagedError{key: key, cause: cause}
	}
	return &rec, nil
}

// readErr keeps the first error of r other than io.EOF.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// checkRecord says what a decoded record lacks to be the record of the run
// stored at key, or "". A record a run could not be resumed from safely
// (no run ID: its objects and messages would be written under another;
// no execution ID past pending: a second export) is damaged.
func checkRecord(rec *RunRecord, key string) string {
	runID, _ := store.UnescapeName(path.Base(path.Dir(key)))
	job, _ := store.UnescapeName(path.Base(path.Dir(path.Dir(key))))
	switch {
	case rec.RunID == "":
		return "no run ID"
	case rec.RunID != runID:
		return fmt.Sprintf("it names run %q but is stored as run %q", rec.RunID, runID)
	case rec.Job == "":
		return "no export name"
	case rec.Job != job:
		return fmt.Sprintf("it names export %q but is stored under export %q", rec.Job, job)
	case !rec.State.known():
		return fmt.Sprintf("unknown state %q", rec.State)
	case rec.StartedAt.IsZero():
		return "no start time"
	case rec.ExecutionID == "" && !rec.State.Final() && rec.State != StatePending:
		return fmt.Sprintf("state %s without an execution ID", rec.State)
	case rec.ExecutionID != "" && checkExecutionID(rec.ExecutionID) != nil:
		return fmt.Sprintf("unusable execution ID %q", rec.ExecutionID)
	}
	return ""
}
