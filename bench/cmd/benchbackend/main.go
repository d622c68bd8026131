// Command benchbackend runs the loopback load targets of `make bench`: n gRPC
// testing-service instances and n h2c/HTTP/1.1 instances (package
// bench/backend). It prints where they listen as one JSON line on stdout and
// serves until SIGINT or SIGTERM. It is a benchmark fixture, never a product
// component, and it never listens beyond loopback.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/zonelb/zonelb/bench/backend"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchbackend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "number of gRPC and of HTTP backend instances")
	host := fs.String("host", "127.0.0.1", "loopback address to listen on (ephemeral ports)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fleet, err := backend.Start(logger, *host, *n)
	if err != nil {
		fmt.Fprintln(stderr, "benchbackend:", err)
		return 2
	}
	defer fleet.Close()
	if err := json.NewEncoder(stdout).Encode(fleet.Addrs()); err != nil {
		logger.Error("announce addresses", "err", err)
		return 1
	}
	<-ctx.Done()
	return 0
}
