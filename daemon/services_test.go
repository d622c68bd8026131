package daemon

import (
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"testing"

	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

func testService(name string, port uint16, backends ...string) *discovery.Service {
	sp := discovery.ServicePort{Name: "grpc", Port: port, Protocol: "TCP"}
	for _, b := range backends {
		sp.Endpoints = append(sp.Endpoints, zone.Endpoint{Addr: netip.MustParseAddrPort(b), Zone: "a", Ready: true, Serving: true})
	}
	return &discovery.Service{Name: discovery.ServiceName{Namespace: "default", Name: name}, Ports: []discovery.ServicePort{sp}}
}

func testSnapshot(zoneName string, svcs ...*discovery.Service) *discovery.Snapshot {
	s := &discovery.Snapshot{Zone: zoneName, Services: map[discovery.ServiceName]*discovery.Service{}}
	for _, svc := range svcs {
		s.Services[svc.Name] = svc
	}
	return s
}

func newTestServices(t *testing.T) *services {
	t.Helper()
	cfg := Config{Source: "file:/dev/null"}.WithDefaults(func(string) string { return "" })
	acct, err := zone.NewAccounting(cfg.pricePerGB())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	return newServices(log, acct, cfg.balancerConfigs(acct, log), nil)
}

// updates returns how many endpoint sets the port's balancers were given.
func (s *services) updatesOf(t *testing.T, svc *discovery.Service) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.ports[svc.Ports[0].ID(svc.Name)]
	if e == nil {
		t.Fatalf("no balancer for %s", svc.Name)
	}
	return e.updates
}

// The discovery.Snapshot contract: a Service that did not change keeps its
// pointer, and its balancer is not touched when another Service changes.
func TestApplyLeavesUnchangedServicesAlone(t *testing.T) {
	s := newTestServices(t)
	a1 := testService("a", 80, "10.0.0.1:8080")
	b := testService("b", 81, "10.0.1.1:8080")
	if err := s.apply(testSnapshot("a", a1, b)); err != nil {
		t.Fatal(err)
	}
	a2 := testService("a", 80, "10.0.0.1:8080", "10.0.0.2:8080")
	if err := s.apply(testSnapshot("a", a2, b)); err != nil {
		t.Fatal(err)
	}
	if got := s.updatesOf(t, b); got != 1 {
		t.Errorf("unchanged service b: %d endpoint updates, want 1", got)
	}
	if got := s.updatesOf(t, a2); got != 2 {
		t.Errorf("changed service a: %d endpoint updates, want 2", got)
	}
	st := s.BalancerStates()
	if len(st) != 2 || st[0].Service != "default/a:grpc" || len(st[0].State.Endpoints) != 2 {
		t.Fatalf("balancer states after the change: %+v", st)
	}

	// A new zone rebuilds every balancer, changed or not.
	if err := s.apply(testSnapshot("b", a2, b)); err != nil {
		t.Fatal(err)
	}
	if got := s.updatesOf(t, b); got != 2 {
		t.Errorf("service b after a zone change: %d endpoint updates, want 2", got)
	}
	if got := s.BalancerStates()[1].State.LocalZone; got != "b" {
		t.Errorf("service b's balancer zone after the change: %q, want b", got)
	}
}

// A Service's spill-budget annotation reaches its balancer, a change of it
// reaches the running balancer (keeping its state), and its removal brings
// the daemon's default back; other Services keep the default.
func TestApplySpillBudgetPerService(t *testing.T) {
	s := newTestServices(t)
	budgetOf := func(name string) float64 {
		for _, st := range s.BalancerStates() {
			if st.Service == "default/"+name+":grpc" {
				return st.State.SpillBudget
			}
		}
		t.Fatalf("no balancer for %s", name)
		return 0
	}
	a := testService("a", 80, "10.0.0.1:8080")
	a.SpillBudget = 2
	b := testService("b", 81, "10.0.1.1:8080")
	if err := s.apply(testSnapshot("a", a, b)); err != nil {
		t.Fatal(err)
	}
	if got, want := budgetOf("a"), 2.0; got != want {
		t.Errorf("annotated service: budget %v, want %v", got, want)
	}
	if got := budgetOf("b"); got != zone.DefaultSpillBudget {
		t.Errorf("other service: budget %v, want the default %v", got, zone.DefaultSpillBudget)
	}
	s.mu.Lock()
	before := s.ports[a.Ports[0].ID(a.Name)].bal.Load()
	s.mu.Unlock()

	a2 := testService("a", 80, "10.0.0.1:8080")
	a2.SpillBudget = zone.ParityBudget
	if err := s.apply(testSnapshot("a", a2, b)); err != nil {
		t.Fatal(err)
	}
	if got := budgetOf("a"); got != zone.ParityBudget {
		t.Errorf("after the annotation changed: budget %v, want parity", got)
	}
	s.mu.Lock()
	after := s.ports[a.Ports[0].ID(a.Name)].bal.Load()
	s.mu.Unlock()
	if after != before {
		t.Error("the balancer was replaced: a budget change must keep its state")
	}
	a3 := testService("a", 80, "10.0.0.1:8080")
	a3.SpillBudget = zone.LatencyBudget
	if err := s.apply(testSnapshot("a", a3, b)); err != nil {
		t.Fatal(err)
	}
	if got := budgetOf("a"); got != zone.LatencyBudget {
		t.Errorf("after the annotation changed to latency: budget %v, want the latency rule", got)
	}
	s.mu.Lock()
	after = s.ports[a.Ports[0].ID(a.Name)].bal.Load()
	s.mu.Unlock()
	if after != before {
		t.Error("the balancer was replaced on a change to the latency rule")
	}
	if err := s.apply(testSnapshot("a", testService("a", 80, "10.0.0.1:8080"), b)); err != nil {
		t.Fatal(err)
	}
	if got := budgetOf("a"); got != zone.DefaultSpillBudget {
		t.Errorf("after the annotation was removed: budget %v, want the default", got)
	}
}

