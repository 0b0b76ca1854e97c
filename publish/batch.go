package publish

import (
	"math"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// batchEncoder builds batch bodies. Rows are encoded as they arrive into a
// buffer reused from batch to batch; the parts that never change within an
// entity are encoded once.
type batchEncoder struct {
	source []byte // `"dmfexport/<export>"`
	// data starts with "job": the export's name under the name message
	// version 1 gives it (docs/message.schema.json allows no other field).
	data    []byte // `"job":..,"run_id":..,"execution_id":..,"entity":..,`
	subject []byte // `"<entity>"`
	columns []byte // `["A","B"]`
	// keys holds, per column, the bytes written before its value: `{"A":"`
	// for the first column, and for the others the closing quote of the
	// value before, `","B":"`. Each is padded to keyWidth, so a row writes
	// it with one fixed-size copy (a few vector stores, no call) and the
	// value then overwrites the padding.
	keys []columnKey
	// shortKeys is set when every key fits keyWidth, which
	// csvReader.encodePlain needs; keyBytes is the keys' length together.
	shortKeys bool
	keyBytes  int
	// ext holds the CloudEvents extension attributes, e.g.
	// `,"refreshtype":"FullPush"`, or nothing.
	ext []byte
	// named is set for sources whose records name their own fields (XML):
	// rows are encoded with addNamedRow, or addTreeRow for records with
	// child records, and a batch's columns are the field names and child
	// record names its rows use at the top level, in order of first use.
	named    bool
	namedCol []string
	namedSet map[string]struct{}
	idBase   int    // escaped length of "<exec>/<entity>/"
	pre      []byte // scratch for the part before the rows, reused
	// buf holds the current batch: gap bytes reserved for the part before
	// the rows, then the encoded rows. It is allocated fresh per batch and
	// becomes the message body without another copy.
	buf []byte
	gap int
	// spare is a previous batch's buffer, reused when the caller gave it
	// back (compressed messages carry a copy, not the buffer).
	spare []byte
	// free holds buffers of stored batches given back by recycle, which may
	// run on another goroutine.
	freeMu sync.Mutex
	free   [][]byte
	hint   int // rows bytes of the previous batch, to size the next buffer
	// batchRows is the number of rows a full batch holds; maxBytes caps a
	// message body (a bigger batch fails the entity); batchBytes closes a
	// batch by its rows' bytes (NoBatchByteLimit: never).
	batchRows, maxBytes, batchBytes int

	rows       int   // rows in the current batch
	firstRow   int64 // 1-based data row number of the batch's first row
	batchIndex int64
}

func (e *batchEncoder) init(o EntityOptions, header []string) {
	e.batchRows, e.maxBytes, e.batchBytes = o.BatchSize, o.MaxMessageBytes, o.MaxBatchBytes
	e.source = appendJSONString(nil, "dmfexport/"+o.Job)
	e.subject = appendJSONString(nil, o.Entity)
	d := append([]byte(nil), `"job":`...)
	d = appendJSONString(d, o.Job)
	d = append(d, `,"run_id":`...)
	d = appendJSONString(d, o.RunID)
	d = append(d, `,"execution_id":`...)
	d = appendJSONString(d, o.ExecutionID)
	d = append(d, `,"entity":`...)
	d = appendJSONString(d, o.Entity)
	d = append(d, ',')
	e.data = d
	c := append([]byte(nil), '[')
	e.keys = make([]columnKey, len(header))
	e.shortKeys, e.keyBytes = true, 0
	for i, h := range header {
		if i > 0 {
			c = append(c, ',')
		}
		c = appendJSONString(c, h)
		k := []byte{'{'}
		if i > 0 {
			k = append(k[:0], '"', ',')
		}
		k = append(appendJSONString(k, h), ':', '"')
		ck := &e.keys[i]
		ck.n, ck.room = len(k), keyWidth
		e.keyBytes += len(k)
		if len(k) > keyWidth {
			ck.long, ck.room = k, math.MaxInt/2 // never the fast path
			e.shortKeys = false
		}
		copy(ck.b[:], k)
	}
	c = append(c, ']')
	e.columns = c
	e.ext = nil
	if o.RefreshType != "" {
		e.ext = appendJSONString(append(e.ext, `,"refreshtype":`...), o.RefreshType)
	}
	if o.TraceParent != "" {
		e.ext = appendJSONString(append(e.ext, `,"traceparent":`...), o.TraceParent)
	}
	e.firstRow = 1
	e.idBase = len(appendJSONString(nil, o.ExecutionID+"/"+o.Entity+"/"))
	// Everything before the rows, with the widest numbers and time.
	e.gap = 256 + len(e.source) + e.idBase + 20 + len(e.subject) + len(e.ext) + len(e.data) + 4*20 + len(e.columns)
}

// start allocates the buffer of a new batch.
func (e *batchEncoder) start() {
	// A buffer is allocated with an eighth more than the previous batch
	// needed, and any buffer that holds as much as the previous batch is
	// reused: batches of one entity differ by far less than an eighth, so
	// a buffer is rarely grown and buffers of a similar size always
	// return to service instead of making room for new ones.
	need := e.gap + e.hint + 64
	if cap(e.spare) >= need {
		e.buf, e.spare = e.spare[:e.gap], nil
		return
	}
	e.freeMu.Lock()
	for len(e.free) > 0 {
		b := e.free[len(e.free)-1]
		e.free[len(e.free)-1] = nil
		e.free = e.free[:len(e.free)-1]
		if cap(b) >= need {
			e.freeMu.Unlock()
			e.buf = b[:e.gap]
			return
		}
	}
	e.freeMu.Unlock()
	e.buf = make([]byte, e.gap, need+e.hint/8)
}

// maxFreeBuffers caps the buffers kept for reuse. A broker sink holds a
// window of unconfirmed batches (broker.max_unconfirmed_bytes, 16 MiB: about
// seven 2 MB batches) and gives their buffers back as confirms arrive, so
// the free list must hold a window's worth: keeping only two dropped most
// buffers and allocated a fresh, zeroed one for most batches. The buffers
// kept never outnumber those in use at once, which the window bounds.
const maxFreeBuffers = 32

// recycle gives back the buffer of a batch the sink no longer reads.
func (e *batchEncoder) recycle(b []byte) {
	e.freeMu.Lock()
	defer e.freeMu.Unlock()
	if len(e.free) < maxFreeBuffers {
		e.free = append(e.free, b[:0])
	}
}

// addRow encodes one row as a JSON object; rec must have one value per
// column. plain marks values known to be ASCII that JSON keeps as is (it
// may be shorter than rec, or nil): they are copied without the escaping
// scan.
func (e *batchEncoder) addRow(rec []string, plain []bool) {
	b := e.rowStart()
	if len(rec) == 0 {
		e.rowEnd(append(b, '{', '}'))
		return
	}
	for i, v := range rec {
		var ok bool
		if b, ok = e.key(b, i, len(v)); !ok {
			b = e.keySlow(b, i, len(v))
		}
		if i < len(plain) && plain[i] {
			b = append(b, v...)
		} else {
			b = appendJSONStringBody(b, v)
		}
	}
	e.rowEnd(append(b, '"', '}'))
}

// addRecord encodes a CSV record as addRow does its strings, straight from
// the reader's buffers: plain fields (ASCII that JSON keeps as is, as the
// reader found while scanning) are copied without the escaping scan.
func (e *batchEncoder) addRecord(r csvRecord) {
	b := e.rowStart()
	if len(r.spans) == 0 {
		e.rowEnd(append(b, '{', '}'))
		return
	}
	for i, s := range r.spans {
		var v []byte // r.field(i), which costs 9% more instructions per row here
		if s.inEsc {
			v = r.esc[s.a:s.b]
		} else {
			v = r.buf[s.a:s.b]
		}
		var ok bool
		if b, ok = e.key(b, i, len(v)); !ok {
			b = e.keySlow(b, i, len(v))
		}
		if s.plain {
			b = append(b, v...)
		} else {
			b = appendJSONStringBody(b, unsafe.String(unsafe.SliceData(v), len(v)))
		}
	}
	e.rowEnd(append(b, '"', '}'))
}

// rowStart returns the batch buffer ready for a row's first key.
func (e *batchEncoder) rowStart() []byte {
	if e.buf == nil {
		e.start()
	}
	if e.rows > 0 {
		return append(e.buf, ',')
	}
	return e.buf
}

// rowEnd keeps b, holding one more row, as the batch buffer.
func (e *batchEncoder) rowEnd(b []byte) {
	e.buf = b
	e.rows++
}

// keyWidth is the room a key takes in the keys table: column names of up
// to 58 bytes fit.
const keyWidth = 64

// columnKey is the bytes written before a column's value.
type columnKey struct {
	b [keyWidth]byte // the key, padded
	n int            // its length
	// room is the spare capacity key's fast path needs besides the value:
	// keyWidth, or more than any buffer has for a longer key.
	room int
	long []byte // the key, when longer than keyWidth
}

// key appends the bytes before column i's value, with room for a value of
// n bytes unescaped: one fixed-size copy. It is small enough to be inlined
// in the rows' loops, which call keySlow when it reports false (b is then
// unchanged): the buffer must grow first, or the key is longer than
// keyWidth.
func (e *batchEncoder) key(b []byte, i, n int) ([]byte, bool) {
	at := len(b)
	k := &e.keys[i]
	if cap(b)-at < k.room+n {
		return b, false
	}
	*(*[keyWidth]byte)(b[at : at+keyWidth]) = k.b
	return b[:at+k.n], true
}

// keySlow is key when the buffer must grow first or the key is longer than
// keyWidth.
func (e *batchEncoder) keySlow(b []byte, i, n int) []byte {
	k := &e.keys[i]
	if least := keyWidth + k.n + n; cap(b)-len(b) < least {
		b = slices.Grow(b, e.growth(len(b), least+64))
	}
	if k.long != nil {
		return append(b, k.long...)
	}
	b, _ = e.key(b, i, n) // it fits now
	return b
}

// growth is how many bytes to grow a batch buffer holding n bytes by, at
// least least. The first batch of an entity has no previous one to size its
// buffer by: once it holds a row, it grows to what its rows so far say the
// whole batch needs, instead of step by step, each step copying the batch.
func (e *batchEncoder) growth(n, least int) int {
	if e.hint > 0 || e.rows == 0 || e.batchRows <= e.rows {
		return least
	}
	perRow := (n - e.gap) / e.rows
	want := perRow * (e.batchRows - e.rows) * 9 / 8
	if e.maxBytes > 0 {
		want = min(want, e.maxBytes-n+64) // a bigger batch fails anyway
	}
	if e.batchBytes > 0 {
		want = min(want, e.batchBytes-(n-e.gap)+64) // the batch closes there
	}
	return max(least, want)
}

// initNamed switches the encoder to records that name their own fields.
func (e *batchEncoder) initNamed() {
	e.named = true
	e.namedSet = map[string]struct{}{}
}

// addNamedRow encodes one record as a JSON object with the given field
// names (unique within the record) and values, and notes new column names.
func (e *batchEncoder) addNamedRow(names, vals []string) {
	if e.buf == nil {
		e.start()
	}
	b := e.buf
	if e.rows > 0 {
		b = append(b, ',')
	}
	b = append(b, '{')
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, n), ':')
		b = appendJSONString(b, vals[i])
		if _, ok := e.namedSet[n]; !ok {
			e.namedSet[n] = struct{}{}
			e.namedCol = append(e.namedCol, n)
		}
	}
	b = append(b, '}')
	e.buf = b
	e.rows++
}

