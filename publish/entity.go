package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jonboulle/clockwork"
)

// Defaults applied by PublishEntity to zero-valued options.
const (
	DefaultBatchSize       = 5000
	DefaultMaxMessageBytes = 64 << 20
	// DefaultMaxBatchBytes closes a batch at about 2 MB of encoded rows,
	// so a confirm window of DefaultConfirmWindow (16 MiB) holds at least
	// eight batches in flight whatever the width of the rows.
	DefaultMaxBatchBytes = 2_000_000
)

// NoBatchByteLimit as EntityOptions.MaxBatchBytes closes batches by rows
// only (BatchSize), as runs recorded before max_batch_bytes existed did.
const NoBatchByteLimit = -1

// EntityOptions describes one entity file and where its batches go.
type EntityOptions struct {
	// Job is the export's name (headers "export" and "job", data "job").
	Job, RunID, ExecutionID, Entity string
	Exchange, RoutingKey            string
	// BatchSize is the number of rows per message; 0 means DefaultBatchSize.
	BatchSize int
	// MaxBatchBytes closes a batch before its encoded rows would pass that
	// many bytes, even if it holds fewer than BatchSize rows: a batch
	// holds as many rows as fit, and a single row bigger than the budget
	// is a batch of its own. 0 means DefaultMaxBatchBytes,
	// NoBatchByteLimit closes batches by BatchSize only. Batches depend on
	// the rows only, so a setting always cuts a file the same way.
	MaxBatchBytes int
	// Format is "csv", "xlsx" or "xml" (XML-Element or XML-Attribute,
	// told apart from the file itself). Any other format fails, unless the
	// file is empty: an empty file of any format is an empty entity.
	Format string
	// RefreshType is the manifest's DefaultRefreshType (FullPush or
	// IncrementalPush): set, it is the CloudEvents extension attribute
	// "refreshtype" and the AMQP header "refresh_type" of every batch, so
	// consumers know whether a batch belongs to a full or a delta export.
	RefreshType string
	// TraceParent is a W3C trace context traceparent ("00-<trace id>-<span
	// id>-<flags>"): set, it is the CloudEvents distributed-tracing
	// extension attribute "traceparent" and the AMQP header "traceparent"
	// of every batch, so a consumer's work joins the run's trace. "" adds
	// neither.
	TraceParent string
	// Delimiter is the CSV field separator, one ASCII character other than
	// a quote or line break; 0 detects it from the header line: the one of
	// , ; tab | seen most often outside quotes (ties go to the earlier one
	// in that list; none seen means comma).
	Delimiter rune
	// TextQualifier quotes CSV values: "" means '"', "none" reads quotes
	// as data, else one ASCII character other than the delimiter or a
	// line break.
	TextQualifier string
	// StrictQuotes fails a CSV entity holding a qualifier inside a value
	// that is not doubled ("27" monitor"). Without it such a qualifier is
	// kept as data and counted (EntityStats.LooseQuotes): whether F&O
	// doubles them on export is not documented.
	StrictQuotes bool
	// SourceFormat is the manifest's SourceFormat ("CSV-Unicode", "CSV",
	// "XML-Element", ...). With Encoding "" it says how a text file
	// without a byte order mark is decoded: see newTextReader.
	SourceFormat string
	// Encoding is the character set of a text file (CSV, fixed width,
	// XML) without a byte order mark: a name ParseEncoding accepts; ""
	// decides from SourceFormat and the bytes.
	Encoding string
	// NoHeader says the first line of a CSV or fixed-width file is data,
	// as F&O writes with "First row header = No"; Columns then names the
	// columns (required). Excel and XML files ignore both.
	NoHeader bool
	Columns  []string
	// FieldNames are the entity's field names as the manifest's field map
	// (EntityMapList) lists them, in any case and order, possibly not all:
	// a header row of a CSV, fixed-width or Excel file holding none of
	// them is data, not a header, and fails the entity.
	FieldNames []string
	// Widths are the column widths of a fixed-width file in characters;
	// nil takes them from the file's header line.
	Widths []int
	// Sheet is the XLSX sheet to read; "" means the first sheet.
	Sheet string
	// MaxMessageBytes caps one message body; 0 means DefaultMaxMessageBytes.
	// A batch over it fails the entity.
	MaxMessageBytes int
	// Progress, when set, is called with the running totals after each batch
	// has been handed to the sink (not yet confirmed).
	Progress func(EntityStats)
	// Compression of message bodies: "" or "none", "gzip", "zstd". The
	// AMQP content_encoding names it; the content type stays that of the
	// JSON event. MaxMessageBytes applies before and after compression.
	Compression string
	// CompressionLevel tunes Compression: 0 is its fastest level, else 1
	// (fastest) to 9 for gzip and 1 (fastest) to 4 for zstd.
	CompressionLevel int
	// ResumeFrom is the first batch index to publish: batches before it
	// were confirmed by an earlier attempt on the same file with the same
	// BatchSize and MaxBatchBytes (pass the last confirmed batch index +
	// 1). Their rows are read and skipped without encoding; the batches
	// that follow keep the indexes, row numbers and message IDs of a full
	// run. 0 publishes all.
	ResumeFrom int64
	// ResumeRows is the number of data rows in the batches before
	// ResumeFrom (the rowsThrough Confirmed reported for the last of
	// them). Batches closed by bytes differ in rows, so it is required
	// with ResumeFrom unless MaxBatchBytes is NoBatchByteLimit, where
	// ResumeFrom × BatchSize rows are skipped. Batches before ResumeFrom
	// holding no rows at all stand for an empty file: a file with rows
	// then fails as changed since the checkpoint.
	ResumeRows int64
	// Confirmed, when set, is called once per batch as soon as the sink has
	// stored it, in batch order, with the batch index and the number of
	// data rows up to and including that batch: the checkpoint to resume
	// after. It may run on another goroutine sharing the sink, never
	// concurrently with itself for one entity, and always before
	// PublishEntity returns.
	Confirmed func(batchIndex, rowsThrough int64)
	// Clock gives each batch's event time; nil means the real clock.
	Clock clockwork.Clock
}

