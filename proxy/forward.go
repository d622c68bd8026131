package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"

	"github.com/zonelb/zonelb/zone"
)

// ServeHTTP forwards one request or gRPC call to an endpoint picked for it
// alone.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := p.cfg.Now()
	p.stats.requests.Add(1)
	p.stats.active.Add(1)
	defer p.stats.active.Add(-1)

	route, _ := r.Context().Value(routeKey{}).(Route)
	f := &forwarding{
		p:     p,
		w:     w,
		r:     r,
		route: route,
		grpc:  r.ProtoMajor == 2 && isGRPC(r.Header.Get("Content-Type")),
		start: start,
		info:  RequestInfo{Service: route.Service, GRPCStatus: -1},
	}
	f.info.GRPC = f.grpc
	f.serve()
	f.info.Duration = p.cfg.Now().Sub(start)
	if o := p.cfg.Observer; o != nil {
		o.ObserveRequest(f.info)
	}
}

// forwarding is the state of one request on its way through the proxy.
type forwarding struct {
	p     *Proxy
	w     http.ResponseWriter
	r     *http.Request
	route Route
	grpc  bool
	start time.Time
	info  RequestInfo

	deadline    time.Time // from grpc-timeout; zero if none
	headersSent bool
}

func (f *forwarding) serve() {
	p, r := f.p, f.r
	if f.route.Picker == nil {
		f.fail(http.StatusServiceUnavailable, grpcUnavailable, "zonelb: connection has no service route")
		return
	}
	ctx := r.Context()
	if f.grpc {
		if v := r.Header.Get("Grpc-Timeout"); v != "" {
			if d, ok := parseGRPCTimeout(v); ok {
				f.deadline = f.start.Add(d)
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
		}
	}
	removeHopByHop(r.Header)

	var body *replayBody
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		body = newReplayBody(r.Body, p.cfg.ReplayLimit)
	}

	var (
		picked zone.Picked
		resp   *http.Response
		ttfb   time.Duration
		avoid  netip.AddrPort
	)
	for attempt := 0; ; attempt++ {
		var err error
		picked, err = f.route.Picker.Pick(avoid)
		if err != nil {
			f.fail(http.StatusServiceUnavailable, grpcUnavailable, "zonelb: no endpoint available for "+f.route.Service)
			return
		}
		ep := picked.Endpoint
		f.info.Endpoint = ep
		sent := p.cfg.Now()
		if !f.deadline.IsZero() {
			left := f.deadline.Sub(sent)
			if left <= 0 {
				picked.Done(zone.Result{Outcome: zone.Canceled})
				f.info.Outcome = zone.Canceled
				f.fail(http.StatusGatewayTimeout, grpcDeadlineExceeded, "zonelb: deadline exceeded before the call was sent")
				return
			}
			r.Header.Set("Grpc-Timeout", formatGRPCTimeout(left))
		}
		out := f.outgoing(ctx, ep.Addr, body)
		resp, err = p.roundTrip(ctx, ep.Addr, out)
		if err == nil {
			ttfb = p.cfg.Now().Sub(sent)
			// Answered: a long stream must not count as load on the
			// endpoint for the rest of its life.
			picked.Responded()
			break
		}

		// No response byte arrived: TTFB stays 0 and the balancer takes
		// the time since Pick as a lower bound on the endpoint's latency.
		switch {
		case r.Context().Err() != nil:
			// The client went away; nobody to answer.
			picked.Done(zone.Result{Outcome: zone.Canceled})
			f.info.Outcome = zone.Canceled
			return
		case ctx.Err() != nil:
			// Our copy of the client's deadline expired first.
			picked.Done(zone.Result{Outcome: zone.Canceled})
			f.info.Outcome = zone.Canceled
			f.fail(http.StatusGatewayTimeout, grpcDeadlineExceeded, "zonelb: deadline exceeded waiting for "+ep.Addr.String())
			return
		}
		notReached := neverReached(err)
		outcome := zone.Failure
		if notReached {
			outcome = zone.NotReached
		}
		picked.Done(zone.Result{Outcome: outcome})
		f.info.Outcome = outcome
		if notReached && attempt == 0 && (body == nil || body.canReplay()) {
			p.log.Debug("retrying on another endpoint", "service", f.route.Service, "endpoint", ep.Addr.String(), "err", err)
			p.stats.retries.Add(1)
			f.info.Retried = true
			avoid = ep.Addr
			continue
		}
		p.log.Debug("upstream request failed", "service", f.route.Service, "endpoint", ep.Addr.String(), "err", err)
		f.fail(http.StatusBadGateway, grpcUnavailable, "zonelb: upstream "+ep.Addr.String()+" failed: "+err.Error())
		return
	}
	if body != nil {
		body.commit()
	}
	outcome, recv := f.respond(ctx, resp)
	res := zone.Result{Outcome: outcome, TTFB: ttfb, BytesReceived: recv + headerSize(resp.Header) + headerSize(resp.Trailer)}
	res.BytesSent = headerSize(r.Header)
	if body != nil {
		res.BytesSent += body.bytesRead()
	}
	picked.Done(res)
	f.info.Outcome, f.info.TTFB = outcome, ttfb
	f.info.BytesSent, f.info.BytesRecv = res.BytesSent, recv
}

// outgoing builds the upstream request. Headers are shared with the
// incoming request, which the proxy owns.
func (f *forwarding) outgoing(ctx context.Context, addr netip.AddrPort, body *replayBody) *http.Request {
	r := f.r
	out := &http.Request{
		Method: r.Method,
		URL: &url.URL{
			Scheme:   "http",
			Host:     addr.String(),
			Path:     r.URL.Path,
			RawPath:  r.URL.RawPath,
			RawQuery: r.URL.RawQuery,
		},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        r.Header,
		Trailer:       r.Trailer,
		Host:          r.Host,
		ContentLength: r.ContentLength,
		Body:          http.NoBody,
	}
	if body != nil {
		out.Body = body.attempt()
	} else {
		out.ContentLength = 0
	}
	return out.WithContext(ctx)
}

