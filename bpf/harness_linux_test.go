package bpf

// Test harness: every test gets its own cgroup (the hooks attach there, so
// nothing else on the machine is redirected), its own bpffs pin directory,
// and its own network namespaces: a "node" namespace holding the proxy
// address, stand-in backends on the service VIPs, and veth links to "pod"
// namespaces whose only route leads to the node namespace. Clients are
// re-executions of this test binary started inside the test cgroup
// (CLONE_INTO_CGROUP) that enter their namespace before opening a socket.
// Nothing here routes out of the test's namespaces.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/bpf/nodeaddr"
	"github.com/zonelb/zonelb/internal/eintr"
	"github.com/zonelb/zonelb/internal/testenv"
)

// Addresses used inside the test namespaces. 198.18.0.0/15 is the
// benchmarking range; none of it is routed anywhere from these namespaces
// but to the test's own node namespace.
var (
	proxy4 = netip.MustParseAddrPort("169.254.20.11:15001")
	proxy6 = netip.MustParseAddrPort("[fd00:20::11]:15001")

	vip4      = netip.MustParseAddr("198.18.0.10")
	vip4Other = netip.MustParseAddr("198.18.0.11")
	vip6      = netip.MustParseAddr("fd00:96::10")
	vip6Other = netip.MustParseAddr("fd00:96::11")

	servicePort      uint16 = 80
	otherServicePort uint16 = 81
)

const (
	helperRoleEnv  = "ZLB_TEST_HELPER"
	helperNetnsEnv = "ZLB_TEST_NETNS"
	helperArgsEnv  = "ZLB_TEST_ARGS"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperRoleEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

// testEnv is one test's private world.
type testEnv struct {
	t      testing.TB
	id     string
	cgroup string
	cgFD   *os.File
	// plainCgroup is a sibling cgroup with no programs (benchmarks).
	plainCgroup      string
	plainFD          *os.File
	node, pod1, pod2 string // netns paths
	cfg              Config
}

func randomID(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random id: %v", err)
	}
	return hex.EncodeToString(b)
}

// newTestEnv builds cgroups and namespaces; it does not load anything.
func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	testenv.RequireRoot(t)
	e := &testEnv{t: t, id: randomID(t)}

	root, err := CgroupV2Root()
	if err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("no cgroup2: %v", err))
	}
	e.cgroup, e.cgFD = mkCgroup(t, filepath.Join(root, "zonelb-test-"+e.id))
	e.plainCgroup, e.plainFD = mkCgroup(t, filepath.Join(root, "zonelb-test-"+e.id+"-plain"))

	e.node = newNamedNetns(t, "zlbt-"+e.id+"-node")
	e.pod1 = newNamedNetns(t, "zlbt-"+e.id+"-pod1")
	e.pod2 = newNamedNetns(t, "zlbt-"+e.id+"-pod2")
	nodeLinks(t, e.node)
	e.wirePod(e.pod1, "zv"+e.id+"p1", 1)
	e.wirePod(e.pod2, "zv"+e.id+"p2", 2)

	e.cfg = Config{
		PinDir:         "/sys/fs/bpf/zonelb-test-" + e.id,
		CgroupPath:     e.cgroup,
		ProxyAddr4:     proxy4,
		ProxyAddr6:     proxy6,
		InterfaceNetns: e.node,
		HostNetns:      e.node,
	}
	return e
}

func mkCgroup(t testing.TB, path string) (string, *os.File) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup %s: %v", path, err)
	}
	t.Cleanup(func() {
		// Children are waited for before this runs; rmdir can still race
		// with the kernel's release of an exited task, so retry briefly.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(path)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", path, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open cgroup %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

// inNetns runs fn on a thread switched into the namespace at path. The
// thread returns to the pool only if switching back succeeds.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// newNamedNetns creates /run/netns/name; the creating thread is discarded.
func newNamedNetns(t testing.TB, name string) string {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is left in the new namespace and dies
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return filepath.Join("/run/netns", name)
}

func nsHandle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink in %s: %v", path, err)
	}
	t.Cleanup(h.Close)
	return h
}

