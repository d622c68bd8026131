package sim

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMainHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"-h"}, &out, &errb); code != 0 {
		t.Fatalf("-h exit code %d, want 0", code)
	}
	help := errb.String()
	for _, want := range []string{"Usage: zonelb sim", "-scenario", "-policy", "-seed", "-plots", "zone-failure", "linkerd-2016", "scale"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

func TestMainBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-nope"},
		{"-scenario", "nope"},
		{"-policy", "nope"},
		{"-format", "html"},
		{"-duration", "-1s"},
		{"-service-extra", "-1ms"},
		{"-cross-rtt", "-1ms"},
		{"extra"},
		{"-sweep", "-scenario", "balanced"},
		{"-sweep", "-budgets", "10"},
	} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, code)
		}
		if lines := strings.Count(strings.TrimSpace(errb.String()), "\n") + 1; lines != 1 || !strings.HasPrefix(errb.String(), "zonelb sim: ") {
			t.Errorf("%v: want a one-line error, got %q", args, errb.String())
		}
	}
}

func runOne(t *testing.T, name string, p Policy, d time.Duration, seed uint64) Result {
	t.Helper()
	sc, err := findScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	if d > 0 {
		sc.Duration, sc.Warmup = d, min(sc.Warmup, d/4)
	}
	e, err := newEngine(sc, p, seed, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.run()
	return e.result(0.01)
}

// The same seed gives the same results; every policy sees the same
// workload.
func TestDeterministic(t *testing.T) {
	a := runOne(t, "balanced", Zonelb, 5*time.Second, 7)
	b := runOne(t, "balanced", Zonelb, 5*time.Second, 7)
	if a.P99 != b.P99 || a.CrossRequests != b.CrossRequests || a.Requests != b.Requests {
		t.Errorf("two runs with seed 7 differ: %+v vs %+v", a, b)
	}
	c := runOne(t, "balanced", RoundRobin, 5*time.Second, 7)
	if c.Requests != a.Requests {
		t.Errorf("round robin measured %d requests, zonelb %d: the workload differs", c.Requests, a.Requests)
	}
	if d := runOne(t, "balanced", Zonelb, 5*time.Second, 8); d.P99 == a.P99 && d.P50 == a.P50 {
		t.Errorf("seeds 7 and 8 gave the same latencies")
	}
}

// Short runs reproduce the headline results in miniature; the full runs
// are in docs/zone-balancing.md.
func TestHeadlines(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of simulation")
	}
	if r := runOne(t, "balanced", Zonelb, 20*time.Second, 1); r.CrossRequests > 0.01 {
		t.Errorf("balanced: zonelb sent %.2f%% across zones, want <= 1%%", 100*r.CrossRequests)
	}
	if r := runOne(t, "balanced", PeakEWMA, 20*time.Second, 1); r.CrossRequests < 0.5 {
		t.Errorf("balanced: zone-blind Peak-EWMA sent only %.2f%% across zones", 100*r.CrossRequests)
	}
	f := runOne(t, "zone-failure", Zonelb, 0, 1)
	if f.WindowFailed != 0 || f.Moved < 0 || f.Moved > time.Second {
		t.Errorf("zone-failure: zonelb failed %d, moved after %v; want 0 and <= 1s", f.WindowFailed, f.Moved)
	}
	if p := runOne(t, "zone-failure", PreferSameZone, 0, 1); p.WindowFailed == 0 {
		t.Errorf("zone-failure: PreferSameZone failed no request before readiness caught up")
	}
	s := runOne(t, "linkerd-2016", Zonelb, 0, 1)
	if s.Success < 0.999 {
		t.Errorf("linkerd-2016: zonelb success %.4f, want >= 0.999", s.Success)
	}
	if rr := runOne(t, "linkerd-2016", RoundRobin, 0, 1); rr.Success > 0.97 {
		t.Errorf("linkerd-2016: round robin success %.4f, want it hurt by the stall (Linkerd measured ~95%%)", rr.Success)
	}
}

func TestPlotsAreSVG(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	code := Main([]string{"-scenario", "zone-failure,overload", "-policy", "zonelb,prefer-same-zone", "-duration", "25s", "-plots", dir}, &out, io.Discard)
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.svg"))
	if len(files) < 3 {
		t.Fatalf("plots written: %v, want zone-failure's two and overload's one", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		mustBeWellFormed(t, f, b)
	}
	if !strings.Contains(out.String(), "zonelb") {
		t.Errorf("no table printed:\n%s", out.String())
	}
}

// No flapping: in overload, where 6 nodes share one zone and each decides
// alone, a node's gate turns on or off about once per minute. Measured
// before the idle level and the tight in-flight limit: 5.7 flips per node
// over 60 s (a node whose share had decayed while the others carried the
// spill closed its gate, and opened it again when the level came back).
func TestOverloadDoesNotFlap(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of simulation")
	}
	if r := runOne(t, "overload", Zonelb, 0, 1); r.Flips > 2 {
		t.Errorf("overload: %.1f spillover flips per node in %v, want <= 2", r.Flips, 60*time.Second)
	}
}

// The calibration knobs move the model as a busy machine moves real
// backends: every service time longer by ServiceExtra, cross-zone calls
// by the round trip given.
func TestCalibrationKnobs(t *testing.T) {
	run := func(extra, cross time.Duration) Result {
		sc, err := findScenario("balanced")
		if err != nil {
			t.Fatal(err)
		}
		sc.Duration, sc.Warmup = 5*time.Second, time.Second
		sc.ServiceExtra = extra
		if cross > 0 {
			sc.CrossRTT = cross
		}
		e, err := newEngine(sc, PeakEWMA, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.run()
		return e.result(0.01)
	}
	plain, slower := run(0, 0), run(5*time.Millisecond, 0)
	if d := slower.P50 - plain.P50; d < 5*time.Millisecond {
		t.Errorf("p50 %v -> %v with 5 ms added to every service time, want at least 5 ms more (more with the queue it adds)", plain.P50, slower.P50)
	}
	if far := run(0, 20*time.Millisecond); far.P50-plain.P50 < 10*time.Millisecond {
		t.Errorf("p50 %v -> %v with a 20 ms cross-zone round trip for 2/3 of the calls", plain.P50, far.P50)
	}
}

// mustBeWellFormed fails the test unless b, the contents of file name, is
// well-formed XML.
func mustBeWellFormed(t *testing.T, name string, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := d.Token(); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", name, err)
		}
	}
}
