package deploy

import (
	"bytes"
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
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/internal/testenv"
)

// The capability test runs the daemon's privileged operations (the BPF
// loader, the proxy listener's registration, a marked upstream dial, a
// restart over pinned state) in a child process whose capabilities are
// exactly the DaemonSet's: root, the bounding set cut to the manifest's
// `add` list, no_new_privs as allowPrivilegeEscalation: false sets it.
// Then it drops each capability in turn and expects the child to fail: a
// capability that nothing needs must not be in the manifest.
//
// The child runs in a fresh network namespace (only loopback, no route
// out) and in a fresh cgroup that the hooks attach to, so nothing outside
// the test is redirected; its pins live in a directory of their own under
// /sys/fs/bpf. All of it is removed when the test ends.

// probeArgsEnv carries the probe's instructions to the child process.
const probeArgsEnv = "ZONELB_DEPLOY_CAPPROBE"

// probeStage says which of the child's two stages runs: "netns" (still
// fully privileged: bring loopback up, then exec setpriv) or "probe" (with
// the manifest's capabilities only).
const probeStageEnv = "ZONELB_DEPLOY_CAPPROBE_STAGE"

// probeArgs is what the child needs to know.
type probeArgs struct {
	PinDir     string   `json:"pinDir"`
	CgroupPath string   `json:"cgroupPath"`
	Caps       []string `json:"caps"` // setpriv names: bpf, net_admin
}

// The addresses inside the child's own network namespace. The service
// address is in 127.0.0.0/8 so that even a failed redirect stays on
// loopback; the proxy address is the ConfigMap's.
var (
	probeService = netip.MustParseAddrPort("127.0.0.77:8080")
	probeProxy   = netip.MustParseAddrPort("169.254.20.11:15001")
)

const probeServiceID = 7

func TestMain(m *testing.M) {
	if raw := os.Getenv(probeArgsEnv); raw != "" {
		os.Exit(runProbeChild(raw))
	}
	os.Exit(m.Run())
}

// TestDaemonSetCapabilities runs the daemon's operations with exactly the
// DaemonSet's capabilities, which must succeed, and then without each one
// in turn, which must fail at a step: only a set that works as a whole
// shows, by removal, that each of its members is needed.
func TestDaemonSetCapabilities(t *testing.T) {
	caps := manifestCapabilities(t)
	env := newCapProbe(t)
	out, err := env.run(t, caps)
	if err != nil {
		hint := ""
		if strings.Contains(out, "enter network namespace") {
			hint = "\n(bpf.NetnsCookieFromPath enters a namespace with setns(2), which needs CAP_SYS_ADMIN, even when the namespace is the caller's own: it should read its own cookie from a socket without setns.)"
		}
		t.Fatalf("the daemon's operations fail with the DaemonSet's capabilities %v: %v\n%s%s", caps, err, truncate(out, 4000), hint)
	}
	t.Logf("with %v:\n%s", caps, out)

	for _, drop := range caps {
		t.Run("without_"+drop, func(t *testing.T) {
			fewer := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == drop })
			out, err := env.run(t, fewer)
			if err == nil {
				t.Fatalf("every operation succeeded without %s: the DaemonSet should not add it\n%s", drop, out)
			}
			// A step must have failed and said so; a crash or a timeout
			// proves nothing about the capability.
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "\nFAIL ") {
				t.Fatalf("without %s the child did not fail a step cleanly: %v\n%s", drop, err, truncate(out, 4000))
			}
			t.Logf("without %s the child fails as it should:\n%s", drop, truncate(out[strings.Index(out, "\nFAIL ")+1:], 400))
		})
	}
}

// manifestCapabilities returns the DaemonSet container's added
// capabilities as setpriv spells them (NET_ADMIN -> net_admin).
func manifestCapabilities(t *testing.T) []string {
	t.Helper()
	sc := daemonContainer(t).SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the zonelb container has no capabilities in its securityContext")
	}
	var caps []string
	for _, c := range sc.Capabilities.Add {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(string(c), "CAP_")))
	}
	return caps
}