func mustPrefix(s string) *netlink.Addr {
	p := netip.MustParsePrefix(s)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// nodeLinks brings up the node's loopback with the service VIPs on it
// (stand-in backends listen there).
func nodeLinks(t testing.TB, node string) {
	t.Helper()
	h := nsHandle(t, node)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("node lo: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("node lo up: %v", err)
	}
	for _, p := range []string{vip4.String() + "/32", vip4Other.String() + "/32", vip6.String() + "/128", vip6Other.String() + "/128"} {
		if err := h.AddrAdd(lo, mustPrefix(p)); err != nil {
			t.Fatalf("node lo add %s: %v", p, err)
		}
	}
}

// wirePod links a pod namespace to the node with a veth pair; the pod's
// default routes point at the node end.
func (e *testEnv) wirePod(pod, nodeIf string, n int) {
	t := e.t
	t.Helper()
	node := nsHandle(t, e.node)
	podNs, err := netns.GetFromPath(pod)
	if err != nil {
		t.Fatalf("open %s: %v", pod, err)
	}
	defer podNs.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = nodeIf
	if err := node.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNs))}); err != nil {
		t.Fatalf("create veth %s: %v", nodeIf, err)
	}
	nl, err := node.LinkByName(nodeIf)
	if err != nil {
		t.Fatalf("find %s: %v", nodeIf, err)
	}
	for _, a := range []string{fmt.Sprintf("198.19.%d.1/24", n), fmt.Sprintf("fd00:%d::1/64", n)} {
		if err := node.AddrAdd(nl, mustPrefix(a)); err != nil {
			t.Fatalf("node %s add %s: %v", nodeIf, a, err)
		}
	}
	if err := node.LinkSetUp(nl); err != nil {
		t.Fatalf("up %s: %v", nodeIf, err)
	}

	ph := nsHandle(t, pod)
	for _, name := range []string{"lo", "eth0"} {
		l, err := ph.LinkByName(name)
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		if name == "eth0" {
			for _, a := range []string{fmt.Sprintf("198.19.%d.2/24", n), fmt.Sprintf("fd00:%d::2/64", n)} {
				if err := ph.AddrAdd(l, mustPrefix(a)); err != nil {
					t.Fatalf("pod add %s: %v", a, err)
				}
			}
		}
		if err := ph.LinkSetUp(l); err != nil {
			t.Fatalf("pod %s up: %v", name, err)
		}
		if name == "eth0" {
			for _, gw := range []string{fmt.Sprintf("198.19.%d.1", n), fmt.Sprintf("fd00:%d::1", n)} {
				if err := ph.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
					t.Fatalf("pod default route via %s: %v", gw, err)
				}
			}
		}
	}
}

// load loads the redirector for the test and uninstalls it afterwards.
func (e *testEnv) load(opts loadOptions) *Redirector {
	e.t.Helper()
	// Registered before loading: a load that fails half-way leaves pins.
	e.t.Cleanup(func() {
		if err := Uninstall(e.cfg); err != nil {
			e.t.Errorf("uninstall: %v", err)
		}
	})
	r, err := load(e.cfg, opts)
	if err != nil {
		e.t.Fatalf("load: %v", err)
	}
	e.t.Cleanup(func() { r.Close() })
	return r
}

func (e *testEnv) cookie(path string) uint64 {
	e.t.Helper()
	c, err := NetnsCookieFromPath(path)
	if err != nil {
		e.t.Fatalf("netns cookie: %v", err)
	}
	return c
}

// listenIn opens a TCP listener inside a namespace; closed at cleanup.
func listenIn(t testing.TB, path, network, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := inNetns(path, func() error {
		var err error
		ln, err = ListenConfig().Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// serve answers each connection with one line from reply, then closes.
func serve(ln net.Listener, reply func(net.Conn) string) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.WriteString(c, reply(c)+"\n")
			}()
		}
	}()
	return &wg
}

// startBackends serves "backend <local addr>" on the service ports of the
// node namespace (stand-ins for the real endpoints at the original
// destination).
func (e *testEnv) startBackends() {
	for _, port := range []uint16{servicePort, otherServicePort} {
		ln := listenIn(e.t, e.node, "tcp", fmt.Sprintf(":%d", port))
		serve(ln, func(c net.Conn) string { return "backend " + c.LocalAddr().String() })
	}
}

// proxyReply is what the test proxy tells a client: where the client was
// going according to OriginalDst.
func proxyReply(r *Redirector, c net.Conn) string {
	o, err := r.OriginalDst(c)
	if err != nil {
		return "proxy-miss " + strings.ReplaceAll(err.Error(), " ", "_")
	}
	return fmt.Sprintf("proxy %s %d %v", o.Addr, o.ServiceID, o.V4Mapped)
}

// startProxy runs an in-process proxy in the node namespace on both proxy
// addresses and registers its listeners.
func (e *testEnv) startProxy(r *Redirector) []*net.TCPListener {
	return e.startProxyWith(r, func(c net.Conn) string { return proxyReply(r, c) })
}

