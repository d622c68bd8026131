package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/zonelb/zonelb/daemon/kubeapi"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/zone"
)

// followWithin is how soon a change made through the API must show in a
// published snapshot: the daemon's promise (issue: "within a second").
// Reconnecting after an API server restart is not a change and gets
// reconnectWithin instead.
const (
	followWithin    = time.Second
	reconnectWithin = 60 * time.Second
)

// follower records the snapshots a source publishes.
type follower struct {
	latest    atomic.Pointer[Snapshot]
	published atomic.Int64
	notify    chan struct{}
	slowest   time.Duration // of the waits, for the log
}

func newFollower() *follower { return &follower{notify: make(chan struct{}, 1)} }

func (f *follower) publish(s *Snapshot) {
	f.latest.Store(s)
	f.published.Add(1)
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// waitFor returns the first snapshot that satisfies cond, failing the test
// if none is published within d of the call.
func (f *follower) waitFor(t *testing.T, d time.Duration, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if s := f.latest.Load(); s != nil && cond(s) {
			t.Logf("%s: seen after %v", what, time.Since(start))
			if took := time.Since(start); took > f.slowest && d == followWithin {
				f.slowest = took
			}
			return s
		}
		select {
		case <-f.notify:
		case <-deadline.C:
			t.Fatalf("%s: not seen within %v; last snapshot: %s", what, d, describe(f.latest.Load()))
			return nil
		}
	}
}

func describe(s *Snapshot) string {
	if s == nil {
		return "none"
	}
	out := fmt.Sprintf("zone=%q", s.Zone)
	for _, svc := range s.SortedServices() {
		out += fmt.Sprintf(" %s%v{", svc.Name, svc.ClusterIPs)
		for _, p := range svc.Ports {
			out += fmt.Sprintf("%s:%d %v ", p.Name, p.Port, p.Endpoints)
		}
		out += "}"
	}
	return out
}

// endpointsOf returns the endpoints of port on service ns/name, or nil.
func endpointsOf(s *Snapshot, ns, name, port string) []zone.Endpoint {
	svc := s.Services[ServiceName{ns, name}]
	if svc == nil {
		return nil
	}
	p := svc.Port(port)
	if p == nil {
		return nil
	}
	return p.Endpoints
}

type apiObjects struct {
	t      *testing.T
	client kubernetes.Interface
}

func (a apiObjects) ctx() context.Context { return a.t.Context() }

// node creates a Node in zone whose Ready condition has status ready (a
// Node's status may be set on create).
func (a apiObjects) node(name, zone string, ready corev1.ConditionStatus) {
	a.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"topology.kubernetes.io/zone": zone}}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	if _, err := a.client.CoreV1().Nodes().Create(a.ctx(), n, metav1.CreateOptions{}); err != nil {
		a.t.Fatalf("create node %s: %v", name, err)
	}
}

func (a apiObjects) namespace(name string, labels map[string]string) {
	a.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := a.client.CoreV1().Namespaces().Create(a.ctx(), ns, metav1.CreateOptions{}); err != nil {
		a.t.Fatalf("create namespace %s: %v", name, err)
	}
}

func (a apiObjects) service(ns, name string, dualStack bool, annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	a.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       corev1.ServiceSpec{Ports: ports, Selector: map[string]string{"app": name}},
	}
	if dualStack {
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
	}
	out, err := a.client.CoreV1().Services(ns).Create(a.ctx(), svc, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return out
}

func (a apiObjects) slice(ns, svc, name string, typ discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...sliceEndpoint) *discoveryv1.EndpointSlice {
	a.t.Helper()
	es := endpointSlice(ns, svc, name, typ, ports, eps...)
	es.Labels[discoveryv1.LabelManagedBy] = "zonelb-test"
	out, err := a.client.DiscoveryV1().EndpointSlices(ns).Create(a.ctx(), es, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatalf("create endpointslice %s/%s: %v", ns, name, err)
	}
	return out
}

func (a apiObjects) updateSlice(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	a.t.Helper()
	out, err := a.client.DiscoveryV1().EndpointSlices(es.Namespace).Update(a.ctx(), es, metav1.UpdateOptions{})
	if err != nil {
		a.t.Fatalf("update endpointslice %s/%s: %v", es.Namespace, es.Name, err)
	}
	return out
}