type capProbe struct {
	setpriv string
	cgroup  string
	cgfd    int
	pinDir  string
}

func newCapProbe(t *testing.T) *capProbe {
	t.Helper()
	testenv.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.SkipOrFail(t, "setpriv (util-linux) not found: "+err.Error())
	}
	root, err := bpf.CgroupV2Root()
	if err != nil {
		testenv.SkipOrFail(t, "no cgroup-v2 mount: "+err.Error())
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &fs); err != nil || fs.Type != unix.BPF_FS_MAGIC {
		testenv.SkipOrFail(t, "/sys/fs/bpf is not bpffs")
	}
	id := randomID(t)
	env := &capProbe{
		setpriv: setpriv,
		cgroup:  filepath.Join(root, "zonelb-deploy-captest-"+id),
		pinDir:  filepath.Join("/sys/fs/bpf", "zonelb-deploy-captest-"+id),
	}
	if err := os.Mkdir(env.cgroup, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(env.cgroup); err != nil {
			t.Errorf("remove test cgroup %s: %v", env.cgroup, err)
		}
	})
	fd, err := unix.Open(env.cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open test cgroup: %v", err)
	}
	env.cgfd = fd
	t.Cleanup(func() { unix.Close(fd) })
	// Registered after the cgroup's removal, so it runs before it: the
	// links must be detached before the cgroup can go. The interface dies
	// with the child's network namespace.
	t.Cleanup(func() {
		if err := bpf.Uninstall(bpf.Config{PinDir: env.pinDir, CgroupPath: env.cgroup, SkipInterface: true}); err != nil {
			t.Errorf("uninstall test pins %s: %v", env.pinDir, err)
		}
	})
	return env
}

// run starts the child with exactly caps and returns its output. Each run
// starts from clean pins, as a node's first daemon would.
func (e *capProbe) run(t *testing.T, caps []string) (string, error) {
	t.Helper()
	if err := bpf.Uninstall(bpf.Config{PinDir: e.pinDir, CgroupPath: e.cgroup, SkipInterface: true}); err != nil {
		t.Fatalf("clear pins before a run: %v", err)
	}
	args, err := json.Marshal(probeArgs{PinDir: e.pinDir, CgroupPath: e.cgroup, Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), probeArgsEnv+"="+string(args), probeStageEnv+"=netns", "SETPRIV="+e.setpriv)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A network namespace of its own (loopback only, no route out)
		// and born in the test cgroup, so the hooks see its connects.
		Cloneflags:  syscall.CLONE_NEWNET,
		UseCgroupFD: true,
		CgroupFD:    e.cgfd,
		Pdeathsig:   syscall.SIGKILL,
	}
	err = cmd.Run()
	return out.String(), err
}

// runProbeChild is the child process: stage "netns" prepares the network
// namespace and re-executes itself under setpriv; stage "probe" runs the
// daemon's operations and reports each one.
func runProbeChild(raw string) int {
	var args probeArgs
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Println("FAIL decode probe args:", err)
		return 2
	}
	switch os.Getenv(probeStageEnv) {
	case "netns":
		if err := setLoopbackUp(); err != nil {
			fmt.Println("FAIL set loopback up:", err)
			return 2
		}
		setprivArgs := []string{
			os.Getenv("SETPRIV"),
			// As the container runtime does for uid 0: the bounding set is
			// the added capabilities, which exec then grants to root.
			"--bounding-set=-all" + plusEach(args.Caps),
			"--inh-caps=-all",
			"--ambient-caps=-all",
			// allowPrivilegeEscalation: false
			"--no-new-privs",
			"--", os.Args[0], "-test.run=^$",
		}
		// Replace the stage, not append to it: with a duplicate the
		// first value wins, and the child would exec itself forever.
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, probeStageEnv+"=") })
		env = append(env, probeStageEnv+"=probe")
		err := syscall.Exec(setprivArgs[0], setprivArgs, env)
		fmt.Println("FAIL exec setpriv:", err)
		return 2
	case "probe":
		if err := probe(args, os.Stdout); err != nil {
			fmt.Println("FAIL", err)
			return 1
		}
		return 0
	}
	fmt.Println("FAIL unknown stage", os.Getenv(probeStageEnv))
	return 2
}

