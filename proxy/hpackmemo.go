package proxy

import (
	"golang.org/x/net/http2/hpack"
)

// Header blocks that repeat, copied rather than encoded again.
//
// Most header blocks a connection carries are ones it carried before: the
// calls of a client to one method send the same request fields (but
// grpc-timeout, which travels apart, see stream.open), and an endpoint's
// responses the same headers and trailers. Once their fields are in the
// HPACK encoder's dynamic table, the encoder turns such a list into the
// same bytes every time, indexes only, for some map lookups per field
// (hpack.Encoder.WriteField searches the static and the dynamic table by
// name and value, then by name). A connection remembers the last few blocks
// whose encoding left the dynamic table as it was, with their field lists,
// and copies the bytes of a list equal to one of them.
//
// The bytes stay right only while the table is the one they were encoded
// against: an entry added (which may evict others and shifts every index)
// or a table size update makes them wrong. Whether the encoder changed its
// table is read from the first byte it writes for each field (RFC 7541
// section 6): an indexed field (1xxxxxxx) and a literal not indexed
// (0000xxxx) or never indexed (0001xxxx) leave it alone; a literal with
// incremental indexing (01xxxxxx) adds an entry, and a dynamic table size
// update (001xxxxx) comes first in the field's bytes when the encoder owes
// one. Any such change forgets every remembered block, and so does a new
// limit on the table's size from the peer's SETTINGS (forgetBlocks), so
// that the encoder writes the size update the next block owes.
//
// A connection remembers nothing until a block repeats with its fields
// already in the table (from its second call on), so a connection that
// carried one call holds no memo.

// memoBlocks is how many blocks a connection remembers: a client
// connection's response headers and trailers, an endpoint connection's
// request headers for a few methods.
const memoBlocks = 4

// maxMemoFields and maxMemoBlock bound what is remembered of one block.
const (
	maxMemoFields = 16
	maxMemoBlock  = 256
)

type memoBlock struct {
	fields []hpack.HeaderField
	block  []byte
}

type blockMemo struct {
	blocks [memoBlocks]memoBlock
	n      int // blocks in use
	next   int // the one replaced next, once all are in use
}

// hpackSink is where a connection's HPACK encoder writes: the connection's
// header block buffer, noting whether a field changed the encoder's table.
type hpackSink struct{ h *h2conn }

func (s hpackSink) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0]&0x80 == 0 && p[0]&0x60 != 0 {
		s.h.tableChanged = true
	}
	return s.h.hbuf.Write(p)
}

// encodeFields appends the encoding of fields to hbuf, from the memo when
// it holds them. Call with wmu held.
func (h *h2conn) encodeFields(fields []hpack.HeaderField) {
	if h.memo != nil {
		if b := h.memo.lookup(fields); b != nil {
			h.hbuf.Write(b)
			return
		}
	}
	start := h.hbuf.Len()
	h.tableChanged = false
	for _, f := range fields {
		h.enc.WriteField(f)
	}
	if h.tableChanged {
		h.forgetBlocks()
		return
	}
	block := h.hbuf.Bytes()[start:]
	if len(fields) == 0 || len(fields) > maxMemoFields || len(block) > maxMemoBlock {
		return
	}
	if h.memo == nil {
		h.memo = new(blockMemo)
	}
	h.memo.add(fields, block)
}

// encodeField appends the encoding of one field to hbuf. Call with wmu
// held.
func (h *h2conn) encodeField(f hpack.HeaderField) {
	h.tableChanged = false
	h.enc.WriteField(f)
	if h.tableChanged {
		h.forgetBlocks()
	}
}

// forgetBlocks drops every remembered block: the encoder's table changed,
// or will. Call with wmu held.
func (h *h2conn) forgetBlocks() {
	if h.memo != nil {
		h.memo.n, h.memo.next = 0, 0
	}
}

func (m *blockMemo) lookup(fields []hpack.HeaderField) []byte {
	for i := 0; i < m.n; i++ {
		if sameFields(m.blocks[i].fields, fields) {
			return m.blocks[i].block
		}
	}
	return nil
}

func (m *blockMemo) add(fields []hpack.HeaderField, block []byte) {
	var b *memoBlock
	if m.n < memoBlocks {
		b = &m.blocks[m.n]
		m.n++
	} else {
		b = &m.blocks[m.next]
		m.next = (m.next + 1) % memoBlocks
	}
	b.fields = append(b.fields[:0], fields...)
	b.block = append(b.block[:0], block...)
}

func sameFields(a, b []hpack.HeaderField) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
