//go:build !linux

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
)

// Off Linux there are no network namespaces, cgroups or eBPF: only the
// loopback demo runs.
func main() {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	bin := fs.String("zonelb", "bin/zonelb", "path to the zonelb binary")
	crossZone := fs.Duration("cross-zone-delay", 2*time.Millisecond, "extra latency of a call that crosses zones, emulated inside the backends")
	fs.Bool("loopback", true, "run the loopback-only demo (the only one off Linux)")
	lo := loopbackFlags(fs, bin, crossZone)
	fs.Parse(os.Args[1:])
	fmt.Fprintln(os.Stderr, "demo: the mini cluster needs Linux; running the loopback demo")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runLoopback(ctx, lo); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
