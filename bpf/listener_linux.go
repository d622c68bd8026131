package bpf

// The proxy's listener in the liveness SOCKMAP: redirection only while it is
// open.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Slots of zlb_listeners, from the generated enum zlb_listener_slot.
const (
	listenerSlot4 = zonelbZlbListenerSlotZLB_LISTENER_V4
	listenerSlot6 = zonelbZlbListenerSlotZLB_LISTENER_V6
)

// RegisterListener puts the proxy's listening socket in the liveness
// SOCKMAP, with the calling process as its owner: while it is open and
// its process is not exiting, connects are redirected to it; from the
// moment the process is killed or begins to exit, and when the socket
// closes, connects go to their original destination. The listener must be bound
// to the configured proxy address or port of its family (a wildcard
// address is accepted) and must not be MPTCP: create it with
// ListenConfig().
func (r *Redirector) RegisterListener(l *net.TCPListener) error {
	local, err := netip.ParseAddrPort(l.Addr().String())
	if err != nil {
		return fmt.Errorf("register listener: parse %s: %w", l.Addr(), err)
	}
	var slots []zonelbZlbListenerSlot
	matches := func(proxy netip.AddrPort) bool {
		return proxy.IsValid() && proxy.Port() == local.Port() &&
			(local.Addr().IsUnspecified() || local.Addr().Unmap() == proxy.Addr().Unmap())
	}
	if matches(r.cfg.ProxyAddr4) && (local.Addr().Unmap().Is4() || local.Addr().IsUnspecified()) {
		slots = append(slots, listenerSlot4)
	}
	if matches(r.cfg.ProxyAddr6) && local.Addr().Is6() && !local.Addr().Is4In6() {
		slots = append(slots, listenerSlot6)
	}
	if len(slots) == 0 {
		return fmt.Errorf("register listener %s: not bound to proxy address %v or %v", local, r.cfg.ProxyAddr4, r.cfg.ProxyAddr6)
	}
	rc, err := l.SyscallConn()
	if err != nil {
		return fmt.Errorf("register listener %s: %w", local, err)
	}
	// The crash watch: without it (a kernel without uprobes) a crash is
	// seen at exit only, which is no reason not to proxy.
	if err := r.watchCrash(); err != nil {
		r.log.Warn("Go crash watch unavailable: a panicking proxy is failed open only once it exits", "err", err)
	}
	// The owner first: a listener is never in the map under a previous,
	// exiting owner's mark.
	for _, slot := range slots {
		if err := r.claimSlot(slot); err != nil {
			return fmt.Errorf("register listener %s: %w", local, err)
		}
	}
	var updErr, ctlErr error
	// Control, not File().Fd(): the latter would switch the socket to
	// blocking mode and break the runtime's poller.
	useErr := r.use(func(m *mapSet) error {
		ctlErr = rc.Control(func(fd uintptr) {
			if proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
				updErr = errors.New("listener is MPTCP, which a SOCKMAP refuses: create it with bpf.ListenConfig() or SetMultipathTCP(false)")
				return
			}
			for _, slot := range slots {
				if err := m.listeners.Update(slot, uint64(fd), ebpf.UpdateAny); err != nil {
					updErr = fmt.Errorf("slot %d: %w", slot, err)
					return
				}
			}
		})
		return nil
	})
	if err := errors.Join(useErr, ctlErr, updErr); err != nil {
		return fmt.Errorf("register listener %s: %w", local, err)
	}
	r.log.Info("proxy listener registered", "addr", local, "slots", slots)
	return nil
}

// ListenersUp reports whether the proxy's IPv4 and IPv6 listeners are
// registered right now, by a process that is not exiting: whether the
// hooks would redirect to them.
func (r *Redirector) ListenersUp() (v4, v6 bool, err error) {
	up := func(slot zonelbZlbListenerSlot) (bool, error) {
		var cookie uint64
		err := r.use(func(m *mapSet) error { return m.listeners.Lookup(slot, &cookie) })
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("look up listener slot %d: %w", slot, err)
		}
		exiting, err := r.ownerExiting(slot)
		return !exiting, err
	}
	if v4, err = up(listenerSlot4); err != nil {
		return false, false, err
	}
	v6, err = up(listenerSlot6)
	return v4, v6, err
}
