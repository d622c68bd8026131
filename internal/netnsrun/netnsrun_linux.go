// Package netnsrun runs a function on an OS thread switched into a network
// namespace, the one way the labs (netlab, kubenode) enter a namespace
// from Go. It knows netns handles, nothing of what lives in them.
package netnsrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into target; name says which
// namespace in errors. Sockets that fn opens belong to target for their
// whole life, whichever thread later uses them; processes it forks start
// inside it. A thread that cannot switch back is never handed back to the
// scheduler: it stays locked and exits with its goroutine.
func Do(target netns.NsHandle, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dial opens a connection from inside a namespace: do is that namespace's
// Do (Do bound to its handle, with whatever checks its owner adds).
func Dial(ctx context.Context, do func(fn func() error) error, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