// startProxyWith registers with reg and answers each connection with
// reply (the agent can restart under a running proxy: see proxyHandle).
func (e *testEnv) startProxyWith(reg *Redirector, reply func(net.Conn) string) []*net.TCPListener {
	var lns []*net.TCPListener
	for _, a := range []struct{ network, addr string }{{"tcp4", proxy4.String()}, {"tcp6", proxy6.String()}} {
		ln := listenIn(e.t, e.node, a.network, a.addr)
		if err := reg.RegisterListener(ln); err != nil {
			e.t.Fatalf("register listener: %v", err)
		}
		serve(ln, reply)
		lns = append(lns, ln)
	}
	return lns
}

// helperArgs is passed to a child as JSON.
type helperArgs struct {
	Dst     string        `json:",omitempty"` // client: where to connect
	Network string        `json:",omitempty"` // tcp4 or tcp6 (socket family)
	Count   int           `json:",omitempty"`
	Mark    uint32        `json:",omitempty"`
	Loop    time.Duration `json:",omitempty"` // client: repeat until SIGTERM or this long
	Size    int           `json:",omitempty"` // rr bench: message size
	Conns   int           `json:",omitempty"` // rr bench: connections, one after the other
	Config  *Config       `json:",omitempty"` // proxy: how to open the pins
	Listen  string        `json:",omitempty"` // proxy: address
	Echo    bool          `json:",omitempty"` // proxy: echo instead of one line
	// Ballast (proxy) is MiB of heap the proxy touches and keeps: its
	// exit then takes long enough (freeing the memory comes before the
	// kernel closes its sockets) for connects to land in between.
	Ballast int `json:",omitempty"`
	// Crash (proxy): after "ready", on a line on stdin, fill stderr (a
	// pipe of one page nobody reads yet) and panic: the Go runtime then
	// blocks writing its crash report, the process alive, its listener
	// open, mid-crash (see startChild).
	Crash bool `json:",omitempty"`
}

// connResult is one client connection's outcome.
type connResult struct {
	Reply string
	Peer  string
	Err   string
}

type child struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *strings.Builder
	// For a Crash proxy: its stdin, and its stderr pipe, read by no one
	// until the test drains it.
	stdin        io.WriteCloser
	stderrUnread *os.File
}

// startChild starts this test binary as helper role in cgroup (nil: the
// test's own cgroup) and network namespace netnsPath ("" = the host's).
func startChild(t testing.TB, role string, cgroup *os.File, netnsPath string, args helperArgs) *child {
	t.Helper()
	js, err := json.Marshal(args)
	if err != nil {
		t.Fatalf("marshal args: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperRoleEnv+"="+role, helperNetnsEnv+"="+netnsPath, helperArgsEnv+"="+string(js))
	// Pdeathsig: a helper must not outlive a crashed test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgroup.Fd())
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	c := &child{stderr: stderr}
	if args.Crash {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatalf("stdin pipe: %v", err)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatalf("stderr pipe: %v", err)
		}
		if _, err := unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, os.Getpagesize()); err != nil {
			t.Fatalf("stderr pipe size: %v", err)
		}
		cmd.Stderr, c.stderrUnread = pw, pr
		t.Cleanup(func() { pr.Close() })
		defer pw.Close() // the child's copy stays open
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", role, err)
	}
	c.cmd, c.stdout = cmd, bufio.NewReader(out)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() // our own child, by pid
			cmd.Wait()
		}
	})
	return c
}

// wait waits for the child (bounded) and returns its whole stdout.
func (c *child) wait(t testing.TB, limit time.Duration) []byte {
	t.Helper()
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c.stdout)
		out <- b
	}()
	var b []byte
	select {
	case b = <-out:
	case <-time.After(limit):
		c.cmd.Process.Kill()
		b = <-out
		t.Errorf("helper did not finish within %v", limit)
	}
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("helper failed: %v\nstderr:\n%s", err, c.stderr.String())
	}
	return b
}

// runClient connects count times from netnsPath inside the test cgroup.
func (e *testEnv) runClient(netnsPath string, args helperArgs) []connResult {
	e.t.Helper()
	if args.Count == 0 {
		args.Count = 1
	}
	c := startChild(e.t, "client", e.cgFD, netnsPath, args)
	return decodeResults(e.t, c.wait(e.t, 60*time.Second))
}

func decodeResults(t testing.TB, b []byte) []connResult {
	t.Helper()
	var out []connResult
	dec := json.NewDecoder(strings.NewReader(string(b)))
	for dec.More() {
		var r connResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("decode helper output %q: %v", b, err)
		}
		out = append(out, r)
	}
	return out
}

