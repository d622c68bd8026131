package kubenode

import (
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zonelb/zonelb/internal/kubenode"
)

// scenario is the state the steps share: one node, one Service, its
// backends (two more pods of zone-a here, one peer each in zone-b and
// zone-c on the bridge), and client pods.
type scenario struct {
	node      *kubenode.Node
	imgs      imageSet
	clusterIP string
	localPods map[string]bool   // backends in zone-a
	clients   map[string]string // steered client pods: name -> IP
	overlay   string            // the Kustomize overlay applied
	// What a person is shown (make k8s-demo): each client's calls.
	phases  []phase
	dsReady time.Duration // kubectl apply to the DaemonSet's pod Ready
	restart map[string]loadResult
	killed  map[string]killOutcome // the daemon's SIGKILL
}

// phase is one client's calls in one step.
type phase struct {
	step, client, clientIP string
	calls                  []call
}

// Remote endpoints: network namespaces on the node's bridge, registered as
// endpoints of Nodes in other zones (no kubelet runs for those Nodes).
var remotes = []struct{ name, ip, zone, node string }{
	{"greeter-b-0", "10.244.0.201", "zone-b", "node-b"},
	{"greeter-c-0", "10.244.0.202", "zone-c", "node-c"},
}

// baseline: the Service, its backends and a client, before zonelb: calls
// go through kube-proxy, whose DNAT picks one backend per connection, and
// backends see the client's own address.
func (s *scenario) baseline(t *testing.T) {
	ctx := t.Context()
	c := s.node.Client
	svc, err := c.CoreV1().Services("default").Create(ctx, greeterService(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.clusterIP = svc.Spec.ClusterIP
	s.localPods = map[string]bool{"greeter-a-0": true}
	for _, name := range []string{"greeter-a-1", "greeter-a-2"} {
		if _, err := c.CoreV1().Pods("default").Create(ctx, backendPod(name, "zone-a"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		s.localPods[name] = true
	}
	for _, name := range []string{"greeter-a-1", "greeter-a-2"} {
		waitPodRunning(t, c, "default", name)
	}
	// The other zones: Nodes with zone labels (unschedulable: no kubelet
	// runs them), their endpoints in an EndpointSlice of the test's own.
	var eps []discoveryv1.Endpoint
	for _, r := range remotes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: r.node, Labels: map[string]string{"topology.kubernetes.io/zone": r.zone}},
			Spec:       corev1.NodeSpec{Unschedulable: true},
		}
		if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		bin := s.imgs.testpodBin(t)
		if _, err := s.node.StartPeer(r.name, r.ip, []string{"POD_NAME=" + r.name, "ZONE=" + r.zone}, bin, "backend"); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{r.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			NodeName:   new(r.node),
			Zone:       new(r.zone),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: r.name},
		})
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter-remote", Labels: map[string]string{
			discoveryv1.LabelServiceName: "greeter",
			discoveryv1.LabelManagedBy:   "kubenode-test",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: new("grpc"), Port: new(int32(50051)), Protocol: new(corev1.ProtocolTCP), AppProtocol: new("grpc")}},
	}
	if _, err := c.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.CoreV1().Pods("default").Create(ctx, clientPod("client-pre", net.JoinHostPort(s.clusterIP, "80"), nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pre := waitPodRunning(t, c, "default", "client-pre")
	cs := waitCalls(t, s.node, pre.Status.PodIP, 60)
	s.phases = append(s.phases, phase{"without zonelb (kube-proxy, iptables)", "client-pre", pre.Status.PodIP, cs})
	backends := map[string]int{}
	for _, call := range cs {
		backends[call.Backend]++
		if host, _, _ := net.SplitHostPort(call.Peer); host != pre.Status.PodIP {
			t.Errorf("kube-proxy path: backend %s saw %s, want the client's own %s", call.Backend, call.Peer, pre.Status.PodIP)
		}
	}
	if len(backends) != 1 {
		t.Errorf("kube-proxy path: one connection reached %d backends (%v), want 1 (DNAT per connection)", len(backends), backends)
	}
	t.Logf("without zonelb: 60 calls on one connection, backends %v, all from the client's own address", backends)
}

// waitCalls asks for n calls until all succeed (the Service's endpoints
// reach kube-proxy and the daemon within moments of the pods' readiness).
func waitCalls(t *testing.T, node *kubenode.Node, podIP string, n int) []call {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		cs := calls(t, node, podIP, n)
		var failed []string
		for _, c := range cs {
			if c.Err != "" {
				failed = append(failed, c.Err)
			}
		}
		if len(failed) == 0 {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s: %d of %d calls failed for a minute: %v", podIP, len(failed), n, failed[:min(3, len(failed))])
		}
		time.Sleep(time.Second) // polling until the Service is served, bounded by deadline
	}
}

