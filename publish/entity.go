package publish

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by PublishEntity to zero-valued options.
const (
	DefaultBatchSize       = 5000
	DefaultMaxMessageBytes = 64 << 20
)

// EntityOptions describes one entity file and where its batches go.
type EntityOptions struct {
	Job, RunID, ExecutionID, Entity string
	Exchange, RoutingKey            string
	// BatchSize is the number of rows per message; 0 means DefaultBatchSize.
	BatchSize int
	// Format is "csv" or "xlsx".
	Format string
	// Delimiter is the CSV field separator; 0 detects it from the header
	// line: the one of , ; tab | seen most often outside quotes (ties go to
	// the earlier one in that list; none seen means comma).
	Delimiter rune
	// Sheet is the XLSX sheet to read; "" means the first sheet.
	Sheet string
	// MaxMessageBytes caps one message body; 0 means DefaultMaxMessageBytes.
	// A batch over it fails the entity.
	MaxMessageBytes int
	// Progress, when set, is called with the running totals after each batch
	// has been handed to the sink (not yet confirmed).
	Progress func(EntityStats)
}

// EntityStats counts what PublishEntity has done so far.
type EntityStats struct {
	Rows     int64 // data rows published (header excluded)
	Batches  int64 // messages published
	BytesIn  int64 // bytes read from the entity file
	BytesOut int64 // message body bytes handed to the sink
}

// rowSource yields the records of an entity file. The slice returned by next
// is only valid until the following call.
type rowSource interface {
	// header returns the column names, or nil for an empty file.
	header() ([]string, error)
	// next returns the next data row, or io.EOF after the last one. line is
	// the record's position in the file (1-based line or sheet row).
	next() (rec []string, line int, err error)
	close() error
}

// now is the clock used for event times; tests may replace it.
var now = func() time.Time { return time.Now().UTC() }

// PublishEntity reads an entity file (CSV or XLSX), publishes its rows in
// batches to sink and then flushes the sink: it returns nil only when every
// batch is stored (confirmed by the broker). The first record is the header;
// every data row becomes a JSON object keyed by column name, values exactly
// as written. An empty or header-only file still produces one message with
// row_count 0 and last_batch true. Memory is bounded by one batch.
//
// On failure the stats say how far it got; messages already published are
// not withdrawn, so consumers must treat a run's batches as a whole (see
// last_batch/batch_count) and drop duplicates by message id.
func PublishEntity(ctx context.Context, r io.Reader, sink Sink, o EntityOptions) (EntityStats, error) {
	var st EntityStats
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize < 0 {
		return st, fmt.Errorf("batch size %d is negative: set a positive batch_size", o.BatchSize)
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxMessageBytes < 0 {
		return st, fmt.Errorf("max message bytes %d is negative", o.MaxMessageBytes)
	}
	cr := &countingReader{r: r}
	var (
		src rowSource
		err error
	)
	switch strings.ToLower(o.Format) {
	case "csv":
		src, err = newCSVSource(cr, o.Delimiter)
	case "xlsx":
		src, err = newXLSXSource(ctx, cr, o.Sheet)
	default:
		return st, fmt.Errorf("format %q is not supported", o.Format)
	}
	if err != nil {
		st.BytesIn = cr.n
		return st, err
	}
	defer src.close()

	p := &entityPublisher{ctx: ctx, sink: sink, o: o, src: src, in: cr, st: &st}
	if err := p.run(); err != nil {
		st.BytesIn = cr.n
		if p.published {
			// Settle what is in flight so its outcome is not reported
			// against the next entity sharing this sink.
			_ = sink.Flush(ctx)
		}
		return st, err
	}
	if err := sink.Flush(ctx); err != nil {
		return st, fmt.Errorf("confirm batches: %w", err)
	}
	return st, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// entityPublisher holds the per-entity state of PublishEntity.
type entityPublisher struct {
	ctx       context.Context
	sink      Sink
	o         EntityOptions
	src       rowSource
	in        *countingReader
	st        *EntityStats
	enc       batchEncoder
	published bool
}

func (p *entityPublisher) run() error {
	header, err := p.src.header()
	if err != nil {
		return err
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	if dups := duplicates(header); len(dups) > 0 {
		return fmt.Errorf("header has duplicate column names %s: every column name must be unique", strings.Join(dups, ", "))
	}
	p.enc.init(p.o, header)
	var row int64 // data rows read so far
	for {
		rec, line, err := p.src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		row++
		if len(rec) != len(header) {
			return fmt.Errorf("row %d (line %d): has %d fields, header has %d", row, line, len(rec), len(header))
		}
		// The batch is emitted only once the next row exists: that is how
		// the last batch is known while holding a single batch in memory.
		if p.enc.rows == p.o.BatchSize {
			if err := p.emit(false); err != nil {
				return err
			}
		}
		if p.enc.rows == 0 {
			p.enc.firstRow = row
		}
		p.enc.addRow(rec)
		if p.enc.rowBytes() > p.o.MaxMessageBytes {
			return p.tooBig(p.enc.rowBytes())
		}
	}
	if p.enc.rows > 0 || p.enc.batchIndex == 0 {
		return p.emit(true)
	}
	return nil
}

func (p *entityPublisher) tooBig(n int) error {
	return fmt.Errorf("batch %d (rows from %d) is over %d bytes, the message size limit: lower batch_size (now %d)",
		p.enc.batchIndex, p.enc.firstRow, p.o.MaxMessageBytes, p.o.BatchSize)
}

func (p *entityPublisher) emit(last bool) error {
	if err := p.ctx.Err(); err != nil {
		return fmt.Errorf("publish batch %d: %w", p.enc.batchIndex, err)
	}
	t := now()
	id := p.o.ExecutionID + "/" + p.o.Entity + "/" + strconv.FormatInt(p.enc.batchIndex, 10)
	body := p.enc.body(id, t, last)
	if len(body) > p.o.MaxMessageBytes {
		return p.tooBig(len(body))
	}
	m := Message{
		Exchange:      p.o.Exchange,
		RoutingKey:    p.o.RoutingKey,
		MessageID:     id,
		CorrelationID: p.o.RunID,
		Type:          EventType,
		ContentType:   ContentType,
		AppID:         AppID,
		Timestamp:     t,
		Headers: map[string]any{
			"job":         p.o.Job,
			"entity":      p.o.Entity,
			"batch_index": p.enc.batchIndex,
			"last_batch":  last,
		},
		Body: body,
	}
	p.published = true
	if err := p.sink.Publish(p.ctx, m); err != nil {
		return fmt.Errorf("publish batch %d: %w", p.enc.batchIndex, err)
	}
	p.st.Rows += int64(p.enc.rows)
	p.st.Batches++
	p.st.BytesOut += int64(len(body))
	p.st.BytesIn = p.in.n
	p.enc.reset()
	if p.o.Progress != nil {
		p.o.Progress(*p.st)
	}
	return nil
}

// duplicates returns the column names that occur more than once, quoted.
func duplicates(cols []string) []string {
	seen := make(map[string]int, len(cols))
	var dups []string
	for _, c := range cols {
		seen[c]++
		if seen[c] == 2 {
			dups = append(dups, strconv.Quote(c))
		}
	}
	return dups
}