func clusterIPsOf(t *testing.T, svc *corev1.Service) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range svc.Spec.ClusterIPs {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func addrs(eps []zone.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr.String())
	}
	return out
}

// TestKubeSourceAgainstAPIServer drives a real kube-apiserver through the
// life of a few Services and checks that the published snapshots follow
// every step within followWithin, including across an API server restart.
func TestKubeSourceAgainstAPIServer(t *testing.T) {
	k := startKubeScenario(t)
	first := k.checkFirstSnapshot()
	ips, s1 := k.createGreeter(first)
	k.changeEndpoints(s1)
	k.changeSelection()
	k.deleteGreeter(ips)
	k.restartAPIServer()
	t.Logf("slowest change-to-snapshot wait: %v (debounce %v)", k.f.slowest, DefaultDebounce)
}

// kubeScenario is TestKubeSourceAgainstAPIServer's world: a real API
// server with two nodes and a namespace, and a KubeSource following it.
type kubeScenario struct {
	t      *testing.T
	srv    *kubetest.Server
	client kubernetes.Interface
	api    apiObjects
	f      *follower
	before *corev1.Service // created before the source started
}

// startKubeScenario starts the API server, creates the objects that exist
// before the source starts, and runs the source until the test ends.
func startKubeScenario(t *testing.T) *kubeScenario {
	t.Helper()
	srv := kubetest.Start(t, kubetest.Options{})
	client := srv.Client(t)
	api := apiObjects{t: t, client: client}

	api.node("node-a", "zone-a", corev1.ConditionTrue)
	// Another node: its zone is not ours, but it counts in ZoneNodes.
	api.node("node-b", "zone-b", corev1.ConditionTrue)
	api.namespace("apps", nil)

	// Objects that exist before the source starts are in its first snapshot.
	before := api.service("apps", "before", false, nil, corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc")})
	api.slice("apps", "before", "before-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("grpc", 50051)},
		sliceEndpoint{addr: "10.1.0.1", zone: "zone-a", node: "node-a"})
	// Never taken over: plain HTTP, no opt-in.
	api.service("apps", "web", false, nil, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("http")})

	src, err := NewKubeSource(KubeConfig{
		Client:   newKubeAPI(t, srv.Config),
		NodeName: "node-a",
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFollower()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, f.publish) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return &kubeScenario{t: t, srv: srv, client: client, api: api, f: f, before: before}
}

// checkFirstSnapshot: objects that exist before the source starts are in
// its first snapshot.
func (k *kubeScenario) checkFirstSnapshot() (first *Snapshot) {
	t, f, before := k.t, k.f, k.before
	t.Helper()
	first = f.waitFor(t, reconnectWithin, "first snapshot", func(s *Snapshot) bool { return true })
	if first.Zone != "zone-a" || first.Node != "node-a" {
		t.Errorf("first snapshot zone %q node %q, want zone-a node-a", first.Zone, first.Node)
	}
	if want := map[string]int{"zone-a": 1, "zone-b": 1}; !maps.Equal(first.ZoneNodes, want) {
		t.Errorf("first snapshot: nodes per zone %v, want %v", first.ZoneNodes, want)
	}
	if got := addrs(endpointsOf(first, "apps", "before", "grpc")); !slices.Equal(got, []string{"10.1.0.1:50051"}) {
		t.Errorf("first snapshot: endpoints of apps/before = %v", got)
	}
	if _, ok := first.Services[ServiceName{"apps", "web"}]; ok {
		t.Error("apps/web (appProtocol http, no opt-in) was taken over")
	}
	beforeIP := netip.MustParseAddr(before.Spec.ClusterIP)
	if id, ok := first.Frontends[netip.AddrPortFrom(beforeIP, 9000)]; !ok || id.String() != "apps/before:grpc" {
		t.Errorf("frontend %s:9000 = %v %v, want apps/before:grpc", beforeIP, id, ok)
	}
	return first
}

func (k *kubeScenario) createGreeter(first *Snapshot) (ips []netip.Addr, s1 *discoveryv1.EndpointSlice) {
	t, api, f := k.t, k.api, k.f
	t.Helper()
	// Create: a dual-stack gRPC service with endpoints in two zones.
	svc := api.service("apps", "greeter", true, nil,
		corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("kubernetes.io/h2c")},
		corev1.ServicePort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP})
	ips = clusterIPsOf(t, svc)
	if len(ips) != 2 {
		t.Fatalf("greeter ClusterIPs = %v, want one per family", ips)
	}
	ports := []discoveryv1.EndpointPort{slicePortOf("metrics", 9090), slicePortOf("grpc", 50051)}
	s1 = api.slice("apps", "greeter", "greeter-1", discoveryv1.AddressTypeIPv4, ports,
		sliceEndpoint{addr: "10.2.0.1", zone: "zone-a", node: "node-a"},
		sliceEndpoint{addr: "10.2.0.2", zone: "zone-b", node: "node-b"})
	api.slice("apps", "greeter", "greeter-v6", discoveryv1.AddressTypeIPv6, ports,
		sliceEndpoint{addr: "fd00:2::1", zone: "zone-a", node: "node-a"})
	snap := f.waitFor(t, followWithin, "create", func(s *Snapshot) bool {
		return len(endpointsOf(s, "apps", "greeter", "grpc")) == 3
	})
	g := snap.Services[ServiceName{"apps", "greeter"}]
	if !slices.Equal(g.ClusterIPs, ips) || len(g.Ports) != 1 || g.Ports[0].SelectedBy != "appProtocol kubernetes.io/h2c" {
		t.Errorf("greeter = %+v", g)
	}
	for _, ip := range ips {
		if id := snap.Frontends[netip.AddrPortFrom(ip, 9000)]; id.String() != "apps/greeter:grpc" {
			t.Errorf("frontend %s:9000 = %q", ip, id)
		}
		if _, ok := snap.Frontends[netip.AddrPortFrom(ip, 9090)]; ok {
			t.Errorf("unselected metrics port %s:9090 is a frontend", ip)
		}
	}
	wantZones := map[string]string{"10.2.0.1:50051": "zone-a", "10.2.0.2:50051": "zone-b", "[fd00:2::1]:50051": "zone-a"}
	for _, e := range endpointsOf(snap, "apps", "greeter", "grpc") {
		if wantZones[e.Addr.String()] != e.Zone || !e.Ready || !e.Serving || e.Terminating {
			t.Errorf("endpoint %+v: want zone %q, ready", e, wantZones[e.Addr.String()])
		}
	}
	if snap.Services[ServiceName{"apps", "before"}] != first.Services[ServiceName{"apps", "before"}] {
		t.Error("apps/before did not change but its *Service did")
	}
	return ips, s1
}

