package sockopt

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListenConfigTurnsMPTCPOff(t *testing.T) {
	l, err := ListenConfig().Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var sockErr error
	if err := rc.Control(func(fd uintptr) { proto, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) }); err != nil {
		t.Fatal(err)
	}
	if sockErr != nil {
		t.Fatal(sockErr)
	}
	if proto != unix.IPPROTO_TCP {
		t.Fatalf("listener protocol %d, want TCP (%d), not MPTCP", proto, unix.IPPROTO_TCP)
	}
}
