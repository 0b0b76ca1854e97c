package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
)

// Final reports whether no more work will happen for a run in this state.
func (s State) Final() bool {
	return s == StateSucceeded || s == StatePartiallySucceeded || s == StateFailed || s == StateSkipped
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
	// (WaitingForBroker, WaitingForQueue, WaitingForExecution); the run
	// service takes it up again with backoff. Empty while it runs.
	Waiting string `json:"waiting,omitempty"`

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
// limit <= 0), newest first.
func Records(ctx context.Context, exp *Export, limit int) ([]*RunRecord, error) {
	st, err := openStoreReading(ctx, exp.Store)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	refs, err := listRecords(ctx, st, exp.Store.Prefix, exp.Name)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	if limit > 0 && len(refs) > limit {
		refs = refs[:limit]
	}
	recs, err := readRecords(ctx, st, refs)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	return recs, nil
}

// LoadRecords returns the run records of job (every job when job is ""),
// newest first.
func LoadRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]*RunRecord, error) {
	refs, err := listRecords(ctx, st, storePrefix, job)
	if err != nil {
		return nil, err
	}
	return readRecords(ctx, st, refs)
}

// recordRef is where a run record is and the state its metadata shows
// ("" when the store lost it), so callers read only the records they need.
type recordRef struct {
	key   string
	runID string
	state State
}

// listRecords lists the run records of job (every job when job is ""),
// newest first: run IDs start with their UTC start time.
func listRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]recordRef, error) {
	prefix := storePrefix
	if job != "" {
		prefix = path.Join(storePrefix, store.EscapeName(job)) + "/"
	} else if prefix != "" {
		prefix += "/"
	}
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list run records: %w", err)
	}
	var refs []recordRef
	for _, o := range objs {
		// A record is "<export>/<run>/run.json" under the store prefix, never
		// deeper: an entity's object named run.json is not a record.
		rel := strings.TrimPrefix(o.Key, storePrefix)
		if storePrefix != "" {
			rel = strings.TrimPrefix(rel, "/")
		}
		if parts := strings.Split(rel, "/"); len(parts) != 3 || parts[2] != "run.json" {
			continue
		}
		id, _ := store.UnescapeName(path.Base(path.Dir(o.Key)))
		refs = append(refs, recordRef{key: o.Key, runID: id, state: State(o.Meta["state"])})
	}
	slices.SortStableFunc(refs, func(a, b recordRef) int { return strings.Compare(b.runID, a.runID) })
	return refs, nil
}

// readRecords reads the records refs point to, in the same order.
func readRecords(ctx context.Context, st store.Store, refs []recordRef) ([]*RunRecord, error) {
	recs := make([]*RunRecord, 0, len(refs))
	for _, ref := range refs {
		rec, err := readRecord(ctx, st, ref.key)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// activeKey marks a run as unfinished: written before its first record,
// deleted once its record is final.
func activeKey(storePrefix, job, runID string) string {
	return path.Join(storePrefix, "_active", store.EscapeName(job), store.EscapeName(runID))
}

// unfinishedRecords reads the records of job that are not in a final state,
// oldest first. It reads only the runs marked active; a marker whose record
// is final (its deletion failed) or missing is removed.
func unfinishedRecords(ctx context.Context, st store.Store, storePrefix, job string) ([]*RunRecord, error) {
	objs, err := st.List(ctx, path.Join(storePrefix, "_active", store.EscapeName(job))+"/")
	if err != nil {
		return nil, fmt.Errorf("list active runs: %w", err)
	}
	var out []*RunRecord
	for _, o := range objs { // keys sort by run ID: oldest first
		id, err := store.UnescapeName(path.Base(o.Key))
		if err != nil {
			continue
		}
		rec, err := readRecord(ctx, st, recordKey(storePrefix, job, id))
		switch {
		case errors.Is(err, store.ErrNotExist):
			// A run being started writes its marker just before its first
			// record; only a marker left alone for long is stale.
			if time.Since(o.ModTime) > 10*time.Minute {
				_ = st.Delete(ctx, o.Key)
			}
		case err == nil && rec.State.Final():
			_ = st.Delete(ctx, o.Key)
		case err != nil:
			return nil, err
		default:
			out = append(out, rec)
		}
	}
	return out, nil
}

func readRecord(ctx context.Context, st store.Store, key string) (*RunRecord, error) {
	rc, err := st.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read run record %s: %w", key, err)
	}
	defer rc.Close()
	var rec RunRecord
	if err := json.NewDecoder(rc).Decode(&rec); err != nil {
		return nil, fmt.Errorf("read run record %s: %w", key, err)
	}
	return &rec, nil
}
