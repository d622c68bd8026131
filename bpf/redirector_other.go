//go:build !linux

package bpf

import (
	"net"
	"net/netip"
)

// Redirector is unavailable on this system; every method reports
// ErrUnsupported.
type Redirector struct{}

// Load reports ErrUnsupported.
func Load(Config) (*Redirector, error) { return nil, ErrUnsupported }

// Open reports ErrUnsupported.
func Open(Config) (*Redirector, error) { return nil, ErrUnsupported }

// Uninstall reports ErrUnsupported.
func Uninstall(Config) error { return ErrUnsupported }

// CgroupV2Root reports ErrUnsupported.
func CgroupV2Root() (string, error) { return "", ErrUnsupported }

// Cgroup2Dir reports ErrUnsupported.
func Cgroup2Dir(string) (string, error) { return "", ErrUnsupported }

// CgroupID reports ErrUnsupported.
func CgroupID(string) (uint64, error) { return 0, ErrUnsupported }

// NetnsCookieFromPath reports ErrUnsupported.
func NetnsCookieFromPath(string) (uint64, error) { return 0, ErrUnsupported }

// NetnsCookieFromPID reports ErrUnsupported.
func NetnsCookieFromPID(int) (uint64, error) { return 0, ErrUnsupported }

func (*Redirector) Close() error                                 { return nil }
func (*Redirector) SetService(netip.AddrPort, uint32) error      { return ErrUnsupported }
func (*Redirector) DeleteService(netip.AddrPort) error           { return ErrUnsupported }
func (*Redirector) Services() (map[netip.AddrPort]uint32, error) { return nil, ErrUnsupported }
func (*Redirector) EnrollNetns(uint64) error                     { return ErrUnsupported }
func (*Redirector) UnenrollNetns(uint64) error                   { return ErrUnsupported }
func (*Redirector) EnrolledNetns() ([]uint64, error)             { return nil, ErrUnsupported }
func (*Redirector) CgroupPath() string                           { return "" }
func (*Redirector) OptOut(uint64) error                          { return ErrUnsupported }
func (*Redirector) OptIn(uint64) error                           { return ErrUnsupported }
func (*Redirector) OptedOut() ([]uint64, error)                  { return nil, ErrUnsupported }
func (*Redirector) RegisterListener(*net.TCPListener) error      { return ErrUnsupported }
func (*Redirector) ListenersUp() (v4, v6 bool, err error)        { return false, false, ErrUnsupported }
func (*Redirector) OriginalDst(net.Conn) (Original, error)       { return Original{}, ErrUnsupported }
func (*Redirector) Counters() (Counters, error)                  { return Counters{}, ErrUnsupported }
