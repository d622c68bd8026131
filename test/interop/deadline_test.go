package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zonelb/zonelb/internal/testservice"
)

// The interop server cannot show what grpc-timeout reached it (grpc-go
// hides the header) nor how its context ended, so these tests put small
// in-process servers of their own behind the proxy: grpc-go's server
// mounted on net/http's cleartext HTTP/2 (Server.ServeHTTP), with a wrapper
// that sees the raw header first.

const (
	// callIDHeader tags a call so the test can find its observation.
	callIDHeader = "x-zonelb-call-id"
	// ignoreTimeoutHeader makes the observer drop grpc-timeout before the
	// gRPC server sees it: the server then has no deadline of its own, and
	// only a cancellation relayed by the proxy can end a sleeping call.
	ignoreTimeoutHeader = "x-zonelb-ignore-timeout"
	// sleepBound ends a sleeping call that nothing cancelled, so that a
	// broken proxy fails the test instead of hanging it.
	sleepBound = 30 * time.Second
	// settleBound is how long a test waits for a server to report.
	settleBound = 20 * time.Second
)

// observation is what an observer's handler saw of one call.
type observation struct {
	CallID string
	// GRPCTimeout is the grpc-timeout header as it arrived, "" if none.
	GRPCTimeout string
	// HasDeadline and Remaining describe the handler's context when the
	// handler started.
	HasDeadline bool
	Remaining   time.Duration
	// Ended is how the sleeping handler's wait ended: its context's error,
	// or errSleptOut if nothing cancelled it. Nil for EmptyCall.
	Ended error
}

var errSleptOut = errors.New("slept the full bound without being cancelled")

type rawTimeoutKey struct{}

// observer watches the calls of a testservice.Service (its OnCall hook):
// an EmptyCall records its deadline; a UnaryCall also sleeps until its
// context ends and records how.
type observer struct {
	now     func() time.Time
	seen    chan observation
	dropped atomic.Int64
	calls   atomic.Int64 // for newCallID
}

func (o *observer) observe(ctx context.Context) observation {
	var ob observation
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(callIDHeader); len(v) > 0 {
			ob.CallID = v[0]
		}
	}
	ob.GRPCTimeout, _ = ctx.Value(rawTimeoutKey{}).(string)
	if dl, ok := ctx.Deadline(); ok {
		ob.HasDeadline, ob.Remaining = true, dl.Sub(o.now())
	}
	return ob
}

func (o *observer) report(ob observation) {
	select {
	case o.seen <- ob:
	default:
		o.dropped.Add(1)
	}
}

// onCall is the service's hook: a UnaryCall that nothing cancels sleeps
// out the bound and is answered; one whose context ends fails with it.
func (o *observer) onCall(ctx context.Context) error {
	ob := o.observe(ctx)
	if m, _ := grpc.Method(ctx); m != testgrpc.TestService_UnaryCall_FullMethodName {
		o.report(ob)
		return nil
	}
	bound := time.NewTimer(sleepBound)
	defer bound.Stop()
	select {
	case <-ctx.Done():
		ob.Ended = ctx.Err()
	case <-bound.C:
		ob.Ended = errSleptOut
	}
	o.report(ob)
	if ob.Ended == errSleptOut {
		return nil
	}
	return status.FromContextError(ob.Ended).Err()
}

// await returns the observation of call id, failing the test if none comes
// within settleBound.
func (o *observer) await(t *testing.T, id string) observation {
	t.Helper()
	timer := time.NewTimer(settleBound)
	defer timer.Stop()
	for {
		select {
		case ob := <-o.seen:
			if ob.CallID == id {
				return ob
			}
		case <-timer.C:
			t.Fatalf("no server reported call %s within %v (%d reports dropped)", id, settleBound, o.dropped.Load())
		}
	}
}

// startObservers starts n loopback servers sharing one observer and
// returns it with their addresses; they stop in t.Cleanup.
func startObservers(t *testing.T, n int) (*observer, []string) {
	t.Helper()
	o := &observer{now: time.Now, seen: make(chan observation, 256)}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, testservice.NewService(testservice.Options{OnCall: o.onCall}))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := r.Header.Get("Grpc-Timeout")
		if r.Header.Get(ignoreTimeoutHeader) != "" {
			r.Header.Del("Grpc-Timeout")
		}
		gs.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), rawTimeoutKey{}, raw)))
	})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	var addrs []string
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen for observer: %v", err)
		}
		srv := &http.Server{Handler: handler, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("observer on %s: %v", lis.Addr(), err)
			}
		}()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		addrs = append(addrs, lis.Addr().String())
	}
	t.Cleanup(gs.Stop)
	return o, addrs
}

