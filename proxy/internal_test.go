package proxy

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/internal/testenv"
)

func TestGRPCTimeoutRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"100m", 100 * time.Millisecond, true},
		{"99999999n", 99999999, true},
		{"2H", 2 * time.Hour, true},
		{"5u", 5 * time.Microsecond, true},
		{"", 0, false},
		{"S", 0, false},
		{"123456789S", 0, false}, // 9 digits
		{"10x", 0, false},
		{"-1S", 0, false},
	} {
		got, ok := parseGRPCTimeout(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, d := range []time.Duration{1, 999, time.Millisecond, 1234567 * time.Microsecond, 3 * time.Hour, 1<<63 - 1} {
		s := formatGRPCTimeout(d)
		back, ok := parseGRPCTimeout(s)
		if !ok || back < d || float64(back-d) > float64(d)*1e-7+1 {
			t.Errorf("formatGRPCTimeout(%v) = %q, parses back to %v", d, s, back)
		}
	}
}

func FuzzParseGRPCTimeout(f *testing.F) {
	f.Add("1S")
	f.Add("99999999H")
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseGRPCTimeout(s)
		if ok && d < 0 {
			t.Fatalf("negative timeout %v from %q", d, s)
		}
	})
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string // arrive separately
		want   protocol
	}{
		{"h2 preface at once", []string{string(h2Preface)}, protoHTTP},
		{"h2 preface in pieces", []string{"PRI * HT", "TP/2.0\r\n", "\r\nSM\r\n\r\n"}, protoHTTP},
		{"http1 GET", []string{"GET / HTTP/1.1\r\n\r\n"}, protoHTTP},
		{"http1 short", []string{"PO", "ST /x HTTP/1.0\r\n\r\n"}, protoHTTP},
		{"tls", []string{"\x16\x03\x01\x02\x00"}, protoOpaque},
		{"almost preface", []string{"PRI * HTTP/1.1\r\n"}, protoOpaque},
		{"silent", nil, protoOpaque},
		{"GETX", []string{"GETX"}, protoOpaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() {
				for _, c := range tc.chunks {
					client.Write([]byte(c))
				}
			}()
			br := bufio.NewReader(server)
			if got := sniff(server, br, 200*time.Millisecond); got != tc.want {
				t.Fatalf("sniff = %v, want %v", got, tc.want)
			}
			// Nothing consumed: the peeked bytes are still there.
			if len(tc.chunks) > 0 {
				b, _ := br.Peek(1)
				if len(b) == 0 || b[0] != tc.chunks[0][0] {
					t.Fatalf("sniff consumed input")
				}
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Router: StaticRouter{}}
	if _, err := ok.withDefaults(); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	for name, c := range map[string]Config{
		"no router":     {},
		"tiny window":   {Router: StaticRouter{}, StreamWindow: 100},
		"huge window":   {Router: StaticRouter{}, StreamWindow: 8 << 20},
		"min above max": {Router: StaticRouter{}, MinConnsPerEndpoint: 4, MaxConnsPerEndpoint: 2},
		"negative":      {Router: StaticRouter{}, DialTimeout: -1},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// An endpoint that reset an idle connection (a process killed with
// unread bytes in its socket) before the connection's read loop saw it
// (here: the read loop never started). reserve must refuse it: the peek
// gets ECONNRESET, which once counted as "alive".
func TestReserveRefusesAnIdleConnectionTheEndpointReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	p, err := New(Config{Router: StaticRouter{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := p.up.connect(p.up.pool(ap))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.conn.Close()
	server := <-accepted
	if server == nil {
		t.Fatal("endpoint accepted nothing")
	}
	// Wait until the proxy's preface is in the endpoint's socket, then
	// close it unread: the kernel answers with a reset.
	testenv.WaitFor(t, 10*time.Second, "the proxy's preface at the endpoint", func() bool {
		return unreadBytes(t, server) > 0
	})
	server.Close()
	testenv.WaitFor(t, 10*time.Second, "the reset at the proxy", func() bool {
		return tcpInfo(t, cc.conn).State == unix.BPF_TCP_CLOSE
	})
	if cc.reserve() {
		t.Fatal("an idle connection the endpoint reset was reserved")
	}
}

// tcpInfo is the kernel's TCP_INFO for c.
func tcpInfo(t *testing.T, c net.Conn) *unix.TCPInfo {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info
}

// unreadBytes is how many bytes wait in c's receive queue.
func unreadBytes(t *testing.T, c net.Conn) int {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}
