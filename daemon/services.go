package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// services keeps one balancer per selected service port, applies discovery
// snapshots to them, and resolves each proxied connection to its port.
//
// A connection keeps the *portEntry it was routed to for its life; the
// entry's balancer is swapped atomically when the configuration or the
// node's zone changes, so streams in flight are never disturbed and new
// requests on old connections see the new balancer.
type services struct {
	log  *slog.Logger
	acct *zone.Accounting
	// zoneConfig builds a balancer configuration for a local zone.
	zoneConfig func(localZone string) (zone.Config, error)
	// orig says where a redirected connection was going; nil without
	// redirection.
	orig originalDst

	mu        sync.Mutex
	ports     map[discovery.PortID]*portEntry
	localZone string
	snap      atomic.Pointer[discovery.Snapshot]
}

// originalDst is the part of the BPF redirector that says where a
// redirected connection was going: an error wrapping bpf.ErrNotRedirected
// for a client that dialled the proxy (or a frontend it serves) directly.
type originalDst interface {
	OriginalDst(net.Conn) (bpf.Original, error)
}

var _ originalDst = (*bpf.Redirector)(nil)

// originalDstOf is red as an originalDst, or nil (not a typed nil) when
// redirection is off.
func originalDstOf(red *bpf.Redirector) originalDst {
	if red == nil {
		return nil
	}
	return red
}

// portEntry is one service port's picker, as the proxy holds it.
type portEntry struct {
	id  discovery.PortID
	bal atomic.Pointer[zone.Balancer] // nil once the port is gone
	// http2 is set when the port declares an HTTP/2 appProtocol: its
	// connections must be HTTP/2 (proxy.ProtocolHTTP2).
	http2 atomic.Bool
	// updates counts the endpoint sets given to the port's balancers
	// (guarded by services.mu).
	updates int
}

// Pick implements proxy.Picker.
func (e *portEntry) Pick(avoid netip.AddrPort) (zone.Picked, error) {
	b := e.bal.Load()
	if b == nil {
		return zone.Picked{}, zone.ErrNoEndpoint
	}
	return b.Pick(avoid)
}

func newServices(log *slog.Logger, acct *zone.Accounting, zoneConfig func(string) (zone.Config, error), orig originalDst) *services {
	return &services{log: log, acct: acct, zoneConfig: zoneConfig, orig: orig, ports: map[discovery.PortID]*portEntry{}}
}

// apply makes the balancers match snap: new ports get a balancer, ports
// that stay keep theirs (and their endpoints' state) with the new endpoint
// set, and ports that are gone stop picking.
func (s *services) apply(snap *discovery.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rebuild := snap.Zone != s.localZone
	if rebuild && s.snap.Load() != nil {
		s.log.Info("node zone changed; rebuilding balancers", "from", s.localZone, "to", snap.Zone)
	}
	s.localZone = snap.Zone
	return s.applyLocked(snap, rebuild)
}

