// Package sink lands the batches dmfexport publishes in a database: it
// reads them from a RabbitMQ queue, decodes them (DecodeBatch), decides per
// entity where and how they land (Target), and hands each to a Backend,
// which applies its rows and its ledger entry in one transaction. The
// broker message is acknowledged only after that commit, and a batch whose
// message ID the ledger already holds has no effect, so every batch lands
// exactly once however often it is delivered.
//
// Each database is a package beside this one (sink/postgres) behind the
// small Backend interface.
package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Mode is how an entity's batches land in its table.
type Mode string

const (
	// Snapshot stages a run's rows and, once all its batches are in,
	// replaces the table's rows with them in one transaction.
	Snapshot Mode = "snapshot"
	// Upsert inserts each row, or updates the row with the same keys.
	Upsert Mode = "upsert"
	// Append inserts every row, never updating one.
	Append Mode = "append"
)

// Modes lists the modes a configuration may name.
var Modes = []string{string(Snapshot), string(Upsert), string(Append)}

// Target is where and how one entity's batches land.
type Target struct {
	Table string   // table name in the sink's schema, unquoted
	Keys  []string // the entity's natural key columns; primary key of the table
	Mode  Mode
}

// Table names of the sink's own state, beside the entity tables: the
// ledger of applied batches and the state of snapshots.
const (
	LedgerTable    = "dmfexport_ledger"
	SnapshotsTable = "dmfexport_snapshots"
)

// Metadata columns every entity table has besides the entity's columns,
// in every backend.
const (
	ColExport    = "_dmf_export"    // the export that produced the row
	ColRun       = "_dmf_run"       // its run ID
	ColExecution = "_dmf_execution" // its F&O execution ID
	ColBatch     = "_dmf_batch"     // its batch index
	ColRow       = "_dmf_row"       // its 1-based row number in the entity file
	ColLoadedAt  = "_dmf_loaded_at" // when it became visible in the table
	ColDocument  = "_dmf_document"  // a composite entity's child records, a JSON object
)

// Outcome is what applying a batch did.
type Outcome int