// rowNode is a record of a composite entity with its child records: its
// fields, then its child records grouped by element name in order of first
// use. A record's tree is a slice of nodes, node 0 the record itself; a
// group's nodes are indexes into that slice.
type rowNode struct {
	elem  string // the record's element name, for errors
	names []string
	vals  []string
	kids  []rowKids
}

// rowKids is a record's child records of one name, in document order.
type rowKids struct {
	name  string
	nodes []int32
}

// addTreeRow encodes a record with child records as a JSON object: its
// fields as addNamedRow does, then each group of child records as an
// array of objects under the group's name, recursively. The record's field
// names and group names are its columns. Plain records go through
// addNamedRow, whose path this leaves untouched.
func (e *batchEncoder) addTreeRow(tree []rowNode) {
	b := e.rowStart()
	n := &tree[0]
	for _, c := range n.names {
		e.noteColumn(c)
	}
	for i := range n.kids {
		e.noteColumn(n.kids[i].name)
	}
	e.rowEnd(appendRowNode(b, tree, 0))
}

// noteColumn adds c to the batch's columns unless it is there already.
func (e *batchEncoder) noteColumn(c string) {
	if _, ok := e.namedSet[c]; !ok {
		e.namedSet[c] = struct{}{}
		e.namedCol = append(e.namedCol, c)
	}
}

