package runner

import (
	"strings"
	"testing"
	"time"
)

func TestSpliceReplacesOnlyTheGeneratedBlock(t *testing.T) {
	doc := "# Benchmarks\n\nhand text\n\n" + BeginMarker + "\nold table\n" + EndMarker + "\n\n## Analysis\nkept\n"
	got := Splice(doc, "new table\n")
	if strings.Contains(got, "old table") || !strings.Contains(got, "new table") {
		t.Fatalf("generated block not replaced:\n%s", got)
	}
	if !strings.HasPrefix(got, "# Benchmarks\n\nhand text\n\n") || !strings.HasSuffix(got, "\n## Analysis\nkept\n") {
		t.Fatalf("hand-written text not kept:\n%s", got)
	}
	if again := Splice(got, "new table\n"); again != got {
		t.Fatalf("splicing twice changed the doc:\n%s\nvs\n%s", again, got)
	}
}

func TestSpliceAppendsMarkersWhenMissing(t *testing.T) {
	got := Splice("# Benchmarks", "table\n")
	want := "# Benchmarks\n" + BeginMarker + "\ntable\n" + EndMarker + "\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// fakeResults builds two runs of direct, zonelb and HAProxy with known
// figures, so the report's arithmetic can be checked.
func fakeResults() *Results {
	cfg := Config{Runs: 2, Rates: []int{1000}, Peers: []string{PeerDirect, PeerZonelb, PeerHAProxy}, Workloads: []string{WorkloadGRPC},
		Connections: 4, SatStreams: 32, Backends: 3, Warmup: time.Second, RatePhase: time.Second, SatPhase: time.Second}
	res := &Results{Config: cfg, CPUSource: "test"}
	mk := func(run int, peer string, cpuPerReqUS int64, p99 time.Duration, shares []int64) Sample {
		fixed := PhaseResult{OfferedRPS: 1000, Completed: 1000, Wall: time.Second, AchievedRPS: 1000,
			Latency: Percentiles{P50: p99 / 2, P90: p99, P99: p99, P999: p99}}
		sat := PhaseResult{OfferedRPS: 0, Completed: 20000, Wall: time.Second, AchievedRPS: 20000}
		if peer != PeerDirect {
			fixed.ProxyCPU, fixed.CPUSource, fixed.ProxyHWMKB = time.Duration(cpuPerReqUS*1000)*time.Microsecond, "cgroup", 10240
			sat.ProxyCPU, sat.CPUSource, sat.ProxyHWMKB = 900*time.Millisecond, "cgroup", 20480
		}
		return Sample{Run: run, Peer: peer, Workload: WorkloadGRPC, Phases: []PhaseResult{fixed, sat}, BackendShares: shares}
	}
	for run := 1; run <= 2; run++ {
		res.Samples = append(res.Samples,
			mk(run, PeerDirect, 0, 200*time.Microsecond, []int64{1000, 0, 0}),
			mk(run, PeerZonelb, int64(10*run), time.Duration(300+100*run)*time.Microsecond, []int64{400, 300, 300}),
			mk(run, PeerHAProxy, 20, 250*time.Microsecond, []int64{334, 333, 333}))
	}
	res.Samples = append(res.Samples, Sample{Run: 3, Peer: PeerHAProxy, Workload: WorkloadGRPC, Err: "exploded"})
	return res
}

func TestMarkdownFigures(t *testing.T) {
	md := Markdown(fakeResults(), Meta{Command: "make bench", Machine: "test box"})
	for _, want := range []string{
		"Command: `make bench`",
		// zonelb CPU/req: runs of 10 and 20 us -> median 15 (10..20); vs HAProxy 20 -> 0.75.
		// At saturation both use 900 ms for 20000 requests: 45 us, 1.00x.
		"| zonelb (GOMAXPROCS=1) | 15.0 (10.0..20.0) | 45.0 (45.0..45.0) | 0.015 (0.010..0.020) | 0.75 / 1.00 | - | 20000 (20000..20000) | 90 % / - | 10.0 (10.0..10.0) | 20.0 (20.0..20.0) | 40/30/30 % |",
		"| x HAProxy CPU (@1000 / saturation) |",
		// Added p99: 400-200 and 500-200 -> 250 (200..300).
		"| 250 (200..300) |",
		// direct's p99 is 200 us in both runs: the floor is steady, a verdict is possible.
		"| gRPC unary | added p99 @1000 < 150 us | 250 us |  | **no** |",
		"| gRPC unary | CPU/req <= 1.25x HAProxy @1000 | 15.0 us (0.75x) | 20.0 us | yes |",
		"| gRPC unary | CPU/req <= 1.00x HAProxy saturation | 45.0 us (1.00x) | 45.0 us | yes |",
		"| gRPC unary | peak RSS after 1000 req/s <= 20 MB (19.07 MiB) | 10.0 MiB | HAProxy 10.0 MiB | yes |",
		"- run 3, grpc, haproxy: exploded",
	} {
		want = strings.ReplaceAll(want, "| gRPC unary |", "| grpc |")
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
}

func TestTargetsRefuseAP99VerdictWhenTheFloorIsNoisy(t *testing.T) {
	res := fakeResults()
	// Make direct's p99 differ by 1 ms between the two runs.
	for i, s := range res.Samples {
		if s.Peer == PeerDirect && s.Run == 2 {
			res.Samples[i].Phases[0].Latency.P99 += time.Millisecond
		}
	}
	md := Markdown(res, Meta{})
	if !strings.Contains(md, "not resolvable here") || !strings.Contains(md, "direct's own p99 spans 200..1200 us") {
		t.Fatalf("noisy floor not reported:\n%s", md)
	}
}
