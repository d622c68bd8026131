package bpf

import (
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMeasure prints the figures of docs/bpf.md. It is a measurement, not
// a check: it runs only with ZLB_MEASURE=1 (and root), interleaves the
// variants round by round so that noise from the shared machine hits them
// alike, and reports medians with min and max.
//
//	ZLB_MEASURE=1 go test -run TestMeasure -v ./bpf
func TestMeasure(t *testing.T) {
	if os.Getenv("ZLB_MEASURE") != "1" {
		t.Skip("measurement; set ZLB_MEASURE=1")
	}
	const rounds, perRound = 7, 3000

	t.Run("connect-hook", func(t *testing.T) {
		e := newTestEnv(t)
		r := e.load(loadOptions{})
		if err := r.SetService(netip.AddrPortFrom(vip4, servicePort), svcID4); err != nil {
			t.Fatal(err)
		}
		if err := r.EnrollNetns(e.cookie(e.pod1)); err != nil {
			t.Fatal(err)
		}
		e.startProxy(r)
		variants := []struct {
			name string
			cg   *os.File
			dst  netip.AddrPort
		}{
			{"no-hook", e.plainFD, proxy4},
			{"hook-not-selected", e.cgFD, proxy4},
			{"redirected", e.cgFD, netip.AddrPortFrom(vip4, servicePort)},
		}
		p50 := map[string][]time.Duration{}
		for range rounds {
			for _, v := range variants {
				c := startChild(t, "connect-bench", v.cg, e.pod1, helperArgs{Dst: v.dst.String(), Network: "tcp4", Count: perRound})
				d := parseDurations(t, c.wait(t, 5*time.Minute))
				p50[v.name] = append(p50[v.name], d[1])
			}
		}
		base := median(p50["no-hook"])
		for _, v := range variants {
			m := median(p50[v.name])
			t.Logf("%-18s connect() p50 over %d rounds of %d: median %v (min %v, max %v), ratio to no-hook %.2f",
				v.name, rounds, perRound, m, slices.Min(p50[v.name]), slices.Max(p50[v.name]), float64(m)/float64(base))
		}
	})

	t.Run("sk_msg-shortcut", func(t *testing.T) {
		perRT := map[bool][]time.Duration{}
		stalls := map[bool]int{}
		const conns, rts = 200, 50
		for range 3 {
			for _, shortcut := range []bool{false, true} {
				e := newTestEnv(t)
				e.cfg.SockMsgShortcut = shortcut
				r := e.load(loadOptions{})
				if err := r.SetService(netip.AddrPortFrom(vip4, servicePort), svcID4); err != nil {
					t.Fatal(err)
				}
				if err := r.EnrollNetns(e.cookie(e.pod1)); err != nil {
					t.Fatal(err)
				}
				cfg := e.cfg
				p := startChild(t, "proxy", e.cgFD, e.node, helperArgs{Config: &cfg, Listen: proxy4.String(), Echo: true})
				p.waitReady(t)
				c := startChild(t, "rr-bench", e.cgFD, e.pod1, helperArgs{Dst: netip.AddrPortFrom(vip4, servicePort).String(),
					Network: "tcp4", Count: rts, Size: 64, Conns: conns})
				d := parseDurations(t, c.wait(t, 10*time.Minute))
				ok := conns - int(d[1])
				if ok > 0 {
					perRT[shortcut] = append(perRT[shortcut], d[0]/time.Duration(ok*rts))
				}
				stalls[shortcut] += int(d[1])
			}
		}
		for _, shortcut := range []bool{false, true} {
			t.Logf("shortcut=%-5v 64 B round trip through the proxy: median %v (min %v, max %v); stalled connections %d of %d",
				shortcut, median(perRT[shortcut]), slices.Min(perRT[shortcut]), slices.Max(perRT[shortcut]), stalls[shortcut], 3*conns)
		}
	})
}

func parseDurations(t testing.TB, out []byte) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for _, f := range strings.Fields(string(out)) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("helper output %q: %v", out, err)
		}
		ds = append(ds, time.Duration(n))
	}
	return ds
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
