package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
)

// memSink keeps every message in memory; it is the in-memory test double.
type memSink struct {
	mu       sync.Mutex
	msgs     []Message
	flushes  int
	failOn   int // Publish fails on this 1-based call when > 0
	flushErr error
}

func (s *memSink) Publish(ctx context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failOn > 0 && len(s.msgs)+1 == s.failOn {
		return fmt.Errorf("test sink refuses message %s", m.MessageID)
	}
	s.msgs = append(s.msgs, m)
	return nil
}

func (s *memSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	return s.flushErr
}

func (s *memSink) Close() error { return nil }

// discardSink drops messages; for benchmarks.
type discardSink struct{}

func (discardSink) Publish(_ context.Context, m Message) error {
	if m.OnStored != nil {
		m.OnStored()
	}
	return nil
}
func (discardSink) Flush(context.Context) error { return nil }
func (discardSink) Close() error                { return nil }

// event mirrors the message schema for decoding in tests.
type event struct {
	SpecVersion     string `json:"specversion"`
	Type            string `json:"type"`
	Source          string `json:"source"`
	ID              string `json:"id"`
	Time            string `json:"time"`
	Subject         string `json:"subject"`
	DataContentType string `json:"datacontenttype"`
	RefreshType     string `json:"refreshtype"`
	Data            struct {
		Version     int                 `json:"version"`
		Job         string              `json:"job"`
		RunID       string              `json:"run_id"`
		ExecutionID string              `json:"execution_id"`
		Entity      string              `json:"entity"`
		BatchIndex  int64               `json:"batch_index"`
		BatchCount  *int64              `json:"batch_count"`
		LastBatch   bool                `json:"last_batch"`
		FirstRow    int64               `json:"first_row"`
		RowCount    int                 `json:"row_count"`
		Columns     []string            `json:"columns"`
		Rows        []map[string]string `json:"rows"`
	} `json:"data"`
}

func decodeEvent(t testing.TB, body []byte) event {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("body is not valid JSON: %.200s", body)
	}
	var e event
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode body: %v: %.200s", err, body)
	}
	return e
}

// rowsOf decodes all bodies and returns the rows as ordered value slices.
func rowsOf(t testing.TB, bodies [][]byte) (cols []string, rows [][]string) {
	t.Helper()
	for _, b := range bodies {
		e := decodeEvent(t, b)
		cols = e.Data.Columns
		for _, r := range e.Data.Rows {
			if len(r) != len(cols) {
				t.Fatalf("row has %d keys, want %d columns", len(r), len(cols))
			}
			vals := make([]string, len(cols))
			for i, c := range cols {
				v, ok := r[c]
				if !ok {
					t.Fatalf("row lacks column %q", c)
				}
				vals[i] = v
			}
			rows = append(rows, vals)
		}
	}
	return cols, rows
}

func bodiesOf(msgs []Message) [][]byte {
	b := make([][]byte, len(msgs))
	for i, m := range msgs {
		b[i] = m.Body
	}
	return b
}
