// Package bpf steers pods' TCP connections to selected Service addresses
// into the node-local zonelb proxy, in the kernel, and tells the proxy where
// each connection was going.
//
// It owns the eBPF programs (c/zonelb.c, compiled by bpf2go; the generated
// Go and objects are committed), their maps and links pinned under bpffs,
// and the node-local proxy address on a dummy interface (package nodeaddr).
// It must not know Kubernetes, Services or endpoints beyond "address:port
// -> service id", and must not proxy traffic itself: the daemon programs the
// maps, the proxy consumes OriginalDst.
//
// # Hooks (cgroup-v2, attached to Config.CgroupPath)
//
//   - cgroup/connect4, cgroup/connect6: a TCP connect from an enrolled pod
//     network namespace to a selected service address:port (IPv4, native
//     IPv6, or IPv4 written as ::ffff:a.b.c.d), on a socket not carrying
//     Config.SocketMark, is rewritten to the proxy address, but only while
//     the proxy's listener is registered (fail-open). The host network
//     namespace is never redirected. The original destination is kept in
//     socket-local storage.
//   - sockops: at ACTIVE_ESTABLISHED the original destination is copied to
//     an LRU map keyed by the 4-tuple the proxy sees; removed at TCP_CLOSE.
//   - cgroup/getpeername4/6: the application sees the address it dialled.
//   - optional sk_msg (Config.SockMsgShortcut): pod<->proxy data skips the
//     TCP stack. Off by default; see docs/bpf.md for the measurement.
//
// # API
//
// The node agent:
//
//	r, err := bpf.Load(bpf.Config{ProxyAddr4: netip.MustParseAddrPort("169.254.20.11:15001")})
//	defer r.Close()                       // keeps pins: redirection survives the agent
//	r.SetService(vip, id); r.DeleteService(vip); r.Services()
//	cookie, _ := bpf.NetnsCookieFromPID(pid) // or NetnsCookieFromPath
//	r.EnrollNetns(cookie); r.UnenrollNetns(cookie)
//	reg := prometheus.NewRegistry(); reg.MustRegister(bpf.NewCollector(r))
//	bpf.Uninstall(cfg)                    // `zonelb uninstall`: programs, links, maps, pins, zonelb0
//
// The proxy (same process as the agent, or another one using Open):
//
//	ln, _ := bpf.ListenConfig().Listen(ctx, "tcp4", "169.254.20.11:15001") // MPTCP off
//	r.RegisterListener(ln.(*net.TCPListener)) // redirect only while ln is open
//	orig, err := r.OriginalDst(conn)         // errors.Is(err, bpf.ErrNotRedirected) for direct clients
//	d := net.Dialer{Control: bpf.MarkControl(cfg.SocketMark)} // upstream sockets are never redirected
//
// On systems other than Linux every entry point returns ErrUnsupported.
package bpf
