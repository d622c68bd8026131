package interop

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"google.golang.org/grpc"
)

// CallStats is what a server's stats endpoint answers: the calls that
// reached its handlers, in total and per full method name, and those still
// in a handler. Calls to an unknown service never reach a handler and are
// not counted.
type CallStats struct {
	Total   int64            `json:"total"`
	Methods map[string]int64 `json:"methods"`
	// Active counts calls whose handler has not returned, per method
	// (methods with none are left out). A call the proxy abandoned without
	// cancelling upstream stays here.
	Active map[string]int64 `json:"active"`
}

// ActiveTotal is the number of calls still in a handler.
func (s CallStats) ActiveTotal() int64 {
	var n int64
	for _, a := range s.Active {
		n += a
	}
	return n
}

// CallCounter counts calls per method through gRPC interceptors and serves
// the counts as JSON. Its zero value is ready to use; it must not be copied.
type CallCounter struct {
	mu      sync.Mutex
	total   int64
	methods map[string]int64
	active  map[string]int64
}

// begin counts a call entering its handler; the caller must call end when
// the handler returns.
func (c *CallCounter) begin(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.methods == nil {
		c.methods = make(map[string]int64)
		c.active = make(map[string]int64)
	}
	c.total++
	c.methods[method]++
	c.active[method]++
}

func (c *CallCounter) end(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active[method]--; c.active[method] == 0 {
		delete(c.active, method)
	}
}

// Snapshot returns a copy of the counts.
func (c *CallCounter) Snapshot() CallStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CallStats{Total: c.total, Methods: make(map[string]int64, len(c.methods)), Active: make(map[string]int64, len(c.active))}
	for m, n := range c.methods {
		s.Methods[m] = n
	}
	for m, n := range c.active {
		s.Active[m] = n
	}
	return s
}

// UnaryInterceptor counts each unary call before handing it on.
func (c *CallCounter) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c.begin(info.FullMethod)
	defer c.end(info.FullMethod)
	return handler(ctx, req)
}

// StreamInterceptor counts each streaming call before handing it on.
func (c *CallCounter) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c.begin(info.FullMethod)
	defer c.end(info.FullMethod)
	return handler(srv, ss)
}

// ServeHTTP answers with the current CallStats as JSON.
func (c *CallCounter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	// An error here means the reader went away; there is no one to tell.
	_ = json.NewEncoder(w).Encode(c.Snapshot())
}