func (s *scenario) daemonSet(t *testing.T) {
	start := time.Now()
	applyDeploy(t, s.node, s.imgs.zonelbRef, s.overlay)
	pod := waitDaemonSetReady(t, s.node, 0)
	s.dsReady = time.Since(start)
	if got := pod.Spec.Containers[0].Image; got != s.imgs.zonelbRef {
		t.Errorf("DaemonSet pod runs image %s, want %s", got, s.imgs.zonelbRef)
	}
	t.Logf("DaemonSet pod %s Ready on %s (image %s)", pod.Name, pod.Spec.NodeName, pod.Spec.Containers[0].Image)
}

// steered: client pods created after the DaemonSet, one long-lived
// connection each, have their calls balanced per call by the node's proxy.
func (s *scenario) steered(t *testing.T) {
	ctx := t.Context()
	c := s.node.Client
	before := proxiedRequests(t, s.node, "default/greeter")
	const perClient = 60
	clients := []string{"client-0", "client-1"}
	for _, name := range clients {
		if _, err := c.CoreV1().Pods("default").Create(ctx, clientPod(name, net.JoinHostPort(s.clusterIP, "80"), nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	s.clients = map[string]string{}
	for _, name := range clients {
		p := waitPodRunning(t, c, "default", name)
		s.clients[name] = p.Status.PodIP
		cs := waitCalls(t, s.node, p.Status.PodIP, perClient)
		s.phases = append(s.phases, phase{"with zonelb (kubectl apply -k deploy/)", name, p.Status.PodIP, cs})
		total += len(cs)
		backends, zones := map[string]int{}, map[string]int{}
		for _, call := range cs {
			backends[call.Backend]++
			zones[call.Zone]++
			// The proxy dials from the node's namespace: backends see the
			// bridge's address, never the client's.
			if host, _, _ := net.SplitHostPort(call.Peer); host != kubenode.BridgeIP {
				t.Errorf("%s: backend %s saw %s, want the node's %s (through the proxy)", name, call.Backend, call.Peer, kubenode.BridgeIP)
			}
		}
		local := 0
		for b, k := range backends {
			if s.localPods[b] {
				local += k
			}
		}
		t.Logf("%s (%s): %d calls on one connection, backends %v, zones %v", name, p.Status.PodIP, len(cs), backends, zones)
		if len(backends) < 2 {
			t.Errorf("%s: one connection reached only %v: want calls balanced over several backends", name, backends)
		}
		if local*2 <= len(cs) {
			t.Errorf("%s: %d of %d calls stayed in zone-a: want most (zone-a's three backends are healthy)", name, local, len(cs))
		}
	}
	after := proxiedRequests(t, s.node, "default/greeter")
	if got := after - before; got < float64(total) {
		t.Errorf("zonelb_requests_total{service=default/greeter} rose by %v, want at least the %d calls made", got, total)
	} else {
		t.Logf("proxy counters: zonelb_requests_total{service=default/greeter} +%v for %d calls", got, total)
	}
}