// ---- helper processes ----

func runHelper(role string) int {
	runtime.LockOSThread() // namespace and raw sockets stay on this thread
	if path := os.Getenv(helperNetnsEnv); path != "" {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open netns:", err)
			return 2
		}
		if err := netns.Set(ns); err != nil {
			fmt.Fprintln(os.Stderr, "enter netns:", err)
			return 2
		}
	}
	var args helperArgs
	if err := json.Unmarshal([]byte(os.Getenv(helperArgsEnv)), &args); err != nil {
		fmt.Fprintln(os.Stderr, "args:", err)
		return 2
	}
	var err error
	switch role {
	case "client":
		err = helperClient(args)
	case "loop-client":
		err = helperLoopClient(args)
	case "proxy":
		err = helperProxy(args)
	case "connect-bench":
		err = helperConnectBench(args)
	case "rr-bench":
		err = helperRRBench(args)
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		return 1
	}
	return 0
}

func sockaddrOf(network string, ap netip.AddrPort) (int, unix.Sockaddr) {
	if network == "tcp6" {
		return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// rawConnect opens a blocking TCP socket of the given family (IPv6
// sockets accept v4-mapped destinations), optionally marked, and connects.
func rawConnect(network string, dst netip.AddrPort, mark uint32) (int, error) {
	family, sa := sockaddrOf(network, dst)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.Timeval{Sec: 2}
	opts := []error{
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
	}
	if family == unix.AF_INET6 {
		opts = append(opts, unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0))
	}
	if mark != 0 {
		opts = append(opts, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)))
	}
	if err := errors.Join(opts...); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setsockopt: %w", err)
	}
	if err := eintr.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %v: %w", dst, err)
	}
	return fd, nil
}

func readLine(fd int) (string, error) {
	var buf [512]byte
	n := 0
	for n < len(buf) {
		m, err := eintr.Read(fd, buf[n:])
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		if m == 0 {
			break
		}
		n += m
		if strings.Contains(string(buf[:n]), "\n") {
			break
		}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func oneConnection(args helperArgs, dst netip.AddrPort) connResult {
	fd, err := rawConnect(args.Network, dst, args.Mark)
	if err != nil {
		return connResult{Err: err.Error()}
	}
	defer unix.Close(fd)
	var res connResult
	if sa, err := unix.Getpeername(fd); err == nil {
		res.Peer = addrPortOf(sa).String()
	} else {
		res.Err = "getpeername: " + err.Error()
	}
	line, err := readLine(fd)
	if err != nil {
		res.Err = err.Error()
	}
	res.Reply = line
	return res
}

func helperClient(args helperArgs) error {
	dst, err := netip.ParseAddrPort(args.Dst)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for range args.Count {
		if err := enc.Encode(oneConnection(args, dst)); err != nil {
			return err
		}
	}
	return nil
}

// loopSummary is the loop client's report.
type loopSummary struct {
	OK, Failed int
	Replies    map[string]int
	FirstErr   string
	FirstOdd   string // first reply that did not come from the proxy's happy path
	// Failures are the first maxLoopFailures failed connections, with the
	// time (Unix ns) each began, before its socket was opened.
	Failures []loopFailure
}

type loopFailure struct {
	Start int64
	Err   string
}

const maxLoopFailures = 100

// helperLoopClient connects back to back until SIGTERM (or args.Loop) and
// reports how many connections got a reply.
func helperLoopClient(args helperArgs) error {
	dst, err := netip.ParseAddrPort(args.Dst)
	if err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	deadline := time.Now().Add(args.Loop)
	sum := loopSummary{Replies: map[string]int{}}
	fmt.Fprintln(os.Stderr, "looping")
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			return json.NewEncoder(os.Stdout).Encode(sum)
		default:
		}
		start := time.Now()
		res := oneConnection(args, dst)
		if res.Err != "" || res.Reply == "" {
			sum.Failed++
			if sum.FirstErr == "" {
				sum.FirstErr = res.Err + " reply=" + res.Reply
			}
			if len(sum.Failures) < maxLoopFailures {
				sum.Failures = append(sum.Failures, loopFailure{Start: start.UnixNano(), Err: res.Err + " reply=" + res.Reply})
			}
			continue
		}
		sum.OK++
		kind := strings.Fields(res.Reply)[0]
		sum.Replies[kind]++
		if kind != "proxy" && sum.FirstOdd == "" {
			sum.FirstOdd = res.Reply
		}
	}
	return json.NewEncoder(os.Stdout).Encode(sum)
}

