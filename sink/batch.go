package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// EventType is the CloudEvents type of a batch message this package reads
// (publish.EventType); DataVersion the data.version it understands.
const (
	EventType   = "com.dmfexport.batch.v1"
	DataVersion = 1
)

// Refresh types a batch names (the manifest's DefaultRefreshType).
const (
	FullPush        = "FullPush"
	IncrementalPush = "IncrementalPush"
)

// runIDTime is the layout of the time that starts a run ID
// ("20261124T020000Z-9f8e7d6c"); runs are ordered by it.
const runIDTime = "20060102T150405Z"

// MaxBodyBytes bounds a message body once decompressed, so a small
// compressed body cannot take the sink's memory (512 MiB is the broker's
// hard cap on a message).
const MaxBodyBytes = 512 << 20

// Batch is one decoded batch message: the rows of one batch of one entity
// of one run, with their values as text exactly as F&O wrote them.
type Batch struct {
	MessageID   string // the event id, "<execution id>/<entity>/<batch index>"
	Export      string // data.job: the export that produced it
	RunID       string
	ExecutionID string
	Entity      string
	RefreshType string // FullPush, IncrementalPush or "" when the manifest did not say
	// RunTime orders runs: the time in the run ID, else the event's time.
	RunTime time.Time
	// Time is the event's time: when the batch was made (zero if not
	// given).
	Time       time.Time
	BatchIndex int
	// BatchCount is the entity's total batches in the run, known from the
	// last batch only; 0 on the others.
	BatchCount int
	LastBatch  bool
	FirstRow   int // 1-based number of the first row
	// Columns are the batch's text columns in order, child-record arrays
	// left out; Rows hold one value per column, nil where the row has no
	// such field (an XML record that leaves it out).
	Columns []string
	Rows    [][]*string
	// Documents, for a composite entity, holds per row a JSON object of its
	// child record arrays, nil for a row without any; nil for other
	// entities.
	Documents [][]byte
	// TraceParent is the event's traceparent extension attribute (the W3C
	// trace context of the run's span that published the batch), "" when
	// absent or not a string: it is never checked here, so a malformed one
	// cannot fail the batch.
	TraceParent string
}

// ErrMalformed marks a message that is not a batch this version reads: it
// can never be applied, however often it is delivered.
var ErrMalformed = errors.New("malformed batch")

// DecodeBatch reads a message body: decompressed by encoding (the AMQP
// content_encoding: "", "identity", "gzip" or "zstd"), then the CloudEvents
// JSON event of type EventType with data version 1. Errors wrap
// ErrMalformed.
func DecodeBatch(body []byte, encoding string) (*Batch, error) {
	raw, err := decompress(body, encoding)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	b, err := decodeFast(raw)
	switch {
	case errors.Is(err, errComposite):
		return decodeStd(raw)
	case err != nil && !errors.Is(err, ErrMalformed):
		return nil, fmt.Errorf("%w: not a JSON event: %w", ErrMalformed, err)
	}
	return b, err
}

