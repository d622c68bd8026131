package daemon

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"

	"github.com/zonelb/zonelb/daemon/discovery"
)

// serviceMap is the part of the BPF redirector that selects services.
type serviceMap interface {
	SetService(addr netip.AddrPort, id uint32) error
	DeleteService(addr netip.AddrPort) error
	Services() (map[netip.AddrPort]uint32, error)
}

// serviceID is a port's id in the BPF service map: a hash of its name, so
// that a restarted daemon computes the same ids for the pinned map without
// keeping state.
func serviceID(id discovery.PortID) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id.String()))
	if v := h.Sum32(); v != 0 {
		return v
	}
	return 1
}

// syncServiceMap makes the BPF service map hold exactly the snapshot's
// frontends. It reads the map first, so a map pinned by a previous daemon
// is corrected rather than rebuilt: addresses that stay are never removed,
// and their connections are redirected throughout.
func syncServiceMap(m serviceMap, snap *discovery.Snapshot) (added, removed int, err error) {
	have, err := m.Services()
	if err != nil {
		return 0, 0, fmt.Errorf("read BPF service map: %w", err)
	}
	var errs []error
	for addr, id := range snap.Frontends {
		want := serviceID(id)
		if got, ok := have[addr]; ok && got == want {
			continue
		}
		if err := m.SetService(addr, want); err != nil {
			errs = append(errs, fmt.Errorf("select %s (%s): %w", addr, id, err))
			continue
		}
		added++
	}
	for addr := range have {
		if _, ok := snap.Frontends[addr]; ok {
			continue
		}
		if err := m.DeleteService(addr); err != nil {
			errs = append(errs, fmt.Errorf("deselect %s: %w", addr, err))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}
