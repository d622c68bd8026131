package kubenode

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zonelb/zonelb/internal/kubenode"
)

// startLoad starts every steered client's call loop; stop returns the
// totals per client.
func (s *scenario) startLoad(t *testing.T) (stop func() map[string]loadResult) {
	t.Helper()
	for _, ip := range s.clients {
		clientHTTP(t, s.node, "POST", "http://"+net.JoinHostPort(ip, "8080")+"/load/start")
	}
	return func() map[string]loadResult {
		res := map[string]loadResult{}
		for name, ip := range s.clients {
			var r loadResult
			body := clientHTTP(t, s.node, "POST", "http://"+net.JoinHostPort(ip, "8080")+"/load/stop")
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("%s: load result: %v: %s", name, err, body)
			}
			res[name] = r
		}
		return res
	}
}

// whileLoaded waits d with calls running (a bounded pause: the load is
// what is being observed, not a synchronisation).
func whileLoaded(d time.Duration) { time.Sleep(d) }

// rolloutRestart: `kubectl rollout restart daemonset/zonelb` while every
// client calls in a loop. The old daemon drains (GOAWAY), new connections
// fail open to kube-proxy until the new daemon registers its listener:
// no call fails.
func (s *scenario) rolloutRestart(t *testing.T) {
	ctx := t.Context()
	old := waitDaemonSetReady(t, s.node, 0)
	stop := s.startLoad(t)
	whileLoaded(2 * time.Second)
	if _, err := s.node.Kubectl(ctx, "-n", "zonelb", "rollout", "restart", "daemonset/zonelb"); err != nil {
		t.Fatal(err)
	}
	out, err := s.node.Kubectl(ctx, "-n", "zonelb", "rollout", "status", "daemonset/zonelb", "--timeout=3m")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl rollout status: %s", strings.TrimSpace(string(out)))
	ds, err := s.node.Client.AppsV1().DaemonSets("zonelb").Get(ctx, "zonelb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur := waitDaemonSetReady(t, s.node, ds.Generation)
	if cur.UID == old.UID {
		t.Fatalf("rollout restart kept pod %s", old.Name)
	}
	whileLoaded(2 * time.Second)
	s.restart = stop()
	for name, r := range s.restart {
		t.Logf("%s during the restart: %d calls ok, %d failed, backends %v, seen from %v", name, r.OK, r.Failed, r.Backends, r.Peers)
		if r.Failed > 0 {
			t.Errorf("%s: %d calls failed during the rollout: %v", name, r.Failed, r.Errors)
		}
		if r.OK == 0 {
			t.Errorf("%s: no call succeeded during the rollout", name)
		}
	}

	// A pod created after the restart is steered by the new daemon.
	c := s.node.Client
	if _, err := c.CoreV1().Pods("default").Create(ctx, clientPod("client-later", net.JoinHostPort(s.clusterIP, "80"), nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodRunning(t, c, "default", "client-later")
	backends := map[string]int{}
	for _, call := range waitCalls(t, s.node, p.Status.PodIP, 40) {
		backends[call.Backend]++
		if host, _, _ := net.SplitHostPort(call.Peer); host != kubenode.BridgeIP {
			t.Errorf("client-later: backend %s saw %s, want the node's %s (through the new daemon's proxy)", call.Backend, call.Peer, kubenode.BridgeIP)
		}
	}
	if len(backends) < 2 {
		t.Errorf("client-later: one connection reached only %v", backends)
	}
	s.clients["client-later"] = p.Status.PodIP
	t.Logf("client-later, created after the restart: backends %v, all through the proxy", backends)
}

// uninstall: `kubectl delete -k` leaves the pinned programs (they redirect
// nothing without a listener: calls go to kube-proxy), and `zonelb
// uninstall` on the node removes pins, links and zonelb0.
func (s *scenario) uninstall(t *testing.T) {
	ctx := t.Context()
	if _, err := s.node.Kubectl(ctx, "delete", "-k", s.overlay, "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	pins := s.nodeLs(t, "/sys/fs/bpf/zonelb")
	if len(pins) == 0 {
		t.Fatalf("no pins under the node's /sys/fs/bpf/zonelb after kubectl delete: want them kept (deploy/README)")
	}
	t.Logf("after kubectl delete -k: node's /sys/fs/bpf/zonelb holds %v", pins)
	ip := s.clients["client-later"]
	s.assertDirect(t, "after kubectl delete", ip)

	bin := filepath.Join(filepath.Dir(s.imgs.dir), "zonelb")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("zonelb binary: %v", err)
	}
	out, err := s.node.Command(ctx, bin, "uninstall").CombinedOutput()
	if err != nil {
		t.Fatalf("zonelb uninstall on the node: %v: %s", err, out)
	}
	t.Logf("zonelb uninstall on the node: %s", strings.TrimSpace(string(out)))
	// (bpffs lists the kernel's own maps.debug and progs.debug too.)
	if left := s.nodeLs(t, "/sys/fs/bpf/zonelb"); left != nil {
		t.Errorf("node's /sys/fs/bpf/zonelb after uninstall: %v, want it gone", left)
	}
	if out, err := s.node.Command(ctx, "ip", "link", "show", "zonelb0").CombinedOutput(); err == nil {
		t.Errorf("zonelb0 still on the node after uninstall: %s", out)
	}
	s.assertDirect(t, "after uninstall", ip)
}

// nodeLs lists a directory as the node sees it (its own mounts).
func (s *scenario) nodeLs(t *testing.T, dir string) []string {
	t.Helper()
	out, err := s.node.Command(t.Context(), "ls", "-A", dir).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return nil
		}
		t.Fatalf("ls %s on the node: %v: %s", dir, err, out)
	}
	return append([]string{}, strings.Fields(string(out))...)
}

// assertDirect: a client's calls all succeed, straight through kube-proxy
// (the backend sees the client's own address). The client's connection is
// a new one: its old one, to a proxy that is gone, was closed.
func (s *scenario) assertDirect(t *testing.T, when, ip string) {
	t.Helper()
	for _, call := range waitCalls(t, s.node, ip, 20) {
		if host, _, _ := net.SplitHostPort(call.Peer); host != ip {
			t.Errorf("%s: backend %s saw %s, want the client's own %s (kube-proxy)", when, call.Backend, call.Peer, ip)
		}
	}
}

// daemonPodDeleted: deleting the DaemonSet's pod under load is a graceful
// stop (drain, GOAWAY) and a new pod: no call fails.
func (s *scenario) daemonPodDeleted(t *testing.T) {
	ctx := t.Context()
	old := waitDaemonSetReady(t, s.node, 0)
	s.steeredClient(t, "client-delete")
	stop := s.startLoad(t)
	whileLoaded(time.Second)
	if err := s.node.Client.CoreV1().Pods("zonelb").Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; {
		if cur := waitDaemonSetReady(t, s.node, 0); cur.UID != old.UID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never replaced", old.Name)
		}
		time.Sleep(500 * time.Millisecond) // polling the API, bounded by deadline
	}
	whileLoaded(time.Second)
	for name, r := range stop() {
		t.Logf("%s while the daemon's pod was deleted and replaced: %d ok, %d failed", name, r.OK, r.Failed)
		if r.Failed > 0 {
			t.Errorf("%s: %d calls failed: %v", name, r.Failed, r.Errors)
		}
	}
}

