package bpf

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A pod's cgroup in the opt-out map: its containers (a cgroup below it)
// reach the service directly, while a sibling pod's container in the same
// network namespace is redirected; opting back in redirects it again.
func TestOptOutCgroup(t *testing.T) {
	e, r := redirectedEnv(t)
	// The kubelet's layout in small: <root>/pod<uid>/<container>.
	podOut, _ := mkCgroup(t, filepath.Join(e.cgroup, "podout"))
	_, ctrOut := mkCgroup(t, filepath.Join(podOut, "ctr"))
	podIn, _ := mkCgroup(t, filepath.Join(e.cgroup, "podin"))
	_, ctrIn := mkCgroup(t, filepath.Join(podIn, "ctr"))

	id, err := CgroupID(podOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.OptOut(id); err != nil {
		t.Fatal(err)
	}
	if ids, err := r.OptedOut(); err != nil || !slices.Equal(ids, []uint64{id}) {
		t.Fatalf("OptedOut() = %v, %v; want [%d]", ids, err, id)
	}

	dst := netip.AddrPortFrom(vip4, servicePort)
	proxied := fmt.Sprintf("proxy %s:%d %d false", vip4, servicePort, svcID4)
	connect := func(ctr string, cg *os.File) connResult {
		t.Helper()
		c := startChild(t, "client", cg, e.pod1, helperArgs{Dst: dst.String(), Network: "tcp4", Count: 1})
		res := decodeResults(t, c.wait(t, 60*time.Second))
		if len(res) != 1 || res[0].Err != "" {
			t.Fatalf("%s: results %+v", ctr, res)
		}
		return res[0]
	}

	before, _ := r.Counters()
	if got := connect("opted-out pod", ctrOut); !strings.HasPrefix(got.Reply, "backend ") {
		t.Errorf("opted-out pod: reply %q, want the stand-in backend (not redirected)", got.Reply)
	}
	after, _ := r.Counters()
	if after.SkipOptedOut != before.SkipOptedOut+1 || after.Redirected != before.Redirected {
		t.Errorf("opted-out connect: opted_out %d->%d, redirected %d->%d; want +1 and unchanged",
			before.SkipOptedOut, after.SkipOptedOut, before.Redirected, after.Redirected)
	}
	if got := connect("sibling pod", ctrIn); got.Reply != proxied {
		t.Errorf("sibling pod: reply %q, want %q (redirected)", got.Reply, proxied)
	}

	if err := r.OptIn(id); err != nil {
		t.Fatal(err)
	}
	if err := r.OptIn(id); err != nil {
		t.Errorf("second OptIn: %v, want nil (absent is not an error)", err)
	}
	if got := connect("opted back in", ctrOut); got.Reply != proxied {
		t.Errorf("after OptIn: reply %q, want %q (redirected)", got.Reply, proxied)
	}
}
