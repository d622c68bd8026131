package kubenode

import (
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zonelb/zonelb/internal/kubenode"
)

// TestKubeNodeDemo is `make k8s-demo`: the scenario of TestKubeNode up to a
// SIGKILL of the daemon under load, printed for a person into the file that
// ZONELB_KUBENODE_DEMO names (the Makefile sets it and prints the file).
// Without it, it skips: TestKubeNode asserts the same steps in `make test`.
func TestKubeNodeDemo(t *testing.T) {
	out := os.Getenv("ZONELB_KUBENODE_DEMO")
	if out == "" {
		t.Skip("the demo runs with `make k8s-demo`; TestKubeNode tests the same")
	}
	imgs := findImages(t)
	start := time.Now()
	node := kubenode.Start(t, kubenode.Options{Images: imgs.tarballs(), PauseImage: pauseImage})
	nodeUp := time.Since(start)
	s := &scenario{node: node, imgs: imgs, overlay: t.TempDir()}
	for _, step := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Backends", func(t *testing.T) { s.plainBackend(t) }},
		{"Baseline", s.baseline},
		{"DaemonSet", s.daemonSet},
		{"Steered", s.steered},
		{"OptOut", s.optOut},
		{"RolloutRestartUnderLoad", s.rolloutRestart},
		{"DaemonKilled", s.daemonKilled},
	} {
		if !t.Run(step.name, step.fn) {
			return
		}
	}
	var b strings.Builder
	printDemo(&b, s, nodeUp)
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// plainBackend is TestKubeNode's PlainPod step: the first backend.
func (s *scenario) plainBackend(t *testing.T) {
	if _, err := s.node.Client.CoreV1().Pods("default").Create(t.Context(), backendPod("greeter-a-0", "zone-a"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodRunning(t, s.node.Client, "default", "greeter-a-0")
}

func printDemo(w io.Writer, s *scenario, nodeUp time.Duration) {
	fmt.Fprintf(w, "\nzonelb on a real Kubernetes node\n")
	fmt.Fprintf(w, "================================\n\n")
	fmt.Fprintf(w, "node %s (zone-a), Ready in %v: kubelet, kube-proxy (iptables), containerd, runc, bridge CNI,\n", s.node.Name, nodeUp.Round(time.Second))
	fmt.Fprintf(w, "in a network namespace of its own. Service default/greeter (ClusterIP %s, port 80, grpc):\n", s.clusterIP)
	fmt.Fprintf(w, "  zone-a: greeter-a-0, -1, -2 (pods of this node's kubelet)\n")
	for _, r := range remotes {
		fmt.Fprintf(w, "  %s: %s at %s (an endpoint of node %s)\n", r.zone, r.name, r.ip, r.node)
	}
	fmt.Fprintf(w, "Each client pod makes its calls one after another over ONE long-lived gRPC connection.\n")
	fmt.Fprintf(w, "\"seen from\" is the address the backend saw: the client's own (kube-proxy's DNAT)\n")
	fmt.Fprintf(w, "or the node's bridge address %s (zonelb's proxy, on the node).\n", kubenode.BridgeIP)
	step := ""
	for _, p := range s.phases {
		if p.step != step {
			step = p.step
			fmt.Fprintf(w, "\n## %s\n", step)
			if strings.HasPrefix(step, "with zonelb") {
				fmt.Fprintf(w, "(DaemonSet zonelb Ready %v after kubectl apply -k)\n", s.dsReady.Round(time.Second))
			}
		}
		printCalls(w, p)
	}
	if len(s.restart) > 0 {
		fmt.Fprintf(w, "\n## kubectl rollout restart daemonset/zonelb, under load\n")
		fmt.Fprintf(w, "%-10s %8s %7s  %s\n", "client", "calls", "failed", "through the proxy / straight to a pod (kube-proxy: a connection made while no daemon listened stays there)")
		for _, name := range slices.Sorted(maps.Keys(s.restart)) {
			r := s.restart[name]
			via := 0
			for peer, n := range r.Peers {
				if host, _, _ := net.SplitHostPort(peer); host == kubenode.BridgeIP {
					via += n
				}
			}
			fmt.Fprintf(w, "%-10s %8d %7d  %d / %d\n", name, r.OK+r.Failed, r.Failed, via, r.OK-via)
		}
	}
	if len(s.killed) > 0 {
		fmt.Fprintf(w, "\n## SIGKILL of the daemon's process, under load (the kubelet restarts it)\n")
		fmt.Fprintf(w, "%-13s %8s %7s %9s %9s %9s\n", "client", "calls", "failed", "reached", "in flight", "saveable")
		for _, name := range slices.Sorted(maps.Keys(s.killed)) {
			o := s.killed[name]
			fmt.Fprintf(w, "%-13s %8d %7d %9d %9d %9d\n", name, o.ok+o.failed, o.failed, o.reached, o.lost, o.saveable)
		}
		fmt.Fprintf(w, "reached: a backend received the call; in flight: on the killed proxy's connection;\n")
		fmt.Fprintf(w, "saveable: never reached a backend, a retry could have saved it (the bar: none).\n")
	}
	fmt.Fprintln(w)
}

func printCalls(w io.Writer, p phase) {
	type row struct {
		backend, zone, from string
		n                   int
	}
	rows := map[string]*row{}
	zones := map[string]int{}
	for _, c := range p.calls {
		from, _, _ := net.SplitHostPort(c.Peer)
		switch from {
		case p.clientIP:
			from += " (the client)"
		case kubenode.BridgeIP:
			from += " (zonelb's proxy)"
		}
		k := c.Backend + "|" + from
		if rows[k] == nil {
			rows[k] = &row{backend: c.Backend, zone: c.Zone, from: from}
		}
		rows[k].n++
		zones[c.Zone]++
	}
	fmt.Fprintf(w, "%s (%s), %d calls:\n", p.client, p.clientIP, len(p.calls))
	fmt.Fprintf(w, "  %-12s %-7s %6s  %s\n", "served by", "zone", "calls", "seen from")
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		r := rows[k]
		fmt.Fprintf(w, "  %-12s %-7s %6d  %s\n", r.backend, r.zone, r.n, r.from)
	}
	var shares []string
	crossed := 0
	for _, z := range slices.Sorted(maps.Keys(zones)) {
		shares = append(shares, fmt.Sprintf("%s %.0f%%", z, 100*float64(zones[z])/float64(len(p.calls))))
		if z != "zone-a" {
			crossed += zones[z]
		}
	}
	fmt.Fprintf(w, "  zone shares: %s; crossed zones: %d of %d calls\n", strings.Join(shares, ", "), crossed, len(p.calls))
}
