package bpf

// Original destination of a redirected connection, from the 4-tuple map.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// OriginalDst returns where an accepted connection was going before the
// hooks redirected it, from the 4-tuple map. A miss is retried a few times
// (Config.OriginalDstAttempts, OriginalDstBackoff); after that the error
// wraps ErrNotRedirected.
func (r *Redirector) OriginalDst(conn net.Conn) (Original, error) {
	remote, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return Original{}, fmt.Errorf("original destination: remote address %s: %w", conn.RemoteAddr(), err)
	}
	local, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return Original{}, fmt.Errorf("original destination: local address %s: %w", conn.LocalAddr(), err)
	}
	return r.lookupOriginal(remote, local, time.Sleep)
}

func (r *Redirector) lookupOriginal(client, proxy netip.AddrPort, sleep func(time.Duration)) (Original, error) {
	key := tupleKey(client, proxy)
	var od zonelbOrigDst
	for attempt := 1; ; attempt++ {
		err := r.use(func(m *mapSet) error { return m.tuples.Lookup(&key, &od) })
		if err == nil {
			return od.original(), nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return Original{}, fmt.Errorf("original destination of %v -> %v: %w", client, proxy, err)
		}
		if attempt >= r.cfg.OriginalDstAttempts {
			return Original{}, fmt.Errorf("original destination of %v -> %v after %d lookups: %w", client, proxy, attempt, ErrNotRedirected)
		}
		sleep(r.cfg.OriginalDstBackoff)
	}
}
