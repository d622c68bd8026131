package cluster

import (
	"flag"
	"io"
	"log/slog"
)

// CommandFlags are the settings the commands that drive the lab share
// (cmd/zonelb-demo, cmd/zonelb-bench-e2e): which zonelb binary, how many
// client pods, the calls' payloads, discovery and verbosity.
type CommandFlags struct {
	Bin           string // -zonelb
	Clients       int    // -clients
	RequestBytes  int    // -request-bytes
	ResponseBytes int    // -response-bytes
	Discovery     string // -discovery
	Verbose       bool   // -v
}

// FlagSet is the command's flag set, named name, with these flags defined
// on it for the command to add its own; it writes usage and parse errors
// to stderr and leaves exiting to the command (ContinueOnError).
func (f *CommandFlags) FlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.Bin, "zonelb", "bin/zonelb", "path to the zonelb binary")
	fs.IntVar(&f.Clients, "clients", 3, "client pods in zone-a (one gRPC connection each)")
	fs.IntVar(&f.RequestBytes, "request-bytes", 1024, "payload bytes per request")
	fs.IntVar(&f.ResponseBytes, "response-bytes", 4096, "payload bytes per response")
	fs.StringVar(&f.Discovery, "discovery", "auto", "auto (kube-apiserver when built, else file), kubernetes or file")
	fs.BoolVar(&f.Verbose, "v", false, "log the harness's steps to stderr")
	return fs
}

// Options are the lab's options for these flags, logging to stderr with
// -v and reporting progress to progress.
func (f *CommandFlags) Options(stderr io.Writer, progress func(string)) Options {
	log := slog.New(slog.DiscardHandler)
	if f.Verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	return Options{Logger: log, ZonelbBin: f.Bin, ClientPods: f.Clients, Discovery: f.Discovery, Progress: progress}
}

// Workload is a workload of the flags' payloads, with concurrency calls in
// flight per client at rate calls/s per client (0: as fast as they come).
func (f *CommandFlags) Workload(concurrency int, rate float64) Workload {
	return Workload{Concurrency: concurrency, Rate: rate, RequestBytes: f.RequestBytes, ResponseBytes: f.ResponseBytes}
}
