package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/internal/sockopt"
	"github.com/zonelb/zonelb/proxy"
)

// frontendListeners serves loopback service frontends directly when BPF
// redirection is off: a service whose ClusterIP is, say, 127.0.0.10 gets a
// proxy listener on 127.0.0.10:port, and clients on the node reach it by
// dialling the service address itself. It is the no-root mode for running
// the daemon from a file on a workstation, in demos and in tests; with
// redirection on, the BPF hooks steer connections instead.
type frontendListeners struct {
	log   *slog.Logger
	px    *proxy.Proxy
	mu    sync.Mutex
	lst   map[netip.AddrPort]net.Listener
	close bool
}

func newFrontendListeners(log *slog.Logger, px *proxy.Proxy) *frontendListeners {
	return &frontendListeners{log: log, px: px, lst: map[netip.AddrPort]net.Listener{}}
}

// sync listens on every loopback frontend and stops listening on the ones
// that are gone. Connections already accepted are not disturbed.
func (f *frontendListeners) sync(snap *discovery.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.close {
		return
	}
	for addr := range snap.Frontends {
		if !addr.Addr().IsLoopback() {
			continue
		}
		if _, ok := f.lst[addr]; ok {
			continue
		}
		l, err := sockopt.ListenConfig().Listen(context.Background(), "tcp", addr.String())
		if err != nil {
			f.log.Warn("cannot serve frontend", "addr", addr.String(), "err", err)
			continue
		}
		f.lst[addr] = l
		go f.px.Serve(l)
		f.log.Info("serving frontend directly", "addr", addr.String())
	}
	for addr, l := range f.lst {
		if _, ok := snap.Frontends[addr]; !ok {
			l.Close()
			delete(f.lst, addr)
		}
	}
}

func (f *frontendListeners) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.close = true
	for addr, l := range f.lst {
		l.Close()
		delete(f.lst, addr)
	}
}
