package discovery

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/zonelb/zonelb/zone"
)

func TestSelectPort(t *testing.T) {
	tests := []struct {
		name        string
		ns, svc     optSwitch
		protocol    string
		appProtocol string
		want        bool
		why         string
	}{
		{"grpc", optUnset, optUnset, "TCP", "grpc", true, "appProtocol grpc"},
		{"h2c", optUnset, optUnset, "TCP", "h2c", true, "appProtocol h2c"},
		{"kubernetes.io/h2c", optUnset, optUnset, "TCP", "kubernetes.io/h2c", true, "appProtocol kubernetes.io/h2c"},
		{"case-insensitive", optUnset, optUnset, "TCP", "gRPC", true, "appProtocol gRPC"},
		{"empty protocol is TCP", optUnset, optUnset, "", "grpc", true, "appProtocol grpc"},
		{"http is not taken", optUnset, optUnset, "TCP", "http", false, ""},
		{"no appProtocol", optUnset, optUnset, "TCP", "", false, ""},
		{"UDP never", optUnset, optIn, "UDP", "grpc", false, ""},
		{"SCTP never", optIn, optUnset, "SCTP", "", false, ""},
		{"service opt-in", optUnset, optIn, "TCP", "", true, "annotation zonelb.io/enabled=true"},
		{"namespace opt-in", optIn, optUnset, "TCP", "http", true, "namespace label zonelb.io/enabled=true"},
		{"service opt-out beats appProtocol", optUnset, optOut, "TCP", "grpc", false, ""},
		{"namespace opt-out beats appProtocol", optOut, optUnset, "TCP", "grpc", false, ""},
		{"namespace opt-out beats service opt-in", optOut, optIn, "TCP", "grpc", false, ""},
		{"service opt-out beats namespace opt-in", optIn, optOut, "TCP", "", false, ""},
		{"invalid switch is ignored", optInvalid, optInvalid, "TCP", "grpc", true, "appProtocol grpc"},
		{"invalid switch selects nothing", optInvalid, optInvalid, "TCP", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := selectPort(tt.ns, tt.svc, tt.protocol, tt.appProtocol)
			if got != tt.want || why != tt.why {
				t.Errorf("selectPort = %v, %q; want %v, %q", got, why, tt.want, tt.why)
			}
		})
	}
}

func TestParseOptSwitch(t *testing.T) {
	for v, want := range map[string]optSwitch{"true": optIn, "false": optOut, "yes": optInvalid, "": optInvalid, "True": optInvalid} {
		if got := parseOptSwitch(map[string]string{EnabledKey: v}); got != want {
			t.Errorf("parseOptSwitch(%q) = %v, want %v", v, got, want)
		}
	}
	if got := parseOptSwitch(map[string]string{"other": "true"}); got != optUnset {
		t.Errorf("absent key = %v, want optUnset", got)
	}
}

// service builds a ClusterIP Service in namespace ns.
func service(ns, name string, clusterIPs []string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIPs[0],
			ClusterIPs: clusterIPs,
			Ports:      ports,
		},
	}
}

func svcPort(name string, port int32, appProtocol string) corev1.ServicePort {
	p := corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
	if appProtocol != "" {
		p.AppProtocol = ptr.To(appProtocol)
	}
	return p
}

type sliceEndpoint struct {
	addr, zone, node            string
	ready, serving, terminating *bool
}

func endpointSlice(ns, svc, name string, typ discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...sliceEndpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: typ,
		Ports:       ports,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
		}
		if e.zone != "" {
			ep.Zone = ptr.To(e.zone)
		}
		if e.node != "" {
			ep.NodeName = ptr.To(e.node)
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

func slicePortOf(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}
}

