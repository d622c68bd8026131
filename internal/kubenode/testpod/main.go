// Command testpod is the program in the real node's test images (package
// internal/kubenode): the pod sandbox's pause process, a gRPC backend that
// says who it is and whom it saw, and a gRPC client that a test drives over
// HTTP. Static, on an empty base image.
//
//	testpod pause     block until SIGTERM (the sandbox image's entrypoint)
//	testpod backend   grpc.testing.TestService on :50051; every answer names
//	                  the pod (Hostname), its zone (ServerId) and, in the
//	                  x-peer response header, the address the call came from
//	testpod client    one long-lived gRPC connection to $TARGET; HTTP on :8080:
//	                  GET /calls?n=N  N sequential unary calls, as JSON
//	                  POST /load/start, POST /load/stop  calls in a loop
//	                  until stopped, then the totals and errors as JSON
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
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
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
}

func (s *server) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
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
	testgrpc.RegisterTestServiceServer(srv, &server{name: os.Getenv("POD_NAME"), zone: os.Getenv("ZONE")})
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	return srv.Serve(l)
}

// Call is one call's outcome.
type Call struct {
	Backend string `json:"backend,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Peer    string `json:"peer,omitempty"`
	Err     string `json:"err,omitempty"`
}

// Load is the outcome of a load run.
type Load struct {
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Errors   []string       `json:"errors,omitempty"`
	Backends map[string]int `json:"backends"`
	Peers    map[string]int `json:"peers"`
}

type clientState struct {
	c testgrpc.TestServiceClient

	mu      sync.Mutex
	load    *Load
	stopped chan struct{}
	done    chan struct{}
}

func (s *clientState) call(ctx context.Context) Call {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var md metadata.MD
	// Wait for a ready connection rather than fail while it reconnects
	// (after a GOAWAY): the caller's retry, done by grpc-go.
	resp, err := s.c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md), grpc.WaitForReady(true))
	if err != nil {
		return Call{Err: err.Error()}
	}
	c := Call{Backend: resp.GetHostname(), Zone: resp.GetServerId()}
	if v := md.Get("x-peer"); len(v) > 0 {
		c.Peer = v[0]
	}
	return c
}

func client(ctx context.Context) error {
	target := os.Getenv("TARGET")
	cc, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	cc.Connect()
	s := &clientState{c: testgrpc.NewTestServiceClient(cc)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		n = max(1, min(n, 10000))
		calls := make([]Call, 0, n)
		for range n {
			calls = append(calls, s.call(r.Context()))
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
		s.load = &Load{Backends: map[string]int{}, Peers: map[string]int{}}
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
func (s *clientState) loop(ctx context.Context, l *Load, stopped, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stopped:
			return
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		c := s.call(ctx)
		if c.Err != "" {
			l.Failed++
			if len(l.Errors) < 20 {
				l.Errors = append(l.Errors, time.Now().UTC().Format(time.RFC3339Nano)+" "+c.Err)
			}
			continue
		}
		l.OK++
		l.Backends[c.Backend]++
		l.Peers[c.Peer]++
	}
}
