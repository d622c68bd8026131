package netlab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/zonelb/zonelb/internal/netnsrun"
)

// Netns is one network namespace of the lab, held open by a file
// descriptor of the owning process. Its methods run work inside it.
type Netns struct {
	name string

	mu     sync.Mutex
	handle netns.NsHandle
	nl     *netlink.Handle
	closed bool
}

// newNetns creates an unnamed network namespace. The thread that creates it
// switches back to the caller's namespace before it is reused; if it
// cannot, it is left locked and dies with its goroutine.
func newNetns(name string) (*Netns, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: fmt.Errorf("open own netns: %w", err)}
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		h, err := netns.New()
		if err != nil {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{err: fmt.Errorf("create netns %s: %w", name, err)}
			return
		}
		if err := netns.Set(orig); err != nil {
			h.Close()
			ch <- result{err: fmt.Errorf("return from netns %s: %w", name, err)}
			return // thread stays locked and exits with the goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{h: h}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	nl, err := netlink.NewHandleAt(r.h)
	if err != nil {
		r.h.Close()
		return nil, fmt.Errorf("netlink socket in netns %s: %w", name, err)
	}
	return &Netns{name: name, handle: r.h, nl: nl}, nil
}

// Name is the namespace's name in the lab (for messages only).
func (n *Netns) Name() string { return n.name }

// Path is a path through which other processes of this host can open the
// namespace while the lab runs (/proc/<owner pid>/fd/<fd>).
func (n *Netns) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.handle))
}

// Netlink returns a netlink handle bound to the namespace.
func (n *Netns) Netlink() *netlink.Handle { return n.nl }

// Do runs fn on an OS thread switched into the namespace. Sockets that fn
// opens belong to the namespace for their whole life, whichever thread
// later uses them; processes it forks start inside it.
func (n *Netns) Do(fn func() error) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("netns %s is closed", n.name)
	}
	target := n.handle
	n.mu.Unlock()

	return netnsrun.Do(target, n.name, fn)
}

// DialContext opens a connection from inside the namespace.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := netnsrun.Dial(ctx, n.Do, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in netns %s: %w", network, addr, n.name, err)
	}
	return c, nil
}

// Listen opens a listener inside the namespace. While it is open it keeps
// the namespace alive: close it before the lab closes.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, addr, n.name, err)
	}
	return l, nil
}

// HTTPClient returns a client whose connections are opened inside the
// namespace (for example to a node agent's admin address on its loopback).
func (n *Netns) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:       n.DialContext,
		DisableKeepAlives: true,
	}}
}

// WriteSysctl writes a sysctl of the namespace, e.g.
// "net/ipv4/ip_forward": /proc/sys/net belongs to the namespace of the
// thread that opens it.
func (n *Netns) WriteSysctl(key, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in netns %s: %w", key, value, n.name, err)
		}
		return nil
	})
}

// Inode is the namespace's inode number, as /proc/<pid>/ns/net shows it.
func (n *Netns) Inode() (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(n.handle), &st); err != nil {
		return 0, fmt.Errorf("stat netns %s: %w", n.name, err)
	}
	return st.Ino, nil
}

// close releases the namespace; the kernel frees it once no process and no
// socket is left inside.
func (n *Netns) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.nl.Close()
	return n.handle.Close()
}
