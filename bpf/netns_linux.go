package bpf

// Network namespaces: enrolment and namespace cookies.

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

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