func (k *kubeScenario) changeEndpoints(s1 *discoveryv1.EndpointSlice) {
	t, api, f := k.t, k.api, k.f
	t.Helper()
	// Scale up: more endpoints in the first slice, and a second IPv4
	// slice whose pods (a newer rollout) listen on another target port.
	s1.Endpoints = append(s1.Endpoints,
		discoveryv1.Endpoint{Addresses: []string{"10.2.0.3"}, Zone: ptr.To("zone-b")},
		discoveryv1.Endpoint{Addresses: []string{"10.2.0.4"}, Zone: ptr.To("zone-c")})
	s1 = api.updateSlice(s1)
	api.slice("apps", "greeter", "greeter-2", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("grpc", 50052)},
		sliceEndpoint{addr: "10.2.1.1", zone: "zone-a"})
	snap := f.waitFor(t, followWithin, "scale up", func(s *Snapshot) bool {
		return len(endpointsOf(s, "apps", "greeter", "grpc")) == 6
	})
	if got := addrs(endpointsOf(snap, "apps", "greeter", "grpc")); !slices.Contains(got, "10.2.1.1:50052") || !slices.Contains(got, "10.2.0.4:50051") {
		t.Errorf("after scale-up: %v, want 10.2.1.1 on its slice's port 50052", got)
	}

	// Move an endpoint to another zone and mark another terminating.
	s1.Endpoints[0].Zone = ptr.To("zone-c")
	s1.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	s1 = api.updateSlice(s1)
	f.waitFor(t, followWithin, "move zone", func(s *Snapshot) bool {
		var moved, terminating bool
		for _, e := range endpointsOf(s, "apps", "greeter", "grpc") {
			switch e.Addr.String() {
			case "10.2.0.1:50051":
				moved = e.Zone == "zone-c"
			case "10.2.0.2:50051":
				terminating = !e.Ready && e.Serving && e.Terminating
			}
		}
		return moved && terminating
	})

	// Scale down: remove endpoints from a slice.
	s1.Endpoints = s1.Endpoints[:1]
	api.updateSlice(s1)
	f.waitFor(t, followWithin, "scale down", func(s *Snapshot) bool {
		return len(endpointsOf(s, "apps", "greeter", "grpc")) == 3
	})
}

