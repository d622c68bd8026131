package bpf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

const (
	svcID4 = 7
	svcID6 = 8
)

// redirectedEnv is a test world with the redirector loaded, services
// selected, pod1 enrolled, the proxy and the stand-in backends serving.
func redirectedEnv(t *testing.T) (*testEnv, *Redirector) {
	e := newTestEnv(t)
	r := e.load(loadOptions{})
	for _, s := range []struct {
		addr netip.AddrPort
		id   uint32
	}{
		{netip.AddrPortFrom(vip4, servicePort), svcID4},
		{netip.AddrPortFrom(vip6, servicePort), svcID6},
	} {
		if err := r.SetService(s.addr, s.id); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.EnrollNetns(e.cookie(e.pod1)); err != nil {
		t.Fatal(err)
	}
	e.startBackends()
	e.startProxy(r)
	return e, r
}

func TestRedirectThousandConnectionsRecoverOriginalDst(t *testing.T) {
	e, r := redirectedEnv(t)
	cases := []struct {
		name, network string
		dst           netip.AddrPort
		count         int
		wantReply     string
	}{
		{"ipv4", "tcp4", netip.AddrPortFrom(vip4, servicePort), 1000, fmt.Sprintf("proxy %s:%d %d false", vip4, servicePort, svcID4)},
		{"ipv6", "tcp6", netip.AddrPortFrom(vip6, servicePort), 200, fmt.Sprintf("proxy [%s]:%d %d false", vip6, servicePort, svcID6)},
		{"v4-mapped", "tcp6", netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), servicePort), 200, fmt.Sprintf("proxy %s:%d %d true", vip4, servicePort, svcID4)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := r.Counters()
			res := e.runClient(e.pod1, helperArgs{Dst: c.dst.String(), Network: c.network, Count: c.count})
			if len(res) != c.count {
				t.Fatalf("got %d results, want %d", len(res), c.count)
			}
			misses := 0
			for i, got := range res {
				if got.Err != "" || got.Reply != c.wantReply || got.Peer != c.dst.String() {
					misses++
					if misses <= 3 {
						t.Errorf("connection %d: reply %q peer %q err %q; want reply %q peer %s", i, got.Reply, got.Peer, got.Err, c.wantReply, c.dst)
					}
				}
			}
			if misses > 0 {
				t.Fatalf("%d of %d connections missed", misses, c.count)
			}
			after, err := r.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if d := after.Redirected - before.Redirected; d != uint64(c.count) {
				t.Errorf("redirected counter grew by %d, want %d", d, c.count)
			}
			if d := after.PeerRewritten - before.PeerRewritten; d < uint64(c.count) {
				t.Errorf("getpeername rewrites grew by %d, want >= %d", d, c.count)
			}
		})
	}
}

func TestNotRedirected(t *testing.T) {
	e, r := redirectedEnv(t)
	// Enrolling the node ("host") namespace must not make it redirectable.
	if err := r.EnrollNetns(e.cookie(e.node)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, netns, network string
		dst                  netip.AddrPort
		mark                 uint32
		counter              func(Counters) uint64
	}{
		{"host netns v4", e.node, "tcp4", netip.AddrPortFrom(vip4, servicePort), 0, func(c Counters) uint64 { return c.SkipHostNetns }},
		{"host netns v6", e.node, "tcp6", netip.AddrPortFrom(vip6, servicePort), 0, func(c Counters) uint64 { return c.SkipHostNetns }},
		{"not enrolled v4", e.pod2, "tcp4", netip.AddrPortFrom(vip4, servicePort), 0, func(c Counters) uint64 { return c.SkipNotEnroll }},
		{"not enrolled v6", e.pod2, "tcp6", netip.AddrPortFrom(vip6, servicePort), 0, func(c Counters) uint64 { return c.SkipNotEnroll }},
		{"not enrolled v4-mapped", e.pod2, "tcp6", netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), servicePort), 0, func(c Counters) uint64 { return c.SkipNotEnroll }},
		{"unselected address v4", e.pod1, "tcp4", netip.AddrPortFrom(vip4Other, servicePort), 0, func(c Counters) uint64 { return c.SkipNotSelect }},
		{"unselected port v4", e.pod1, "tcp4", netip.AddrPortFrom(vip4, otherServicePort), 0, func(c Counters) uint64 { return c.SkipNotSelect }},
		{"unselected address v6", e.pod1, "tcp6", netip.AddrPortFrom(vip6Other, servicePort), 0, func(c Counters) uint64 { return c.SkipNotSelect }},
		{"unselected port v6", e.pod1, "tcp6", netip.AddrPortFrom(vip6, otherServicePort), 0, func(c Counters) uint64 { return c.SkipNotSelect }},
		{"unselected v4-mapped", e.pod1, "tcp6", netip.AddrPortFrom(netip.AddrFrom16(vip4Other.As16()), servicePort), 0, func(c Counters) uint64 { return c.SkipNotSelect }},
		{"marked v4", e.pod1, "tcp4", netip.AddrPortFrom(vip4, servicePort), DefaultSocketMark, func(c Counters) uint64 { return c.SkipMarked }},
		{"marked v6", e.pod1, "tcp6", netip.AddrPortFrom(vip6, servicePort), DefaultSocketMark, func(c Counters) uint64 { return c.SkipMarked }},
		{"marked v4-mapped", e.pod1, "tcp6", netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), servicePort), DefaultSocketMark | 0x1, func(c Counters) uint64 { return c.SkipMarked }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := r.Counters()
			res := e.runClient(c.netns, helperArgs{Dst: c.dst.String(), Network: c.network, Mark: c.mark})
			got := res[0]
			if got.Err != "" || !strings.HasPrefix(got.Reply, "backend ") {
				t.Fatalf("reply %q err %q: want the stand-in backend at %s", got.Reply, got.Err, c.dst)
			}
			if got.Peer != c.dst.String() {
				t.Errorf("getpeername %s, want %s", got.Peer, c.dst)
			}
			after, _ := r.Counters()
			if after.Redirected != before.Redirected {
				t.Errorf("redirected counter moved")
			}
			if c.counter(after) <= c.counter(before) {
				t.Errorf("the skip counter for this case did not move: %+v", after)
			}
		})
	}
}

// With EnrollAllNetns the attach cgroup is the scope: a pod namespace that
// was never enrolled is redirected, and the host namespace still is not.
func TestEnrollAllNetns(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.EnrollAllNetns = true
	r := e.load(loadOptions{})
	if err := r.SetService(netip.AddrPortFrom(vip4, servicePort), svcID4); err != nil {
		t.Fatal(err)
	}
	e.startBackends()
	e.startProxy(r)
	want := fmt.Sprintf("proxy %s:%d %d false", vip4, servicePort, svcID4)
	for _, pod := range []string{e.pod1, e.pod2} {
		res := e.runClient(pod, helperArgs{Dst: netip.AddrPortFrom(vip4, servicePort).String(), Network: "tcp4"})
		if got := res[0]; got.Err != "" || got.Reply != want {
			t.Fatalf("pod %s: reply %q err %q, want %q", pod, got.Reply, got.Err, want)
		}
	}
	res := e.runClient(e.node, helperArgs{Dst: netip.AddrPortFrom(vip4, servicePort).String(), Network: "tcp4"})
	if got := res[0]; got.Err != "" || !strings.HasPrefix(got.Reply, "backend ") {
		t.Fatalf("host netns: reply %q err %q, want the stand-in backend", got.Reply, got.Err)
	}
}
