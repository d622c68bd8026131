// Package sockopt holds the socket options zonelb's sockets need, in one
// place for every package that opens them: a listener with MPTCP off (the
// BPF liveness SOCKMAP refuses MPTCP sockets) and an upstream dialer
// Control that sets SO_MARK (marked sockets are never redirected).
//
// It knows sockets only: nothing of BPF maps, Kubernetes or the proxy.
package sockopt

import "net"

// ListenConfig returns a ListenConfig with MPTCP off: Go enables MPTCP by
// default for listeners where the kernel allows it, and a SOCKMAP refuses
// MPTCP sockets.
func ListenConfig() *net.ListenConfig {
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc
}
