package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2/hpack"
)

// HTTP/1.1 clients are served by net/http; each request becomes a stream
// on the same upstream HTTP/2 pool as HTTP/2 clients' streams. The handler
// goroutine plays the client's part: it feeds the request body in and
// drains the response out, and the stream's windows bound what is held in
// between, as for an HTTP/2 client.

// h1Stream is the HTTP/1.1 handler's side of a stream. Guarded by the
// stream's mu.
type h1Stream struct {
	cond    *sync.Cond
	headers []hpack.HeaderField // response headers, once they arrived
	reset   bool                // the response must be aborted
}

// ServeHTTP forwards one HTTP/1.1 request to an endpoint picked for it
// alone.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, _ := r.Context().Value(routeKey{}).(Route)
	s := p.newStream()
	s.h1 = &h1Stream{cond: sync.NewCond(&s.mu)}
	s.route = route
	s.start = p.cfg.Now()
	s.info.Service = route.Service
	s.req = h1RequestFields(r)
	p.stats.requests.Add(1)
	p.stats.active.Add(1)

	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	var b batch
	s.mu.Lock()
	s.reqH.end = !hasBody
	p.dispatch(&b, s)
	s.mu.Unlock()
	b.flush()

	stop := context.AfterFunc(r.Context(), func() {
		var b batch
		s.mu.Lock()
		if !s.done {
			s.reqH.end = true
			s.finish(&b, canceledOutcome)
		}
		s.h1.reset = true
		s.h1.cond.Broadcast()
		s.mu.Unlock()
		b.flush()
	})
	defer stop()
	if hasBody {
		go s.h1RequestBody(r.Body)
	}
	s.h1Respond(w)
}

// h1RequestFields turns an HTTP/1.1 request into an HTTP/2 header block.
func h1RequestFields(r *http.Request) []hpack.HeaderField {
	removeHopByHop(r.Header)
	path := r.URL.RequestURI()
	fields := make([]hpack.HeaderField, 0, 4+len(r.Header))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: r.Method},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":authority", Value: r.Host},
		hpack.HeaderField{Name: ":path", Value: path},
	)
	for k, vv := range r.Header {
		name := strings.ToLower(k)
		if name == "host" {
			continue
		}
		for _, v := range vv {
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	if r.ContentLength > 0 && r.Header.Get("Content-Length") == "" {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: itoa64(r.ContentLength)})
	}
	return fields
}

// h1RequestBody feeds the request body into the stream, waiting while the
// stream holds a window's worth.
func (s *stream) h1RequestBody(body io.Reader) {
	buf := make([]byte, 16<<10)
	limit := s.p.cfg.StreamWindow
	for {
		n, err := body.Read(buf)
		var b batch
		s.mu.Lock()
		for len(s.reqH.held) >= limit && !s.done {
			s.h1.cond.Wait()
		}
		if s.done {
			s.mu.Unlock()
			return
		}
		end := err != nil
		if err != nil && err != io.EOF {
			// The client's body broke off: the request cannot complete.
			s.finish(&b, canceledOutcome)
			s.h1.reset = true
			s.h1.cond.Broadcast()
			s.mu.Unlock()
			b.flush()
			return
		}
		s.requestData(&b, buf[:n], end)
		s.mu.Unlock()
		b.flush()
		if end {
			return
		}
	}
}

// h1Respond writes the response to the HTTP/1.1 client as it arrives.
func (s *stream) h1Respond(w http.ResponseWriter) {
	s.mu.Lock()
	for s.h1.headers == nil && !s.h1.reset {
		s.h1.cond.Wait()
	}
	if s.h1.headers == nil {
		s.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	status := 200
	h := w.Header()
	for _, f := range s.h1.headers {
		if f.Name == ":status" {
			status = atoiOr(f.Value, 502)
			continue
		}
		if len(f.Name) > 0 && f.Name[0] == ':' {
			continue
		}
		h.Add(f.Name, f.Value)
	}
	s.mu.Unlock()
	w.WriteHeader(status)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		var b batch
		s.mu.Lock()
		for len(s.respH.held) == 0 && !s.respH.end && !s.h1.reset {
			s.h1.cond.Wait()
		}
		if s.h1.reset {
			s.mu.Unlock()
			panic(http.ErrAbortHandler)
		}
		n := copy(buf, s.respH.held)
		s.respH.held = s.respH.held[:copy(s.respH.held, s.respH.held[n:])]
		s.account()
		more := len(s.respH.held) > 0
		done := !more && s.respH.end
		var trailers []hpack.HeaderField
		if done {
			trailers = s.respH.trailers
		}
		s.creditUpstream(&b, n)
		s.mu.Unlock()
		b.flush()
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				panic(http.ErrAbortHandler)
			}
			if !more {
				rc.Flush()
			}
		}
		if done {
			for _, f := range trailers {
				h.Add(http.TrailerPrefix+f.Name, f.Value)
			}
			return
		}
	}
}

func itoa64(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
