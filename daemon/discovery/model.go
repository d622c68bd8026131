package discovery

import (
	"cmp"
	"context"
	"net/netip"
	"slices"

	"github.com/zonelb/zonelb/zone"
)

// Source produces snapshots: [KubeSource] and [FileSource]. Run publishes
// a first complete snapshot, then one after every change, until ctx ends;
// publish is called from one goroutine, one call at a time, and each
// snapshot it receives is immutable and stays valid after the next one.
type Source interface {
	Run(ctx context.Context, publish func(*Snapshot)) error
}

var (
	_ Source = (*KubeSource)(nil)
	_ Source = (*FileSource)(nil)
)

// ServiceName names a Service.
type ServiceName struct {
	Namespace, Name string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

func compareServiceNames(a, b ServiceName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// PortID identifies one port of one Service: the unit zonelb balances. It
// is what a frontend address maps to, and the key under which the daemon
// keeps a balancer.
type PortID struct {
	Namespace, Service string
	// Port is the service port's name; "" for the one unnamed port a
	// single-port Service may have.
	Port string
}

// ServiceName returns the Service the port belongs to.
func (p PortID) ServiceName() ServiceName {
	return ServiceName{Namespace: p.Namespace, Name: p.Service}
}

// String formats the port as namespace/service:port (namespace/service for
// an unnamed port), the form used in logs and metric labels.
func (p PortID) String() string {
	if p.Port == "" {
		return p.Namespace + "/" + p.Service
	}
	return p.Namespace + "/" + p.Service + ":" + p.Port
}

// Snapshot is the whole of what discovery knows at one moment: the node's
// zone and the Services zonelb takes over, with their endpoints.
//
// A Snapshot is immutable once published and shared by every reader: never
// modify it, its maps, or anything it points to. Sources reuse a *Service
// from the previous snapshot when that Service did not change, so comparing
// pointers (old.Services[k] == new.Services[k]) tells a consumer which
// Services it may skip when applying a new snapshot.
type Snapshot struct {
	// Node is the name of the node this daemon runs on ("" when unknown,
	// as with a file that does not name it).
	Node string
	// Zone is the node's own topology zone; "" when the Node has no zone
	// label (or does not exist yet).
	Zone string
	// Services holds every Service with at least one selected port.
	Services map[ServiceName]*Service
	// ZoneNodes counts the cluster's Ready, schedulable Nodes in each zone
	// (those with a zone label): how the clients of the Services spread
	// over zones, for where a balancer's spill goes
	// (zone.Config.ZoneClients; a node proxy serves the pods of its node,
	// so the nodes are its peers, as the proxies of a service's callers
	// are Envoy's). nil when the source does not know (a file).
	ZoneNodes map[string]int
	// Frontends maps each ClusterIP:port of every selected port (every IP
	// family; IPv4 addresses in their 4-byte form) to that port: what
	// the BPF service map is programmed with, and how the proxy resolves
	// a connection's original destination.
	Frontends map[netip.AddrPort]PortID
}

// Lookup resolves a connection's original destination to the Service and
// port it was addressed to. An IPv4-mapped IPv6 address matches its IPv4
// form.
func (s *Snapshot) Lookup(dst netip.AddrPort) (*Service, *ServicePort, bool) {
	if s == nil {
		return nil, nil, false
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	id, ok := s.Frontends[dst]
	if !ok {
		return nil, nil, false
	}
	svc := s.Services[id.ServiceName()]
	if svc == nil {
		return nil, nil, false
	}
	port := svc.Port(id.Port)
	if port == nil {
		return nil, nil, false
	}
	return svc, port, true
}

// SortedServices returns the Services ordered by namespace and name, for
// stable output.
func (s *Snapshot) SortedServices() []*Service {
	if s == nil {
		return nil
	}
	out := make([]*Service, 0, len(s.Services))
	for _, svc := range s.Services {
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b *Service) int { return compareServiceNames(a.Name, b.Name) })
	return out
}

// Service is one Service zonelb takes over at least one port of.
type Service struct {
	Name ServiceName
	// ClusterIPs are the Service's virtual addresses, one per IP family,
	// primary first. IPv4 addresses are in their 4-byte form.
	ClusterIPs []netip.Addr
	// Ports lists the selected ports only, in the Service's order.
	Ports []ServicePort
	// SpillBudget is the Service's own spill budget from its
	// SpillBudgetKey annotation (a zone.SpillConfig.Budget value); 0 when
	// it has none (or a bad one): the daemon's default applies.
	SpillBudget float64
}

// Port returns the selected port with the given name, or nil.
func (s *Service) Port(name string) *ServicePort {
	for i := range s.Ports {
		if s.Ports[i].Name == name {
			return &s.Ports[i]
		}
	}
	return nil
}

// ServicePort is one selected port of a Service and the endpoints behind it.
type ServicePort struct {
	Name        string // "" only for a Service's single unnamed port
	Port        uint16 // the port clients connect to on every ClusterIP
	Protocol    string // always "TCP": zonelb takes over nothing else
	AppProtocol string // as declared; "" when not declared
	// SelectedBy says why zonelb takes this port over, for humans
	// (/debug/state): for example "appProtocol grpc" or
	// "annotation zonelb.io/enabled=true".
	SelectedBy string
	// Endpoints are the addresses behind the port, merged from every
	// EndpointSlice of the Service, each with the target port resolved
	// for that endpoint. Sorted by address; one entry per address.
	// Not-ready endpoints are included with their conditions: choosing
	// among them is the balancer's business.
	Endpoints []zone.Endpoint
}

// ID returns the port's identity within svc.
func (p *ServicePort) ID(svc ServiceName) PortID {
	return PortID{Namespace: svc.Namespace, Service: svc.Name, Port: p.Name}
}

// equalService reports whether a and b describe the same Service exactly.
func equalService(a, b *Service) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.Name != b.Name || !slices.Equal(a.ClusterIPs, b.ClusterIPs) ||
		len(a.Ports) != len(b.Ports) || a.SpillBudget != b.SpillBudget {
		return false
	}
	for i := range a.Ports {
		pa, pb := &a.Ports[i], &b.Ports[i]
		if pa.Name != pb.Name || pa.Port != pb.Port || pa.Protocol != pb.Protocol ||
			pa.AppProtocol != pb.AppProtocol || pa.SelectedBy != pb.SelectedBy ||
			!slices.Equal(pa.Endpoints, pb.Endpoints) {
			return false
		}
	}
	return true
}

// reuseUnchanged replaces every Service in next that equals the one of the
// same name in prev by prev's pointer, so that consumers can skip it.
func reuseUnchanged(prev, next map[ServiceName]*Service) {
	for name, svc := range next {
		if old, ok := prev[name]; ok && old != svc && equalService(old, svc) {
			next[name] = old
		}
	}
}

// frontendsOf builds the frontend map of services. When two ports claim
// the same address (only a hand-written file can say so; the file source
// rejects it), the first in name order wins, so the result is
// deterministic.
func frontendsOf(services map[ServiceName]*Service) map[netip.AddrPort]PortID {
	names := make([]ServiceName, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	slices.SortFunc(names, compareServiceNames)
	out := make(map[netip.AddrPort]PortID)
	for _, name := range names {
		svc := services[name]
		for _, ip := range svc.ClusterIPs {
			for i := range svc.Ports {
				key := netip.AddrPortFrom(ip, svc.Ports[i].Port)
				if _, taken := out[key]; !taken {
					out[key] = svc.Ports[i].ID(name)
				}
			}
		}
	}
	return out
}

// sortEndpoints orders endpoints by address, for stable snapshots.
func sortEndpoints(eps []zone.Endpoint) {
	slices.SortFunc(eps, func(a, b zone.Endpoint) int { return a.Addr.Compare(b.Addr) })
}