// reconfigure replaces every balancer with one built from the current
// configuration (a reload), keeping the endpoint sets.
func (s *services) reconfigure(zoneConfig func(string) (zone.Config, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zoneConfig = zoneConfig
	snap := s.snap.Load()
	if snap == nil {
		return nil
	}
	return s.applyLocked(snap, true)
}

// applyLocked gives every port of snap its endpoints. A Service whose
// pointer is the one of the last applied snapshot did not change (the
// discovery.Snapshot contract): its balancers are left alone unless they
// are rebuilt.
func (s *services) applyLocked(snap *discovery.Snapshot, rebuild bool) error {
	cfg, err := s.zoneConfig(snap.Zone)
	if err != nil {
		return err
	}
	prev := s.snap.Load()
	// Where spilled requests go: balancer.zoneClients if configured, else
	// the Nodes of each zone, followed as they come and go.
	followNodes := cfg.ZoneClients == nil
	spreadMoved := false
	if followNodes {
		cfg.ZoneClients = nodeSpread(snap.ZoneNodes)
		spreadMoved = prev == nil || !maps.Equal(prev.ZoneNodes, snap.ZoneNodes)
	}
	seen := make(map[discovery.PortID]bool)
	var errs []error
	for name, svc := range snap.Services {
		unchanged := prev != nil && prev.Services[name] == svc
		svcCfg := cfg
		if svc.SpillBudget != 0 { // the Service's annotation
			svcCfg.Spill.Budget = svc.SpillBudget
		}
		for i := range svc.Ports {
			port := &svc.Ports[i]
			id := port.ID(svc.Name)
			seen[id] = true
			e := s.ports[id]
			if e == nil {
				e = &portEntry{id: id}
				s.ports[id] = e
			}
			e.http2.Store(discovery.IsHTTP2AppProtocol(port.AppProtocol))
			b := e.bal.Load()
			switch {
			case b == nil || rebuild:
				nb, err := zone.NewBalancer(svcCfg)
				if err != nil {
					errs = append(errs, fmt.Errorf("balancer for %s: %w", id, err))
					continue
				}
				nb.Update(port.Endpoints)
				e.updates++
				e.bal.Store(nb)
			default:
				if spreadMoved {
					if err := b.SetZoneClients(svcCfg.ZoneClients); err != nil {
						errs = append(errs, fmt.Errorf("balancer for %s: %w", id, err))
					}
				}
				if !unchanged {
					s.setBudget(id, b, svcCfg.Spill.Budget)
					b.Update(port.Endpoints)
					e.updates++
				}
			}
		}
	}
	for id, e := range s.ports {
		if !seen[id] {
			e.bal.Store(nil)
			delete(s.ports, id)
		}
	}
	s.snap.Store(snap)
	return errors.Join(errs...)
}

// nodeSpread is the clients' spread over zones (zone.Config.ZoneClients)
// that the Nodes per zone give; nil when no Node has a zone.
func nodeSpread(zoneNodes map[string]int) map[string]float64 {
	if len(zoneNodes) == 0 {
		return nil
	}
	spread := make(map[string]float64, len(zoneNodes))
	for z, n := range zoneNodes {
		spread[z] = float64(n)
	}
	return spread
}

// setBudget gives a running balancer a new spill budget (0: the default),
// keeping what it learnt, when the Service's annotation changed.
func (s *services) setBudget(id discovery.PortID, b *zone.Balancer, budget float64) {
	if budget == 0 {
		budget = zone.DefaultSpillBudget
	}
	old := b.SpillBudget()
	if old == budget {
		return
	}
	if err := b.SetSpillBudget(budget); err != nil {
		s.log.Warn("spill budget not changed", "service", id.String(), "err", err)
		return
	}
	s.log.Info("spill budget changed", "service", id.String(),
		"from", zone.FormatSpillBudget(old), "to", zone.FormatSpillBudget(budget))
}

// Route implements proxy.Router: the connection's original destination
// names the service port.
func (s *services) Route(c net.Conn) (proxy.Route, error) {
	dst, err := s.destination(c)
	if err != nil {
		return proxy.Route{}, fmt.Errorf("original destination of %s: %w", c.RemoteAddr(), err)
	}
	snap := s.snap.Load()
	if snap == nil {
		return proxy.Route{}, errors.New("no services known yet")
	}
	id, ok := snap.Frontends[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
	if !ok {
		return proxy.Route{}, fmt.Errorf("no service at %s", dst)
	}
	s.mu.Lock()
	e := s.ports[id]
	s.mu.Unlock()
	if e == nil {
		return proxy.Route{}, fmt.Errorf("service %s at %s is gone", id, dst)
	}
	r := proxy.Route{Service: id.String(), Picker: e}
	if e.http2.Load() {
		r.Protocol = proxy.ProtocolHTTP2
	}
	return r, nil
}

// destination is where c was going: its original destination when the
// hooks redirected it, else the proxy address it reached (a client that
// dialled the proxy directly, or a frontend address the proxy listens on).
func (s *services) destination(c net.Conn) (netip.AddrPort, error) {
	if s.orig != nil {
		o, err := s.orig.OriginalDst(c)
		if err == nil {
			return o.Addr, nil
		}
		if !errors.Is(err, bpf.ErrNotRedirected) {
			return netip.AddrPort{}, err
		}
	}
	return netip.ParseAddrPort(c.LocalAddr().String())
}

// BalancerStates implements StateSource.
func (s *services) BalancerStates() []ServiceState {
	s.mu.Lock()
	entries := make([]*portEntry, 0, len(s.ports))
	for _, e := range s.ports {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].id.String() < entries[j].id.String() })
	out := make([]ServiceState, 0, len(entries))
	for _, e := range entries {
		if b := e.bal.Load(); b != nil {
			out = append(out, ServiceState{Service: e.id.String(), State: b.State()})
		}
	}
	return out
}

// snapshot returns the last applied discovery snapshot.
func (s *services) snapshot() *discovery.Snapshot { return s.snap.Load() }
