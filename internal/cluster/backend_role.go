package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/zonelb/zonelb/internal/duration"
	"github.com/zonelb/zonelb/internal/testservice"
)

// CallHeader is the request metadata key carrying each call's unique id
// (client pod, process, sequence number). Backends log every id they
// receive (Cluster.Received), so a test can tell a failed call that never
// reached a backend (a retry could have saved it) from one that did.
const CallHeader = "x-zonelb-e2e-call"

// PeerHeader is the response header in which a backend names the address
// it saw the call come from: the client pod's own address when the call
// came straight (kube-proxy DNAT does not change the source), a node
// address when zonelb's node proxy forwarded it.
const PeerHeader = "x-zonelb-e2e-peer"

// BackendLoad is a backend's service model: Capacity calls at a time, each
// taking ServiceTime; the rest wait. Capacity 0 means no limit.
type BackendLoad struct {
	ServiceTime Duration `json:"serviceTime"`
	Capacity    int      `json:"capacity"`
}

// backendArgs is what the backend helper is started with.
type backendArgs struct {
	Name   string `json:"name"`
	Zone   string `json:"zone"`
	Listen string `json:"listen"`
	Load   BackendLoad
	// CrossZoneDelay is added to calls from callers in other zones,
	// whose zone is found by matching their address to ZoneOf.
	CrossZoneDelay Duration                `json:"crossZoneDelay"`
	ZoneOf         map[netip.Prefix]string `json:"zoneOf"`
	// DrainTimeout bounds the graceful stop on SIGTERM.
	DrainTimeout Duration `json:"drainTimeout"`
	// ReceivedLog is the file (opened for appending) to which the backend
	// writes the CallHeader id of every call it receives, one line each.
	ReceivedLog string `json:"receivedLog"`
}

// Duration is a time.Duration written as "10ms" in JSON.
type Duration = duration.Duration

// slots is a counting semaphore whose size can change while calls wait.
type slots struct {
	mu    sync.Mutex
	cond  *sync.Cond
	busy  int
	size  int // 0: unlimited
	serve time.Duration
}

func newSlots(l BackendLoad) *slots {
	s := &slots{size: l.Capacity, serve: time.Duration(l.ServiceTime)}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *slots) set(l BackendLoad) {
	s.mu.Lock()
	s.size, s.serve = l.Capacity, time.Duration(l.ServiceTime)
	s.mu.Unlock()
	s.cond.Broadcast()
}

// serveCall waits for a slot, holds it for the service time, and
// releases it. A call whose context ends while it waits gives up.
func (s *slots) serveCall(ctx context.Context) error {
	// Under the lock, so that a waiter is either before its check of ctx
	// or inside Wait: the wake-up cannot fall in between.
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for s.size > 0 && s.busy >= s.size && ctx.Err() == nil {
		s.cond.Wait()
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.busy++
	serve := s.serve
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.busy--
		s.mu.Unlock()
		s.cond.Signal()
	}()
	return SleepCtx(ctx, serve)
}

// SleepCtx waits for d or until ctx ends, whichever comes first; it
// reports ctx's error in the second case.
func SleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backendInterceptor logs each call's id to received (if any), applies
// the cross-zone delay to callers from other zones and the service model
// (load), and reports the caller's address in a header.
func backendInterceptor(args backendArgs, load *slots, received *os.File) grpc.UnaryServerInterceptor {
	zoneOf := func(a netip.Addr) string {
		for p, z := range args.ZoneOf {
			if p.Contains(a) {
				return z
			}
		}
		return ""
	}
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		// First thing, in one write(2) on an unbuffered file: the line is
		// in the kernel before the call does anything, and a SIGKILL
		// cannot leave half of it. A call is "received" once the server
		// has handed it to the application, here.
		if md, ok := metadata.FromIncomingContext(ctx); ok && received != nil {
			if id := md.Get(CallHeader); len(id) > 0 {
				if _, err := received.WriteString(id[0] + "\n"); err != nil {
					return nil, status.Errorf(codes.Internal, "backend %s: log call: %v", args.Name, err)
				}
			}
		}
		var from netip.Addr
		if p, ok := peer.FromContext(ctx); ok {
			if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
				from = ap.Addr().Unmap()
			}
		}
		// The extra round trip of crossing a zone is paid on the way in;
		// it is network time, so it holds no service slot.
		if z := zoneOf(from); z != "" && z != args.Zone {
			if err := SleepCtx(ctx, time.Duration(args.CrossZoneDelay)); err != nil {
				return nil, err
			}
		}
		if err := load.serveCall(ctx); err != nil {
			return nil, err
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs(PeerHeader, from.String()))
		return handler(ctx, req)
	}
}

// runBackend is the backend helper: grpc.testing.TestService (package
// internal/testservice answers with the backend's name and zone) behind
// an interceptor that applies the cross-zone delay and the service model,
// and reports the caller's address. Commands on stdin (one JSON
// BackendLoad per line) change the load; SIGTERM stops it gracefully.
func runBackend(ctx context.Context, raw []byte) error {
	var args backendArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("args: %w", err)
	}
	load := newSlots(args.Load)
	var received *os.File
	if args.ReceivedLog != "" {
		f, err := os.OpenFile(args.ReceivedLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("received log: %w", err)
		}
		defer f.Close()
		received = f
	}
	intercept := backendInterceptor(args, load, received)
	srv := grpc.NewServer(grpc.UnaryInterceptor(intercept))
	testgrpc.RegisterTestServiceServer(srv, testservice.NewService(testservice.Options{Name: args.Name, Zone: args.Zone}))
	l, err := net.Listen("tcp4", args.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", args.Listen, err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			var l BackendLoad
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				fmt.Fprintf(os.Stderr, "backend %s: bad command %q: %v\n", args.Name, sc.Text(), err)
				continue
			}
			load.set(l)
			fmt.Println(`{"applied":true}`)
		}
	}()
	fmt.Println(`{"ready":true}`)

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	// As a pod being deleted: GOAWAY to every client, finish the calls in
	// flight, refuse new connections (the listener is closed at once).
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Duration(args.DrainTimeout)):
		srv.Stop()
	}
	return nil
}
