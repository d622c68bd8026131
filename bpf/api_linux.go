package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

// EnrollNetns lets connects from the network namespace with this cookie be
// redirected. The host namespace is never redirected, enrolled or not.
func (r *Redirector) EnrollNetns(cookie uint64) error {
	return r.use(func(m *mapSet) error {
		if err := m.netns.Update(cookie, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("enroll netns %d: %w", cookie, err)
		}
		return nil
	})
}

// UnenrollNetns stops redirecting the namespace. Absent is not an error.
func (r *Redirector) UnenrollNetns(cookie uint64) error {
	return r.use(func(m *mapSet) error {
		if err := m.netns.Delete(cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unenroll netns %d: %w", cookie, err)
		}
		return nil
	})
}

// EnrolledNetns lists the enrolled namespace cookies.
func (r *Redirector) EnrolledNetns() ([]uint64, error) {
	var out []uint64
	err := r.use(func(m *mapSet) error {
		var cookie uint64
		var v uint8
		it := m.netns.Iterate()
		for it.Next(&cookie, &v) {
			out = append(out, cookie)
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list enrolled netns: %w", err)
	}
	return out, nil
}

// RegisterListener puts the proxy's listening socket in the liveness
// SOCKMAP: while it is open, connects are redirected to it; when it closes
// (also when the process is killed) the kernel drops the entry and
// connects go to their original destination. The listener must be bound
// to the configured proxy address or port of its family (a wildcard
// address is accepted) and must not be MPTCP: create it with
// ListenConfig().
func (r *Redirector) RegisterListener(l *net.TCPListener) error {
	local, err := netip.ParseAddrPort(l.Addr().String())
	if err != nil {
		return fmt.Errorf("register listener: parse %s: %w", l.Addr(), err)
	}
	var slots []uint32
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

// ListenConfig returns a ListenConfig for the proxy's listener: MPTCP off,
// because Go enables it by default for listeners where the kernel allows
// and a SOCKMAP refuses MPTCP sockets.
func ListenConfig() *net.ListenConfig {
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc
}

// MarkControl returns a net.Dialer Control function that sets SO_MARK on
// the proxy's upstream sockets so that the connect hooks leave them alone.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var sockErr error
		if err := c.Control(func(fd uintptr) {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if sockErr != nil {
			return fmt.Errorf("set SO_MARK %#x on %s socket to %s: %w", mark, network, address, sockErr)
		}
		return nil
	}
}

// ListenersUp reports whether the proxy's IPv4 and IPv6 listeners are
// registered right now.
func (r *Redirector) ListenersUp() (v4, v6 bool, err error) {
	up := func(slot uint32) (bool, error) {
		var cookie uint64
		err := r.use(func(m *mapSet) error { return m.listeners.Lookup(slot, &cookie) })
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("look up listener slot %d: %w", slot, err)
		}
		return true, nil
	}
	if v4, err = up(listenerSlot4); err != nil {
		return false, false, err
	}
	v6, err = up(listenerSlot6)
	return v4, v6, err
}

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

// Counters reads the per-CPU counters and the listener state.
func (r *Redirector) Counters() (Counters, error) {
	var c Counters
	for i, f := range c.fields() {
		var perCPU []uint64
		if err := r.use(func(m *mapSet) error { return m.counters.Lookup(uint32(i), &perCPU) }); err != nil {
			return Counters{}, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			*f += v
		}
	}
	var err error
	c.ProxyListening4, c.ProxyListening6, err = r.ListenersUp()
	if err != nil {
		return Counters{}, err
	}
	return c, nil
}

// NetnsCookieFromPath returns the cookie of the network namespace at path
// (e.g. /proc/PID/ns/net or /run/netns/NAME): the value the hooks compare.
func NetnsCookieFromPath(path string) (uint64, error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return 0, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()

	type result struct {
		cookie uint64
		err    error
	}
	done := make(chan result, 1)
	// A socket created inside the namespace reports its cookie. The
	// namespace switch is confined to a locked thread; if switching back
	// fails the thread stays locked and dies with the goroutine.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if orig.Equal(target) {
			// Our own namespace (the default HostNetns): no setns, which
			// would need CAP_SYS_ADMIN even for a no-op.
			cookie, err := socketNetnsCookie()
			runtime.UnlockOSThread()
			done <- result{cookie, err}
			return
		}
		if err := netns.Set(target); err != nil {
			done <- result{err: fmt.Errorf("enter network namespace %s: %w", path, err)}
			return
		}
		cookie, err := socketNetnsCookie()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{cookie, err}
	}()
	res := <-done
	if res.err != nil {
		return 0, fmt.Errorf("cookie of network namespace %s: %w", path, res.err)
	}
	return res.cookie, nil
}

// NetnsCookieFromPID returns the cookie of the network namespace of pid.
func NetnsCookieFromPID(pid int) (uint64, error) {
	return NetnsCookieFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
}

func socketNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("SO_NETNS_COOKIE: %w", os.NewSyscallError("getsockopt", err))
	}
	return cookie, nil
}
