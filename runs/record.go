package runs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
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

// Record is the durable account of one run of one export, written to the
// store at every state change so an operator (and a later resume) can see
// exactly how far it got. It never holds secrets: the package URL is stored
// redacted.
//
// In JSON the export's name is "export"; records also carry it as "job",
// the name earlier versions wrote and read, so those versions (a replica
// not yet upgraded, a script reading status --json) keep working. Records
// written with only "job" are read as before.
type Record struct {
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
	// Cause is the part of Error that says why, as the step that met it
	// told it (F&O's own words, the broker's refusal, the network's or the
	// store's answer), without the context around it; status lines print
	// it. Empty when no step named one, and in records of earlier
	// versions: Error then says it all.
	Cause string `json:"cause,omitempty"`
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
	// Waiting names what an unfinished run stopped to wait for (see
	// jobs.WaitingForBroker and the others); the run service takes it up
	// again with backoff. Empty while it runs.
	Waiting string `json:"waiting,omitempty"`
	// Abandoned says who ended the run on purpose, when and why (state
	// abandoned: dmfexport abandon).
	Abandoned *Abandonment `json:"abandoned,omitempty"`

	// ExecutionErrors are the first errors F&O recorded for an execution
	// that did not simply succeed (GetExecutionErrors), at most
	// MaxExecutionErrors; ExecutionErrorCount is how many F&O gave.
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

// recordFields is Record without its JSON methods.
type recordFields Record

// MarshalJSON writes the record with the export's name both as "export"
// and, for earlier versions, as "job".
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		recordFields
		LegacyJob string `json:"job"`
	}{recordFields(r), r.Job})
}

// UnmarshalJSON reads a record of any version: the export's name comes
// from "export", or from "job" in records written before "export".
func (r *Record) UnmarshalJSON(b []byte) error {
	v := struct {
		*recordFields
		LegacyJob string `json:"job"`
	}{recordFields: (*recordFields)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if r.Job == "" {
		r.Job = v.LegacyJob
	}
	return nil
}

// Encode returns the record as it is stored: indented JSON.
func Encode(rec *Record) ([]byte, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode run record: %w", err)
	}
	return b, nil
}

// ownerGenMeta is the run record's metadata key (and JSON field) holding
// the lease generation of the replica that wrote it.
const ownerGenMeta = "owner_gen"

// meta is the metadata stored with a record: enough to list runs by state
// without reading them, and to rebuild a damaged one (see damaged.go).
func (r *Record) meta() map[string]string {
	meta := map[string]string{"export": r.Job, "job": r.Job, "run": r.RunID, "state": string(r.State)}
	if r.ExecutionID != "" {
		// Where the metadata outlives the bytes (a directory store's
		// sidecar), a damaged record's run is rebuilt from it.
		meta["executionid"] = r.ExecutionID
	}
	if r.OwnerGen > 0 {
		meta[ownerGenMeta] = strconv.Itoa(r.OwnerGen)
	}
	return meta
}

// BatchSettings are the export settings that shape batches: how rows are
// read (delimiter), how many go in one message, how bodies are encoded.
type BatchSettings struct {
	BatchSize int `json:"batch_size"`
	// MaxBatchBytes closes a batch at that many bytes of encoded rows
	// before BatchSize rows (publish.EntityOptions.MaxBatchBytes); 0, in
	// records written before it existed, closes batches by rows only.
	MaxBatchBytes int    `json:"max_batch_bytes,omitempty"`
	Delimiter     string `json:"delimiter,omitempty"` // "" detects it from the header
	Compression   string `json:"compression,omitempty"`
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
	// Compression is "gzip" when the object at Key holds the entity file
	// gzip-compressed (store.compress: gzip), StoredBytes then the
	// object's size; Bytes and SHA256 are the file's own. Empty in records
	// of earlier versions and for objects stored as they are.
	Compression string `json:"compression,omitempty"`
	StoredBytes int64  `json:"stored_bytes,omitempty"`
	State       State  `json:"state"`
	// Rows and Batches count what the broker confirmed, never what was
	// only handed to it.
	Rows    int64 `json:"rows"`
	Batches int64 `json:"batches"`
	// LastBatch is the index of the last batch the broker confirmed, in
	// order (-1: none yet); a resumed run publishes from the one after it.
	LastBatch int64  `json:"last_batch"`
	Error     string `json:"error,omitempty"`
}

// ReadSettings say how an entity file is read where the file and the
// manifest cannot tell: its delimiter and text qualifier, its character
// set, whether its first line is a header, and its column widths. An
// export sets them for all its entities, and per entity (the jobs
// package's configuration); a run records each entity's settings when it
// unpacks, so a resumed run reads the file as the first attempt did.
type ReadSettings struct {
	Delimiter     string `json:"delimiter,omitempty"`      // "" detects it from the first line
	TextQualifier string `json:"text_qualifier,omitempty"` // "" is '"'; "none": quotes are data
	StrictQuotes  bool   `json:"strict_quotes,omitempty"`  // an undoubled qualifier fails the entity
	Encoding      string `json:"encoding,omitempty"`       // canonical name (publish.ParseEncoding); "" decides from the file
	// NoHeader is "header: false": the first line is data and Columns
	// names the columns.
	NoHeader bool     `json:"no_header,omitempty"`
	Columns  []string `json:"columns,omitempty"`
	Widths   []int    `json:"widths,omitempty"` // fixed width, in characters; nil: from the header line
}

// ExecutionError is one error F&O recorded for the run's execution: the
// record and field it concerns, when F&O names them, and its message (or
// F&O's raw text when its list could not be parsed).
type ExecutionError struct {
	RecordID string `json:"record_id,omitempty"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
}

// MaxExecutionErrors bounds the F&O errors a run record keeps;
// maxExecutionErrorBytes bounds each message.
const (
	MaxExecutionErrors     = 100
	maxExecutionErrorBytes = 2000
)

// SetExecutionErrors keeps the first MaxExecutionErrors of errs, each
// message cut to a bound, and their count.
func (r *Record) SetExecutionErrors(errs []ExecutionError) {
	r.ExecutionErrorCount = len(errs)
	r.ExecutionErrors = nil
	for _, e := range errs[:min(len(errs), MaxExecutionErrors)] {
		if len(e.Message) > maxExecutionErrorBytes {
			e.Message = strings.ToValidUTF8(e.Message[:maxExecutionErrorBytes], "") + "…"
		}
		r.ExecutionErrors = append(r.ExecutionErrors, e)
	}
}

// Abandonment says who ended an unfinished run on purpose, when and why.
type Abandonment struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}
