package proxy

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock decodes the header blocks of one connection as their
// HEADERS and CONTINUATION frames arrive, with x/net's hpack Decoder, into
// a field slice the connection reuses: x/net's Framer can do this too
// (ReadMetaHeaders), but allocates a frame, closures and a field slice per
// block. The checks are RFC 9113's, as the Framer's: valid names and
// values, pseudo-fields first, known and not repeated, not both request and
// response ones; the decoded list is limited to maxHeaderListSize (past it
// the block is decoded, to keep the table in step, but marked truncated);
// the Framer still checks that CONTINUATION frames follow their HEADERS.
type headerBlock struct {
	dec    *hpack.Decoder
	fields []hpack.HeaderField

	// The block in progress (or last completed).
	streamID    uint32
	endStream   bool
	hasPriority bool
	priority    http2.PriorityParam
	active      bool
	size        uint32
	wire        int
	truncated   bool
	invalid     error
	sawRegular  bool
}

var (
	errPseudoAfterRegular = errors.New("pseudo header field after regular one")
	errInvalidField       = errors.New("invalid header field name or value")
	errBadPseudo          = errors.New("unknown, repeated or mixed pseudo header fields")
)

func (hb *headerBlock) init() {
	hb.dec = hpack.NewDecoder(4096, hb.emit)
	hb.dec.SetMaxStringLength(maxHeaderListSize)
}

func (hb *headerBlock) emit(f hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		hb.invalid = errInvalidField
		hb.dec.SetEmitEnabled(false)
		return
	}
	if strings.HasPrefix(f.Name, ":") {
		if hb.sawRegular {
			hb.invalid = errPseudoAfterRegular
			hb.dec.SetEmitEnabled(false)
			return
		}
	} else {
		hb.sawRegular = true
		if !validFieldName(f.Name) {
			hb.invalid = errInvalidField
			hb.dec.SetEmitEnabled(false)
			return
		}
	}
	size := f.Size()
	if hb.size+size > maxHeaderListSize {
		hb.truncated = true
		hb.dec.SetEmitEnabled(false)
		return
	}
	hb.size += size
	hb.fields = append(hb.fields, f)
}

// validFieldName: a token, in lower case (RFC 9113 section 8.2.1).
func validFieldName(v string) bool {
	if len(v) == 0 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// start begins a block with its HEADERS frame; done reports that the
// block is complete. err is a connection error.
func (hb *headerBlock) start(f *http2.HeadersFrame) (done bool, err error) {
	hb.fields = hb.fields[:0]
	hb.streamID = f.StreamID
	hb.endStream = f.StreamEnded()
	hb.hasPriority = f.HasPriority()
	hb.priority = f.Priority
	hb.active = true
	hb.size, hb.wire = 0, 0
	hb.truncated, hb.invalid, hb.sawRegular = false, nil, false
	hb.dec.SetEmitEnabled(true)
	return hb.add(f.HeaderBlockFragment(), f.HeadersEnded())
}

// add decodes the next fragment.
func (hb *headerBlock) add(frag []byte, end bool) (done bool, err error) {
	hb.wire += len(frag)
	if hb.wire > frameBudget {
		return false, errFrameBudget
	}
	if _, err := hb.dec.Write(frag); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return false, nil
	}
	hb.active = false
	if err := hb.dec.Close(); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if hb.invalid == nil && !hb.truncated && !hb.checkPseudos() {
		hb.invalid = errBadPseudo
	}
	return true, nil
}

// checkPseudos: only known pseudo fields, none twice, not request and
// response ones together.
func (hb *headerBlock) checkPseudos() bool {
	var request, response bool
	for i, f := range hb.fields {
		if !strings.HasPrefix(f.Name, ":") {
			break
		}
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return false
		}
		for _, g := range hb.fields[:i] {
			if g.Name == f.Name {
				return false
			}
		}
	}
	return !(request && response)
}
