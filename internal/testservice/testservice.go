// Package testservice is a gRPC backend for demos and end-to-end tests: the
// grpc.testing.TestService (from grpc-go's interop suite) answering with its
// own name, after an optional service time, counting what it served.
//
// It is test infrastructure, never part of the product's data path.
package testservice

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Server is one backend instance.
type Server struct {
	testgrpc.UnimplementedTestServiceServer
	Name string
	Zone string
	// Delay is added to every call: its service time, or the extra round
	// trip of crossing a zone when emulated in the backend.
	Delay time.Duration

	calls atomic.Int64
	srv   *grpc.Server
	lis   net.Listener
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves until Stop.
func Start(name, zone, addr string, delay time.Duration) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend %s: listen on %s: %w", name, addr, err)
	}
	s := &Server{Name: name, Zone: zone, Delay: delay, lis: l}
	s.srv = grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	testgrpc.RegisterTestServiceServer(s.srv, s)
	go s.srv.Serve(l)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Calls is how many calls the server has answered.
func (s *Server) Calls() int64 { return s.calls.Load() }

// Stop closes the server and its connections at once.
func (s *Server) Stop() { s.srv.Stop() }

func (s *Server) wait(ctx context.Context) error {
	if s.Delay <= 0 {
		return nil
	}
	t := time.NewTimer(s.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UnaryCall answers with the server's name and a payload of the requested
// size.
func (s *Server) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	s.calls.Add(1)
	return &testgrpc.SimpleResponse{
		Hostname: s.Name,
		ServerId: s.Zone,
		Payload:  &testgrpc.Payload{Body: make([]byte, req.GetResponseSize())},
	}, nil
}

// EmptyCall answers at once (after Delay).
func (s *Server) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	s.calls.Add(1)
	return &testgrpc.Empty{}, nil
}

// FullDuplexCall echoes one response per requested size, per request.
func (s *Server) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.calls.Add(1)
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range req.GetResponseParameters() {
			if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
				return err
			}
		}
	}
}