func TestConvertServiceSelection(t *testing.T) {
	grpc := svcPort("grpc", 9000, "grpc")
	web := svcPort("web", 80, "http")
	udp := corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}

	t.Run("appProtocol selects that port only", func(t *testing.T) {
		m, warn := convertService(service("a", "s", []string{"10.96.0.1"}, grpc, web), nil, nil)
		if len(warn) != 0 {
			t.Fatalf("warnings: %v", warn)
		}
		if m == nil || len(m.Ports) != 1 || m.Ports[0].Name != "grpc" || m.Ports[0].SelectedBy != "appProtocol grpc" {
			t.Fatalf("got %+v, want the grpc port only", m)
		}
	})
	t.Run("annotation selects every TCP port", func(t *testing.T) {
		svc := service("a", "s", []string{"10.96.0.1"}, grpc, web, udp)
		svc.Annotations = map[string]string{EnabledKey: "true"}
		m, _ := convertService(svc, nil, nil)
		if m == nil || len(m.Ports) != 2 || m.Ports[0].Name != "grpc" || m.Ports[1].Name != "web" {
			t.Fatalf("got %+v, want grpc and web", m)
		}
		if m.Ports[1].SelectedBy != "annotation zonelb.io/enabled=true" {
			t.Errorf("web selected by %q", m.Ports[1].SelectedBy)
		}
	})
	t.Run("namespace opt-out drops the service", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{EnabledKey: "false"}}}
		if m, _ := convertService(service("a", "s", []string{"10.96.0.1"}, grpc), ns, nil); m != nil {
			t.Fatalf("got %+v, want nil", m)
		}
	})
	t.Run("service opt-out drops the service", func(t *testing.T) {
		svc := service("a", "s", []string{"10.96.0.1"}, grpc)
		svc.Annotations = map[string]string{EnabledKey: "false"}
		if m, _ := convertService(svc, nil, nil); m != nil {
			t.Fatalf("got %+v, want nil", m)
		}
	})
	t.Run("namespace opt-in", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{EnabledKey: "true"}}}
		m, _ := convertService(service("a", "s", []string{"10.96.0.1"}, web), ns, nil)
		if m == nil || len(m.Ports) != 1 {
			t.Fatalf("got %+v, want the web port", m)
		}
	})
	t.Run("invalid switches are warned about and ignored", func(t *testing.T) {
		svc := service("a", "s", []string{"10.96.0.1"}, grpc)
		svc.Annotations = map[string]string{EnabledKey: "yes"}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{EnabledKey: "off"}}}
		m, warn := convertService(svc, ns, nil)
		if m == nil {
			t.Fatal("service dropped; want it kept by its appProtocol")
		}
		if len(warn) != 2 || !strings.Contains(warn[0], `"yes"`) || !strings.Contains(warn[1], `"off"`) {
			t.Errorf("warnings = %q", warn)
		}
	})
	t.Run("headless", func(t *testing.T) {
		if m, _ := convertService(service("a", "s", []string{"None"}, grpc), nil, nil); m != nil {
			t.Fatalf("got %+v, want nil", m)
		}
	})
}

// A Service's spill budget annotation.
func TestConvertServiceSpillBudget(t *testing.T) {
	grpc := svcPort("grpc", 9000, "grpc")
	t.Run("spill budget annotation", func(t *testing.T) {
		svc := service("a", "s", []string{"10.96.0.1"}, grpc)
		svc.Annotations = map[string]string{SpillBudgetKey: "80%"}
		m, warn := convertService(svc, nil, nil)
		if len(warn) != 0 || m == nil || m.SpillBudget != 0.8 {
			t.Fatalf("got %+v, %v; want budget 0.8", m, warn)
		}
		svc.Annotations[SpillBudgetKey] = "parity"
		if m, _ := convertService(svc, nil, nil); m == nil || m.SpillBudget != zone.ParityBudget {
			t.Fatalf("parity: got %+v", m)
		}
		svc.Annotations[SpillBudgetKey] = " Latency "
		if m, warn := convertService(svc, nil, nil); len(warn) != 0 || m == nil || m.SpillBudget != zone.LatencyBudget {
			t.Fatalf("latency: got %+v, %v; want the latency rule", m, warn)
		}
	})
	t.Run("bad spill budget is ignored with a warning naming the service", func(t *testing.T) {
		for _, bad := range []string{"0.8", "-1%", "fast", ""} {
			svc := service("a", "s", []string{"10.96.0.1"}, grpc)
			svc.Annotations = map[string]string{SpillBudgetKey: bad}
			m, warn := convertService(svc, nil, nil)
			if m == nil || m.SpillBudget != 0 {
				t.Fatalf("%q: got %+v, want the service with no budget of its own", bad, m)
			}
			if len(warn) != 1 || !strings.Contains(warn[0], "service a/s") || !strings.Contains(warn[0], SpillBudgetKey) {
				t.Errorf("%q: warnings %v, want one naming the service and the annotation", bad, warn)
			}
		}
	})
}

