package daemon

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/zonelb/zonelb/daemon/discovery"
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
