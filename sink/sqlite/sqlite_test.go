package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/sinktest"
)

// TestBackend runs the backends' conformance suite against SQLite, each
// case in a database file of its own.
func TestBackend(t *testing.T) {
	sinktest.RunBackend(t, func(t *testing.T) sinktest.Harness {
		path := filepath.Join(t.TempDir(), "sink.db")
		b, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return sinktest.Harness{
			Backend: b,
			Rows:    func(table string) ([]map[string]any, error) { return tableRows(db, table) },
			Ledger:  func() (sink.LedgerReader, error) { return OpenLedger(context.Background(), path) },
			Sample:  b.Sample,
		}
	})
}

// tableRows reads every row of table as column → value, with a
// connection of its own.
func tableRows(db *sql.DB, table string) ([]map[string]any, error) {
	return sinktest.QueryRows(context.Background(), db, "SELECT * FROM "+quote(table))
}

// alternating spreads its calls over several backends on one file, as
// several sink processes would.
type alternating struct {
	backends []*Backend
	next     atomic.Int64
}

func (a *alternating) pick() *Backend {
	return a.backends[int(a.next.Add(1))%len(a.backends)]
}

func (a *alternating) Apply(ctx context.Context, b *sink.Batch, t sink.Target) (sink.Outcome, error) {
	return a.pick().Apply(ctx, b, t)
}

func (a *alternating) FinishSnapshot(ctx context.Context, t sink.Target, run string) (bool, error) {
	return a.pick().FinishSnapshot(ctx, t, run)
}

func (a *alternating) Applied(ctx context.Context, id string) (bool, error) {
	return a.pick().Applied(ctx, id)
}

func (a *alternating) Close() {}

// TestBackendSharedFile runs the suite with every call going to one of
// three backends on the same file in turn: what several sink processes
// sharing a file do, their writes serialized by SQLite's lock (the
// concurrent case makes them wait for it), each backend's idea of the
// tables' columns stale in turn.
func TestBackendSharedFile(t *testing.T) {
	sinktest.RunBackend(t, func(t *testing.T) sinktest.Harness {
		path := filepath.Join(t.TempDir(), "sink.db")
		a := &alternating{}
		for range 3 {
			b, err := Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			a.backends = append(a.backends, b)
		}
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return sinktest.Harness{
			Backend: a,
			Rows:    func(table string) ([]map[string]any, error) { return tableRows(db, table) },
			Ledger:  func() (sink.LedgerReader, error) { return OpenLedger(context.Background(), path) },
			Sample:  a.backends[0].Sample,
		}
	})
}

// TestRefusesWhatSQLiteTakesOtherwise: names SQLite would take as one
// column, or refuses, reject the batch (so it is dead-lettered) with
// what to do, and leave no ledger entry.
func TestRefusesWhatSQLiteTakesOtherwise(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, filepath.Join(t.TempDir(), "sink.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, tc := range []struct {
		name   string
		b      *sink.Batch
		target sink.Target
		want   string
	}{
		{"columns differing in case only", sinktest.Batch("r1", 0, 0, 1, "E", []string{"ID", "Name", "NAME"}, []any{"1", "a", "b"}),
			sink.Target{Table: "e", Mode: sink.Append}, `columns "Name" and "NAME" are one column`},
		{"a table name SQLite reserves", sinktest.Batch("r2", 0, 0, 1, "E", []string{"ID"}, []any{"1"}),
			sink.Target{Table: "sqlite_stats", Mode: sink.Append}, "reserved"},
		{"a NUL in a column name", sinktest.Batch("r3", 0, 0, 1, "E", []string{"I\x00D"}, []any{"1"}),
			sink.Target{Table: "e", Mode: sink.Append}, "NUL byte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Apply(ctx, tc.b, tc.target)
			if !errors.Is(err, sink.ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply: %v, want an error wrapping sink.ErrRejected saying %q", err, tc.want)
			}
			if ok, _ := b.Applied(ctx, tc.b.MessageID); ok {
				t.Errorf("the ledger holds the refused batch %s", tc.b.MessageID)
			}
		})
	}
}

// TestLedgerOfMissingFile: status and reconcile read a sink that never
// ran as empty, and do not create its file.
func TestLedgerOfMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "never.db")
	l, err := OpenLedger(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	landed, first, err := l.Landed(context.Background(), []string{"exp"}, []string{"r1"})
	runs, err2 := l.LastRuns(context.Background())
	if err != nil || err2 != nil || landed != nil || first != nil || runs != nil {
		t.Errorf("ledger of a missing file: %v, %v, %v, %v, %v; want nothing", landed, first, err, runs, err2)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("reading the ledger created %s (%v)", path, err)
	}
}

// TestBusyIsRetried: a write that waits for another process's lock
// until its context ends, or past the busy timeout, fails with an error
// the consumer retries, not one it dead-letters.
func TestBusyIsRetried(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sink.db")
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Another process holds the write lock.
	other, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, "ROLLBACK") }()

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = b.Apply(short, sinktest.Batch("r1", 0, 0, 1, "E", []string{"ID"}, []any{"1"}), sink.Target{Table: "e", Mode: sink.Append})
	if err == nil || errors.Is(err, sink.ErrRejected) {
		t.Errorf("apply while another process writes, until its context ends: %v, want an error that is not sink.ErrRejected", err)
	}

	// What SQLite says once the busy timeout is over (here at once).
	impatient, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = impatient.Close() }()
	_, err = impatient.BeginTx(ctx, nil)
	var se *msqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || rejected(err) {
		t.Errorf("begin while another process writes: %v, want SQLITE_BUSY, not rejected", err)
	}
}

func BenchmarkApply(b *testing.B) {
	for _, mode := range []sink.Mode{sink.Snapshot, sink.Upsert, sink.Append} {
		b.Run(string(mode), func(b *testing.B) {
			be, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			sinktest.BenchmarkApply(b, be, mode)
		})
	}
}