// appendRowNode appends node i of tree as a JSON object. The recursion is
// as deep as the tree, which the reader caps (xmlMaxDepth).
func appendRowNode(b []byte, tree []rowNode, i int32) []byte {
	n := &tree[i]
	b = append(b, '{')
	for j, name := range n.names {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, name), ':')
		b = appendJSONString(b, n.vals[j])
	}
	for j := range n.kids {
		g := &n.kids[j]
		if j > 0 || len(n.names) > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, g.name), ':', '[')
		for m, k := range g.nodes {
			if m > 0 {
				b = append(b, ',')
			}
			b = appendRowNode(b, tree, k)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// rowMark is where the current batch stood before a row was added.
type rowMark struct {
	n, cols int // buffer length (-1: no buffer yet), named columns
}

// mark returns where the batch stands, for undo.
func (e *batchEncoder) mark() rowMark {
	if e.buf == nil {
		return rowMark{n: -1, cols: len(e.namedCol)}
	}
	return rowMark{n: len(e.buf), cols: len(e.namedCol)}
}

// undo takes back the one row added since m: its bytes and the columns it
// brought into the batch.
func (e *batchEncoder) undo(m rowMark) {
	if m.n >= 0 {
		e.buf = e.buf[:m.n]
	}
	e.rows--
	for _, c := range e.namedCol[m.cols:] {
		delete(e.namedSet, c)
	}
	e.namedCol = e.namedCol[:m.cols]
}

// rowBytes is the size of the rows encoded so far in this batch.
func (e *batchEncoder) rowBytes() int {
	if e.buf == nil {
		return 0
	}
	return len(e.buf) - e.gap
}

// body returns the message body of the current batch. The body is the
// batch's own buffer: the encoder never writes to it again.
func (e *batchEncoder) body(id string, t time.Time, last bool) []byte {
	if e.buf == nil {
		e.start()
	}
	var ts [40]byte
	tb := t.UTC().AppendFormat(ts[:0], time.RFC3339Nano)
	b := e.pre[:0]
	b = append(b, `{"specversion":"1.0","type":"`+EventType+`","source":`...)
	b = append(b, e.source...)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"time":"`...)
	b = append(b, tb...)
	b = append(b, `","subject":`...)
	b = append(b, e.subject...)
	b = append(b, `,"datacontenttype":"application/json"`...)
	b = append(b, e.ext...)
	b = append(b, `,"data":{"version":1,`...)
	b = append(b, e.data...)
	b = append(b, `"batch_index":`...)
	b = appendJSONInt(b, e.batchIndex)
	if last {
		b = append(b, `,"batch_count":`...)
		b = appendJSONInt(b, e.batchIndex+1)
		b = append(b, `,"last_batch":true`...)
	} else {
		b = append(b, `,"batch_count":null,"last_batch":false`...)
	}
	b = append(b, `,"first_row":`...)
	b = appendJSONInt(b, e.firstRow)
	b = append(b, `,"row_count":`...)
	b = appendJSONInt(b, int64(e.rows))
	b = append(b, `,"columns":`...)
	if e.named {
		b = append(b, '[')
		for i, c := range e.namedCol {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, c)
		}
		b = append(b, ']')
	} else {
		b = append(b, e.columns...)
	}
	b = append(b, `,"rows":[`...)
	e.pre = b
	rows := e.buf[e.gap:]
	if len(b) > e.gap { // only named records' columns can outgrow the gap computed in init
		body := make([]byte, 0, len(b)+len(rows)+3)
		body = append(append(body, b...), rows...)
		return append(body, "]}}"...)
	}
	off := e.gap - len(b)
	copy(e.buf[off:], b)
	return append(e.buf[off:], "]}}"...)
}

// reset starts the next batch. With reuse, the body last returned is no
// longer referenced by the caller and its buffer is used again.
func (e *batchEncoder) reset(reuse bool) {
	if reuse {
		e.spare = e.buf[:0]
	}
	e.hint = e.rowBytes()
	e.buf = nil
	e.rows = 0
	if e.named {
		e.namedCol = e.namedCol[:0]
		clear(e.namedSet)
	}
	e.batchIndex++
}
