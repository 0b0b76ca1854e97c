package postgres

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/sinktest"
)

// TestBackend runs the backends' conformance suite against PostgreSQL,
// each case in a schema of its own.
func TestBackend(t *testing.T) {
	sinktest.RunBackend(t, func(t *testing.T) sinktest.Harness {
		schema := testenv.PostgresSchema(t)
		b, err := Open(context.Background(), testenv.PostgresURL(), schema)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		conn := testenv.PostgresConn(t)
		return sinktest.Harness{
			Backend: b,
			Rows:    func(table string) ([]map[string]any, error) { return tableRows(conn, schema, table) },
			Ledger: func() (sink.LedgerReader, error) {
				return OpenLedger(context.Background(), testenv.PostgresURL(), schema)
			},
			Sample: b.Sample,
		}
	})
}

// tableRows reads every row of schema.table as column → value, through
// PostgreSQL's own JSON rendering.
func tableRows(conn *pgx.Conn, schema, table string) ([]map[string]any, error) {
	rows, err := conn.Query(context.Background(), "SELECT row_to_json(x)::text FROM "+pgx.Identifier{schema, table}.Sanitize()+" x")
	if err != nil {
		return nil, err
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, s := range texts {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// TestStagingSchema: the staging schema's name stays within PostgreSQL's
// 63 bytes and ends in _staging.
func TestStagingSchema(t *testing.T) {
	long := "s234567890123456789012345678901234567890123456789012345678901"
	for _, tc := range []struct{ schema, want string }{
		{"public", "public_staging"},
		{"dw", "dw_staging"},
		{long, long[:63-len("_staging")] + "_staging"},
	} {
		if got := stagingSchema(tc.schema); got != tc.want || len(got) > 63 {
			t.Errorf("stagingSchema(%q) = %q, want %q", tc.schema, got, tc.want)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	for _, mode := range []sink.Mode{sink.Snapshot, sink.Upsert, sink.Append} {
		b.Run(string(mode), func(b *testing.B) {
			be, err := Open(context.Background(), testenv.PostgresURL(), testenv.PostgresSchema(b))
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			sinktest.BenchmarkApply(b, be, mode)
		})
	}
}