// EntityStats counts what PublishEntity has done so far.
type EntityStats struct {
	Rows     int64 // data rows published (header excluded)
	Batches  int64 // messages published
	BytesIn  int64 // bytes read from the entity file
	BytesOut int64 // message body bytes handed to the sink (compressed)
	// SkippedRows counts data rows read but not published because their
	// batches were confirmed before (EntityOptions.ResumeFrom).
	SkippedRows int64
	// Encoding is the character set a text file was read with ("utf-8",
	// "utf-16le", "windows-1252", ...; "" for Excel and empty files).
	// DefaultEncoding is set when it is windows-1252 because the file of a
	// non-Unicode source format was not UTF-8 and no encoding was set.
	Encoding        string
	DefaultEncoding bool
	// LooseQuotes counts text qualifiers kept as data because they were
	// not doubled (see EntityOptions.StrictQuotes); LooseQuoteLine is the
	// line of the first.
	LooseQuotes    int64
	LooseQuoteLine int
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

// PublishEntity reads an entity file (CSV, XLSX or XML), publishes its rows
// in batches to sink and then flushes the sink: it returns nil only when
// every batch is stored (confirmed by the broker). In CSV and XLSX the first
// record is the header and every data row becomes a JSON object keyed by
// column name; in XML every child of the root is a row of the fields it
// has, and a composite entity's record also holds its child records, each
// child element name an array of rows (see xmlSource). Values are exactly
// as written. An empty (0-byte) or header-only file
// still produces one message with row_count 0 and last_batch true. Memory
// is bounded by one batch.
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
	switch {
	case o.MaxBatchBytes == 0:
		o.MaxBatchBytes = DefaultMaxBatchBytes
	case o.MaxBatchBytes < 0 && o.MaxBatchBytes != NoBatchByteLimit:
		return st, fmt.Errorf("max batch bytes %d is negative: set a positive max_batch_bytes", o.MaxBatchBytes)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.MaxMessageBytes < 0 {
		return st, fmt.Errorf("max message bytes %d is negative", o.MaxMessageBytes)
	}
	if o.ResumeFrom < 0 || o.ResumeRows < 0 {
		return st, fmt.Errorf("resume from batch %d after row %d: negative", o.ResumeFrom, o.ResumeRows)
	}
	comp, err := newCompressor(o.Compression, o.CompressionLevel)
	if err != nil {
		return st, err
	}
	comps := []*compressor{comp}
	if comp != nil {
		for range compressWorkers() - 1 {
			c, _ := newCompressor(o.Compression, o.CompressionLevel) // the same settings as comp: no error
			comps = append(comps, c)
		}
	}
	cr := &countingReader{r: r}
	// A 0-byte file, whatever its format, is an entity without rows: F&O
	// writes them for entities with nothing to export.
	var first [1]byte
	n, err := io.ReadFull(cr, first[:])
	if n == 0 && !errors.Is(err, io.EOF) {
		return st, fmt.Errorf("read entity file: %w", err)
	}
	in := io.MultiReader(bytes.NewReader(first[:n]), cr)
	var src rowSource
	var text *textReader // the decoded text of CSV, fixed-width and XML files
	switch format := strings.ToLower(o.Format); {
	case n == 0:
		src, err = emptySource{}, nil
	case format == "xlsx":
		src, err = newXLSXSource(ctx, in, o.Sheet)
	case format == "csv", format == "fixed-width", format == "xml":
		if text, err = newTextReader(in, o.Encoding, o.SourceFormat); err != nil {
			break
		}
		switch format {
		case "csv":
			src, err = newCSVSource(text, o)
		case "fixed-width":
			src, err = newFixedSource(text, fixedOptions{Widths: o.Widths, Header: !o.NoHeader, Columns: o.Columns})
		default:
			src = newXMLSource(text)
		}
	default:
		return st, fmt.Errorf("format %q is not supported: dmfexport reads CSV, fixed-width, Excel (xlsx), XML-Element and XML-Attribute files; export the entity in one of those source formats", o.Format)
	}
	if err != nil {
		st.BytesIn = cr.n.Load()
		return st, err
	}
	defer func() { _ = src.close() }()

	p := &entityPublisher{ctx: ctx, sink: sink, o: o, src: src, in: cr, st: &st, comp: comp, comps: comps}
	p.confirms.fn = o.Confirmed
	p.startPublisher()
	err = p.run()
	if perr := p.stopPublisher(); perr != nil && (err == nil || errors.Is(err, errPublisherFailed)) {
		err = perr
	}
	// The publishing goroutine, which reads st, has ended.
	if text != nil {
		st.Encoding, st.DefaultEncoding = text.encoding(), text.defaulted()
	}
	if c, ok := src.(*csvSource); ok && c.r.loose > 0 {
		st.LooseQuotes, st.LooseQuoteLine = int64(c.r.loose), c.r.looseLine
	}
	if err != nil {
		st.BytesIn = cr.n.Load()
		if p.published {
			// Settle what is in flight so its outcome is not reported
			// against the next entity sharing this sink.
			_ = sink.Flush(ctx)
		}
		return st, err
	}
	if !p.published {
		return st, nil // every batch was confirmed before
	}
	if err := sink.Flush(ctx); err != nil {
		return st, fmt.Errorf("confirm batches: %w", err)
	}
	// Every batch is stored now, even if the sink ignores OnStored.
	p.confirms.all()
	return st, nil
}

// confirmTracker reports stored batches in order, once each. A batch is
// reported only when every batch before it is stored too, so a failed
// batch is never skipped over by the checkpoint.
type confirmTracker struct {
	mu      sync.Mutex
	fn      func(batchIndex, rowsThrough int64)
	pending []batchMark // emitted, not yet reported, oldest first
}

type batchMark struct {
	index, rowsThrough int64
	stored             bool
}

func (c *confirmTracker) add(m batchMark) {
	if c.fn == nil {
		return
	}
	c.mu.Lock()
	c.pending = append(c.pending, m)
	c.mu.Unlock()
}

// stored records that batch index is stored and reports the stored prefix.
func (c *confirmTracker) stored(index int64) {
	c.mark(func(m *batchMark) bool { return m.index == index })
}

// all records every batch as stored and reports them.
func (c *confirmTracker) all() {
	c.mark(func(*batchMark) bool { return true })
}

func (c *confirmTracker) mark(match func(*batchMark) bool) {
	if c.fn == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.pending {
		if match(&c.pending[i]) {
			c.pending[i].stored = true
		}
	}
	n := 0
	for n < len(c.pending) && c.pending[n].stored {
		c.fn(c.pending[n].index, c.pending[n].rowsThrough)
		n++
	}
	c.pending = c.pending[:copy(c.pending, c.pending[n:])]
}

// emptySource is an entity file without content: no columns, no rows.
type emptySource struct{}

func (emptySource) header() ([]string, error)    { return nil, nil }
func (emptySource) next() ([]string, int, error) { return nil, 0, io.EOF }
func (emptySource) close() error                 { return nil }

// namedSource is a rowSource whose records name their own fields, so
// records may differ in their fields (XML). Its header is empty.
type namedSource interface {
	// fields names the values the last call of next returned; valid until
	// the following call.
	fields() []string
	// nested returns the last record with its child records (a composite
	// entity's record), node 0 the record, or nil when it has none; valid
	// until the following call of next.
	nested() []rowNode
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
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
	comp      *compressor   // nil: bodies go uncompressed
	comps     []*compressor // one per compressing goroutine
	confirms  confirmTracker
	published bool
	// plainWait is how many more CSV records addPlain leaves before it
	// tries one again; plainBackoff is the last such wait.
	plainWait, plainBackoff int

	jobs     chan *publishJob // in batch order
	compress chan *publishJob // to the compressing goroutines
	compWG   sync.WaitGroup
	failed   chan struct{} // closed when the publishing goroutine fails
	done     chan struct{}
	pubErr   error // set by the publishing goroutine before closing failed
}

func (p *entityPublisher) run() error {
	header, err := p.src.header()
	if err != nil {
		return err
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	if err := p.checkHeader(header); err != nil {
		return err
	}
	if dups := duplicates(header); len(dups) > 0 {
		return fmt.Errorf("header has duplicate column names %s: every column name must be unique", strings.Join(dups, ", "))
	}
	p.enc.init(p.o, header)
	named, _ := p.src.(namedSource)
	// CSV records are encoded from the reader's buffers, without strings.
	csvSrc, _ := p.src.(*csvSource)
	// XLSX rows say which values are plain.
	xlsxSrc, _ := p.src.(*xlsxSource)
	if named != nil {
		p.enc.initNamed()
	}
	var row int64 // data rows read so far
	skip := p.o.ResumeFrom * int64(p.o.BatchSize)
	if p.byBytes() {
		skip = p.o.ResumeRows
	}
	if p.o.ResumeFrom > 0 {
		p.enc.batchIndex = p.o.ResumeFrom
	}
	for {
		if onePassCSV && csvSrc != nil && row >= skip && (skip > 0 || p.o.ResumeFrom == 0) {
			added, err := p.addPlain(csvSrc, row+1)
			if err != nil {
				return err
			}
			if added {
				row++
				continue
			}
		}
		var rec []string
		var raw csvRecord
		var line, fields int
		if csvSrc != nil {
			raw, line, err = csvSrc.nextRecord()
			fields = len(raw.spans)
		} else {
			rec, line, err = p.src.next()
			fields = len(rec)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		row++
		if named == nil && fields != len(header) {
			return fmt.Errorf("row %d (line %d): has %d fields, header has %d", row, line, fields, len(header))
		}
		if row <= skip {
			p.st.SkippedRows++
			continue
		}
		if skip == 0 && p.o.ResumeFrom > 0 {
			// Only an empty file's one batch holds no rows.
			return p.resumeMismatch(row)
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
		add := func() {
			switch {
			case named != nil:
				if tree := named.nested(); tree != nil {
					p.enc.addTreeRow(tree)
				} else {
					p.enc.addNamedRow(named.fields(), rec)
				}
			case csvSrc != nil:
				p.enc.addRecord(raw)
			case xlsxSrc != nil:
				p.enc.addRow(rec, xlsxSrc.plain())
			default:
				p.enc.addRow(rec, nil)
			}
		}
		before := p.enc.mark()
		add()
		if p.enc.rows > 1 && p.byBytes() && p.enc.rowBytes() > p.o.MaxBatchBytes {
			// The row does not fit the batch's byte budget: the batch
			// closes without it and the row, still the source's current
			// record, starts the next one. It is encoded twice, once per
			// batch at most.
			p.enc.undo(before)
			if err := p.emit(false); err != nil {
				return err
			}
			p.enc.firstRow = row
			add()
		}
		if p.enc.rowBytes() > p.o.MaxMessageBytes {
			return p.tooBig(p.enc.rowBytes())
		}
	}
	if p.o.ResumeFrom > 0 {
		if p.byBytes() {
			if row < skip {
				return p.resumeMismatch(row)
			}
			if row == skip {
				p.st.BytesIn = p.in.n.Load()
				return nil // the earlier attempt had stored every batch
			}
		} else {
			total := max(1, (row+int64(p.o.BatchSize)-1)/int64(p.o.BatchSize))
			if p.o.ResumeFrom > total {
				return p.resumeMismatch(row)
			}
			if p.o.ResumeFrom == total {
				p.st.BytesIn = p.in.n.Load()
				return nil // the earlier attempt had stored every batch
			}
		}
	}
	if p.enc.rows > 0 || p.enc.batchIndex == 0 {
		return p.emit(true)
	}
	return nil
}

// addPlain reads the next CSV record and encodes it as data row row in one
// pass, when it is plain (see csvReader.encodePlain). It reports false when
// it leaves the record to be read and encoded apart: a record that is not
// plain, one that closes the batch, or any while records have lately not
// been plain (it then tries one in up to maxPlainBackoff+1, so that a
// file whose records seldom are plain pays little for trying).
func (p *entityPublisher) addPlain(src *csvSource, row int64) (bool, error) {
	if p.plainWait > 0 {
		p.plainWait--
		return false, nil
	}
	if p.enc.rows == p.o.BatchSize {
		return false, nil // the batch is emitted with the record read apart
	}
	limit := math.MaxInt
	if p.byBytes() && p.enc.rows > 0 {
		limit = p.o.MaxBatchBytes
	}
	first := p.enc.rows == 0
	switch src.encodePlain(&p.enc, limit) {
	case plainDone:
		p.plainBackoff = 0
		if first {
			p.enc.firstRow = row
		}
		if p.enc.rowBytes() > p.o.MaxMessageBytes {
			return true, p.tooBig(p.enc.rowBytes())
		}
		return true, nil
	case plainFull:
		// The batch closes without the record, which starts the next one.
		return false, p.emit(false)
	}
	p.plainBackoff = min(2*p.plainBackoff+1, maxPlainBackoff)
	p.plainWait = p.plainBackoff
	return false, nil
}

// maxPlainBackoff is the most records addPlain leaves in a row once
// records are not plain.
const maxPlainBackoff = 63

// onePassCSV lets run read and encode plain CSV records in one pass
// (csvReader.encodePlain); tests turn it off to compare.
var onePassCSV = true

// byBytes reports whether batches close at MaxBatchBytes as well as at
// BatchSize rows.
func (p *entityPublisher) byBytes() bool { return p.o.MaxBatchBytes != NoBatchByteLimit }

// checkHeader refuses a header row that is data: when the manifest lists
// the entity's field names, a header naming none of them comes from a
// file written with "First row header = No" — unless every value of it
// looks like an F&O field name (an upper-case identifier such as
// CUSTOMERACCOUNT), since the manifest's list may leave out every column
// of the file. The list tells a header from data; it never names the
// columns.
func (p *entityPublisher) checkHeader(header []string) error {
	if len(p.o.FieldNames) == 0 || len(header) == 0 || p.o.NoHeader {
		return nil
	}
	if _, named := p.src.(namedSource); named {
		return nil
	}
	known := make(map[string]bool, len(p.o.FieldNames))
	for _, f := range p.o.FieldNames {
		known[strings.ToUpper(strings.TrimSpace(f))] = true
	}
	names := true
	for _, h := range header {
		if known[strings.ToUpper(strings.TrimSpace(h))] {
			return nil
		}
		names = names && fieldNameLike(h)
	}
	if names {
		return nil
	}
	return fmt.Errorf("the first row (%s) holds none of the %d field names Manifest.xml lists for the entity (%s): the file has no header row (its source format was set to \"First row header = No\"); set header: false and columns: [the entity's field names in file order] for this entity",
		quoteSome(header, 4), len(p.o.FieldNames), quoteSome(p.o.FieldNames, 4))
}

// fieldNameLike reports whether s looks like a column name F&O writes: an
// upper-case identifier.
func fieldNameLike(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || c == '_' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

// quoteSome quotes the first n of vals, comma-separated, with "…" for the
// rest.
func quoteSome(vals []string, n int) string {
	var b strings.Builder
	for i, v := range vals {
		if i == n {
			fmt.Fprintf(&b, ", … (%d more)", len(vals)-n)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(v))
	}
	return b.String()
}

func (p *entityPublisher) resumeMismatch(rows int64) error {
	if p.byBytes() {
		return fmt.Errorf("resume from batch %d after row %d does not match the file (%d data rows read): the entity file changed since the checkpoint; publish the entity from the start",
			p.o.ResumeFrom, p.o.ResumeRows, rows)
	}
	return fmt.Errorf("resume from batch %d: the file has %d data rows, which make fewer batches of %d: the entity file or batch size changed since the checkpoint; publish the entity from the start",
		p.o.ResumeFrom, rows, p.o.BatchSize)
}

func (p *entityPublisher) tooBig(n int) error {
	return p.tooBigAt(p.enc.batchIndex, p.enc.firstRow, n)
}

func (p *entityPublisher) tooBigAt(batch, firstRow int64, n int) error {
	return fmt.Errorf("batch %d (rows from %d) is over %d bytes, the message size limit: lower batch_size (now %d)",
		batch, firstRow, p.o.MaxMessageBytes, p.o.BatchSize)
}

// publishJob is a batch handed from the reading goroutine to the
// publishing one.
type publishJob struct {
	m        Message
	raw      []byte // the buffer holding m.Body, reusable once done with
	rows     int
	firstRow int64
	mark     batchMark
	// ready is closed once a compressing goroutine has replaced m.Body
	// by its compressed form (or set err); nil without compression.
	ready chan struct{}
	err   error
}

// compressWorkers is how many batches of one entity are compressed at
// once: compression costs more CPU than parsing and encoding (gzip several
// times more), so with one goroutine it would bound the rate; a few
// batches at a time use the CPUs while the publishing goroutine keeps the
// batches in order.
func compressWorkers() int { return max(1, min(runtime.GOMAXPROCS(0), 4)) }

// errPublisherFailed stops the reading goroutine; PublishEntity reports the
// publishing goroutine's error instead.
var errPublisherFailed = errors.New("publishing failed")

// startPublisher runs the publishing goroutine: it publishes batches while
// the caller's goroutine reads and encodes the next one, so parsing and
// broker I/O overlap. One batch waits between them at most; with
// compression, up to one per compressing goroutine, each compressed by the
// first goroutine free and published in batch order.
func (p *entityPublisher) startPublisher() {
	queue := 0
	if p.comp != nil {
		queue = len(p.comps)
		// Never full: at most queue+1 batches are between emit and publish.
		p.compress = make(chan *publishJob, queue+2)
		for _, c := range p.comps {
			p.compWG.Add(1)
			go func() {
				defer p.compWG.Done()
				for j := range p.compress {
					p.compressJob(c, j)
				}
			}()
		}
	}
	p.jobs = make(chan *publishJob, queue)
	p.failed = make(chan struct{})
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for j := range p.jobs {
			if p.pubErr != nil {
				continue // drain until the reader notices
			}
			if err := p.publish(j); err != nil {
				p.pubErr = err
				close(p.failed)
			}
		}
	}()
}

// stopPublisher waits for the publishing and compressing goroutines and
// returns the publishing goroutine's error.
func (p *entityPublisher) stopPublisher() error {
	close(p.jobs)
	<-p.done
	if p.compress != nil {
		close(p.compress)
		p.compWG.Wait()
	}
	return p.pubErr
}

// compressJob replaces j's body by its compressed form with c and gives the
// uncompressed buffer back.
func (p *entityPublisher) compressJob(c *compressor, j *publishJob) {
	defer close(j.ready)
	body, err := c.compress(j.m.Body)
	if err != nil {
		j.err = fmt.Errorf("compress batch %d: %w", j.mark.index, err)
		return
	}
	p.enc.recycle(j.raw)
	j.raw = nil
	if len(body) > p.o.MaxMessageBytes {
		j.err = p.tooBigAt(j.mark.index, j.firstRow, len(body))
		return
	}
	j.m.Body, j.m.ContentEncoding = body, c.name
}

func (p *entityPublisher) publish(j *publishJob) error {
	if j.ready != nil {
		select {
		case <-j.ready:
		case <-p.ctx.Done():
			return fmt.Errorf("publish batch %d: %w", j.mark.index, p.ctx.Err())
		}
		if j.err != nil {
			return j.err
		}
	}
	m := j.m
	raw := j.raw
	p.confirms.add(j.mark)
	m.OnStored = func() {
		p.confirms.stored(j.mark.index)
		if raw != nil {
			p.enc.recycle(raw) // the sink is done with the body
		}
	}
	p.published = true
	if err := p.sink.Publish(p.ctx, m); err != nil {
		return fmt.Errorf("publish batch %d: %w", j.mark.index, err)
	}
	p.st.Rows += int64(j.rows)
	p.st.Batches++
	p.st.BytesOut += int64(len(m.Body))
	p.st.BytesIn = p.in.n.Load()
	if p.o.Progress != nil {
		p.o.Progress(*p.st)
	}
	return nil
}

func (p *entityPublisher) emit(last bool) error {
	if err := p.ctx.Err(); err != nil {
		return fmt.Errorf("publish batch %d: %w", p.enc.batchIndex, err)
	}
	t := p.o.Clock.Now().UTC()
	id := p.o.ExecutionID + "/" + p.o.Entity + "/" + strconv.FormatInt(p.enc.batchIndex, 10)
	body := p.enc.body(id, t, last)
	if len(body) > p.o.MaxMessageBytes {
		return p.tooBig(len(body))
	}
	j := &publishJob{
		m: Message{
			Exchange:      p.o.Exchange,
			RoutingKey:    p.o.RoutingKey,
			MessageID:     id,
			CorrelationID: p.o.RunID,
			Type:          EventType,
			ContentType:   ContentType,
			AppID:         AppID,
			Timestamp:     t,
			Headers: map[string]any{
				"export":      p.o.Job,
				"job":         p.o.Job, // "export" under its earlier name, for consumers that read it
				"entity":      p.o.Entity,
				"batch_index": p.enc.batchIndex,
				"last_batch":  last,
			},
			Body: body,
		},
		raw:      p.enc.buf[:0],
		rows:     p.enc.rows,
		firstRow: p.enc.firstRow,
		mark:     batchMark{index: p.enc.batchIndex, rowsThrough: p.enc.firstRow + int64(p.enc.rows) - 1},
	}
	if p.o.RefreshType != "" {
		j.m.Headers["refresh_type"] = p.o.RefreshType
	}
	if p.o.TraceParent != "" {
		j.m.Headers["traceparent"] = p.o.TraceParent
	}
	if p.comp != nil {
		j.ready = make(chan struct{})
	}
	select {
	case p.jobs <- j:
	case <-p.failed:
		return errPublisherFailed
	}
	if j.ready != nil {
		p.compress <- j // never blocks: see startPublisher
	}
	p.enc.reset(false)
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
