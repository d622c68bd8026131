// Package nodeaddr keeps the node-local proxy address: a dummy interface
// (zonelb0 by default; a port-less bridge where the kernel has no dummy driver) holding the link-local IPv4 and ULA IPv6 addresses
// that redirected pod connections are rewritten to (the NodeLocal
// DNSCache pattern). Pods route to these addresses through their default
// route; nothing outside the node does.
//
// It must not touch any interface but the one it is named, and it creates
// no routes: the kernel's local table already delivers the addresses.
package nodeaddr

import (
	"errors"
	"net/netip"
)

// ErrUnsupported is returned on systems other than Linux.
var ErrUnsupported = errors.New("nodeaddr: unsupported on this system")

// Spec describes the interface to keep.
type Spec struct {
	// Name of the dummy interface, e.g. zonelb0.
	Name string
	// Addrs are the addresses it must hold, usually /32 and /128.
	// Addresses it holds beyond these are removed (except IPv6 link-local
	// ones the kernel adds itself).
	Addrs []netip.Prefix
	// Netns is the path of the network namespace to work in; "" is the
	// caller's.
	Netns string
}
