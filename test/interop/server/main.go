// Command server is the grpc-go interop test server (v1.85.0's
// interop.NewTestServer) bound to loopback only, with a call counter.
//
// The upstream interop server binary listens on every interface, which our
// network-safety rule forbids; this one refuses any non-loopback address.
// On start it prints one JSON line to stdout, {"grpc": ADDR, "stats": ADDR},
// so the harness learns the ports it got; GET http://STATS/calls answers how
// many calls reached the test service. SIGTERM stops it gracefully.
// It is test tooling and must not be deployed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	grpcinterop "google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/zonelb/zonelb/test/interop"
)

func main() {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address for the gRPC interop service")
	statsListen := fs.String("stats-listen", "127.0.0.1:0", "loopback address for the call-count endpoint (GET /calls)")
	name := fs.String("name", "", "label for this server in its logs")
	drain := fs.Duration("drain-timeout", 5*time.Second, "how long SIGTERM waits for in-flight calls")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("server", *name)
	for _, a := range []string{*listen, *statsListen} {
		if err := requireLoopback(a); err != nil {
			fmt.Fprintf(os.Stderr, "server: %v\n", err)
			os.Exit(2)
		}
	}
	if err := run(logger, *listen, *statsListen, *drain); err != nil {
		logger.Error("interop server failed", "err", err)
		os.Exit(1)
	}
}

// requireLoopback rejects an address whose host is not a loopback IP
// literal: a name could resolve to a routable address.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %q: host must be a loopback IP literal", addr)
	}
	return nil
}

func run(logger *slog.Logger, listen, statsListen string, drain time.Duration) error {
	grpcLis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen for gRPC on %s: %w", listen, err)
	}
	statsLis, err := net.Listen("tcp", statsListen)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("listen for stats on %s: %w", statsListen, err)
	}

	var counter interop.CallCounter
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(counter.UnaryInterceptor),
		grpc.ChainStreamInterceptor(counter.StreamInterceptor),
	)
	testgrpc.RegisterTestServiceServer(srv, grpcinterop.NewTestServer())

	mux := http.NewServeMux()
	mux.Handle("GET /calls", &counter)
	stats := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(grpcLis) }()
	go func() { errc <- stats.Serve(statsLis) }()

	ready, err := json.Marshal(map[string]string{
		"grpc":  grpcLis.Addr().String(),
		"stats": statsLis.Addr().String(),
	})
	if err != nil {
		return fmt.Errorf("encode ready line: %w", err)
	}
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", ready); err != nil {
		return fmt.Errorf("print ready line: %w", err)
	}
	logger.Info("interop server listening", "grpc", grpcLis.Addr(), "stats", statsLis.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		logger.Info("stopping", "signal", s.String())
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}

	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(drain)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		logger.Warn("drain timeout passed, closing remaining calls", "timeout", drain)
		srv.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := stats.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down stats endpoint: %w", err)
	}
	logger.Info("stopped", "calls", counter.Snapshot().Total)
	return nil
}
