package interop

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// CollectCalls asks every server for its CallStats, keyed by server name.
func CollectCalls(ctx context.Context, servers []*Server) (map[string]CallStats, error) {
	all := make(map[string]CallStats, len(servers))
	for _, s := range servers {
		st, err := s.Calls(ctx)
		if err != nil {
			return nil, err
		}
		all[s.Name] = st
	}
	return all, nil
}

// WaitIdle polls the servers until none has a call in a handler, or fails
// after within with the calls still open: a stream the proxy left open
// upstream (a lost cancellation) never ends. Polling is the only way to see
// another process settle.
func WaitIdle(ctx context.Context, servers []*Server, within time.Duration) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// Each poll gets the full stats timeout: a slow answer under load
		// must not be mistaken for an open call.
		open := make(map[string]map[string]int64)
		for _, s := range servers {
			st, err := s.Calls(ctx)
			if err != nil {
				return err
			}
			if st.ActiveTotal() > 0 {
				open[s.Name] = st.Active
			}
		}
		if len(open) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for servers to be idle: %w (open: %v)", ctx.Err(), open)
		case <-deadline.C:
			return fmt.Errorf("calls still open on the servers %v after the clients finished: %v", within, open)
		case <-tick.C:
		}
	}
}

// CallsBetween returns, per server, how many calls of method it handled
// between two CollectCalls snapshots; an empty method means all methods.
func CallsBetween(before, after map[string]CallStats, method string) map[string]int64 {
	d := make(map[string]int64, len(after))
	for name, a := range after {
		b := before[name]
		if method == "" {
			d[name] = a.Total - b.Total
		} else {
			d[name] = a.Methods[method] - b.Methods[method]
		}
	}
	return d
}

// CheckSpread returns an error unless there were calls and every server
// handled at least minShare (0..1) of them: a proxy that pins all calls, or
// all calls of a connection, to one backend fails it.
func CheckSpread(calls map[string]int64, minShare float64) error {
	var total int64
	for _, n := range calls {
		total += n
	}
	if total == 0 {
		return fmt.Errorf("no calls reached any of the %d servers", len(calls))
	}
	var low []string
	for name, n := range calls {
		if float64(n) < minShare*float64(total) {
			low = append(low, fmt.Sprintf("%s handled %d (%.1f%%)", name, n, 100*float64(n)/float64(total)))
		}
	}
	if len(low) > 0 {
		sort.Strings(low)
		return fmt.Errorf("calls not spread: each server should handle at least %.0f%% of %d calls, but %s (all: %s)",
			100*minShare, total, strings.Join(low, ", "), FormatCalls(calls))
	}
	return nil
}

// FormatCalls renders per-server counts as "a=1 b=2", sorted by name.
func FormatCalls(calls map[string]int64) string {
	names := make([]string, 0, len(calls))
	for n := range calls {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, calls[n])
	}
	return strings.Join(parts, " ")
}