func plusEach(caps []string) string {
	var b strings.Builder
	for _, c := range caps {
		b.WriteString(",+" + c)
	}
	return b.String()
}

func setLoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// probe does what the daemon does with its privileges, in its order, and
// writes one line per step so that a failure says which step needed what.
func probe(args probeArgs, w io.Writer) error {
	status, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(status), "\n") {
		if strings.HasPrefix(line, "CapEff:") || strings.HasPrefix(line, "NoNewPrivs:") {
			fmt.Fprintln(w, "info", strings.Join(strings.Fields(line), " "))
		}
	}
	cfg := bpf.Config{
		PinDir:     args.PinDir,
		CgroupPath: args.CgroupPath,
		ProxyAddr4: probeProxy,
		// The ConfigMap's interface and mark, both the defaults.
		Interface:  bpf.DefaultInterface,
		SocketMark: bpf.DefaultSocketMark,
	}
	step := func(name string, fn func() error) error {
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintln(w, "ok", name)
		return nil
	}

	var r *bpf.Redirector
	if err := step("load programs, pin maps and links, attach to the cgroup, create zonelb0 (bpf.Load)", func() (err error) {
		r, err = bpf.Load(cfg)
		return err
	}); err != nil {
		return err
	}
	defer func() { r.Close() }()

	var proxyLn *net.TCPListener
	if err := step("listen on the proxy address and register the listener (SOCKMAP update)", func() error {
		ln, err := bpf.ListenConfig().Listen(context.Background(), "tcp4", probeProxy.String())
		if err != nil {
			return err
		}
		proxyLn = ln.(*net.TCPListener)
		return r.RegisterListener(proxyLn)
	}); err != nil {
		return err
	}
	defer proxyLn.Close()

	backend, err := net.Listen("tcp4", probeService.String())
	if err != nil {
		return fmt.Errorf("listen as the backend on %v: %w", probeService, err)
	}
	defer backend.Close()

	if err := step("select a service and enroll this network namespace (map updates)", func() error {
		if err := r.SetService(probeService, probeServiceID); err != nil {
			return err
		}
		cookie, err := ownNetnsCookie()
		if err != nil {
			return err
		}
		return r.EnrollNetns(cookie)
	}); err != nil {
		return err
	}

	if err := step("an upstream dial with SO_MARK (MarkControl)", func() error {
		return markedDial(cfg.SocketMark, backend)
	}); err != nil {
		return err
	}

	if err := step("read the BPF counters for /metrics (Counters)", func() error {
		c, err := r.Counters()
		if err != nil {
			return err
		}
		if !c.ProxyListening4 {
			return fmt.Errorf("counters %+v: want the listener up", c)
		}
		return nil
	}); err != nil {
		return err
	}

	if err := step("a restarted daemon takes over the pinned maps and links (bpf.Load again, link update)", func() error {
		if err := r.Close(); err != nil {
			return err
		}
		next, err := bpf.Load(cfg)
		if err != nil {
			return err
		}
		r = next
		services, err := r.Services()
		if err != nil {
			return err
		}
		if services[probeService] != probeServiceID {
			return fmt.Errorf("services after restart %v: the pinned service map was not kept", services)
		}
		return nil
	}); err != nil {
		return err
	}
	return nil
}

func ownNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return cookie, nil
}

// markedDial dials the service address with the proxy's mark and checks
// that the backend, not the proxy, accepts it.
func markedDial(mark uint32, backend net.Listener) error {
	_ = backend.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	got := make(chan error, 1)
	go func() {
		c, err := backend.Accept()
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	d := net.Dialer{Timeout: 5 * time.Second, Control: bpf.MarkControl(mark)}
	c, err := d.Dial("tcp4", probeService.String())
	if err != nil {
		return err
	}
	c.Close()
	if err := <-got; err != nil {
		return fmt.Errorf("the backend accepted nothing (the marked socket was redirected?): %w", err)
	}
	return nil
}

func randomID(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
