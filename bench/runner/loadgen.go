package runner

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// GRPCMethod is the call every gRPC benchmark makes: unary, 1 KB each way.
const GRPCMethod = "grpc.testing.TestService/UnaryCall"

// PayloadSize is the request and response payload of the gRPC workload.
const PayloadSize = 1024

// loadSpec is one load generator run against one target.
type loadSpec struct {
	// Target is the loopback host:port to load.
	Target string
	// RPS is the offered request rate; 0 means closed loop (saturation).
	RPS int
	// Duration is how long requests are issued.
	Duration time.Duration
	// Connections is the number of client connections.
	Connections int
	// StreamsPerConn caps requests in flight per connection. Open-loop runs
	// set it far above rate x latency so the cap never holds requests back;
	// closed-loop runs keep exactly this many in flight.
	StreamsPerConn int
	// Threads is the load generator's thread count (GOMAXPROCS for ghz).
	Threads int
}

// loadResult is what one load generator run measured.
type loadResult struct {
	Completed int64 // successful requests (gRPC OK, HTTP 2xx)
	Failed    int64 // every other outcome the generator counted
	Wall      time.Duration
	// Latencies of the successful requests, from send to full response.
	Latencies []time.Duration
	// FirstError is one error text the generator reported, if any.
	FirstError string
}

// ghzArgs builds ghz's command line. --async makes the fixed-rate runs
// open-loop (each tick fires a request whether or not earlier ones returned);
// --duration-stop=wait lets requests in flight at the end finish so they are
// counted instead of reported as cancelled.
func ghzArgs(s loadSpec, protoset, dataFile, output string) []string {
	args := []string{
		"--insecure",
		"--protoset", protoset,
		"--call", GRPCMethod,
		"--data-file", dataFile,
		"--cpus", strconv.Itoa(max(s.Threads, 1)),
		"--connections", strconv.Itoa(s.Connections),
		"--duration", s.Duration.String(),
		"--duration-stop", "wait",
		"--timeout", "5s",
		"--disable-template-functions",
		"--disable-template-data",
		"--format", "json",
		"--output", output,
	}
	if s.RPS > 0 {
		// Workers only hand ticks to goroutines in async mode; a few per
		// connection are plenty.
		args = append(args, "--async", "--rps", strconv.Itoa(s.RPS), "--concurrency", strconv.Itoa(s.Connections*4))
	} else {
		args = append(args, "--concurrency", strconv.Itoa(s.Connections*s.StreamsPerConn))
	}
	return append(args, s.Target)
}

// ghzReport is the part of ghz's JSON report the benchmark reads. Durations
// are nanoseconds.
type ghzReport struct {
	Count          int64          `json:"count"`
	Total          time.Duration  `json:"total"`
	StatusCodeDist map[string]int `json:"statusCodeDistribution"`
	ErrorDist      map[string]int `json:"errorDistribution"`
	Details        []struct {
		Latency time.Duration `json:"latency"`
		Status  string        `json:"status"`
		Error   string        `json:"error"`
	} `json:"details"`
}

// parseGHZ reads ghz's JSON report.
func parseGHZ(r io.Reader) (loadResult, error) {
	var rep ghzReport
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return loadResult{}, fmt.Errorf("decode ghz JSON report: %w", err)
	}
	res := loadResult{Wall: rep.Total}
	for _, d := range rep.Details {
		if d.Status == "OK" && d.Error == "" {
			res.Completed++
			res.Latencies = append(res.Latencies, d.Latency)
			continue
		}
		res.Failed++
		if res.FirstError == "" {
			res.FirstError = d.Status + ": " + d.Error
		}
	}
	if int64(len(rep.Details)) != rep.Count {
		// ghz keeps at most a million details; beyond that the summary
		// counts are still right but latencies are a prefix. Say so rather
		// than report figures from a silently truncated sample.
		return res, fmt.Errorf("ghz reported %d requests but %d details", rep.Count, len(rep.Details))
	}
	if res.FirstError == "" {
		for e := range rep.ErrorDist {
			res.FirstError = e
			break
		}
	}
	return res, nil
}

// h2loadArgs builds h2load's command line. h2load's --rps is per client
// connection, so the total rate is split over the connections. Cleartext
// http:// URIs make h2load speak HTTP/2 with prior knowledge.
func h2loadArgs(s loadSpec, logFile string) []string {
	args := []string{
		"--threads", strconv.Itoa(max(s.Threads, 1)),
		"--clients", strconv.Itoa(s.Connections),
		"--max-concurrent-streams", strconv.Itoa(s.StreamsPerConn),
		// h2load takes whole numbers with a unit suffix, not fractions.
		"--duration", strconv.FormatInt(s.Duration.Milliseconds(), 10) + "ms",
		"--log-file", logFile,
	}
	if s.RPS > 0 {
		perConn := max(s.RPS/s.Connections, 1)
		args = append(args, "--rps", strconv.Itoa(perConn))
	}
	return append(args, "http://"+s.Target+"/")
}

var (
	h2loadFinished = regexp.MustCompile(`(?m)^finished in ([0-9.]+)(us|ms|s),`)
	h2loadRequests = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
)

// h2loadSummary is what h2load prints at the end of a run.
type h2loadSummary struct {
	Wall      time.Duration
	Done      int64
	Succeeded int64
	Failed    int64
}

func parseH2loadSummary(out string) (h2loadSummary, error) {
	var s h2loadSummary
	m := h2loadFinished.FindStringSubmatch(out)
	if m == nil {
		return s, errors.New("h2load output has no 'finished in' line")
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return s, fmt.Errorf("parse h2load duration %q: %w", m[1], err)
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[2]]
	s.Wall = time.Duration(v * float64(unit))
	r := h2loadRequests.FindStringSubmatch(out)
	if r == nil {
		return s, errors.New("h2load output has no 'requests:' line")
	}
	nums := make([]int64, len(r)-1)
	for i, txt := range r[1:] {
		if nums[i], err = strconv.ParseInt(txt, 10, 64); err != nil {
			return s, fmt.Errorf("parse h2load count %q: %w", txt, err)
		}
	}
	s.Done, s.Succeeded, s.Failed = nums[2], nums[3], nums[4]+nums[5]+nums[6]
	return s, nil
}

// parseH2loadLog reads h2load's per-request log: start time (us since the
// epoch), status (-1 for a failed stream), microseconds to the end of the
// response, tab-separated.
func parseH2loadLog(r io.Reader) (loadResult, error) {
	var res loadResult
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 3 {
			return res, fmt.Errorf("h2load log line %d: want 3 tab-separated columns, got %q", line, sc.Text())
		}
		status, err := strconv.Atoi(fields[1])
		if err != nil {
			return res, fmt.Errorf("h2load log line %d: status %q: %w", line, fields[1], err)
		}
		us, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return res, fmt.Errorf("h2load log line %d: duration %q: %w", line, fields[2], err)
		}
		if status >= 200 && status < 300 {
			res.Completed++
			res.Latencies = append(res.Latencies, time.Duration(us)*time.Microsecond)
			continue
		}
		res.Failed++
		if res.FirstError == "" {
			res.FirstError = "HTTP status " + fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		return res, fmt.Errorf("read h2load log: %w", err)
	}
	return res, nil
}
