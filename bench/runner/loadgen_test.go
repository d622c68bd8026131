package runner

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const h2loadOutput = `starting benchmark...
Application protocol: h2c

finished in 2.00s, 998.00 req/s, 1019.72KB/s
requests: 1996 total, 2004 started, 1990 done, 1985 succeeded, 3 failed, 2 errored, 1 timeout
status codes: 1985 2xx, 0 3xx, 0 4xx, 5 5xx
`

func TestParseH2loadSummary(t *testing.T) {
	got, err := parseH2loadSummary(h2loadOutput)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := h2loadSummary{Wall: 2 * time.Second, Done: 1990, Succeeded: 1985, Failed: 6}
	if got != want {
		t.Fatalf("summary = %+v, want %+v", got, want)
	}
	for _, unit := range []struct {
		text string
		want time.Duration
	}{{"finished in 250ms,", 250 * time.Millisecond}, {"finished in 213us,", 213 * time.Microsecond}} {
		out := strings.Replace(h2loadOutput, "finished in 2.00s,", unit.text, 1)
		got, err := parseH2loadSummary(out)
		if err != nil || got.Wall != unit.want {
			t.Fatalf("%q: wall %v err %v, want %v", unit.text, got.Wall, err, unit.want)
		}
	}
}

func TestParseH2loadSummaryRejectsMissingLines(t *testing.T) {
	if _, err := parseH2loadSummary("connect failed\n"); err == nil {
		t.Fatal("want an error for output without a summary")
	}
}

func TestParseH2loadLogCountsOnly2xxAsCompleted(t *testing.T) {
	log := "1795660096052834\t200\t377\n1795660096052793\t-1\t454\n1795660096052847\t204\t550\n1795660096052848\t503\t90\n"
	got, err := parseH2loadLog(strings.NewReader(log))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got.Completed != 2 || got.Failed != 2 {
		t.Fatalf("completed %d failed %d, want 2 and 2", got.Completed, got.Failed)
	}
	if want := []time.Duration{377 * time.Microsecond, 550 * time.Microsecond}; !slices.Equal(got.Latencies, want) {
		t.Fatalf("latencies = %v, want %v", got.Latencies, want)
	}
	if got.FirstError != "HTTP status -1" {
		t.Fatalf("first error = %q", got.FirstError)
	}
	if _, err := parseH2loadLog(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("want an error for a malformed line")
	}
}

func TestParseGHZSeparatesOKFromErrors(t *testing.T) {
	report := `{"count":3,"total":2000000000,
	  "statusCodeDistribution":{"OK":2,"Unavailable":1},
	  "errorDistribution":{"rpc error: code = Unavailable desc = no":1},
	  "details":[
	    {"latency":350000,"status":"OK","error":""},
	    {"latency":9000,"status":"Unavailable","error":"rpc error: code = Unavailable desc = no"},
	    {"latency":410000,"status":"OK","error":""}]}`
	got, err := parseGHZ(strings.NewReader(report))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got.Completed != 2 || got.Failed != 1 || got.Wall != 2*time.Second {
		t.Fatalf("got %+v", got)
	}
	if want := []time.Duration{350 * time.Microsecond, 410 * time.Microsecond}; !slices.Equal(got.Latencies, want) {
		t.Fatalf("latencies = %v, want %v", got.Latencies, want)
	}
	if !strings.Contains(got.FirstError, "Unavailable") {
		t.Fatalf("first error = %q", got.FirstError)
	}
}

func TestParseGHZFlagsTruncatedDetails(t *testing.T) {
	report := `{"count":5,"total":1,"details":[{"latency":1,"status":"OK"}]}`
	if _, err := parseGHZ(strings.NewReader(report)); err == nil {
		t.Fatal("want an error when details do not cover every request")
	}
}

func TestGHZArgsOpenLoopAtFixedRateClosedLoopOtherwise(t *testing.T) {
	fixed := ghzArgs(loadSpec{Target: "127.0.0.1:1", RPS: 1000, Duration: 5 * time.Second, Connections: 4, StreamsPerConn: 100, Threads: 1}, "p", "d", "o")
	joined := strings.Join(fixed, " ")
	for _, want := range []string{"--async", "--rps 1000", "--duration 5s", "--connections 4", "--call " + GRPCMethod} {
		if !strings.Contains(joined, want) {
			t.Fatalf("fixed-rate args %q lack %q", joined, want)
		}
	}
	if fixed[len(fixed)-1] != "127.0.0.1:1" {
		t.Fatalf("target must be the last argument: %q", joined)
	}
	sat := strings.Join(ghzArgs(loadSpec{Target: "127.0.0.1:1", Duration: time.Second, Connections: 4, StreamsPerConn: 32}, "p", "d", "o"), " ")
	if strings.Contains(sat, "--rps") || strings.Contains(sat, "--async") || !strings.Contains(sat, "--concurrency 128") {
		t.Fatalf("saturation args %q: want closed loop with 128 in flight", sat)
	}
}

func TestH2loadArgsSplitsRateOverConnections(t *testing.T) {
	args := strings.Join(h2loadArgs(loadSpec{Target: "127.0.0.1:2", RPS: 5000, Duration: 1500 * time.Millisecond, Connections: 4, StreamsPerConn: 100}, "log"), " ")
	for _, want := range []string{"--rps 1250", "--clients 4", "--duration 1500ms", "--log-file log", "http://127.0.0.1:2/"} {
		if !strings.Contains(args, want) {
			t.Fatalf("args %q lack %q", args, want)
		}
	}
}