// deadlineTarget starts three observers and, unless direct, a proxy in
// front of them; it returns the address to call.
func deadlineTarget(t *testing.T) (*observer, string, bool) {
	t.Helper()
	set := testSettings(t)
	zones := Zones()
	o, addrs := startObservers(t, len(zones))
	var eps []Endpoint
	for i, a := range addrs {
		eps = append(eps, Endpoint{Zone: zones[i], Addr: a})
	}
	p := StartProxyFor(t, testLogger(t), set, eps)
	if p == nil {
		return o, addrs[0], false
	}
	return o, p.Addr, true
}

func testServiceClient(t *testing.T, addr string) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// newCallID names a call uniquely among those this observer sees.
func (o *observer) newCallID(t *testing.T) string {
	return fmt.Sprintf("%s-%d", t.Name(), o.calls.Add(1))
}

// TestGRPCTimeoutPropagated checks that a call with a deadline reaches the
// server with a grpc-timeout no larger than the client's, and that the
// server's context carries a deadline.
func TestGRPCTimeoutPropagated(t *testing.T) {
	o, addr, _ := deadlineTarget(t)
	tc := testServiceClient(t, addr)
	const clientTimeout = 10 * time.Second
	// Several calls, so that with a balancing proxy more than one
	// endpoint (and upstream connection) is likely exercised.
	for range 6 {
		id := o.newCallID(t)
		ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
		ctx = metadata.AppendToOutgoingContext(ctx, callIDHeader, id)
		_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
		cancel()
		if err != nil {
			t.Fatalf("EmptyCall with a %v deadline: %v", clientTimeout, err)
		}
		ob := o.await(t, id)
		got, err := parseGRPCTimeout(ob.GRPCTimeout)
		if err != nil {
			t.Fatalf("grpc-timeout at the server: %v", err)
		}
		if got <= 0 || got > clientTimeout {
			t.Errorf("grpc-timeout at the server = %q (%v), want in (0, %v]", ob.GRPCTimeout, got, clientTimeout)
		}
		t.Logf("client deadline %v; server got grpc-timeout %s, its context deadline %v away", clientTimeout, ob.GRPCTimeout, ob.Remaining.Round(time.Microsecond))
		if !ob.HasDeadline {
			t.Errorf("server context has no deadline (grpc-timeout %q)", ob.GRPCTimeout)
		} else if ob.Remaining > clientTimeout {
			t.Errorf("server deadline %v away, more than the client's %v", ob.Remaining, clientTimeout)
		}
	}
}

// TestGRPCTimeoutDecremented checks that the proxy takes the time a call
// spent in it off grpc-timeout. The client sends the largest value in
// nanoseconds, so any time spent shows in the forwarded value.
func TestGRPCTimeoutDecremented(t *testing.T) {
	o, addr, proxied := deadlineTarget(t)
	if !proxied {
		t.Skip("direct mode: nothing in between to take time off")
	}
	const sent = "99999999n" // about 100 ms
	// A 100 ms deadline can expire on a loaded machine before the server
	// answers; that attempt tells nothing, so try again a bounded number
	// of times.
	for attempt := 1; ; attempt++ {
		id := o.newCallID(t)
		st, _ := rawCall(t, addr, "EmptyCall", sent, id, false)
		if st == strconv.Itoa(int(codes.DeadlineExceeded)) && attempt < 5 {
			continue
		}
		if st != "0" {
			t.Fatalf("EmptyCall with grpc-timeout %s: grpc-status %q, want 0", sent, st)
		}
		ob := o.await(t, id)
		got, err := parseGRPCTimeout(ob.GRPCTimeout)
		if err != nil {
			t.Fatalf("grpc-timeout at the server: %v", err)
		}
		want, _ := parseGRPCTimeout(sent)
		t.Logf("client sent grpc-timeout %s, server got %s", sent, ob.GRPCTimeout)
		if got <= 0 || got >= want {
			t.Errorf("grpc-timeout at the server = %q, want below the %q the client sent (the proxy must take its own time off)", ob.GRPCTimeout, sent)
		}
		return
	}
}

