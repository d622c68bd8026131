// Command testpod is the program in the real node's test images (package
// internal/kubenode): the pod sandbox's pause process, a gRPC backend that
// says who it is and whom it saw, and a gRPC client that a test drives over
// HTTP. Static, on an empty base image.
//
//	testpod pause     block until SIGTERM (the sandbox image's entrypoint)
//	testpod backend   grpc.testing.TestService on :50051; every answer names
//	                  the pod (Hostname), its zone (ServerId) and, in the
//	                  x-peer response header, the address the call came from;
//	                  HTTP on :8080: GET /received, the ids of every call it
//	                  received (so a test can tell a failed call that never
//	                  reached a backend: one a retry could have saved)
//	testpod client    one long-lived gRPC connection to $TARGET; HTTP on :8080:
//	                  GET /calls?n=N  N sequential unary calls, as JSON
//	                  POST /load/start, POST /load/stop  calls in a loop
//	                  until stopped, then the totals and failures as JSON;
//	                  every call carries an id (header x-zonelb-call-id)
//
// It is test infrastructure, never part of the product.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/zonelb/zonelb/internal/kubenode/testpodapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testpod pause|backend|client")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "pause":
		<-ctx.Done()
	case "backend":
		err = backend(ctx)
	case "client":
		err = client(ctx)
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testpod:", err)
		os.Exit(1)
	}
}

type server struct {
	testgrpc.UnimplementedTestServiceServer
	name, zone string

	mu       sync.Mutex
	received []string // ids of the calls received, in order
}

func (s *server) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	// Recorded first: the call has reached this backend once gRPC hands it
	// to the application, whatever happens to its answer.
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if id := md.Get(testpodapi.CallIDHeader); len(id) > 0 {
			s.mu.Lock()
			s.received = append(s.received, id[0])
			s.mu.Unlock()
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-peer", p.Addr.String()))
	}
	return &testgrpc.SimpleResponse{Hostname: s.name, ServerId: s.zone}, nil
}

func backend(ctx context.Context) error {
	l, err := net.Listen("tcp", ":50051")
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	s := &server{name: os.Getenv("POD_NAME"), zone: os.Getenv("ZONE")}
	testgrpc.RegisterTestServiceServer(srv, s)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ids := slices.Clone(s.received)
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(ids)
	})
	hs := &http.Server{Addr: ":8080", Handler: mux}
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
		_ = hs.Close()
	}()
	errc := make(chan error, 1)
	go func() {
		if err := hs.ListenAndServe(); err != http.ErrServerClosed {
			errc <- err
		}
	}()
	if err := srv.Serve(l); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

type clientState struct {
	c    testgrpc.TestServiceClient
	name string
	seq  atomic.Uint64

	mu      sync.Mutex
	load    *testpodapi.Load
	stopped chan struct{}
	done    chan struct{}
}

func (s *clientState) call(ctx context.Context) (testpodapi.Call, string) {
	id := fmt.Sprintf("%s-%d", s.name, s.seq.Add(1))
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, testpodapi.CallIDHeader, id), 10*time.Second)
	defer cancel()
	var md metadata.MD
	var p peer.Peer
	// Wait for a ready connection rather than fail while it reconnects
	// (after a GOAWAY): the caller's retry, done by grpc-go.
	resp, err := s.c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md), grpc.Peer(&p), grpc.WaitForReady(true))
	var local string
	if p.LocalAddr != nil {
		local = p.LocalAddr.String()
	}
	if err != nil {
		return testpodapi.Call{Err: err.Error(), Conn: local}, id
	}
	c := testpodapi.Call{Backend: resp.GetHostname(), Zone: resp.GetServerId(), Conn: local}
	if v := md.Get("x-peer"); len(v) > 0 {
		c.Peer = v[0]
	}
	return c, id
}

func client(ctx context.Context) error {
	target := os.Getenv("TARGET")
	cc, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	cc.Connect()
	name, _ := os.Hostname()
	s := &clientState{c: testgrpc.NewTestServiceClient(cc), name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		n = max(1, min(n, 10000))
		calls := make([]testpodapi.Call, 0, n)
		for range n {
			c, _ := s.call(r.Context())
			calls = append(calls, c)
		}
		_ = json.NewEncoder(w).Encode(calls)
	})
	mux.HandleFunc("POST /load/start", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.load != nil {
			http.Error(w, "already running", http.StatusConflict)
			return
		}
		s.load = &testpodapi.Load{Backends: map[string]int{}, Peers: map[string]int{}, Conns: map[string]int64{}}
		s.stopped, s.done = make(chan struct{}), make(chan struct{})
		go s.loop(ctx, s.load, s.stopped, s.done)
	})
	mux.HandleFunc("POST /load/stop", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		l, stopped, done := s.load, s.stopped, s.done
		s.load = nil
		s.mu.Unlock()
		if l == nil {
			http.Error(w, "not running", http.StatusConflict)
			return
		}
		close(stopped)
		<-done
		_ = json.NewEncoder(w).Encode(l)
	})
	srv := &http.Server{Addr: ":8080", Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// loop makes calls one after another, 5ms apart, until stopped.
func (s *clientState) loop(ctx context.Context, l *testpodapi.Load, stopped, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stopped:
			return
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		start := time.Now()
		c, id := s.call(ctx)
		if c.Err != "" {
			l.Failed++
			if len(l.Errors) < 20 {
				l.Errors = append(l.Errors, time.Now().UTC().Format(time.RFC3339Nano)+" "+c.Err)
			}
			if len(l.Failures) < testpodapi.MaxFailures {
				l.Failures = append(l.Failures, testpodapi.Failure{ID: id, Start: start.UnixNano(), Conn: c.Conn, Err: c.Err})
			}
			continue
		}
		l.OK++
		if _, ok := l.Conns[c.Conn]; !ok && c.Conn != "" {
			l.Conns[c.Conn] = time.Now().UnixNano()
		}
		l.Backends[c.Backend]++
		l.Peers[c.Peer]++
	}
}