func (p *Proxy) roundTrip(ctx context.Context, addr netip.AddrPort, req *http.Request) (*http.Response, error) {
	if p.up1 != nil {
		return p.up1.RoundTrip(req)
	}
	cc, err := p.up.pool(addr.String()).get(ctx)
	if err != nil {
		return nil, err
	}
	return cc.RoundTrip(req)
}

// respond relays the upstream response and returns the request's outcome
// and the response body bytes moved.
func (f *forwarding) respond(ctx context.Context, resp *http.Response) (zone.Outcome, int64) {
	w, h := f.w, f.w.Header()
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	for k, vv := range resp.Header {
		h[k] = vv
	}
	f.info.Status = resp.StatusCode

	if f.grpc {
		if gs := resp.Header.Get("Grpc-Status"); gs != "" {
			// Trailers-only response: the status travels in the one
			// HEADERS frame, which must also end the stream. Writing the
			// header without flushing lets the server send exactly that.
			f.info.GRPCStatus = atoiOr(gs, grpcUnknown)
			w.WriteHeader(resp.StatusCode)
			f.headersSent = true
			return grpcOutcome(resp.StatusCode, f.info.GRPCStatus), 0
		}
	}
	w.WriteHeader(resp.StatusCode)
	f.headersSent = true
	rc := http.NewResponseController(w)
	// Headers and data go out when the upstream pauses (lazyFlusher): at
	// once for a streaming server that sends headers long before its first
	// message, batched with the message and trailers for a unary call.
	lf := newLazyFlusher(w, resp.Body, rc, newStallWatch(rc, f.p.cfg.StalledWriteTimeout))
	lf.wrote()
	n, err := f.p.copyBuffer(lf, lf)
	lf.stop()
	if err != nil {
		var we errWrite
		switch {
		case errors.As(err, &we), f.r.Context().Err() != nil:
			return zone.Canceled, n // the client went away
		case ctx.Err() != nil:
			f.fail(http.StatusGatewayTimeout, grpcDeadlineExceeded, "zonelb: deadline exceeded")
			return zone.Canceled, n
		}
		f.p.log.Debug("upstream stream failed mid-response", "service", f.route.Service, "err", err)
		if !f.grpc {
			// No way to tell an HTTP client that a body is truncated
			// but to reset the stream (or close the HTTP/1 connection).
			panic(http.ErrAbortHandler)
		}
		code := grpcUnavailable
		var se http2.StreamError
		if errors.As(err, &se) {
			code = grpcCodeForReset(se.Code)
		}
		f.fail(http.StatusBadGateway, code, "zonelb: upstream stream failed: "+err.Error())
		f.info.GRPCStatus = code
		return zone.Failure, n
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	if !f.grpc {
		return httpOutcome(resp.StatusCode), n
	}
	gs := resp.Trailer.Get("Grpc-Status")
	if gs == "" {
		return zone.Failure, n // a gRPC server must end with a status
	}
	f.info.GRPCStatus = atoiOr(gs, grpcUnknown)
	return grpcOutcome(resp.StatusCode, f.info.GRPCStatus), n
}

// fail answers the client with an error the proxy produced: a gRPC status
// (trailers-only, or trailers if headers already went out) or an HTTP
// status.
func (f *forwarding) fail(status, grpcCode int, msg string) {
	h := f.w.Header()
	if f.grpc {
		f.info.GRPCStatus = grpcCode
		prefix := ""
		if f.headersSent {
			prefix = http.TrailerPrefix
		} else {
			h.Set("Content-Type", "application/grpc")
		}
		h.Set(prefix+"Grpc-Status", strconv.Itoa(grpcCode))
		h.Set(prefix+"Grpc-Message", encodeGRPCMessage(msg))
		if !f.headersSent {
			f.info.Status = http.StatusOK
			f.w.WriteHeader(http.StatusOK)
			f.headersSent = true
		}
		return
	}
	if f.headersSent {
		panic(http.ErrAbortHandler)
	}
	f.info.Status = status
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	f.w.WriteHeader(status)
	io.WriteString(f.w, msg+"\n")
	f.headersSent = true
}

// neverReached reports whether err proves that the request never reached
// the endpoint's application, so that it may be retried elsewhere.
func neverReached(err error) bool {
	var de errDial
	if errors.As(err, &de) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true // HTTP/1.1 upstream: connect failed
	}
	// x/net does not export these errors; its own retry logic keys on
	// them. A stream aborted because it was above the GOAWAY's last
	// stream id, or a connection unusable before the stream was sent, are
	// the cases the server never saw. TestRetryOnGoAway pins this.
	msg := err.Error()
	return strings.Contains(msg, "http2: Transport received Server's graceful shutdown GOAWAY") ||
		strings.Contains(msg, "http2: Transport received GOAWAY from server") ||
		strings.Contains(msg, "http2: client conn not usable") ||
		strings.Contains(msg, "http2: client conn could not be established")
}

func grpcOutcome(httpStatus, code int) zone.Outcome {
	if httpStatus != http.StatusOK {
		return httpOutcome(httpStatus)
	}
	switch code {
	case grpcUnavailable:
		return zone.Failure
	case grpcResourceExhausted:
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

// headerSize approximates a header block's size on the wire before
// compression, for byte accounting.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vv := range h {
		for _, v := range vv {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// hopByHop are headers that describe one connection, not the message
// (RFC 9110 7.6.1); HTTP/2 forbids them altogether.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Http2-Settings"}

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