// The cluster addresses a Service is taken over at.
func TestConvertServiceAddresses(t *testing.T) {
	grpc := svcPort("grpc", 9000, "grpc")
	t.Run("ExternalName", func(t *testing.T) {
		svc := service("a", "s", []string{""}, grpc)
		svc.Spec.Type = corev1.ServiceTypeExternalName
		svc.Spec.ExternalName = "example.com"
		if m, _ := convertService(svc, nil, nil); m != nil {
			t.Fatalf("got %+v, want nil", m)
		}
	})
	t.Run("dual-stack ClusterIPs", func(t *testing.T) {
		m, _ := convertService(service("a", "s", []string{"10.96.0.1", "fd00::1"}, grpc), nil, nil)
		want := []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00::1")}
		if m == nil || !slices.Equal(m.ClusterIPs, want) {
			t.Fatalf("ClusterIPs = %v, want %v", m.ClusterIPs, want)
		}
	})
	t.Run("only the legacy ClusterIP field", func(t *testing.T) {
		svc := service("a", "s", []string{"10.96.0.1"}, grpc)
		svc.Spec.ClusterIPs = nil
		m, _ := convertService(svc, nil, nil)
		if m == nil || len(m.ClusterIPs) != 1 {
			t.Fatalf("got %+v, want one ClusterIP", m)
		}
	})
}

func TestMergeEndpoints(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	grpcAt := func(n int32) []discoveryv1.EndpointPort {
		return []discoveryv1.EndpointPort{slicePortOf("metrics", 9090), slicePortOf("grpc", n)}
	}
	v4 := discoveryv1.AddressTypeIPv4
	input := []*discoveryv1.EndpointSlice{
		// During a rollout the same port name resolves to two numbers.
		endpointSlice("a", "s", "s-old", v4, grpcAt(8080),
			sliceEndpoint{addr: "10.0.0.2", zone: "z1", node: "n1"}, // nil conditions: ready
			sliceEndpoint{addr: "10.0.0.1", zone: "z2", node: "n2", ready: no, serving: yes, terminating: yes}),
		endpointSlice("a", "s", "s-new", v4, grpcAt(8081),
			sliceEndpoint{addr: "10.0.0.3", zone: "z1", ready: no}), // serving follows ready
		endpointSlice("a", "s", "s-v6", discoveryv1.AddressTypeIPv6, grpcAt(8080),
			sliceEndpoint{addr: "fd00::3", zone: "z3", ready: yes}),
		// FQDN slices carry no connectable address.
		endpointSlice("a", "s", "s-fqdn", discoveryv1.AddressTypeFQDN, grpcAt(8080),
			sliceEndpoint{addr: "db.example.com"}),
		// A slice without the port name contributes nothing.
		endpointSlice("a", "s", "s-other", v4, []discoveryv1.EndpointPort{slicePortOf("metrics", 9090)},
			sliceEndpoint{addr: "10.0.0.9"}),
		// The same name on UDP is another port.
		endpointSlice("a", "s", "s-udp", v4, []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}},
			sliceEndpoint{addr: "10.0.0.8"}),
	}
	got, warn := mergeEndpoints("grpc", sortedSlices(input))
	if len(warn) != 0 {
		t.Fatalf("warnings: %v", warn)
	}
	want := []zone.Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:8080"), Zone: "z2", Node: "n2", Ready: false, Serving: true, Terminating: true},
		{Addr: netip.MustParseAddrPort("10.0.0.2:8080"), Zone: "z1", Node: "n1", Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort("10.0.0.3:8081"), Zone: "z1"},
		{Addr: netip.MustParseAddrPort("[fd00::3]:8080"), Zone: "z3", Ready: true, Serving: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("merged endpoints:\n got %+v\nwant %+v", got, want)
	}
}