// decodeStd reads an event with encoding/json: the decoder of batches
// whose rows hold child records, and the reference decodeFast is tested
// against.
func decodeStd(raw []byte) (*Batch, error) {
	var err error
	var ev struct {
		SpecVersion string    `json:"specversion"`
		Type        string    `json:"type"`
		ID          string    `json:"id"`
		Time        time.Time `json:"time"`
		RefreshType string    `json:"refreshtype"`
		TraceParent any       `json:"traceparent"`
		Data        *struct {
			Version     int              `json:"version"`
			Job         string           `json:"job"`
			RunID       string           `json:"run_id"`
			ExecutionID string           `json:"execution_id"`
			Entity      string           `json:"entity"`
			BatchIndex  int              `json:"batch_index"`
			BatchCount  *int             `json:"batch_count"`
			LastBatch   bool             `json:"last_batch"`
			FirstRow    int              `json:"first_row"`
			RowCount    int              `json:"row_count"`
			Columns     []string         `json:"columns"`
			Rows        []map[string]any `json:"rows"`
		} `json:"data"`
	}
	if err = json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("%w: not a JSON event: %w", ErrMalformed, err)
	}
	switch {
	case ev.Type != EventType:
		return nil, fmt.Errorf("%w: event type %q, want %q", ErrMalformed, ev.Type, EventType)
	case ev.Data == nil:
		return nil, fmt.Errorf("%w: no data", ErrMalformed)
	case ev.Data.Version != DataVersion:
		return nil, fmt.Errorf("%w: data version %d, this sink reads version %d", ErrMalformed, ev.Data.Version, DataVersion)
	case ev.ID == "" || ev.Data.RunID == "" || ev.Data.Entity == "":
		return nil, fmt.Errorf("%w: id, run_id or entity missing", ErrMalformed)
	case ev.Data.BatchIndex < 0 || ev.Data.FirstRow < 0:
		return nil, fmt.Errorf("%w: negative batch_index or first_row", ErrMalformed)
	case ev.Data.LastBatch && (ev.Data.BatchCount == nil || *ev.Data.BatchCount != ev.Data.BatchIndex+1):
		return nil, fmt.Errorf("%w: last batch %d without batch_count %d", ErrMalformed, ev.Data.BatchIndex, ev.Data.BatchIndex+1)
	case len(ev.Data.Rows) != ev.Data.RowCount:
		return nil, fmt.Errorf("%w: row_count %d but %d rows", ErrMalformed, ev.Data.RowCount, len(ev.Data.Rows))
	}
	d := ev.Data
	b := &Batch{
		MessageID: ev.ID, Export: d.Job, RunID: d.RunID, ExecutionID: d.ExecutionID, Entity: d.Entity,
		RefreshType: ev.RefreshType, BatchIndex: d.BatchIndex, LastBatch: d.LastBatch, FirstRow: d.FirstRow,
	}
	if d.BatchCount != nil {
		b.BatchCount = *d.BatchCount
	}
	b.TraceParent, _ = ev.TraceParent.(string)
	b.Time = ev.Time.UTC()
	b.RunTime = b.Time
	if len(d.RunID) >= len(runIDTime) {
		if t, err := time.Parse(runIDTime, d.RunID[:len(runIDTime)]); err == nil {
			b.RunTime = t
		}
	}
	// A name is a text column unless some row holds an array under it (a
	// composite entity's child records).
	child := map[string]bool{}
	for _, r := range d.Rows {
		for k, v := range r {
			switch v.(type) {
			case string:
			case []any:
				child[k] = true
			default:
				return nil, fmt.Errorf("%w: field %q holds %T, want a string or child records", ErrMalformed, k, v)
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range d.Columns {
		if !child[c] && !seen[c] {
			b.Columns = append(b.Columns, c)
		}
		seen[c] = true
	}
	b.Rows = make([][]*string, len(d.Rows))
	if len(child) > 0 {
		b.Documents = make([][]byte, len(d.Rows))
	}
	for i, r := range d.Rows {
		vals := make([]*string, len(b.Columns))
		for j, c := range b.Columns {
			if v, ok := r[c].(string); ok {
				vals[j] = &v
			}
		}
		for k := range r {
			if !seen[k] {
				return nil, fmt.Errorf("%w: row %d has field %q that columns does not list", ErrMalformed, d.FirstRow+i, k)
			}
		}
		b.Rows[i] = vals
		if len(child) > 0 {
			doc := map[string]any{}
			for k := range child {
				if v, ok := r[k]; ok {
					if _, isText := v.(string); isText {
						return nil, fmt.Errorf("%w: field %q is text in row %d and child records in another", ErrMalformed, k, d.FirstRow+i)
					}
					doc[k] = v
				}
			}
			if len(doc) > 0 {
				if b.Documents[i], err = json.Marshal(doc); err != nil {
					return nil, fmt.Errorf("%w: row %d: %w", ErrMalformed, d.FirstRow+i, err)
				}
			}
		}
	}
	return b, nil
}

// zstdDecoder is shared: DecodeAll is safe for concurrent use.
var zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBodyBytes))

func decompress(body []byte, encoding string) ([]byte, error) {
	switch strings.ToLower(encoding) {
	case "", "identity":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, MaxBodyBytes+1))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if len(out) > MaxBodyBytes {
			return nil, fmt.Errorf("gzip: body over %d bytes once decompressed", MaxBodyBytes)
		}
		return out, nil
	case "zstd":
		out, err := zstdDecoder.DecodeAll(body, nil)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("content_encoding %q: this sink reads gzip and zstd", encoding)
}
