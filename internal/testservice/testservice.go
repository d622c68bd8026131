// Package testservice is the one gRPC backend of zonelb's tests, demos and
// benchmarks: the grpc.testing.TestService (from grpc-go's interop suite)
// answering with its own name and zone, after an optional service time,
// counting what it served. A user that must see more of each call (its
// deadline, its metadata, a sleep the test controls) observes it through
// the hooks in Options, so that the answering stays in one place.
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
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// DefaultMaxPayload bounds the payload a request may ask for when
// Options.MaxPayload is 0: the server's message size limit.
const DefaultMaxPayload = 16 << 20

// sharedPayload is how much of a zero buffer a Service allocates once and
// shares between its responses (read only: marshalling only reads it).
const sharedPayload = 1 << 20

// Options says how a Service answers.
type Options struct {
	// Name and Zone are answered in SimpleResponse's Hostname and ServerId.
	Name, Zone string
	// Delay is added to every unary call: its service time, or the extra
	// round trip of crossing a zone when emulated in the backend.
	Delay time.Duration
	// MaxPayload bounds the payload size a UnaryCall may ask for
	// (InvalidArgument beyond); 0: DefaultMaxPayload.
	MaxPayload int
	// OnCall, when set, runs at the start of every call with its context
	// (grpc.Method(ctx) names the method); an error ends the call with it.
	OnCall func(ctx context.Context) error
	// OnSend, when set, runs after each streaming response the server
	// sends, with the send's error.
	OnSend func(err error)
}

// Service is the TestService's implementation, for a grpc.Server of the
// caller's or for Start.
type Service struct {
	testgrpc.UnimplementedTestServiceServer
	o     Options
	zeros []byte
	calls atomic.Int64
}

// NewService returns a Service that answers as o says.
func NewService(o Options) *Service {
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	return &Service{o: o, zeros: make([]byte, min(o.MaxPayload, sharedPayload))}
}

// Name is the name the service answers with.
func (s *Service) Name() string { return s.o.Name }

// Zone is the zone the service answers with.
func (s *Service) Zone() string { return s.o.Zone }

// Calls is how many calls the service has answered or is answering (past
// OnCall and Delay).
func (s *Service) Calls() int64 { return s.calls.Load() }

// Server is one backend instance: a Service on its own listener.
type Server struct {
	*Service
	srv *grpc.Server
	lis net.Listener
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves a Service for o
// until Stop.
func Start(addr string, o Options) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend %s: listen on %s: %w", o.Name, addr, err)
	}
	s := &Server{Service: NewService(o), lis: l}
	s.srv = grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	testgrpc.RegisterTestServiceServer(s.srv, s.Service)
	go s.srv.Serve(l)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Stop closes the server and its connections at once.
func (s *Server) Stop() { s.srv.Stop() }

// GracefulStop stops accepting and waits for the calls in flight.
func (s *Server) GracefulStop() { s.srv.GracefulStop() }

// begin runs OnCall and, for unary calls, Delay.
func (s *Service) begin(ctx context.Context, unary bool) error {
	if s.o.OnCall != nil {
		if err := s.o.OnCall(ctx); err != nil {
			return err
		}
	}
	if unary && s.o.Delay > 0 {
		t := time.NewTimer(s.o.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.calls.Add(1)
	return nil
}

// payload is a zero body of size bytes.
func (s *Service) payload(size int32) ([]byte, error) {
	if size < 0 || int(size) > s.o.MaxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "response_size %d outside [0, %d]", size, s.o.MaxPayload)
	}
	if int(size) <= len(s.zeros) {
		return s.zeros[:size], nil
	}
	return make([]byte, size), nil
}

// sent reports a streaming send to OnSend.
func (s *Service) sent(err error) error {
	if s.o.OnSend != nil {
		s.o.OnSend(err)
	}
	return err
}

// requestedStatus is the error a request's response_status asks for, nil
// for none or OK.
func requestedStatus(st *testgrpc.EchoStatus) error {
	if st == nil || st.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(st.Code), st.Message)
}

// EmptyCall answers at once (after Delay).
func (s *Service) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	if err := s.begin(ctx, true); err != nil {
		return nil, err
	}
	return &testgrpc.Empty{}, nil
}

// UnaryCall answers with the service's name and zone and a payload of the
// requested size, or with the requested status.
func (s *Service) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := s.begin(ctx, true); err != nil {
		return nil, err
	}
	if err := requestedStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	body, err := s.payload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{Hostname: s.o.Name, ServerId: s.o.Zone, Payload: &testgrpc.Payload{Body: body}}, nil
}

// StreamingOutputCall sends one response per requested size, each after
// its interval (a paced stream, like a watch).
func (s *Service) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if err := s.begin(stream.Context(), false); err != nil {
		return err
	}
	for _, p := range req.GetResponseParameters() {
		if iv := p.GetIntervalUs(); iv > 0 {
			time.Sleep(time.Duration(iv) * time.Microsecond)
		}
		body, err := s.payload(p.GetSize())
		if err != nil {
			return err
		}
		if err := s.sent(stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}})); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall answers with the total payload size it received.
func (s *Service) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	if err := s.begin(stream.Context(), false); err != nil {
		return err
	}
	var total int
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(req.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each request with one response per requested
// size, or with the requested status.
func (s *Service) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	if err := s.begin(stream.Context(), false); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := requestedStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		for _, p := range req.GetResponseParameters() {
			body, err := s.payload(p.GetSize())
			if err != nil {
				return err
			}
			if err := s.sent(stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}})); err != nil {
				return err
			}
		}
	}
}
