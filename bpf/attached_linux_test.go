package bpf

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAttachedFollowsTheKernel detaches one hook behind the agent's back
// (as `bpftool cgroup detach` would) and sees Attached, and the
// collector's zonelb_bpf_program_attached, report it at the next read.
func TestAttachedFollowsTheKernel(t *testing.T) {
	e := newTestEnv(t)
	r := e.load(loadOptions{})
	got, err := r.Attached()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"connect4", "connect6", "getpeername4", "getpeername6", "sockops"}
	for _, p := range want {
		if !got[p] {
			t.Errorf("after load: %s not attached: %v", p, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("after load: %v, want exactly %v", got, want)
	}

	if err := r.links[zonelbProgZlbConnect4].Detach(); err != nil {
		t.Fatalf("detach connect4: %v", err)
	}
	got, err = r.Attached()
	if err != nil {
		t.Fatal(err)
	}
	if got["connect4"] || !got["connect6"] || !got["sockops"] {
		t.Errorf("after detaching connect4: %v, want only connect4 detached", got)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(r))
	exp := `
# HELP zonelb_bpf_program_attached 1 while the daemon's program for the cgroup hook is attached to the pods' cgroup, as the kernel reports it at scrape time; 0 once it was detached or replaced.
# TYPE zonelb_bpf_program_attached gauge
zonelb_bpf_program_attached{program="connect4"} 0
zonelb_bpf_program_attached{program="connect6"} 1
zonelb_bpf_program_attached{program="getpeername4"} 1
zonelb_bpf_program_attached{program="getpeername6"} 1
zonelb_bpf_program_attached{program="sockops"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "zonelb_bpf_program_attached"); err != nil {
		t.Error(err)
	}

	// A handle that only opened the pins attached nothing to report.
	if got, err := mustOpen(t, e.cfg).Attached(); err != nil || len(got) != 0 {
		t.Errorf("opened handle: %v, %v; want nothing", got, err)
	}
}
