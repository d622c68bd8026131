package main

// The loopback demo (--loopback): no root, no namespaces, no BPF. gRPC
// backends on 127.0.0.1 in three zones, one client connection, and how its
// calls spread under a per-connection L4 balancer versus `zonelb proxy`,
// which balances every call on its own. Kept for machines where the mini
// cluster cannot run.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/zonelb/zonelb/internal/proxycmd"
	"github.com/zonelb/zonelb/internal/testservice"
)

// loopbackOptions are the loopback demo's settings.
type loopbackOptions struct {
	bin         *string
	calls       *int
	concurrency *int
	crossZone   *time.Duration
	service     *time.Duration
	seed        *uint64
}

func loopbackFlags(fs *flag.FlagSet, bin *string, crossZone *time.Duration) loopbackOptions {
	return loopbackOptions{
		bin:         bin,
		crossZone:   crossZone,
		calls:       fs.Int("loopback-calls", 3000, "loopback demo: unary calls per run"),
		concurrency: fs.Int("loopback-concurrency", 16, "loopback demo: calls in flight at once"),
		service:     fs.Duration("loopback-service-time", time.Millisecond, "loopback demo: service time of every backend"),
		seed:        fs.Uint64("loopback-seed", uint64(time.Now().UnixNano()), "loopback demo: seed for the L4 balancer's random choice"),
	}
}

func runLoopback(ctx context.Context, o loopbackOptions) error {
	bin, calls, concurrency, crossZone, service, seed := o.bin, o.calls, o.concurrency, o.crossZone, o.service, o.seed

	const clientZone = "zone-a"
	var backends []*testservice.Server
	var eps []proxycmd.Endpoint // the backends, for the proxy's --to flags
	defer func() {
		for _, b := range backends {
			b.Stop()
		}
	}()
	for _, z := range []string{"zone-a", "zone-b", "zone-c"} {
		for i := 1; i <= 2; i++ {
			delay := *service
			if z != clientZone {
				delay += *crossZone
			}
			b, err := testservice.Start("127.0.0.1:0", testservice.Options{Name: fmt.Sprintf("%c%d", z[5], i), Zone: z, Delay: delay})
			if err != nil {
				return err
			}
			backends = append(backends, b)
			eps = append(eps, proxycmd.Endpoint{Zone: z, Addr: b.Addr()})
		}
	}

	fmt.Printf("zonelb demo: %d gRPC backends on 127.0.0.1 in 3 zones; the client is in %s.\n", len(backends), clientZone)
	fmt.Printf("Service time %v; crossing a zone adds %v, emulated inside the backends (no netem here).\n", *service, *crossZone)
	fmt.Printf("%d unary calls over ONE client connection, %d in flight.\n\n", *calls, *concurrency)

	// Per-connection L4: the connection goes to one backend chosen at
	// random, as kube-proxy's iptables rules do, and every call follows it.
	rng := rand.New(rand.NewPCG(*seed, 0))
	pinned := backends[rng.IntN(len(backends))]
	l4, err := loadLoopback(ctx, "per-connection L4", pinned.Addr(), *calls, *concurrency)
	if err != nil {
		return err
	}

	p, err := proxycmd.StartInFront(ctx, *bin, clientZone, "demo", eps)
	if err != nil {
		return err
	}
	defer p.Stop(5 * time.Second)
	addr := p.Addr
	// A fresh balancer first probes the other zones to learn their latency
	// (docs/zone-balancing.md): warm it up, then measure.
	warm := time.Now()
	for time.Since(warm) < 3*time.Second && ctx.Err() == nil {
		if _, err := loadLoopback(ctx, "zonelb warm-up", addr, 500, *concurrency); err != nil {
			return err
		}
	}
	fmt.Printf("zonelb warmed up for 3s first (its balancer learns the other zones' latency); its column is after that.\n\n")
	zl, err := loadLoopback(ctx, "zonelb", addr, *calls, *concurrency)
	if err != nil {
		return err
	}

	printLoopbackTable(backends, clientZone, l4, zl)
	return nil
}

// printLoopbackTable compares where the calls went and how long they took
// under per-connection L4 (l4) and under zonelb (zl).
func printLoopbackTable(backends []*testservice.Server, clientZone string, l4, zl loopbackResult) {
	zoneOf := map[string]string{}
	for _, b := range backends {
		zoneOf[b.Name()] = b.Zone()
	}
	fmt.Printf("%-8s %-7s %22s %22s\n", "backend", "zone", "per-connection L4", "zonelb (per request)")
	for _, b := range backends {
		fmt.Printf("%-8s %-7s %22s %22s\n", b.Name(), b.Zone(), loopbackShare(l4.byBackend[b.Name()], l4.ok), loopbackShare(zl.byBackend[b.Name()], zl.ok))
	}
	local := func(r loopbackResult) string {
		n := 0
		for name, c := range r.byBackend {
			if zoneOf[name] == clientZone {
				n += c
			}
		}
		return loopbackShare(n, r.ok)
	}
	fmt.Printf("%-16s %22s %22s\n", "in-zone calls", local(l4), local(zl))
	fmt.Printf("%-16s %22s %22s\n", "backends used", fmt.Sprint(len(l4.byBackend), " of ", len(backends)), fmt.Sprint(len(zl.byBackend), " of ", len(backends)))
	fmt.Printf("%-16s %22s %22s\n", "latency p50", l4.pct(50).String(), zl.pct(50).String())
	fmt.Printf("%-16s %22s %22s\n", "latency p99", l4.pct(99).String(), zl.pct(99).String())
	fmt.Printf("%-16s %22d %22d\n", "errors", l4.errs, zl.errs)
	fmt.Println("\nUnder L4 the connection, and so every call, is pinned to one backend; zonelb spreads calls")
	fmt.Println("by latency and load and keeps them in the client's zone while it has capacity.")
}

type loopbackResult struct {
	byBackend map[string]int
	ok, errs  int
	latencies []time.Duration
}

func (r loopbackResult) pct(p int) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := (len(r.latencies)*p + 99) / 100
	return r.latencies[min(max(i-1, 0), len(r.latencies)-1)].Round(10 * time.Microsecond)
}

func loopbackShare(n, total int) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%d (%5.1f%%)", n, 100*float64(n)/float64(total))
}

// loadLoopback runs calls over one client connection to addr.
func loadLoopback(ctx context.Context, label, addr string, calls, concurrency int) (loopbackResult, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return loopbackResult{}, err
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	var (
		mu   sync.Mutex
		res  = loopbackResult{byBackend: map[string]int{}}
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(calls) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				start := time.Now()
				resp, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{ResponseSize: 1024, Payload: &testgrpc.Payload{Body: make([]byte, 1024)}})
				d := time.Since(start)
				cancel()
				mu.Lock()
				if err != nil {
					res.errs++
				} else {
					res.ok++
					res.byBackend[resp.GetHostname()]++
					res.latencies = append(res.latencies, d)
				}
				done := res.ok + res.errs
				mu.Unlock()
				if done%250 == 0 {
					fmt.Fprintf(os.Stderr, "\r%-20s %5d/%d calls", label, done, calls)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "\r%-40s\r", "")
	if ctx.Err() != nil {
		return res, errors.New("interrupted")
	}
	slices.Sort(res.latencies)
	return res, nil
}
