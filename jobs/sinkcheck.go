package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/sink"
)

// SinkCheckRuns is how many of an export's newest run records SinkWarnings
// reads to learn how F&O exports each entity.
const SinkCheckRuns = 5

// SinkWarnings checks each sink's entity settings against how the exports
// it consumes export those entities. The configuration cannot tell which
// entities F&O exports incrementally (change tracking, IncrementalPush):
// the package manifest does, and each run records it per entity, so the
// newest SinkCheckRuns records of every consumed export are read. An
// entity whose newest record says IncrementalPush gets a warning when the
// sink lands it without keys in the default mode (its batches are upserted,
// which needs keys: each would be dead-lettered), or in mode snapshot (each
// batch of changes would replace the table's rows). Warnings point at the
// sink's entry for the entity, else at the sink's own. It only reads: a
// directory store not created yet has no records. The stores that cannot
// be read come back as an error, after the warnings of the others.
func SinkWarnings(ctx context.Context, cfg *Config) ([]ConfigProblem, error) {
	var warnings []ConfigProblem
	var errs []error
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		consumed := slices.ContainsFunc(cfg.Sinks, func(s SinkConfig) bool { return s.Consumes(e) })
		if !consumed || dirStoreMissing(e) {
			continue
		}
		recs, err := Records(ctx, e, SinkCheckRuns)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (so the sinks' settings are not checked against its entities)", err))
			continue
		}
		warnings = append(warnings, incrementalWarnings(cfg, e, recs)...)
	}
	slices.SortStableFunc(warnings, func(a, b ConfigProblem) int {
		return cmp.Or(a.Line-b.Line, a.Column-b.Column, strings.Compare(a.Message, b.Message))
	})
	return warnings, errors.Join(errs...)
}

// dirStoreMissing reports whether e's store is a directory that does not
// exist yet: reading it would create it.
func dirStoreMissing(e *Export) bool {
	if e.Store.Type != "dir" {
		return false
	}
	_, err := os.Stat(e.Store.Path)
	return errors.Is(err, fs.ErrNotExist)
}

// incrementalWarnings returns the warnings of SinkWarnings for export e,
// given its run records, newest first.
func incrementalWarnings(cfg *Config, e *Export, recs []*runs.Record) []ConfigProblem {
	// The newest record naming an entity says how it is exported now.
	type seen struct{ refresh, run string }
	newest := map[string]seen{}
	for _, r := range recs {
		for _, en := range r.Entities {
			if _, ok := newest[en.Entity]; !ok {
				newest[en.Entity] = seen{en.RefreshType, r.RunID}
			}
		}
	}
	var out []ConfigProblem
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		if !s.Consumes(e) {
			continue
		}
		for entity, n := range newest {
			if !strings.EqualFold(n.refresh, sink.IncrementalPush) {
				continue
			}
			o := s.Entities[entity]
			exported := fmt.Sprintf("export %q exports entity %q incrementally (IncrementalPush in its run %s: changed and new records only)", e.Name, entity, n.run)
			var msg, hint string
			switch {
			case o.Mode == sink.Snapshot:
				msg = exported + ", and the sink lands it in mode snapshot: each run's changes would replace the table's rows, deleting every row they do not hold"
				hint = fmt.Sprintf("remove mode: snapshot from sinks[].entities.%q so changes are upserted", entity)
				if len(o.Keys) == 0 {
					hint += ", and give its keys: its natural key columns, e.g. keys: [DATAAREAID, CUSTOMERACCOUNT]"
				}
			case len(o.Keys) == 0 && o.Mode == "":
				msg = exported + ", but the sink has no keys for it: its batches are upserted, which needs keys, so each would be dead-lettered"
				hint = fmt.Sprintf("give sinks[].entities.%q keys: its natural key columns, e.g. keys: [DATAAREAID, CUSTOMERACCOUNT]; or mode: append to insert every row", entity)
			default:
				continue // keys given, or append chosen
			}
			pos, path := s.pos, fmt.Sprintf("sinks[%d](%s)", i, s.Name)
			if p, ok := s.entityPos[entity]; ok {
				pos, path = p, fmt.Sprintf("%s.entities.%q", path, entity)
			}
			out = append(out, ConfigProblem{File: filepath.Base(cfg.Path), Line: pos.line, Column: pos.column, Path: path, Message: msg, Hint: hint})
		}
	}
	return out
}
