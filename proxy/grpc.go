package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

func isGRPC(contentType string) bool {
	// "application/grpc", "application/grpc+proto", "application/grpc-web" is
	// not gRPC over HTTP/2 and is left alone.
	const ct = "application/grpc"
	if len(contentType) < len(ct) || !strings.EqualFold(contentType[:len(ct)], ct) {
		return false
	}
	return len(contentType) == len(ct) || contentType[len(ct)] == '+' || contentType[len(ct)] == ';'
}

// parseGRPCTimeout parses a grpc-timeout header value: at most 8 ASCII
// digits and a unit (H, M, S, m, u, n).
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	const max = time.Duration(1<<63 - 1)
	if n > int64(max/unit) {
		return max, true
	}
	return time.Duration(n) * unit, true
}

// formatGRPCTimeout renders d in the finest unit that fits in 8 digits.
// Like grpc-go it rounds up; the error is under one unit of the finest
// unit that fits, i.e. under 0.00001% of d.
func formatGRPCTimeout(d time.Duration) string {
	return string(appendGRPCTimeout(nil, d))
}

// appendGRPCTimeout appends formatGRPCTimeout(d) to dst, so that the value
// sent with every call can be built in a connection's buffer without an
// allocation.
func appendGRPCTimeout(dst []byte, d time.Duration) []byte {
	if d <= 0 {
		return append(dst, "0n"...)
	}
	const maxDigits = 1e8
	units := [...]struct {
		d time.Duration
		c byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}}
	for _, u := range units {
		v := d / u.d
		if d%u.d != 0 {
			v++ // round up without overflowing near the maximum
		}
		if v < maxDigits {
			return append(strconv.AppendInt(dst, int64(v), 10), u.c)
		}
	}
	return append(dst, "99999999H"...)
}

// grpcCodeForReset maps an HTTP/2 RST_STREAM code to the gRPC status a
// client would have derived from the reset itself (the gRPC HTTP/2
// protocol's table), so that a reset relayed as trailers keeps its meaning.
func grpcCodeForReset(code http2.ErrCode) grpccode.Code {
	switch code {
	case http2.ErrCodeRefusedStream:
		return grpccode.Unavailable
	case http2.ErrCodeCancel:
		return grpccode.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return grpccode.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return grpccode.PermissionDenied
	}
	return grpccode.Internal
}

// encodeGRPCMessage percent-encodes a status message as the gRPC protocol
// requires: bytes outside printable ASCII, and '%' itself.
func encodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