// daemonKilled: SIGKILL of the daemon's process under load. The hooks stop
// steering to the proxy as the kill is delivered (bpf's exiting flag, see
// docs/bpf.md "Fail-open"), new connections fail open to kube-proxy, the
// kubelet restarts the container. Every failed call must have reached a
// backend (the backends log the id of each call they receive) or have gone
// out on a connection the client made before the kill: lost with the
// killed proxy, which only the client could retry. A call that failed on a
// connection made after the kill, or never went out, is one a retry could
// have saved: none may. No time allowance.
func (s *scenario) daemonKilled(t *testing.T) {
	pod := waitDaemonSetReady(t, s.node, 0)
	cid := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	restarts := pod.Status.ContainerStatuses[0].RestartCount
	pid, err := s.node.TaskPid(cid)
	if err != nil {
		t.Fatal(err)
	}
	// A client connected through this daemon's proxy (the others' last
	// connections were made while a daemon was away: kube-proxy's).
	s.steeredClient(t, "client-kill")
	stop := s.startLoad(t)
	whileLoaded(time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the daemon (pid %d): %v", pid, err)
	}
	// kill(2) returns once the signal is generated, which is when the
	// hooks stop steering: a connection that answered before this instant
	// was made before the kill.
	killed := time.Now()
	for deadline := time.Now().Add(3 * time.Minute); ; {
		cur := waitDaemonSetReady(t, s.node, 0)
		if cur.Status.ContainerStatuses[0].RestartCount > restarts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kubelet did not restart the killed daemon")
		}
		time.Sleep(500 * time.Millisecond) // polling the API, bounded by deadline
	}
	whileLoaded(time.Second)
	results := stop()
	received := s.receivedIDs(t)
	s.killed = map[string]killOutcome{}
	for name, r := range results {
		t.Logf("%s around the SIGKILL: %d ok, %d failed %v", name, r.OK, r.Failed, r.Errors)
		if r.Failed > len(r.Failures) {
			t.Errorf("%s: %d failures, %d recorded: cannot classify them", name, r.Failed, len(r.Failures))
		}
		o := killOutcome{ok: r.OK, failed: r.Failed}
		for _, f := range r.Failures {
			first, made := r.Conns[f.Conn]
			switch {
			case received[f.ID]:
				o.reached++
				t.Logf("%s: call %s reached a backend: %s", name, f.ID, f.Err)
			case made && first < killed.UnixNano():
				o.lost++
				t.Logf("%s: call %s was lost with the killed proxy (connection %s, made before the kill): %s", name, f.ID, f.Conn, f.Err)
			default:
				o.saveable++
				t.Errorf("%s: saveable failed call %s (started %+.3fms after the kill, connection %q): %s",
					name, f.ID, float64(f.Start-killed.UnixNano())/1e6, f.Conn, f.Err)
			}
		}
		s.killed[name] = o
	}
}

// killOutcome is one client's calls around a SIGKILL of the daemon, its
// failures classified.
type killOutcome struct {
	ok, failed int
	reached    int // failed after a backend received them
	lost       int // in flight on the killed proxy's connection
	saveable   int // never reached a backend: a retry could have saved them
}

// steeredClient creates a client pod, checks that its connection goes
// through the node's proxy, and adds it to the load.
func (s *scenario) steeredClient(t *testing.T, name string) {
	t.Helper()
	c := s.node.Client
	if _, err := c.CoreV1().Pods("default").Create(t.Context(), clientPod(name, net.JoinHostPort(s.clusterIP, "80"), nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodRunning(t, c, "default", name)
	for _, call := range waitCalls(t, s.node, p.Status.PodIP, 10) {
		if host, _, _ := net.SplitHostPort(call.Peer); host != kubenode.BridgeIP {
			t.Fatalf("%s: backend %s saw %s, want the node's %s (through the proxy)", name, call.Backend, call.Peer, kubenode.BridgeIP)
		}
	}
	s.clients[name] = p.Status.PodIP
}