// TestDeadlineExpiresWhileServerSleeps checks that a call whose deadline
// passes while the server works ends with DEADLINE_EXCEEDED and that the
// server's context ends. With the server ignoring grpc-timeout, only the
// cancellation relayed by the proxy can end it.
func TestDeadlineExpiresWhileServerSleeps(t *testing.T) {
	o, addr, _ := deadlineTarget(t)
	tc := testServiceClient(t, addr)
	for _, tt := range []struct {
		name          string
		ignoreTimeout bool
	}{
		{"server honours grpc-timeout", false},
		{"server ignores grpc-timeout", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := o.newCallID(t)
			md := []string{callIDHeader, id}
			if tt.ignoreTimeout {
				md = append(md, ignoreTimeoutHeader, "1")
			}
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
			_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("UnaryCall on a sleeping server: %v, want DEADLINE_EXCEEDED", err)
			}
			ob := o.await(t, id)
			switch {
			case ob.Ended == errSleptOut:
				t.Fatalf("server context was never cancelled (slept the full %v)", sleepBound)
			case tt.ignoreTimeout && !errors.Is(ob.Ended, context.Canceled):
				t.Errorf("server context ended with %v, want context.Canceled (the relayed cancellation)", ob.Ended)
			}
		})
	}
}

// TestProxyAnswersExpiredDeadline sends a call with grpc-timeout from a
// client that does not enforce it itself, to a server that ignores it: only
// the proxy can answer DEADLINE_EXCEEDED, and it must cancel the upstream
// stream.
func TestProxyAnswersExpiredDeadline(t *testing.T) {
	o, addr, proxied := deadlineTarget(t)
	if !proxied {
		t.Skip("direct mode: no proxy to enforce the deadline")
	}
	id := o.newCallID(t)
	st, msg := rawCall(t, addr, "UnaryCall", "300m", id, true)
	if st != strconv.Itoa(int(codes.DeadlineExceeded)) {
		t.Fatalf("call with grpc-timeout 300m on a sleeping server: grpc-status %q (%q), want %d (DEADLINE_EXCEEDED)", st, msg, codes.DeadlineExceeded)
	}
	ob := o.await(t, id)
	if !errors.Is(ob.Ended, context.Canceled) {
		t.Errorf("server context ended with %v, want context.Canceled: the proxy must cancel the upstream stream", ob.Ended)
	}
}

// rawCall makes a unary TestService call over cleartext HTTP/2 with
// net/http, which, unlike a gRPC client, does not enforce grpc-timeout
// itself. It returns grpc-status and grpc-message (from trailers, or from
// headers of a trailers-only response).
func rawCall(t *testing.T, addr, method, grpcTimeout, id string, ignoreTimeout bool) (string, string) {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols, Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	// The client's own bound, far above the deadline under test.
	ctx, cancel := context.WithTimeout(t.Context(), settleBound)
	defer cancel()
	// An empty message: uncompressed flag and zero length.
	frame := []byte{0, 0, 0, 0, 0}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.testing.TestService/"+method, bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", grpcTimeout)
	req.Header.Set(callIDHeader, id)
	if ignoreTimeout {
		req.Header.Set(ignoreTimeoutHeader, "1")
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s via %s with grpc-timeout %s: no answer within %v: %v", method, addr, grpcTimeout, settleBound, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s via %s: read response: %v", method, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s via %s: HTTP %s", method, addr, resp.Status)
	}
	if st := resp.Header.Get("Grpc-Status"); st != "" {
		return st, resp.Header.Get("Grpc-Message")
	}
	return resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
}

// parseGRPCTimeout decodes a grpc-timeout value: 1 to 8 digits and a unit
// (gRPC over HTTP/2, "Timeout").
func parseGRPCTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("grpc-timeout %q: want 1 to 8 digits and a unit", v)
	}
	n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("grpc-timeout %q: %w", v, err)
	}
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	unit, ok := units[v[len(v)-1]]
	if !ok {
		return 0, fmt.Errorf("grpc-timeout %q: unknown unit", v)
	}
	return time.Duration(n) * unit, nil
}
