package bpf

// The selected services: address:port -> service id.

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// SetService selects addr (IPv4, IPv6, or IPv4 as ::ffff:a.b.c.d) for
// redirection and tags it with id, which OriginalDst reports back.
func (r *Redirector) SetService(addr netip.AddrPort, id uint32) error {
	if !addr.IsValid() || addr.Port() == 0 {
		return fmt.Errorf("set service %v: want an address with a port", addr)
	}
	k := serviceKey(addr)
	return r.use(func(m *mapSet) error {
		if err := m.services.Update(&k, id, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set service %v: %w", addr, err)
		}
		return nil
	})
}

// DeleteService stops redirecting addr. Deleting an absent service is not
// an error.
func (r *Redirector) DeleteService(addr netip.AddrPort) error {
	k := serviceKey(addr)
	return r.use(func(m *mapSet) error {
		if err := m.services.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %v: %w", addr, err)
		}
		return nil
	})
}

// Services returns the selected services and their ids.
func (r *Redirector) Services() (map[netip.AddrPort]uint32, error) {
	out := map[netip.AddrPort]uint32{}
	err := r.use(func(m *mapSet) error {
		var k zonelbSvcKey
		var id uint32
		it := m.services.Iterate()
		for it.Next(&k, &id) {
			out[k.addrPort()] = id
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}