// A port declaring an HTTP/2 appProtocol is routed as HTTP/2 only (the
// proxy then refuses connections without the preface); others are
// detected from their first bytes.
func TestRouteProtocolFromAppProtocol(t *testing.T) {
	s := newTestServices(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	front := netip.MustParseAddrPort(l.Addr().String())
	for _, tc := range []struct {
		appProtocol string
		want        proxy.Protocol
	}{{"grpc", proxy.ProtocolHTTP2}, {"kubernetes.io/h2c", proxy.ProtocolHTTP2}, {"", proxy.ProtocolAuto}, {"http", proxy.ProtocolAuto}} {
		svc := testService("a", front.Port(), "10.0.0.1:8080")
		svc.Ports[0].AppProtocol = tc.appProtocol
		snap := testSnapshot("a", svc)
		snap.Frontends = map[netip.AddrPort]discovery.PortID{front: svc.Ports[0].ID(svc.Name)}
		if err := s.apply(snap); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", front.String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Route(sc)
		c.Close()
		sc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if r.Protocol != tc.want {
			t.Errorf("appProtocol %q: route protocol %v, want %v", tc.appProtocol, r.Protocol, tc.want)
		}
	}
}

// Where a balancer's spill goes follows the Nodes per zone of the
// snapshot (the clients' spread): a new balancer starts with it, a
// running one follows a change of it and keeps its state, and
// balancer.zoneClients, when configured, wins over it.
func TestApplyZoneNodesAsClientSpread(t *testing.T) {
	s := newTestServices(t)
	a := testService("a", 80, "10.0.0.1:8080")
	bal := func() *zone.Balancer {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ports[a.Ports[0].ID(a.Name)].bal.Load()
	}
	snap := testSnapshot("a", a)
	snap.ZoneNodes = map[string]int{"a": 3, "b": 3, "c": 2}
	if err := s.apply(snap); err != nil {
		t.Fatal(err)
	}
	first := bal()
	if got, want := first.ZoneClients(), map[string]float64{"a": 3, "b": 3, "c": 2}; !maps.Equal(got, want) {
		t.Errorf("new balancer spills by %v, want the nodes per zone %v", got, want)
	}
	next := testSnapshot("a", a) // the same Service: only the nodes moved
	next.ZoneNodes = map[string]int{"a": 3, "b": 3, "c": 5}
	if err := s.apply(next); err != nil {
		t.Fatal(err)
	}
	if got := bal().ZoneClients(); got["c"] != 5 || bal() != first {
		t.Errorf("after zone c gained nodes: spread %v, balancer replaced %v; want c 5 on the same balancer", got, bal() != first)
	}
	if err := s.apply(testSnapshot("a", a)); err != nil {
		t.Fatal(err)
	}
	if got := bal().ZoneClients(); got != nil {
		t.Errorf("a source that knows no nodes: spread %v, want none", got)
	}

	cfg := Config{Source: "file:/dev/null"}.WithDefaults(func(string) string { return "" })
	cfg.Balancer.ZoneClients = map[string]float64{"a": 1, "b": 1}
	told := newServices(slog.New(slog.DiscardHandler), nil, cfg.balancerConfigs(nil, slog.New(slog.DiscardHandler)), nil)
	if err := told.apply(next); err != nil {
		t.Fatal(err)
	}
	told.mu.Lock()
	got := told.ports[a.Ports[0].ID(a.Name)].bal.Load().ZoneClients()
	told.mu.Unlock()
	if !maps.Equal(got, cfg.Balancer.ZoneClients) {
		t.Errorf("with balancer.zoneClients configured: spread %v, want the configured %v", got, cfg.Balancer.ZoneClients)
	}
}