func TestMergeEndpointsDuplicatePrefersUsable(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	port := []discoveryv1.EndpointPort{slicePortOf("", 8080)}
	v4 := discoveryv1.AddressTypeIPv4
	// Each pair differs in one condition only; the better copy must win
	// whichever slice sorts first.
	pairs := []struct {
		name          string
		better, worse sliceEndpoint
	}{
		{"ready", sliceEndpoint{ready: yes, serving: yes}, sliceEndpoint{ready: no, serving: yes}},
		{"serving", sliceEndpoint{ready: no, serving: yes}, sliceEndpoint{ready: no, serving: no}},
		{"not terminating", sliceEndpoint{ready: no, serving: yes, terminating: no}, sliceEndpoint{ready: no, serving: yes, terminating: yes}},
	}
	for _, p := range pairs {
		for _, order := range [][2]string{{"a", "b"}, {"b", "a"}} {
			p.better.addr, p.better.zone = "10.0.0.1", "better"
			p.worse.addr, p.worse.zone = "10.0.0.1", "worse"
			worse := endpointSlice("ns", "s", order[0], v4, port, p.worse)
			better := endpointSlice("ns", "s", order[1], v4, port, p.better)
			got, _ := mergeEndpoints("", sortedSlices([]*discoveryv1.EndpointSlice{worse, better}))
			if len(got) != 1 || got[0].Zone != "better" {
				t.Errorf("%s, worse copy in slice %q: got %+v, want the better copy only", p.name, order[0], got)
			}
		}
	}
}

func TestMergeEndpointsBadAddressWarns(t *testing.T) {
	es := endpointSlice("ns", "s", "x", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("", 80)},
		sliceEndpoint{addr: "not-an-ip"}, sliceEndpoint{addr: "10.0.0.1"})
	got, warn := mergeEndpoints("", []*discoveryv1.EndpointSlice{es})
	if len(got) != 1 || len(warn) != 1 || !strings.Contains(warn[0], "not-an-ip") {
		t.Errorf("got %v, warnings %q; want one endpoint and one warning naming the address", got, warn)
	}
}

func TestConvertServiceResolvesTargetPortPerPort(t *testing.T) {
	svc := service("a", "s", []string{"10.96.0.1"}, svcPort("grpc", 9000, "grpc"), svcPort("admin", 9001, "h2c"))
	es := endpointSlice("a", "s", "s-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("grpc", 50051), slicePortOf("admin", 50052)},
		sliceEndpoint{addr: "10.0.0.1", zone: "z1"})
	m, _ := convertService(svc, nil, []*discoveryv1.EndpointSlice{es})
	if m == nil || len(m.Ports) != 2 {
		t.Fatalf("got %+v", m)
	}
	for _, c := range []struct {
		port string
		want netip.AddrPort
	}{{"grpc", netip.MustParseAddrPort("10.0.0.1:50051")}, {"admin", netip.MustParseAddrPort("10.0.0.1:50052")}} {
		p := m.Port(c.port)
		if p == nil || len(p.Endpoints) != 1 || p.Endpoints[0].Addr != c.want {
			t.Errorf("port %s endpoints = %+v, want %v", c.port, p, c.want)
		}
	}
}

func TestNodeZone(t *testing.T) {
	node := func(labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}}
	}
	if z := nodeZone(node(map[string]string{"topology.kubernetes.io/zone": "z1", "failure-domain.beta.kubernetes.io/zone": "old"})); z != "z1" {
		t.Errorf("zone = %q, want z1", z)
	}
	if z := nodeZone(node(map[string]string{"failure-domain.beta.kubernetes.io/zone": "old"})); z != "old" {
		t.Errorf("zone = %q, want the deprecated label's old", z)
	}
	if z := nodeZone(nil); z != "" {
		t.Errorf("nil node zone = %q", z)
	}
}

