package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultPinDir              = "/sys/fs/bpf/zonelb"
	DefaultInterface           = "zonelb0"
	DefaultSocketMark          = 0x5a4c // "ZL"
	DefaultOriginalDstAttempts = 4
	DefaultOriginalDstBackoff  = 250 * time.Microsecond
)

// ErrUnsupported is returned on systems without the kernel features (or
// the operating system) that redirection needs.
var ErrUnsupported = errors.New("bpf redirection is unsupported on this system")

// ErrNotRedirected is returned by OriginalDst for a connection that the
// hooks did not redirect (a client that dialled the proxy directly, or an
// entry already gone because the client closed).
var ErrNotRedirected = errors.New("connection was not redirected by zonelb")

// Config says where the programs attach, where state is pinned and where
// the proxy listens. The zero value of every optional field means its
// default.
type Config struct {
	// PinDir is the bpffs directory for maps and links. Default
	// /sys/fs/bpf/zonelb. bpffs is mounted at its parent when missing.
	PinDir string
	// CgroupPath is the cgroup-v2 directory the hooks attach to; every
	// process below it is covered. A directory that is not cgroup-v2 stands
	// for the cgroup2 mount below it (a hybrid host's /sys/fs/cgroup means
	// its unified/; see Cgroup2Dir). Default: the cgroup2 mount point from
	// /proc/mounts.
	CgroupPath string
	// ProxyAddr4 is where redirected IPv4 (and v4-mapped) connects go.
	// Required; normally a link-local address on the zonelb0 dummy
	// interface so that pods route to it and it means nothing elsewhere.
	ProxyAddr4 netip.AddrPort
	// ProxyAddr6 is where redirected native IPv6 connects go. Optional:
	// when unset, IPv6 services are not redirected (counted as
	// no_ipv6_proxy). Use a ULA (routable from pods), not fe80::.
	ProxyAddr6 netip.AddrPort
	// SocketMark is the SO_MARK the proxy sets on its upstream sockets;
	// sockets carrying all of its bits are never redirected. Default
	// 0x5a4c. Must not be 0.
	SocketMark uint32
	// Interface is the dummy interface that holds the proxy addresses.
	// Default zonelb0.
	Interface string
	// InterfaceNetns is the network namespace (a path such as
	// /proc/1/ns/net or /run/netns/x) in which Interface lives. Default:
	// the caller's.
	InterfaceNetns string
	// HostNetns is the node's network namespace (a path), which is never
	// redirected even when enrolled; the initial namespace never is either.
	// Default: the caller's, /proc/self/ns/net (the agent runs with
	// hostNetwork).
	HostNetns string
	// EnrollAllNetns redirects every network namespace under CgroupPath
	// other than the host's, without enrolling them one by one: the attach
	// cgroup is then the scope (on a node, the pods' cgroups). Enrolling
	// one by one needs a namespace's cookie, which takes setns(2) and so
	// CAP_SYS_ADMIN; this needs nothing more than loading the programs.
	EnrollAllNetns bool
	// SkipInterface leaves interfaces alone (the proxy address is then an
	// address the node already has).
	SkipInterface bool
	// SockMsgShortcut adds pod<->proxy socket pairs to a SOCKHASH whose
	// sk_msg program hands data straight to the peer socket.
	SockMsgShortcut bool
	// OriginalDstAttempts and OriginalDstBackoff bound OriginalDst's retry
	// on a 4-tuple miss (the entry is written before the client's final
	// handshake ACK, so a miss should not happen on one host; the retry is
	// cheap insurance). Defaults 4 and 250µs.
	OriginalDstAttempts int
	OriginalDstBackoff  time.Duration
	// Logger receives load, migration and attach events. Default: discard.
	Logger *slog.Logger
}

// withDefaults returns a copy of c with defaults filled in. It does no I/O
// and cannot fail: the cgroup2 mount, which takes reading /proc/mounts, is
// found by withCgroupRoot when Load needs it.
func (c Config) withDefaults() Config {
	if c.PinDir == "" {
		c.PinDir = DefaultPinDir
	}
	if c.Interface == "" {
		c.Interface = DefaultInterface
	}
	if c.SocketMark == 0 {
		c.SocketMark = DefaultSocketMark
	}
	if c.OriginalDstAttempts <= 0 {
		c.OriginalDstAttempts = DefaultOriginalDstAttempts
	}
	if c.OriginalDstBackoff <= 0 {
		c.OriginalDstBackoff = DefaultOriginalDstBackoff
	}
	if c.HostNetns == "" {
		c.HostNetns = "/proc/self/ns/net"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// withCgroupRoot fills an empty CgroupPath with what cgroupRoot finds (the
// cgroup2 mount point).
func (c Config) withCgroupRoot(cgroupRoot func() (string, error)) (Config, error) {
	if c.CgroupPath != "" {
		return c, nil
	}
	root, err := cgroupRoot()
	if err != nil {
		return c, fmt.Errorf("find cgroup2 mount: %w", err)
	}
	c.CgroupPath = root
	return c, nil
}

// Validate reports every setting of c, after defaults, that the hooks
// cannot honour, joined.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !filepath.IsAbs(c.PinDir) || filepath.Clean(c.PinDir) == "/" {
		bad("pin dir %q: must be an absolute path below a bpffs mount", c.PinDir)
	}
	if c.CgroupPath != "" && !filepath.IsAbs(c.CgroupPath) {
		bad("cgroup path %q: must be absolute", c.CgroupPath)
	}
	switch a := c.ProxyAddr4.Addr().Unmap(); {
	case !c.ProxyAddr4.IsValid() || !a.Is4() || c.ProxyAddr4.Port() == 0:
		bad("proxy IPv4 address %v: want an IPv4 address with a port", c.ProxyAddr4)
	case a.IsUnspecified():
		bad("proxy IPv4 address %v: must not be unspecified", c.ProxyAddr4)
	}
	if c.ProxyAddr6.IsValid() {
		switch a := c.ProxyAddr6.Addr(); {
		case !a.Is6() || a.Is4In6() || a.IsUnspecified() || c.ProxyAddr6.Port() == 0:
			bad("proxy IPv6 address %v: want a native IPv6 address with a port", c.ProxyAddr6)
		case a.IsLinkLocalUnicast():
			bad("proxy IPv6 address %v: link-local addresses are not routable from pods; use a ULA", c.ProxyAddr6)
		}
	}
	if !c.SkipInterface && (c.Interface == "" || len(c.Interface) > 15) {
		bad("interface name %q: want 1 to 15 characters", c.Interface)
	}
	return errors.Join(errs...)
}

// Original is where a redirected connection was going.
type Original struct {
	// Addr is the address and port the application dialled, as it dialled
	// it (an IPv4 service dialled as ::ffff:a.b.c.d is reported as IPv4).
	Addr netip.AddrPort
	// ServiceID is the id given to SetService for that address.
	ServiceID uint32
	// V4Mapped is true when the application dialled the IPv4 service
	// through an IPv6 socket.
	V4Mapped bool
}
