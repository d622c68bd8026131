// Package backend serves the load targets of zonelb's benchmarks on loopback:
// the gRPC testing service's UnaryCall (for ghz) and a small h2c/HTTP/1.1
// handler (for h2load), several instances of each so that a balancer in front
// has real choices, plus an admin endpoint that reports how many requests each
// instance answered.
//
// It exists only to be cheap and predictable under load. It must not listen on
// anything but loopback, must not add work per request beyond answering and
// counting, and is not a test double for the proxy's semantics (the interop
// suite does that).
package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"

	"github.com/zonelb/zonelb/internal/testservice"
)

// HTTPBodySize is the size of the body the HTTP handler returns: about the
// 1 KB payload the benchmark brief asks for.
const HTTPBodySize = 1024

// maxPayload bounds the response size a UnaryCall may ask for, so that a
// malformed request cannot make the backend allocate without limit (the
// gRPC instances are internal/testservice, whose responses share one zero
// buffer of this size).
const maxPayload = 1 << 20

// Addresses says where a fleet listens. Index i of GRPC and HTTP belongs to
// backend instance i.
type Addresses struct {
	GRPC  []string `json:"grpc"`
	HTTP  []string `json:"http"`
	Admin string   `json:"admin"`
}

// Counts is how many requests each instance answered, indexed like Addresses.
type Counts struct {
	GRPC []int64 `json:"grpc"`
	HTTP []int64 `json:"http"`
}

// httpHandler answers every request with HTTPBodySize bytes and counts it.
type httpHandler struct {
	requests *atomic.Int64
	body     []byte
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.requests.Add(1)
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", fmt.Sprint(len(h.body)))
	_, _ = w.Write(h.body)
}

// Fleet is a running set of backend instances.
type Fleet struct {
	logger     *slog.Logger
	addrs      Addresses
	grpcCalls  []*testservice.Service
	httpCalls  []*atomic.Int64
	grpcSrvs   []*grpc.Server
	httpSrvs   []*http.Server
	adminSrv   *http.Server
	serveGroup sync.WaitGroup
}

// Start opens n gRPC and n HTTP instances, each on its own ephemeral port of
// host (which must be a loopback address), and an admin endpoint.
func Start(logger *slog.Logger, host string, n int) (*Fleet, error) {
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("start backends: host %q is not a loopback address", host)
	}
	if n < 1 {
		return nil, fmt.Errorf("start backends: need at least one instance, got %d", n)
	}
	f := &Fleet{logger: logger}
	body := make([]byte, HTTPBodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for i := range n {
		lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("listen for gRPC backend %d: %w", i, err)
		}
		svc := testservice.NewService(testservice.Options{MaxPayload: maxPayload})
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, svc)
		reflection.Register(srv)
		f.grpcCalls = append(f.grpcCalls, svc)
		f.grpcSrvs = append(f.grpcSrvs, srv)
		f.addrs.GRPC = append(f.addrs.GRPC, lis.Addr().String())
		f.serve(fmt.Sprintf("grpc-%d", i), func() error { return srv.Serve(lis) })
	}
	for i := range n {
		requests := new(atomic.Int64)
		lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("listen for HTTP backend %d: %w", i, err)
		}
		srv := newHTTPServer(&httpHandler{requests: requests, body: body})
		f.httpCalls = append(f.httpCalls, requests)
		f.httpSrvs = append(f.httpSrvs, srv)
		f.addrs.HTTP = append(f.addrs.HTTP, lis.Addr().String())
		f.serve(fmt.Sprintf("http-%d", i), func() error { return srv.Serve(lis) })
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("listen for backend admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /counts", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(f.Counts()); err != nil {
			logger.Warn("write counts", "err", err)
		}
	})
	f.adminSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	f.addrs.Admin = lis.Addr().String()
	f.serve("admin", func() error { return f.adminSrv.Serve(lis) })
	return f, nil
}

// newHTTPServer serves HTTP/1.1 and cleartext HTTP/2 with prior knowledge on
// one port, as the proxies' upstreams need.
func newHTTPServer(h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		// Load generators keep up to a few hundred streams in flight per
		// connection; Go's default of 250 would queue them at the backend and
		// blur what the proxy costs.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}
}

func (f *Fleet) serve(name string, run func() error) {
	f.serveGroup.Add(1)
	go func() {
		defer f.serveGroup.Done()
		if err := run(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			f.logger.Error("backend stopped serving", "backend", name, "err", err)
		}
	}()
}

// Addrs reports where the fleet listens.
func (f *Fleet) Addrs() Addresses { return f.addrs }

// Counts reports how many requests each instance has answered so far.
func (f *Fleet) Counts() Counts {
	var c Counts
	for _, s := range f.grpcCalls {
		c.GRPC = append(c.GRPC, s.Calls())
	}
	for _, n := range f.httpCalls {
		c.HTTP = append(c.HTTP, n.Load())
	}
	return c
}

// Close stops every instance at once (in-flight requests are cut: this is a
// benchmark target, not a service to drain) and waits for them to return.
func (f *Fleet) Close() {
	for _, s := range f.grpcSrvs {
		s.Stop()
	}
	for _, s := range f.httpSrvs {
		_ = s.Close()
	}
	if f.adminSrv != nil {
		_ = f.adminSrv.Close()
	}
	f.serveGroup.Wait()
}
