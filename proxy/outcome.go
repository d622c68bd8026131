package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"net/http"
	"strconv"
	"strings"

	"github.com/zonelb/zonelb/zone"
)

func grpcOutcome(httpStatus int, code grpccode.Code) zone.Outcome {
	if httpStatus != http.StatusOK {
		return httpOutcome(httpStatus)
	}
	switch code {
	case grpccode.Unavailable:
		return zone.Failure
	case grpccode.ResourceExhausted:
		return zone.Overloaded
	}
	return zone.Success
}

func httpOutcome(status int) zone.Outcome {
	switch {
	case status == http.StatusTooManyRequests:
		return zone.Overloaded
	case status >= 500:
		return zone.Failure
	}
	return zone.Success
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// hopByHop are headers that describe one connection, not the message
// (RFC 9110 7.6.1); HTTP/2 forbids them altogether.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Http2-Settings"}

// removeHopByHop strips an HTTP/1.1 request's hop-by-hop headers before it
// goes upstream over HTTP/2.
func removeHopByHop(h http.Header) {
	if c := h.Get("Connection"); c != "" {
		for _, name := range strings.Split(c, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
	// TE is hop-by-hop too, but "trailers" must reach gRPC servers.
	if te, ok := h["Te"]; ok {
		delete(h, "Te")
		for _, v := range te {
			if strings.EqualFold(strings.TrimSpace(v), "trailers") {
				h["Te"] = []string{"trailers"}
			}
		}
	}
}
