package kubenode

import (
	"net"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zonelb/zonelb/internal/kubenode"
)

// optOut: a client pod labelled zonelb.io/redirect: "false" is left alone
// (its calls go through kube-proxy: the backend sees the pod's own
// address), while a steered pod beside it, in the same namespace and on
// the same node, still goes through the proxy.
func (s *scenario) optOut(t *testing.T) {
	c := s.node.Client
	optedOut := func() float64 {
		return metricSum(t, s.node, "zonelb_bpf_connects_total", func(n, v string) bool { return n == "outcome" && v == "opted_out" })
	}
	before := optedOut()
	const name = "client-optout"
	pod := clientPod(name, net.JoinHostPort(s.clusterIP, "80"), map[string]string{"zonelb.io/redirect": "false"})
	if _, err := c.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodRunning(t, c, "default", name)
	cs := waitCalls(t, s.node, p.Status.PodIP, 20)
	s.phases = append(s.phases, phase{"opted out (zonelb.io/redirect: \"false\")", name, p.Status.PodIP, cs})
	for _, call := range cs {
		if host, _, _ := net.SplitHostPort(call.Peer); host != p.Status.PodIP {
			t.Errorf("%s: backend %s saw %s, want the pod's own %s (not redirected)", name, call.Backend, call.Peer, p.Status.PodIP)
		}
	}
	// The hook saw the connect and let it go for the opt-out, not for
	// another reason.
	if got := optedOut() - before; got < 1 {
		t.Errorf("zonelb_bpf_connects_total{outcome=opted_out} rose by %v, want at least the client's one connect", got)
	}
	for steered, ip := range s.clients {
		for _, call := range waitCalls(t, s.node, ip, 10) {
			if host, _, _ := net.SplitHostPort(call.Peer); host != kubenode.BridgeIP {
				t.Errorf("%s beside the opted-out pod: backend %s saw %s, want the node's %s (through the proxy)", steered, call.Backend, call.Peer, kubenode.BridgeIP)
			}
		}
	}
	t.Logf("%s (%s): %d calls straight to the backends from its own address; steered pods %v still through the proxy", name, p.Status.PodIP, len(cs), s.clients)
}
