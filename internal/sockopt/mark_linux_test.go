package sockopt

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/internal/testenv"
)

func TestMarkControlSetsTheMark(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "SO_MARK needs CAP_NET_ADMIN")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := net.Dialer{Control: MarkControl(0x5a4c)}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var sockErr error
	if err := rc.Control(func(fd uintptr) { mark, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if sockErr != nil || mark != 0x5a4c {
		t.Fatalf("SO_MARK = %#x (%v), want 0x5a4c", mark, sockErr)
	}
}
