// Package runner drives zonelb's side-by-side benchmark (`make bench`): it
// starts the loopback backends, each peer proxy in turn (direct, zonelb,
// HAProxy, nginx, Caddy) pinned to its own CPU, offers fixed request rates and
// then saturating load with ghz (gRPC) and h2load (h2c), measures the proxy's
// CPU time, latency and memory, repeats the whole round, and renders medians
// with min and max as markdown.
//
// It must only ever send traffic to loopback, must stop every process it
// started (by pid) even when it fails or is interrupted, and must not assert
// anything about timings: it measures and reports, the reader judges.
package runner