func TestSnapshotLookupAndFrontends(t *testing.T) {
	a := &Service{
		Name:       ServiceName{"ns", "a"},
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00::1")},
		Ports:      []ServicePort{{Name: "grpc", Port: 9000}, {Name: "admin", Port: 9001}},
	}
	b := &Service{Name: ServiceName{"ns", "b"}, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.2")}, Ports: []ServicePort{{Port: 80}}}
	services := map[ServiceName]*Service{a.Name: a, b.Name: b}
	snap := &Snapshot{Services: services, Frontends: frontendsOf(services)}
	if len(snap.Frontends) != 5 {
		t.Errorf("%d frontends, want 5: %v", len(snap.Frontends), snap.Frontends)
	}
	for dst, want := range map[string]string{
		"10.96.0.1:9000":          "ns/a:grpc",
		"[fd00::1]:9001":          "ns/a:admin",
		"[::ffff:10.96.0.1]:9001": "ns/a:admin", // IPv4-mapped form of a v4 destination
		"10.96.0.2:80":            "ns/b",
	} {
		svc, port, ok := snap.Lookup(netip.MustParseAddrPort(dst))
		if !ok {
			t.Errorf("Lookup(%s) found nothing, want %s", dst, want)
			continue
		}
		if got := port.ID(svc.Name).String(); got != want {
			t.Errorf("Lookup(%s) = %s, want %s", dst, got, want)
		}
	}
	if _, _, ok := snap.Lookup(netip.MustParseAddrPort("10.96.0.1:80")); ok {
		t.Error("Lookup of an unselected port succeeded")
	}
	if _, _, ok := (*Snapshot)(nil).Lookup(netip.MustParseAddrPort("10.96.0.1:80")); ok {
		t.Error("Lookup on a nil snapshot succeeded")
	}
	if got := snap.SortedServices(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("SortedServices = %v", got)
	}
}

func TestReuseUnchanged(t *testing.T) {
	mk := func(zoneName string) *Service {
		return &Service{
			Name: ServiceName{"ns", "a"}, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")},
			Ports: []ServicePort{{Name: "grpc", Port: 9000, Endpoints: []zone.Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Zone: zoneName}}}},
		}
	}
	prev := map[ServiceName]*Service{{"ns", "a"}: mk("z1")}
	same := map[ServiceName]*Service{{"ns", "a"}: mk("z1")}
	reuseUnchanged(prev, same)
	if same[ServiceName{"ns", "a"}] != prev[ServiceName{"ns", "a"}] {
		t.Error("an equal Service was not replaced by the previous pointer")
	}
	moved := map[ServiceName]*Service{{"ns", "a"}: mk("z2")}
	reuseUnchanged(prev, moved)
	if moved[ServiceName{"ns", "a"}] == prev[ServiceName{"ns", "a"}] {
		t.Error("a changed Service was replaced by the previous pointer")
	}
}

func sortedSlices(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// slimNode keeps what discovery reads of a Node and nothing else: every
// Node of the cluster is cached.
func TestSlimNode(t *testing.T) {
	n := &corev1.Node{}
	n.Name, n.ResourceVersion = "n1", "42"
	n.Labels = map[string]string{"topology.kubernetes.io/zone": "a", "kubernetes.io/hostname": "n1", "team": "x"}
	n.Annotations = map[string]string{"big": strings.Repeat("x", 1000)}
	n.Spec.Unschedulable = true
	n.Spec.PodCIDR = "10.0.0.0/24"
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"img"}, SizeBytes: 1}}
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Message: "kubelet is posting ready status"},
	}
	obj, err := slimNode(n)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Node{}
	want.Name, want.ResourceVersion = "n1", "42"
	want.Labels = map[string]string{"topology.kubernetes.io/zone": "a"}
	want.Spec.Unschedulable = true
	want.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if got := obj.(*corev1.Node); !reflect.DeepEqual(got, want) {
		t.Errorf("slimNode kept %+v, want %+v", got, want)
	}
	if nodeZone(want) != "a" || nodeCounts(want) {
		t.Errorf("the slim node: zone %q, counts %v; want a, not counted (cordoned)", nodeZone(want), nodeCounts(want))
	}
	want.Spec.Unschedulable = false
	if !nodeCounts(want) {
		t.Error("a Ready, uncordoned node does not count")
	}
}
