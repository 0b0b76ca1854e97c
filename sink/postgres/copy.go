package postgres

import (
	"encoding/binary"
	"io"

	"github.com/dmfexport/dmfexport/sink"
)

// copyStream reads a batch's rows as PostgreSQL's binary COPY format for
// the columns bt.Columns then metaColumns: each value is written once,
// into a buffer of about copyChunk bytes, with no value boxed or
// converted on the way.
type copyStream struct {
	bt *sink.Batch
	// rows, when set, are the indexes of the rows to copy, in order;
	// else every row is.
	rows []int
	next int  // the next of them to encode
	head bool // the header is written
	done bool // the trailer is written
	buf  []byte
	off  int
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
	bt := c.bt
	fields := uint16(len(bt.Columns) + len(metaColumns))
	n := len(bt.Rows)
	if c.rows != nil {
		n = len(c.rows)
	}
	for ; c.next < n && len(buf) < copyChunk; c.next++ {
		row := c.next
		if c.rows != nil {
			row = c.rows[row]
		}
		buf = binary.BigEndian.AppendUint16(buf, fields)
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
			buf = binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF)
		} else {
			doc := bt.Documents[row]
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(doc)+1))
			buf = append(buf, 1)
			buf = append(buf, doc...)
		}
	}
	if c.next == n {
		buf = binary.BigEndian.AppendUint16(buf, 0xFFFF) // the trailer
		c.done = true
	}
	c.buf, c.off = buf, 0
}

func appendText(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}
