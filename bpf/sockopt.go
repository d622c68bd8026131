package bpf

// Socket options the proxy needs for redirection to work, from package
// sockopt (which the proxy uses directly: it must not know BPF).

import (
	"net"
	"syscall"

	"github.com/zonelb/zonelb/internal/sockopt"
)

// ListenConfig returns a ListenConfig for the proxy's listener: MPTCP off,
// because Go enables it by default for listeners where the kernel allows
// and a SOCKMAP refuses MPTCP sockets.
func ListenConfig() *net.ListenConfig { return sockopt.ListenConfig() }

// MarkControl returns a net.Dialer Control function that sets SO_MARK on
// the proxy's upstream sockets so that the connect hooks leave them alone.
// It fails on systems other than Linux.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return sockopt.MarkControl(mark)
}
