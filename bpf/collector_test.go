package bpf

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeCounters struct {
	c   Counters
	err error
	n   int
}

func (f *fakeCounters) Counters() (Counters, error) {
	f.n++
	return f.c, f.err
}

func TestCollectorReadsAtScrapeTime(t *testing.T) {
	src := &fakeCounters{c: Counters{Redirected: 3, SkipProxyDown: 2, TupleRecorded: 3, ProxyListening4: true}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))

	want := `
# HELP zonelb_bpf_proxy_listener_up 1 while the proxy's listener is registered for the family by a process that is not exiting (redirection active), 0 while failing open.
# TYPE zonelb_bpf_proxy_listener_up gauge
zonelb_bpf_proxy_listener_up{family="ipv4"} 1
zonelb_bpf_proxy_listener_up{family="ipv6"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "zonelb_bpf_proxy_listener_up"); err != nil {
		t.Fatal(err)
	}
	src.c.Redirected = 10
	src.c.ProxyListening4 = false
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "zonelb_bpf_connects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "redirected" {
				found = true
				if m.GetCounter().GetValue() != 10 {
					t.Errorf("redirected = %v, want the fresh value 10", m.GetCounter().GetValue())
				}
			}
		}
	}
	if !found || src.n != 2 {
		t.Errorf("counters not read on each scrape (found=%v reads=%d)", found, src.n)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 11+5+2 {
		t.Errorf("metric count %d (err %v), want 18", n, err)
	}

	src.err = errors.New("map gone")
	if _, err := reg.Gather(); err == nil {
		t.Error("a failed read must surface as a scrape error")
	}
}
