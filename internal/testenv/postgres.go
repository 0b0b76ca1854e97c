package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL is the database tests land batches in:
// $DMFEXPORT_TEST_DATABASE_URL, or the local PostgreSQL's database test as
// user postgres (trust authentication on loopback).
func PostgresURL() string {
	if u := os.Getenv("DMFEXPORT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// PostgresConn connects to PostgresURL for the test's own queries; the
// connection closes when the test ends.
func PostgresConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v (set DMFEXPORT_TEST_DATABASE_URL)", PostgresURL(), err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// PostgresSchema names a schema of the test's own, dropped (with the
// sink's staging schema beside it, <name>_staging) when the test ends.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%d", time.Now().UnixNano())
	conn := PostgresConn(t)
	t.Cleanup(func() {
		for _, s := range []string{name, name + "_staging"} {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
		}
	})
	return name
}

// PostgresRows reads every row of schema.table as column → value, through
// PostgreSQL's own JSON rendering, in the order of that rendering.
func PostgresRows(ctx context.Context, conn *pgx.Conn, schema, table string) ([]map[string]any, error) {
	rows, err := conn.Query(ctx, "SELECT row_to_json(x)::text FROM "+pgx.Identifier{schema, table}.Sanitize()+" x ORDER BY 1")
	if err != nil {
		return nil, err
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(texts))
	for _, s := range texts {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