const (
	// Applied: the rows and the ledger entry were committed.
	Applied Outcome = iota
	// Duplicate: the ledger already held the message ID; nothing changed.
	Duplicate
	// Stale: the batch belongs to a run older than the snapshot already
	// applied to its table; only its ledger entry was written.
	Stale
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Backend is what the consumer needs of a database.
type Backend interface {
	// Apply writes b's rows to t (a snapshot's to its staging area) and
	// b's ledger entry in one transaction, creating or widening the table
	// as needed. A message ID already in the ledger is a Duplicate with no
	// effect; a batch of a run older than the snapshot already swapped
	// into t.Table is Stale. An error the same batch would meet again
	// (a value or key the database refuses) wraps ErrRejected.
	Apply(ctx context.Context, b *Batch, t Target) (Outcome, error)
	// FinishSnapshot replaces t.Table's rows with those staged for run,
	// in one transaction, once every batch 0..batch_count-1 of the run is
	// in the ledger and no newer run's snapshot has been swapped in. It
	// returns whether it swapped; calling it again, from any process, is
	// harmless.
	FinishSnapshot(ctx context.Context, t Target, run string) (bool, error)
	// Applied reports whether the ledger holds messageID.
	Applied(ctx context.Context, messageID string) (bool, error)
	Close()
}

// GroupApplier is a Backend that can apply several batches in one
// transaction: each batch with its ledger entry as Apply does, all of them
// committed together or none, so a commit is paid once per group. The
// consumer groups the batches it holds when its backend is one.
type GroupApplier interface {
	// ApplyGroup returns the outcome of each batch, in order. On an error
	// nothing of the group is applied; one that wraps ErrRejected was met
	// by one of its batches.
	ApplyGroup(ctx context.Context, group []Pending) ([]Outcome, error)
}

// Pending is a batch and where it lands.
type Pending struct {
	Batch  *Batch
	Target Target
}

// LedgerReader reads what a sink landed, for dmfexport reconcile and
// status. It only reads: a database the sink never wrote reads as empty.
type LedgerReader interface {
	// Landed returns what the ledger holds of the given runs of the given
	// exports, per run and entity, and the first run (smallest ID, so the
	// oldest) it holds of each export. For the run whose snapshot an
	// entity's table holds now, it also counts the table's rows.
	Landed(ctx context.Context, exports, runs []string) ([]Landed, map[string]string, error)
	// LastRuns returns, per entity, the run whose batch the sink applied
	// last, with what it applied of it, by entity name.
	LastRuns(ctx context.Context) ([]EntityRun, error)
	Close()
}

// EntityRun is the run a sink applied last to one entity's table.
type EntityRun struct {
	Entity, Table, Export, Run string
	Batches, Rows, Stale       int64
	// BatchCount is the run's batch count, once its last batch is in (0
	// before).
	BatchCount int64
	AppliedAt  time.Time // when its latest batch was applied
}

// TableSample is a look at an entity table: its row count and its first
// rows, every value as text (nil for NULL).
type TableSample struct {
	Table   string
	Count   int64
	Columns []string
	Rows    [][]*string
}

// ErrRejected marks a batch the database refuses for what it holds: it
// would be refused again on every delivery.
var ErrRejected = errors.New("batch cannot be applied")

// EntityOptions are the settings of one entity of a sink.
type EntityOptions struct {
	Table   string   // "" → TableName(entity)
	Keys    []string // natural key columns
	Mode    Mode     // "" → from the batch's refresh type
	Include []string // only these columns land (keys always do); empty: all
	Exclude []string // these columns never land
}

// TargetFor resolves where b lands given its entity's options: the mode
// named, else snapshot for FullPush (and for a batch without a refresh
// type, F&O's default when change tracking is off) and upsert for
// IncrementalPush.
func TargetFor(b *Batch, o EntityOptions) (Target, error) {
	t := Target{Table: o.Table, Keys: o.Keys, Mode: o.Mode}
	if t.Table == "" {
		t.Table = TableName(b.Entity)
	}
	if t.Mode == "" {
		t.Mode = Snapshot
		if b.RefreshType == IncrementalPush {
			t.Mode = Upsert
		}
	}
	if t.Mode == Upsert && len(t.Keys) == 0 {
		return t, fmt.Errorf("%w: entity %q is upserted (refresh type %q) but has no keys: set sinks[].entities.%q.keys",
			ErrRejected, b.Entity, b.RefreshType, b.Entity)
	}
	return t, nil
}

// TableName is the table an entity lands in by default: its name in lower
// case, every run of characters other than letters and digits made one
// "_", trimmed of "_" at both ends, prefixed with "e_" when it does not start
// with a letter, and cut to 63 bytes (PostgreSQL's limit).
// "Customers V3" → customers_v3, "Country/regions" → country_regions.
func TableName(entity string) string {
	var b strings.Builder
	under := false
	for _, r := range strings.ToLower(entity) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if under && b.Len() > 0 {
				b.WriteByte('_')
			}
			under = false
			b.WriteRune(r)
		} else {
			under = true
		}
	}
	s := b.String()
	if s == "" || !unicode.IsLetter([]rune(s)[0]) {
		s = "e_" + s
	}
	for len(s) > 63 {
		r := []rune(s)
		s = string(r[:len(r)-1])
	}
	return s
}

// filterColumns keeps the columns o lets land (keys always), and each
// row's values of them.
func filterColumns(b *Batch, o EntityOptions) {
	if len(o.Include) == 0 && len(o.Exclude) == 0 {
		return
	}
	keep := make([]bool, len(b.Columns))
	any := false
	for i, c := range b.Columns {
		k := (len(o.Include) == 0 || contains(o.Include, c) || contains(o.Keys, c)) && (!contains(o.Exclude, c) || contains(o.Keys, c))
		keep[i] = k
		any = any || !k
	}
	if !any {
		return
	}
	var cols []string
	for i, c := range b.Columns {
		if keep[i] {
			cols = append(cols, c)
		}
	}
	for r, row := range b.Rows {
		out := make([]*string, 0, len(cols))
		for i, v := range row {
			if keep[i] {
				out = append(out, v)
			}
		}
		b.Rows[r] = out
	}
	b.Columns = cols
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
