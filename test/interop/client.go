package interop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"time"
)

// Cases returns the interop cases that need no cloud credentials, in the
// order of the brief (shared/brief/testing.md).
func Cases() []string {
	return []string{
		"empty_unary",
		"large_unary",
		"client_streaming",
		"server_streaming",
		"ping_pong",
		"empty_stream",
		"cancel_after_begin",
		"cancel_after_first_response",
		"timeout_on_sleeping_server",
		"status_code_and_message",
		"special_status_message",
		"custom_metadata",
		"unimplemented_method",
		"unimplemented_service",
		"rpc_soak",
		"channel_soak",
	}
}

// SoakArgs keep a soak case short: 10 iterations of the large-unary-sized
// call (the client's default). The per-iteration latency bound is raised
// from 1 s to 5 s and the case's from 10 s to 60 s: tests check behaviour,
// not timing, and `make test` runs every package at once with -race on two
// shared cores. Latency is what the benchmarks measure.
func SoakArgs() []string {
	return []string{
		"--soak_iterations=10",
		"--soak_per_iteration_max_acceptable_latency_ms=5000",
		"--soak_overall_timeout_seconds=60",
	}
}

// StressJobs go beyond the suite's defaults with the client's own flags:
// messages near gRPC's default 4 MiB limit in both directions, and many
// concurrent calls on one connection and on fresh ones. Iterations must
// divide evenly by threads, or the client runs fewer and fails.
func StressJobs() []Job {
	return []Job{
		{Case: "rpc_soak", Args: []string{"--soak_iterations=10", "--soak_request_size=4000000", "--soak_response_size=4000000"}},
		{Case: "rpc_soak", Args: []string{"--soak_iterations=320", "--soak_num_threads=16"}},
		{Case: "channel_soak", Args: []string{"--soak_iterations=96", "--soak_num_threads=16"}},
	}
}

// Client runs the upstream interop client binary, one process per case.
type Client struct {
	// Bin is the interop client binary (BuildClient).
	Bin string
	// Args are extra flags for every case (SoakArgs, for instance).
	Args []string
	// Timeout bounds one case: many cases have no deadline of their own and
	// would hang forever on a proxy that loses a stream. It must exceed the
	// soak cases' overall timeout.
	Timeout time.Duration
}

// Job is one case against one address.
type Job struct {
	Case string
	Addr string
	// Args are flags for this job only, after (and so overriding)
	// Client.Args.
	Args []string
}

// Result is what one run of the client did.
type Result struct {
	Job
	Duration time.Duration
	// Output is the client's stdout and stderr together.
	Output []byte
	// Err is nil when the client exited 0.
	Err error
}

// ErrCaseTimeout marks a case that did not finish within Client.Timeout:
// usually a stream the proxy lost or deadlocked.
var ErrCaseTimeout = errors.New("did not finish within its timeout")

// Run runs one case against addr (host:port).
func (c Client) Run(ctx context.Context, job Job) Result {
	host, port, err := net.SplitHostPort(job.Addr)
	if err != nil {
		return Result{Job: job, Err: fmt.Errorf("target %q: %w", job.Addr, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	args := append([]string{
		"--server_host=" + host,
		"--server_port=" + port,
		"--test_case=" + job.Case,
	}, c.Args...)
	args = append(args, job.Args...)
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	// Info level, so a failure report shows how far the case got.
	cmd.Env = append(childEnv(), "GRPC_GO_LOG_SEVERITY_LEVEL=info", "GRPC_GO_LOG_VERBOSITY_LEVEL=0")
	// After the kill on timeout, do not wait forever for the pipes.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := Result{Job: job, Duration: time.Since(start), Output: out}
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.Err = fmt.Errorf("%s %w of %v (killed: %v)", job.Case, ErrCaseTimeout, c.Timeout, err)
	default:
		res.Err = fmt.Errorf("%s: %w", job.Case, err)
	}
	return res
}

// RunAll runs jobs with at most parallel clients at once and returns the
// results in the order of jobs.
func (c Client) RunAll(ctx context.Context, jobs []Job, parallel int) []Result {
	parallel = max(parallel, 1)
	results := make([]Result, len(jobs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, job := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = c.Run(ctx, job)
		})
	}
	wg.Wait()
	return results
}
