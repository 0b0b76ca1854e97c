package postgres

import (
	"encoding/binary"
	"io"

	"github.com/dmfexport/dmfexport/sink"
)

// copyStream reads the rows of batches of one shape (the same columns) as
// PostgreSQL's binary COPY format for those columns then metaColumns:
// each value is written once, into a buffer of about copyChunk bytes,
// with no value boxed or converted on the way.
type copyStream struct {
	parts []copyPart
	part  int  // the part being encoded
	next  int  // the next of its rows to encode
	head  bool // the header is written
	done  bool // the trailer is written
	buf   []byte
	off   int
}

// copyPart is a batch and which of its rows to copy.
type copyPart struct {
	bt *sink.Batch
	// rows, when set, are the indexes of the rows to copy, in order;
	// else every row is.
	rows []int
}

const copyChunk = 64 << 10

// copySignature starts a binary COPY stream, followed by the flags and the
// length of the header extension, both 0.
const copySignature = "PGCOPY\n\xff\r\n\x00"

func (c *copyStream) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.done {
			return 0, io.EOF
		}
		c.fill()
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// fill encodes the next rows into buf, the trailer after the last.
func (c *copyStream) fill() {
	buf := c.buf[:0]
	if !c.head {
		buf = append(buf, copySignature...)
		buf = binary.BigEndian.AppendUint32(buf, 0)
		buf = binary.BigEndian.AppendUint32(buf, 0)
		c.head = true
	}
	for c.part < len(c.parts) && len(buf) < copyChunk {
		p := c.parts[c.part]
		n := len(p.bt.Rows)
		if p.rows != nil {
			n = len(p.rows)
		}
		for ; c.next < n && len(buf) < copyChunk; c.next++ {
			row := c.next
			if p.rows != nil {
				row = p.rows[row]
			}
			buf = appendRow(buf, p.bt, row)
		}
		if c.next == n {
			c.part, c.next = c.part+1, 0
		}
	}
	if c.part == len(c.parts) {
		buf = binary.BigEndian.AppendUint16(buf, 0xFFFF) // the trailer
		c.done = true
	}
	c.buf, c.off = buf, 0
}

// appendRow appends row of bt as a tuple of the binary COPY format.
func appendRow(buf []byte, bt *sink.Batch, row int) []byte {
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(bt.Columns)+len(metaColumns)))
	for _, v := range bt.Rows[row] {
		if v == nil {
			buf = binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF) // NULL
			continue
		}
		buf = appendText(buf, *v)
	}
	// _dmf_export, _dmf_run, _dmf_execution, _dmf_batch (integer),
	// _dmf_row (bigint), _dmf_document (jsonb: version 1, then text).
	buf = appendText(buf, bt.Export)
	buf = appendText(buf, bt.RunID)
	buf = appendText(buf, bt.ExecutionID)
	buf = binary.BigEndian.AppendUint32(buf, 4)
	buf = binary.BigEndian.AppendUint32(buf, uint32(int32(bt.BatchIndex)))
	buf = binary.BigEndian.AppendUint32(buf, 8)
	buf = binary.BigEndian.AppendUint64(buf, uint64(int64(bt.FirstRow+row)))
	if bt.Documents == nil || bt.Documents[row] == nil {
		return binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF)
	}
	doc := bt.Documents[row]
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(doc)+1))
	buf = append(buf, 1)
	return append(buf, doc...)
}

func appendText(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}
