package main

import (
	"context"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
	"github.com/dmfexport/dmfexport/sink/sqlite"
)

// sinkBackend is what the commands need of a sink's database: landing
// batches, and a look at a table for the demo.
type sinkBackend interface {
	sink.Backend
	Sample(ctx context.Context, table string, limit int) (*sink.TableSample, error)
}

// openBackend opens the database sink s lands in: its SQLite file, or
// its PostgreSQL schema.
func openBackend(ctx context.Context, s *jobs.SinkConfig) (sinkBackend, error) {
	if path := s.SQLitePath(); path != "" {
		return sqlite.Open(ctx, path)
	}
	return postgres.Open(ctx, s.DatabaseURL.Reveal(), s.Schema)
}

// openLedger opens the ledger of sink s for reading.
func openLedger(ctx context.Context, s *jobs.SinkConfig) (sink.LedgerReader, error) {
	if path := s.SQLitePath(); path != "" {
		return sqlite.OpenLedger(ctx, path)
	}
	return postgres.OpenLedger(ctx, s.DatabaseURL.Reveal(), s.Schema)
}

// databaseName names sink s's database for people: the SQLite file, or
// the PostgreSQL schema (the URL may hold a password).
func databaseName(s *jobs.SinkConfig) string {
	if path := s.SQLitePath(); path != "" {
		return "SQLite " + path
	}
	schema := s.Schema
	if schema == "" {
		schema = "public"
	}
	return "PostgreSQL schema " + schema
}