// helperProxy is a proxy process for the fail-open test: it opens the
// pinned maps, registers its listener, says "ready", and answers each
// connection with its original destination (or echoes, for benchmarks).
func helperProxy(args helperArgs) error {
	r, err := Open(*args.Config)
	if err != nil {
		return err
	}
	defer r.Close()
	network := "tcp4"
	if ap := netip.MustParseAddrPort(args.Listen); ap.Addr().Is6() {
		network = "tcp6"
	}
	ln, err := ListenConfig().Listen(context.Background(), network, args.Listen)
	if err != nil {
		return err
	}
	if err := r.RegisterListener(ln.(*net.TCPListener)); err != nil {
		return err
	}
	if args.Ballast > 0 {
		// MAP_POPULATE: the kernel fills the pages in one call, far
		// quicker than faulting them in one by one on a loaded machine.
		ballast, err := unix.Mmap(-1, 0, args.Ballast<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("ballast: %w", err)
		}
		defer unix.Munmap(ballast)
	}
	fmt.Println("ready")
	if args.Crash {
		go func() {
			bufio.NewReader(os.Stdin).ReadString('\n')
			// Exactly what the pipe has room for: this write fits, the
			// crash report's first one blocks.
			size, err1 := unix.FcntlInt(2, unix.F_GETPIPE_SZ, 0)
			queued, err2 := unix.IoctlGetInt(2, unix.TIOCINQ) // FIONREAD
			if err := errors.Join(err1, err2); err != nil {
				fmt.Println("stderr is not a pipe:", err)
				return
			}
			os.Stderr.Write(make([]byte, size-queued))
			panic("proxy helper: crash requested")
		}()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if args.Echo {
				// A plain read/write loop. io.Copy between TCPConns would
				// splice(2), and splice reads the TCP receive queue directly,
				// missing data that sk_msg delivered to the psock queue.
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}
			io.WriteString(c, proxyReply(r, c)+"\n")
		}()
	}
}

// helperConnectBench times args.Count blocking connects to args.Dst and
// prints "total_ns median_ns p99_ns" of the time spent in connect().
func helperConnectBench(args helperArgs) error {
	dst, err := netip.ParseAddrPort(args.Dst)
	if err != nil {
		return err
	}
	family, sa := sockaddrOf(args.Network, dst)
	samples := make([]time.Duration, 0, args.Count)
	var total time.Duration
	for range args.Count {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		start := time.Now()
		err = eintr.Connect(fd, sa)
		d := time.Since(start)
		total += d
		samples = append(samples, d)
		// RST instead of FIN: no TIME_WAIT piling up across thousands of
		// connects from one address.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("connect %v: %w", dst, err)
		}
	}
	slices.Sort(samples)
	fmt.Println(total.Nanoseconds(), samples[len(samples)/2].Nanoseconds(), samples[len(samples)*99/100].Nanoseconds())
	return nil
}

// helperRRBench opens args.Conns connections (at least one) one after the
// other and times args.Count request/response round trips of args.Size
// bytes on each against an echo server. It prints "total_ns stalls": a
// stall is a connection whose echo did not come back within the socket's
// 2 s receive timeout.
func helperRRBench(args helperArgs) error {
	dst, err := netip.ParseAddrPort(args.Dst)
	if err != nil {
		return err
	}
	conns := max(args.Conns, 1)
	msg := make([]byte, args.Size)
	buf := make([]byte, args.Size)
	var total time.Duration
	stalls := 0
	for range conns {
		fd, err := rawConnect(args.Network, dst, 0)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		start := time.Now()
		err = rrRounds(fd, args.Count, msg, buf)
		total += time.Since(start)
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EAGAIN):
			stalls++
		case err != nil:
			return err
		}
	}
	if args.Conns == 0 && stalls > 0 {
		return fmt.Errorf("read: %w", unix.EAGAIN)
	}
	fmt.Println(total.Nanoseconds(), stalls)
	return nil
}

func rrRounds(fd, count int, msg, buf []byte) error {
	for i := range count {
		msg[0] = byte(i) // the echo must carry this round's bytes
		if _, err := eintr.Write(fd, msg); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		for got := 0; got < len(buf); {
			n, err := eintr.Read(fd, buf[got:])
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if n == 0 {
				return errors.New("echo server closed")
			}
			got += n
		}
		if buf[0] != msg[0] {
			return fmt.Errorf("round %d: echo carried %d, want %d", i, buf[0], msg[0])
		}
	}
	return nil
}

func nodeAddrExists(cfg Config) (bool, error) {
	c := cfg.withDefaults()
	return nodeaddr.Exists(c.Interface, c.InterfaceNetns)
}
