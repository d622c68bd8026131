package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Workload is what a client pod does: unary calls to Target over one
// gRPC connection (or a new one every RedialEvery calls), at most
// Concurrency at a time, either as fast as answers come (Rate 0: closed
// loop) or started at Rate calls per second (open loop; a call due while
// every slot is busy is skipped and counted).
type Workload struct {
	Target        string   `json:"target"`
	Concurrency   int      `json:"concurrency"`
	Rate          float64  `json:"rate"`
	RequestBytes  int      `json:"requestBytes"`
	ResponseBytes int      `json:"responseBytes"`
	RedialEvery   int      `json:"redialEvery"`
	CallTimeout   Duration `json:"callTimeout"`
}

func (w Workload) withDefaults() Workload {
	if w.Target == "" {
		w.Target = ServiceVIP.String()
	}
	if w.Concurrency <= 0 {
		w.Concurrency = 4
	}
	if w.CallTimeout <= 0 {
		w.CallTimeout = Duration(5 * time.Second)
	}
	return w
}

type clientArgs struct {
	Workload Workload `json:"workload"`
	// Self is the pod's own address: a backend that saw it was called
	// directly.
	Self string `json:"self"`
}

// clientMsg is one line of a client helper's stdout.
type clientMsg struct {
	Ready  bool    `json:"ready,omitempty"`
	Window *Window `json:"window,omitempty"`
}

// conn is one client connection and the calls it may still carry.
type conn struct {
	cc       *grpc.ClientConn
	client   testgrpc.TestServiceClient
	uses     int
	inflight sync.WaitGroup
}

// clientState is the client helper's shared state.
type clientState struct {
	args  clientArgs
	dials atomic.Int64

	mu     sync.Mutex
	win    *Window
	cur    *conn
	closed sync.WaitGroup // connections being retired
}

func (s *clientState) newConn() (*conn, error) {
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		s.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp4", addr)
	}
	cc, err := grpc.NewClient("passthrough:///"+s.args.Workload.Target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer))
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", s.args.Workload.Target, err)
	}
	return &conn{cc: cc, client: testgrpc.NewTestServiceClient(cc)}, nil
}

// acquire returns the connection for the next call, opening a new one
// (and retiring the old one once its calls end) every RedialEvery calls.
func (s *clientState) acquire() (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || (s.args.Workload.RedialEvery > 0 && s.cur.uses >= s.args.Workload.RedialEvery) {
		next, err := s.newConn()
		if err != nil {
			return nil, err
		}
		if old := s.cur; old != nil {
			s.closed.Add(1)
			go func() {
				defer s.closed.Done()
				old.inflight.Wait()
				old.cc.Close()
			}()
		}
		s.cur = next
	}
	s.cur.uses++
	s.cur.inflight.Add(1)
	return s.cur, nil
}

// call makes one call and records it.
func (s *clientState) call(ctx context.Context) {
	w := s.args.Workload
	c, err := s.acquire()
	start := time.Now()
	if err != nil {
		s.record(start, nil, "", err)
		return
	}
	defer c.inflight.Done()
	cctx, cancel := context.WithTimeout(ctx, time.Duration(w.CallTimeout))
	defer cancel()
	var hdr metadata.MD
	resp, err := c.client.UnaryCall(cctx, &testgrpc.SimpleRequest{
		ResponseSize: int32(w.ResponseBytes),
		Payload:      &testgrpc.Payload{Body: make([]byte, w.RequestBytes)},
	}, grpc.Header(&hdr))
	peer := ""
	if v := hdr.Get(PeerHeader); len(v) > 0 {
		peer = v[0]
	}
	if err != nil && ctx.Err() != nil {
		return // the client is stopping: not the service's failure
	}
	s.record(start, resp, peer, err)
}

func (s *clientState) record(start time.Time, resp *testgrpc.SimpleResponse, peer string, err error) {
	lat := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.win
	if err != nil {
		w.Failed++
		if len(w.Failures) < maxFailures {
			st := status.Convert(err)
			w.Failures = append(w.Failures, Failure{Start: start.UnixNano(), Code: st.Code().String(), Msg: st.Message()})
		}
		return
	}
	w.OK++
	w.ByBackend[resp.GetHostname()]++
	w.ByZone[resp.GetServerId()]++
	w.BytesByZone[resp.GetServerId()] += int64(s.args.Workload.RequestBytes + len(resp.GetPayload().GetBody()))
	if peer != s.args.Self {
		w.ViaProxy++
	}
	w.LatenciesUS = append(w.LatenciesUS, lat.Microseconds())
}

// snapshot closes the current window and opens the next.
func (s *clientState) snapshot() *Window {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.win
	w.End = now.UnixNano()
	w.Dials = int(s.dials.Swap(0))
	s.win = newWindow(now)
	return w
}

// runClient is the client helper. It prints {"ready":true}, then obeys
// commands on stdin: "go" starts the calls, "snap" prints the window since
// the last snapshot, "stop" stops calling, waits for calls in flight and
// prints the last window, then exits.
func runClient(ctx context.Context, raw []byte) error {
	var args clientArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("args: %w", err)
	}
	args.Workload = args.Workload.withDefaults()
	s := &clientState{args: args, win: newWindow(time.Now())}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(clientMsg{Ready: true}); err != nil {
		return err
	}

	runCtx, stopCalls := context.WithCancel(ctx)
	defer stopCalls()
	var workers sync.WaitGroup
	started := false
	finish := func() error {
		stopCalls()
		workers.Wait()
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		if cur != nil {
			cur.cc.Close()
		}
		s.closed.Wait()
		return out.Encode(clientMsg{Window: s.snapshot()})
	}

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return finish()
		case line, ok := <-lines:
			if !ok {
				return finish()
			}
			switch line {
			case "go":
				if !started {
					started = true
					s.startCalls(runCtx, &workers)
				}
			case "snap":
				if err := out.Encode(clientMsg{Window: s.snapshot()}); err != nil {
					return err
				}
			case "stop":
				return finish()
			default:
				fmt.Fprintf(os.Stderr, "client: unknown command %q\n", line)
			}
		}
	}
}

// startCalls starts the workload's callers (paced when it has a rate);
// they run until ctx ends and are counted in workers.
func (s *clientState) startCalls(ctx context.Context, workers *sync.WaitGroup) {
	w := s.args.Workload
	var tokens chan struct{}
	if w.Rate > 0 {
		tokens = make(chan struct{}, w.Concurrency)
		go pace(ctx, w.Rate, tokens, func() {
			s.mu.Lock()
			s.win.Skipped++
			s.mu.Unlock()
		})
	}
	for range w.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for ctx.Err() == nil {
				if tokens != nil {
					select {
					case <-tokens:
					case <-ctx.Done():
						return
					}
				}
				s.call(ctx)
			}
		}()
	}
}

// pace offers one token per 1/rate seconds; a token nobody takes in time
// (every call slot busy) is dropped and counted by skipped.
func pace(ctx context.Context, rate float64, tokens chan<- struct{}, skipped func()) {
	interval := time.Duration(float64(time.Second) / rate)
	tick := max(interval, time.Millisecond) // coarser ticks issue several calls each
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	issued := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int(now.Sub(start) / interval)
			for ; issued < due; issued++ {
				select {
				case tokens <- struct{}{}:
				default:
					skipped()
				}
			}
		}
	}
}