// changeNodes: the nodes per zone follow Nodes that join, are cordoned,
// and stop being Ready; a Node without a Ready condition does not count.
func (k *kubeScenario) changeNodes() {
	t, client, f := k.t, k.client, k.f
	t.Helper()
	nodesAre := func(what string, want map[string]int) {
		t.Helper()
		f.waitFor(t, followWithin, what, func(s *Snapshot) bool { return maps.Equal(s.ZoneNodes, want) })
	}
	nodesAre("node-a relabelled", map[string]int{"zone-c": 1, "zone-b": 1})
	k.api.node("node-c2", "zone-c", corev1.ConditionTrue)
	k.api.node("node-c3", "zone-c", corev1.ConditionFalse)
	nodesAre("a Ready node joined zone-c", map[string]int{"zone-c": 2, "zone-b": 1})
	n, err := client.CoreV1().Nodes().Get(t.Context(), "node-c2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Unschedulable = true
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	nodesAre("node-c2 cordoned", map[string]int{"zone-c": 1, "zone-b": 1})
	b, err := client.CoreV1().Nodes().Get(t.Context(), "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Status.Conditions[0].Status = corev1.ConditionUnknown // the node controller's mark of a lost node
	if _, err := client.CoreV1().Nodes().UpdateStatus(t.Context(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	nodesAre("node-b not Ready", map[string]int{"zone-c": 1})
}

func (k *kubeScenario) changeSelection() {
	t, client, f := k.t, k.client, k.f
	t.Helper()
	// The node moves zone (a relabel); only our own node counts.
	n, err := client.CoreV1().Nodes().Get(t.Context(), "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["topology.kubernetes.io/zone"] = "zone-c"
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, followWithin, "node zone", func(s *Snapshot) bool { return s.Zone == "zone-c" })
	k.changeNodes()

	// Opt-in by annotation, and opt-out by namespace label and back.
	web, err := client.CoreV1().Services("apps").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	web.Annotations = map[string]string{EnabledKey: "true"}
	if _, err := client.CoreV1().Services("apps").Update(t.Context(), web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, followWithin, "annotation opt-in", func(s *Snapshot) bool {
		svc := s.Services[ServiceName{"apps", "web"}]
		return svc != nil && svc.Port("http") != nil
	})
	setNamespaceLabel := func(value *string) {
		t.Helper()
		ns, err := client.CoreV1().Namespaces().Get(t.Context(), "apps", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if value == nil {
			delete(ns.Labels, EnabledKey)
		} else {
			ns.Labels[EnabledKey] = *value
		}
		if _, err := client.CoreV1().Namespaces().Update(t.Context(), ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setNamespaceLabel(ptr.To("false"))
	snap := f.waitFor(t, followWithin, "namespace opt-out", func(s *Snapshot) bool {
		for name := range s.Services {
			if name.Namespace == "apps" {
				return false
			}
		}
		return true
	})
	if len(snap.Frontends) != 0 {
		t.Errorf("frontends left after the opt-out: %v", snap.Frontends)
	}
	setNamespaceLabel(nil)
	f.waitFor(t, followWithin, "namespace opt-out lifted", func(s *Snapshot) bool {
		return len(s.Services) == 3 && len(endpointsOf(s, "apps", "greeter", "grpc")) == 3
	})
}

func (k *kubeScenario) deleteGreeter(ips []netip.Addr) {
	t, client, f := k.t, k.client, k.f
	t.Helper()
	// Delete an EndpointSlice, then a Service.
	if err := client.DiscoveryV1().EndpointSlices("apps").Delete(t.Context(), "greeter-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, followWithin, "delete slice", func(s *Snapshot) bool {
		got := addrs(endpointsOf(s, "apps", "greeter", "grpc"))
		return len(got) == 2 && !slices.Contains(got, "10.2.1.1:50052")
	})
	if err := client.CoreV1().Services("apps").Delete(t.Context(), "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	snap := f.waitFor(t, followWithin, "delete service", func(s *Snapshot) bool {
		return s.Services[ServiceName{"apps", "greeter"}] == nil
	})
	for _, ip := range ips {
		if _, ok := snap.Frontends[netip.AddrPortFrom(ip, 9000)]; ok {
			t.Errorf("frontend %s:9000 of the deleted service remains", ip)
		}
	}
}

func (k *kubeScenario) restartAPIServer() {
	t, client, api, f := k.t, k.client, k.api, k.f
	t.Helper()
	srv := k.srv
	// Restart the API server. While it is down the last snapshot stands;
	// once it is back, changes flow again.
	publishedBefore := f.published.Load()
	srv.RestartAPIServer(t)
	if f.published.Load() != publishedBefore {
		t.Errorf("snapshots were published while nothing changed across the restart: %s", describe(f.latest.Load()))
	}
	// Wait until every informer is back (each reconnects on its own
	// backoff): one canary change per watched kind. A Service in a new
	// namespace that only the namespace's label opts in shows that the
	// Namespace informer is back too.
	n, err := client.CoreV1().Nodes().Get(t.Context(), "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["topology.kubernetes.io/zone"] = "zone-d"
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	api.namespace("canary", map[string]string{EnabledKey: "true"})
	api.service("canary", "canary", false, nil, corev1.ServicePort{Name: "x", Port: 1, Protocol: corev1.ProtocolTCP})
	api.slice("canary", "canary", "canary-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("x", 1)},
		sliceEndpoint{addr: "10.9.0.1"})
	f.waitFor(t, reconnectWithin, "informers back after restart", func(s *Snapshot) bool {
		return s.Zone == "zone-d" && len(endpointsOf(s, "canary", "canary", "x")) == 1
	})
	api.slice("apps", "before", "before-2", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("grpc", 50051)},
		sliceEndpoint{addr: "10.1.0.2", zone: "zone-b"})
	f.waitFor(t, followWithin, "change after restart", func(s *Snapshot) bool {
		return len(endpointsOf(s, "apps", "before", "grpc")) == 2
	})
}

// TestKubeSourceWithLeastPrivilege runs the source as a ServiceAccount that
// holds exactly PolicyRules, against an API server that enforces RBAC.
func TestKubeSourceWithLeastPrivilege(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{Authorization: "RBAC"})
	admin := srv.Client(t)
	api := apiObjects{t: t, client: admin}
	api.namespace("zonelb", nil)
	api.service("default", "greeter", false, nil, corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc")})

	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "zonelb"}, Rules: PolicyRules()}
	if _, err := admin.RbacV1().ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "zonelb"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "zonelb"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "zonelb", Name: "zonelb"}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	saCfg := srv.ImpersonateServiceAccount("zonelb", "zonelb")
	sa, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	// RBAC is really on: the account may not read what it was not given.
	if _, err := sa.CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods as the ServiceAccount: err = %v, want forbidden", err)
	}

	src, err := NewKubeSource(KubeConfig{Client: newKubeAPI(t, saCfg), NodeName: "node-a", Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := newFollower()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, f.publish) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	f.waitFor(t, reconnectWithin, "sync as the ServiceAccount", func(s *Snapshot) bool {
		return s.Services[ServiceName{"default", "greeter"}] != nil
	})
}

// newKubeAPI is the daemon's own client for cfg.
func newKubeAPI(t *testing.T, cfg *rest.Config) *kubeapi.Client {
	t.Helper()
	c, err := kubeapi.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
