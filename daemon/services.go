package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

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
	// origDst returns where a connection was going before redirection;
	// errNotRedirected when it came to the proxy directly.
	origDst func(net.Conn) (netip.AddrPort, error)

	mu        sync.Mutex
	ports     map[discovery.PortID]*portEntry
	localZone string
	snap      atomic.Pointer[discovery.Snapshot]
}

// errNotRedirected says a connection reached the proxy directly.
var errNotRedirected = errors.New("connection was not redirected")

// portEntry is one service port's picker, as the proxy holds it.
type portEntry struct {
	id  discovery.PortID
	bal atomic.Pointer[zone.Balancer] // nil once the port is gone
}

// Pick implements proxy.Picker.
func (e *portEntry) Pick(avoid netip.AddrPort) (zone.Picked, error) {
	b := e.bal.Load()
	if b == nil {
		return zone.Picked{}, zone.ErrNoEndpoint
	}
	return b.Pick(avoid)
}

func newServices(log *slog.Logger, acct *zone.Accounting, zoneConfig func(string) (zone.Config, error), origDst func(net.Conn) (netip.AddrPort, error)) *services {
	return &services{log: log, acct: acct, zoneConfig: zoneConfig, origDst: origDst, ports: map[discovery.PortID]*portEntry{}}
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

func (s *services) applyLocked(snap *discovery.Snapshot, rebuild bool) error {
	cfg, err := s.zoneConfig(snap.Zone)
	if err != nil {
		return err
	}
	seen := make(map[discovery.PortID]bool)
	var errs []error
	for _, svc := range snap.Services {
		for i := range svc.Ports {
			port := &svc.Ports[i]
			id := port.ID(svc.Name)
			seen[id] = true
			e := s.ports[id]
			if e == nil {
				e = &portEntry{id: id}
				s.ports[id] = e
			}
			b := e.bal.Load()
			if b == nil || rebuild {
				nb, err := zone.NewBalancer(cfg)
				if err != nil {
					errs = append(errs, fmt.Errorf("balancer for %s: %w", id, err))
					continue
				}
				nb.Update(port.Endpoints)
				e.bal.Store(nb)
				continue
			}
			b.Update(port.Endpoints)
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

// Route implements proxy.Router: the connection's original destination
// names the service port.
func (s *services) Route(c net.Conn) (proxy.Route, error) {
	dst, err := s.origDst(c)
	if errors.Is(err, errNotRedirected) {
		// A client that dialled the proxy directly (or a frontend
		// address the proxy listens on).
		dst, err = netip.ParseAddrPort(c.LocalAddr().String())
	}
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
	return proxy.Route{Service: id.String(), Picker: e}, nil
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
