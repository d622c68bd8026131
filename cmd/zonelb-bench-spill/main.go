// Command zonelb-bench-spill measures the spill budget with real processes
// on loopback: the `zonelb proxy` binary in front of three zones of three
// queueing backends (each serves a fixed number of calls at once, the rest
// wait), zone-a's client offering 1.5x zone-a's capacity for 30 s after a
// quiet warm-up, once with the default budget and once zone-blind
// (--ignore-zones: Peak-EWMA power of two choices), in the same run. The
// cross-zone round trip is emulated inside the other zones' backends (no
// netem here). It prints a Markdown table, and the same scenario's
// figures from the simulator (sim.Loopback) beside them.
//
// Everything listens on 127.0.0.1 and stops by itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/internal/proxycmd"
)

type options struct {
	bin              string
	slots            int
	median, cross    time.Duration
	sigma, overload  float64
	warmup, duration time.Duration
	budget           string
	quietLoad        float64
	backendsPerZone  int
	seed             uint64
	step             bool
	rate             float64
	stepSlots        int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("zonelb-bench-spill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "zonelb", "bin/zonelb", "path to the zonelb binary")
	fs.IntVar(&o.slots, "slots", 2, "calls each backend serves at once")
	fs.DurationVar(&o.median, "median", 10*time.Millisecond, "median service time (lognormal)")
	fs.Float64Var(&o.sigma, "sigma", 0.5, "lognormal sigma of service times")
	fs.DurationVar(&o.cross, "cross", time.Millisecond, "cross-zone round trip, added by the other zones' backends")
	fs.Float64Var(&o.overload, "overload", 1.5, "offered load as a multiple of zone-a's capacity")
	fs.Float64Var(&o.quietLoad, "quiet", 0.3, "warm-up load as a share of zone-a's capacity")
	fs.DurationVar(&o.warmup, "warmup", 10*time.Second, "quiet warm-up before the overload (not measured)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "overload")
	fs.StringVar(&o.budget, "spill-budget", "50%", "zonelb's spill budget")
	fs.IntVar(&o.backendsPerZone, "backends", 3, "backends per zone")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of arrivals and service times")
	fs.BoolVar(&o.step, "step", false, "the capacity step instead (make demo's, as the simulator's capacity-step): "+
		"-rate calls/s throughout, zone-a's backends drop from -slots to -step-slots calls at once when the measured phase starts")
	fs.Float64Var(&o.rate, "rate", 0, "with -step: offered calls/s")
	fs.IntVar(&o.stepSlots, "step-slots", 1, "with -step: zone-a's slots after the step")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.step && o.rate <= 0 {
		fmt.Fprintln(stderr, "zonelb-bench-spill: -step needs -rate")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "zonelb-bench-spill: %v\n", err)
		return 1
	}
	return 0
}

// capacity is zone-a's calls per second at full utilisation.
func (o options) capacity() float64 {
	mean := o.median.Seconds() * math.Exp(o.sigma*o.sigma/2)
	return float64(o.backendsPerZone*o.slots) / mean
}

func bench(ctx context.Context, o options, w io.Writer) error {
	var backends []*backend
	defer func() {
		for _, b := range backends {
			b.srv.Close()
		}
	}()
	for i, z := range []string{"zone-a", "zone-b", "zone-c"} {
		for j := range o.backendsPerZone {
			extra := o.cross
			if z == "zone-a" {
				extra = 0
			}
			b, err := startBackend(z, o.slots, o.median, o.sigma, extra, o.seed+uint64(10*i+j))
			if err != nil {
				return err
			}
			backends = append(backends, b)
		}
	}
	rate := o.overload * o.capacity()
	if o.step {
		rate = o.rate
		fmt.Fprintf(w, "Loopback, real processes, capacity step: 3 zones x %d backends (lognormal, median %v, sigma %.1f) serving %d calls at once, "+
			"zone-a's dropping to %d when the measured %v start; %.0f calls/s offered throughout, after %v of warm-up; cross-zone round trip %v.\n\n",
			o.backendsPerZone, o.median, o.sigma, o.slots, o.stepSlots, o.duration, rate, o.warmup, o.cross)
	} else {
		fmt.Fprintf(w, "Loopback, real processes: 3 zones x %d backends serving %d calls at once (lognormal, median %v, sigma %.1f; "+
			"zone-a's capacity %.0f calls/s); cross-zone round trip %v emulated in the other zones' backends. "+
			"zone-a's client offers %.0f calls/s (%.1fx) for %v after %v at %.0f%%.\n\n",
			o.backendsPerZone, o.slots, o.median, o.sigma, o.capacity(), o.cross, rate, o.overload, o.duration, o.warmup, 100*o.quietLoad)
	}
	fmt.Fprintln(w, "| balancer | calls | in zone-a | p50 | p99 | p99, first second | worst second below settled | p50 in zone-a / other zones | mean service time, measured |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, mode := range []struct{ name, flag string }{
		{"zonelb, budget " + o.budget, "--spill-budget=" + o.budget},
		{"zone-blind P2C (Peak-EWMA)", "--ignore-zones"},
	} {
		n0, t0 := serviceTotals(backends)
		r, err := runMode(ctx, o, backends, mode.flag, rate)
		if err != nil {
			return fmt.Errorf("%s: %w", mode.name, err)
		}
		n1, t1 := serviceTotals(backends)
		r.service = time.Duration((t1 - t0) / max(n1-n0, 1))
		fmt.Fprintf(w, "| %s | %d | %.1f%% | %s | %s | %s | %.1f pts | %s / %s | %s |\n", mode.name, r.calls, 100*r.local,
			ms(r.p50), ms(r.p99), ms(r.firstP99), 100*r.dip, ms(r.localP50), ms(r.remoteP50), ms(r.service))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

// backend is a queueing HTTP/2 (h2c) server: slots calls at once, the
// rest wait in arrival order.
type backend struct {
	zone string
	addr string
	srv  *http.Server

	mu          sync.Mutex
	cond        *sync.Cond
	busy, limit int
	// served and inService count the calls served and the time they
	// held a slot (ns): on a busy machine a sleep lasts longer than
	// asked, so the service times are what was measured, not drawn.
	served, inService atomic.Int64
}

func (b *backend) acquire() {
	b.mu.Lock()
	for b.busy >= b.limit {
		b.cond.Wait()
	}
	b.busy++
	b.mu.Unlock()
}

func (b *backend) release() {
	b.mu.Lock()
	b.busy--
	b.cond.Signal()
	b.mu.Unlock()
}

// setSlots changes how many calls the backend serves at once.
func (b *backend) setSlots(n int) {
	b.mu.Lock()
	b.limit = n
	b.cond.Broadcast()
	b.mu.Unlock()
}

func startBackend(zoneName string, slots int, median time.Duration, sigma float64, cross time.Duration, seed uint64) (*backend, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend listen: %w", err)
	}
	b := &backend{zone: zoneName, addr: l.Addr().String(), limit: slots}
	b.cond = sync.NewCond(&b.mu)
	var mu sync.Mutex
	rnd := rand.New(rand.NewPCG(seed, 7))
	service := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return time.Duration(float64(median) * math.Exp(sigma*rnd.NormFloat64()))
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(cross / 2) // the request's way over
		b.acquire()
		start := time.Now()
		time.Sleep(service())
		b.inService.Add(int64(time.Since(start)))
		b.served.Add(1)
		b.release()
		time.Sleep(cross / 2) // the response's way back
		w.Header().Set("X-Zone", zoneName)
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Handler: h}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.Protocols.SetHTTP1(true)
	go srv.Serve(l)
	b.srv = srv
	return b, nil
}

// result is one mode's overload figures.
type result struct {
	calls              int
	local, dip         float64
	p50, p99, firstP99 time.Duration
	// localP50 and remoteP50 are the medians of the calls served in
	// zone-a and elsewhere: what the simulator's round trips are
	// calibrated on (the proxy, the client and the sleeps of a busy
	// machine add to both).
	localP50, remoteP50 time.Duration
	// service is the mean time a call held a backend's slot, measured
	// (the model's mean service time; nominal: median x exp(sigma^2/2)).
	service time.Duration
}

// serviceTotals sums the backends' calls served and time in service.
func serviceTotals(bs []*backend) (n, ns int64) {
	for _, b := range bs {
		n += b.served.Load()
		ns += b.inService.Load()
	}
	return n, ns
}

// sample is one call: when it was sent, how long it took, where it went.
type sample struct {
	at    time.Duration
	lat   time.Duration
	local bool
	ok    bool
}

func runMode(ctx context.Context, o options, backends []*backend, flag string, rate float64) (result, error) {
	eps := make([]proxycmd.Endpoint, len(backends))
	for i, b := range backends {
		eps[i] = proxycmd.Endpoint{Zone: b.zone, Addr: b.addr}
	}
	p, err := proxycmd.StartInFront(ctx, o.bin, "zone-a", "bench", eps, flag)
	if err != nil {
		return result{}, err
	}
	defer p.Stop(5 * time.Second)
	addr := p.Addr
	client := &http.Client{Timeout: 5 * time.Second, Transport: h2cTransport()}
	defer client.CloseIdleConnections()
	if o.step {
		load(ctx, client, addr, rate, o.warmup, o.seed)
		setZoneSlots(backends, "zone-a", o.stepSlots)
		defer setZoneSlots(backends, "zone-a", o.slots)
	} else {
		load(ctx, client, addr, o.quietLoad*o.capacity(), o.warmup, o.seed)
	}
	samples := load(ctx, client, addr, rate, o.duration, o.seed+1)
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	return summarise(samples, o.duration), nil
}

func setZoneSlots(backends []*backend, zoneName string, n int) {
	for _, b := range backends {
		if b.zone == zoneName {
			b.setSlots(n)
		}
	}
}

func h2cTransport() *http.Transport {
	t := &http.Transport{MaxIdleConnsPerHost: 1}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// load offers Poisson calls at rate for d and returns them.
func load(ctx context.Context, client *http.Client, addr string, rate float64, d time.Duration, seed uint64) []sample {
	rnd := rand.New(rand.NewPCG(seed, 99))
	var mu sync.Mutex
	var out []sample
	var wg sync.WaitGroup
	start := time.Now()
	next := time.Duration(0)
	for next < d && ctx.Err() == nil {
		if wait := next - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		at := next
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := call(ctx, client, addr)
			s.at = at
			mu.Lock()
			out = append(out, s)
			mu.Unlock()
		}()
		next += time.Duration(rnd.ExpFloat64() / rate * float64(time.Second))
	}
	wg.Wait()
	return out
}

func call(ctx context.Context, client *http.Client, addr string) sample {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return sample{}
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return sample{lat: time.Since(t0)}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return sample{lat: time.Since(t0), local: resp.Header.Get("X-Zone") == "zone-a", ok: resp.StatusCode == http.StatusOK}
}

// summarise computes the local share, percentiles (a failed call counts
// as 5 s), p99 of the first second, and the worst one-second local share
// below its mean over the last half, from the second second on.
func summarise(ss []sample, d time.Duration) result {
	r := result{calls: len(ss)}
	secs := int(d / time.Second)
	perSec := make([][2]int, secs)
	var lats, first, inZone, elsewhere []time.Duration
	local := 0
	for _, s := range ss {
		lat := s.lat
		if !s.ok {
			lat = 5 * time.Second
		}
		lats = append(lats, lat)
		if s.local {
			local++
			inZone = append(inZone, lat)
		} else {
			elsewhere = append(elsewhere, lat)
		}
		if i := int(s.at / time.Second); i < secs {
			perSec[i][1]++
			if s.local {
				perSec[i][0]++
			}
			if i == 0 {
				first = append(first, lat)
			}
		}
	}
	r.local = float64(local) / float64(max(len(ss), 1))
	r.p50, r.p99, r.firstP99 = pct(lats, 0.5), pct(lats, 0.99), pct(first, 0.99)
	r.localP50, r.remoteP50 = pct(inZone, 0.5), pct(elsewhere, 0.5)
	share := func(i int) float64 { return float64(perSec[i][0]) / float64(max(perSec[i][1], 1)) }
	var settled float64
	for i := secs / 2; i < secs; i++ {
		settled += share(i)
	}
	settled /= float64(secs - secs/2)
	for i := 1; i < secs; i++ {
		r.dip = max(r.dip, settled-share(i))
	}
	return r
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
