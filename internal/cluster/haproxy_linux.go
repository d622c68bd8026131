package cluster

// HAProxy as the node proxy: the userspace proxy zonelb is compared with in
// the place zonelb runs, for make bench-e2e.
//
// Same redirection as zonelb: the daemon's eBPF hooks (loaded and pinned by
// a zonelb daemon run, which then stops; its maps keep the Service and the
// enrolled namespaces) steer pods' connects to the ClusterIP to the node
// proxy's address when a listener is registered in their SOCKMAP by a
// process that is not exiting. A helper process in node-a opens the pins,
// listens on ProxyAddr, registers that listener (so it becomes the
// registered owner) and then execs HAProxy in place (same pid, so HAProxy
// is the listener's registered owner, as zonelb's proxy is of its own)
// with the listening socket inherited: `bind "fd@${ZONELB_LISTEN_FD}" proto
// h2`. When HAProxy stops, the socket closes and connects go to the
// ClusterIP again (kube-proxy's rules), as when zonelb's proxy is gone.
//
// HAProxy cannot read where a steered connection was going (zlb_tuples),
// so its one frontend serves the lab's one Service: its servers are the
// Service's ready endpoints, rendered from the same data the kube-proxy
// rules are, into make bench's HAProxy template (bench/configs). With
// several Services a userspace proxy that cannot read the BPF map needs a
// listener per Service port and the hooks one proxy address per Service;
// zonelb's hooks have one proxy address, which is what zonelb needs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/bench/configs"
	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/internal/childproc"
	"github.com/zonelb/zonelb/internal/netlab"
)

// roleHAProxy is the helper that registers the node proxy's listener and
// becomes HAProxy.
const roleHAProxy = "cluster-haproxy"

// listenFDEnv names HAProxy's inherited listening socket in its
// configuration.
const listenFDEnv = "ZONELB_LISTEN_FD"

// haproxyArgs are the helper's arguments.
type haproxyArgs struct {
	PinDir  string
	Listen  netip.AddrPort
	Bin     string
	Config  string
	PathEnv string
}

// HAProxy is HAProxy running as the node proxy of the clients' node.
type HAProxy struct {
	Node *netlab.Node
	// ConfigPath and LogPath are its configuration and log (stderr) files.
	ConfigPath, LogPath string
	// Threads is its nbthread.
	Threads int

	proc *netlab.Process
}

