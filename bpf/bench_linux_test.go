package bpf

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchEnv is a redirected world for benchmarks, built once per
// benchmark function.
func benchEnv(b *testing.B, shortcut bool) (*testEnv, *Redirector) {
	e := newTestEnv(b)
	e.cfg.SockMsgShortcut = shortcut
	r := e.load(loadOptions{})
	if err := r.SetService(netip.AddrPortFrom(vip4, servicePort), svcID4); err != nil {
		b.Fatal(err)
	}
	if err := r.EnrollNetns(e.cookie(e.pod1)); err != nil {
		b.Fatal(err)
	}
	return e, r
}

// runTimed runs a timing helper and returns the durations it reported
// (total first).
func runTimed(b *testing.B, role string, cg *os.File, ns string, args helperArgs) []time.Duration {
	b.Helper()
	c := startChild(b, role, cg, ns, args)
	out := strings.Fields(string(c.wait(b, 5*time.Minute)))
	var ds []time.Duration
	for _, f := range out {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			b.Fatalf("helper output %q: %v", out, err)
		}
		ds = append(ds, time.Duration(n))
	}
	if len(ds) == 0 {
		b.Fatal("helper reported nothing")
	}
	return ds
}

// BenchmarkConnectHook measures connect() from a pod namespace to the
// proxy listener in the node namespace:
//   - redirected: dial the service VIP; connect4 rewrites it to the proxy.
//   - hook-not-selected: dial the proxy address itself from the hooked
//     cgroup (hooks run and pass).
//   - no-hook: the same dial from a sibling cgroup without programs.
//
// ns/connect is the time spent in connect() as measured by the client.
func BenchmarkConnectHook(b *testing.B) {
	e, r := benchEnv(b, false)
	e.startProxy(r)
	cases := []struct {
		name string
		cg   *os.File
		dst  netip.AddrPort
	}{
		{"redirected", e.cgFD, netip.AddrPortFrom(vip4, servicePort)},
		{"hook-not-selected", e.cgFD, proxy4},
		{"no-hook", e.plainFD, proxy4},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d := runTimed(b, "connect-bench", c.cg, e.pod1, helperArgs{Dst: c.dst.String(), Network: "tcp4", Count: b.N})
			b.ReportMetric(float64(d[0].Nanoseconds())/float64(b.N), "ns/connect")
			if len(d) == 3 {
				b.ReportMetric(float64(d[1].Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(d[2].Nanoseconds()), "p99-ns")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkShortcutRR measures 64-byte request/response round trips from a
// pod through a redirected connection to an echoing proxy process, with the
// sk_msg shortcut on and off.
func BenchmarkShortcutRR(b *testing.B) {
	for _, shortcut := range []bool{false, true} {
		b.Run(fmt.Sprintf("shortcut=%v", shortcut), func(b *testing.B) {
			e, r := benchEnv(b, shortcut)
			cfg := e.cfg
			p := startChild(b, "proxy", e.cgFD, e.node, helperArgs{Config: &cfg, Listen: proxy4.String(), Echo: true})
			p.waitReady(b)
			before, _ := r.Counters()
			d := runTimed(b, "rr-bench", e.cgFD, e.pod1, helperArgs{Dst: netip.AddrPortFrom(vip4, servicePort).String(), Network: "tcp4", Count: b.N, Size: 64})
			after, _ := r.Counters()
			b.ReportMetric(float64(d[0].Nanoseconds())/float64(b.N), "ns/roundtrip")
			b.ReportMetric(0, "ns/op")
			if shortcut && after.ShortcutSocket-before.ShortcutSocket < 2 {
				b.Fatalf("shortcut on but %d sockets added", after.ShortcutSocket-before.ShortcutSocket)
			}
		})
	}
}