// StartHAProxy starts HAProxy as the node proxy on the clients' node
// (round robin over the Service's ready endpoints, HTTP/2 on both sides,
// as many threads as the machine has CPUs, like the daemon's GOMAXPROCS),
// behind the same eBPF redirection as zonelb, and waits until every client
// pod's new connections reach it. The zonelb daemon must not be running;
// if it never ran, it is started and stopped once to install the hooks.
func (c *Cluster) StartHAProxy(ctx context.Context) (*HAProxy, error) {
	c.mu.Lock()
	busy := (c.daemon != nil && !c.daemon.Exited()) || (c.haproxy != nil && !c.haproxy.proc.Exited())
	c.mu.Unlock()
	if busy {
		return nil, errors.New("cluster: a node proxy (zonelb daemon or HAProxy) is already running")
	}
	bin, err := exec.LookPath(c.opts.HAProxyBin)
	if err != nil {
		return nil, fmt.Errorf("cluster: HAProxy (%s) not found: make bench-e2e installs it (apt-get install haproxy): %w", c.opts.HAProxyBin, err)
	}
	if !c.daemonEverStarted() {
		d, err := c.StartDaemon(ctx)
		if err != nil {
			return nil, fmt.Errorf("cluster: installing the eBPF hooks for HAProxy: %w", err)
		}
		if err := d.Stop(); err != nil {
			return nil, err
		}
	}
	node := c.ClientNode()
	h := &HAProxy{
		Node:       node,
		ConfigPath: filepath.Join(c.workDir, "haproxy-"+node.Name+".cfg"),
		LogPath:    filepath.Join(c.workDir, "haproxy-"+node.Name+".log"),
		Threads:    runtime.NumCPU(),
	}
	if err := c.writeHAProxyConfig(h); err != nil {
		return nil, err
	}
	cmd, err := netlab.HelperCommand(roleHAProxy, haproxyArgs{
		PinDir: c.pinDir(), Listen: ProxyAddr, Bin: bin, Config: h.ConfigPath, PathEnv: os.Getenv("PATH"),
	})
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(h.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cluster: HAProxy log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	h.proc, err = node.Start("haproxy", cmd)
	logFile.Close()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.haproxy = h
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, pod := range c.Clients {
		if err := c.waitRedirected(ctx, pod, h.pollWait); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// writeHAProxyConfig renders make bench's HAProxy template for the node
// proxy: the inherited listener, the Service's ready endpoints.
func (c *Cluster) writeHAProxyConfig(h *HAProxy) error {
	var ups []string
	for _, b := range c.Backends {
		if b.isReady() {
			ups = append(ups, b.Addr.String())
		}
	}
	var lab []netip.Prefix
	for _, n := range c.Nodes {
		lab = append(lab, n.PodRange)
	}
	doc, err := configs.RenderWithin(configs.HAProxy, configs.Params{
		Listen: `"fd@${` + listenFDEnv + `}"`, Upstreams: ups, Dir: c.workDir,
		Workload: configs.WorkloadGRPC, Threads: h.Threads,
	}, lab)
	if err != nil {
		return fmt.Errorf("cluster: HAProxy config: %w", err)
	}
	if err := os.WriteFile(h.ConfigPath, doc, 0o644); err != nil {
		return fmt.Errorf("cluster: write HAProxy config: %w", err)
	}
	return nil
}

// runHAProxy is the helper's body: listen on the node proxy's address,
// register the listener with the eBPF hooks as this process, then become
// HAProxy (execve keeps the pid) with the socket inherited.
func runHAProxy(_ context.Context, raw []byte) error {
	var a haproxyArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("arguments: %w", err)
	}
	r, err := bpf.Open(bpf.Config{PinDir: a.PinDir, ProxyAddr4: a.Listen})
	if err != nil {
		return err
	}
	lc := bpf.ListenConfig()
	l, err := lc.Listen(context.Background(), "tcp4", a.Listen.String())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.Listen, err)
	}
	tl := l.(*net.TCPListener)
	if err := r.RegisterListener(tl); err != nil {
		return err
	}
	// A duplicate without close-on-exec: the socket HAProxy inherits.
	// The SOCKMAP holds the socket, not a descriptor, so closing the
	// original at exec changes nothing.
	f, err := tl.File()
	if err != nil {
		return fmt.Errorf("listener descriptor: %w", err)
	}
	fd := int(f.Fd())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("clear close-on-exec: %w", err)
	}
	env := []string{listenFDEnv + "=" + strconv.Itoa(fd), "PATH=" + a.PathEnv}
	// -db: foreground, one process (no master-worker): the registered
	// owner is the process that proxies.
	err = syscall.Exec(a.Bin, []string{"haproxy", "-db", "-f", a.Config}, env)
	return fmt.Errorf("exec %s: %w", a.Bin, err)
}

// pollWait waits one polling step, failing when HAProxy has exited or ctx
// has ended.
func (h *HAProxy) pollWait(ctx context.Context, what string) error {
	select {
	case <-h.proc.Done():
		return fmt.Errorf("cluster: HAProxy exited (%v) before %s; log %s:\n%s", h.proc.Err(), what, h.LogPath, childproc.Tail(h.LogPath, 30))
	case <-ctx.Done():
		return fmt.Errorf("cluster: HAProxy not %s: %w; log %s:\n%s", what, ctx.Err(), h.LogPath, childproc.Tail(h.LogPath, 30))
	case <-time.After(50 * time.Millisecond): // polling another process
		return nil
	}
}

// Pid is HAProxy's process id.
func (h *HAProxy) Pid() int { return h.proc.Pid() }

// Exited reports whether HAProxy has exited.
func (h *HAProxy) Exited() bool { return h.proc.Exited() }

// CPUTime is the CPU time (user + system, all threads) HAProxy has used
// so far.
func (h *HAProxy) CPUTime() (time.Duration, error) { return processCPU(h.proc.Pid()) }

// Stop sends SIGTERM (HAProxy stops at once; the listener leaves the
// SOCKMAP as it closes) and waits until it has exited.
func (h *HAProxy) Stop() error {
	if h.proc.Exited() {
		return errAlreadyExited
	}
	if err := h.proc.Stop(10 * time.Second); err != nil && !netlab.KilledBySignal(err, syscall.SIGTERM) {
		return fmt.Errorf("cluster: HAProxy exit: %w; log:\n%s", err, childproc.Tail(h.LogPath, 20))
	}
	return nil
}
