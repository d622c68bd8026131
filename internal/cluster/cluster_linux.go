package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zonelb/zonelb/internal/netlab"
)

// Options shape the cluster. Zero values mean the defaults.
type Options struct {
	Logger *slog.Logger
	// ZonelbBin is the zonelb binary. Required.
	ZonelbBin string
	// WorkDir holds configuration files and logs. Default: a temporary
	// directory removed at Close (kept when KeepWorkDir is set).
	WorkDir     string
	KeepWorkDir bool
	// BackendsPerZone (default 2) and ClientPods in zone-a (default 1).
	BackendsPerZone int
	ClientPods      int
	// Load is every backend's service model at start (default 1ms, no
	// capacity limit).
	Load BackendLoad
	// CrossZoneDelay is added by a backend to calls from another zone.
	// Default 2ms.
	CrossZoneDelay time.Duration
	// Discovery is "auto" (default: kubernetes when the API server's
	// binaries are built, else file), "kubernetes" or "file".
	Discovery string
	// BalancerYAML is pasted under the daemon config's balancer: key
	// (e.g. "decay: 2s"), for tests that want a faster reacting balancer.
	BalancerYAML string
	// FaultTriggers sets the daemon's admin.faultTriggers (POST
	// /debug/fault/panic and /debug/fault/grow: Daemon.Post), for tests
	// that make it panic or run out of memory.
	FaultTriggers bool
	// Progress, if set, receives one line per setup step.
	Progress func(string)
	// HAProxyBin is HAProxy's binary, for StartHAProxy (default
	// "haproxy", looked up in PATH).
	HAProxyBin string
}

// Cluster is a running mini cluster.
type Cluster struct {
	Lab *netlab.Lab
	// Nodes are one per zone, in the order of Zones.
	Nodes    []*netlab.Node
	Backends []*Backend
	Clients  []*netlab.Pod
	// Discovery is the source the daemon uses: "kubernetes" or "file".
	Discovery string
	// DiscoveryDetail says where it comes from, for the output.
	DiscoveryDetail string

	opts    Options
	log     *slog.Logger
	workDir string
	kube    *kubeEnv

	mu       sync.Mutex
	baseline Baseline
	daemon   *Daemon
	haproxy  *HAProxy
	closers  []func() error
}

// ClientNode is the node of the client pods and of the daemon.
func (c *Cluster) ClientNode() *netlab.Node { return c.Nodes[0] }

// Up builds the cluster: lab, nodes, backend pods serving, client pods
// (with their pause process), discovery (API server objects or file), the
// kube-proxy baseline (random). On error everything built is removed.
func Up(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.ZonelbBin == "" {
		return nil, errors.New("cluster: Options.ZonelbBin is required")
	}
	if _, err := os.Stat(opts.ZonelbBin); err != nil {
		return nil, fmt.Errorf("cluster: zonelb binary: %w", err)
	}
	opts = opts.withDefaults()
	c := &Cluster{opts: opts, log: opts.Logger}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := netlab.Sweep(c.log); err != nil {
		c.log.Warn("sweeping earlier runs' leftovers", "err", err)
	}
	if err := requireTools(); err != nil {
		return nil, err
	}
	if err := c.makeWorkDir(); err != nil {
		return nil, err
	}
	opts.Progress("creating network namespaces: 3 nodes (one per zone) on a bridge, pods on veth pairs")
	if c.Lab, err = netlab.New(netlab.Config{Logger: c.log, StopGrace: 5 * time.Second}); err != nil {
		return nil, err
	}
	zoneOf, err := c.addNodes()
	if err != nil {
		return nil, err
	}
	if err := c.addBackends(zoneOf); err != nil {
		return nil, err
	}
	if err := c.addClients(); err != nil {
		return nil, err
	}
	opts.Progress(fmt.Sprintf("starting %d gRPC backend pods (%d per zone)", len(c.Backends), opts.BackendsPerZone))
	for _, b := range c.Backends {
		if err := b.Start(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.startDiscovery(ctx); err != nil {
		return nil, err
	}
	if err := c.SetBaseline(BaselineRandom); err != nil {
		return nil, err
	}
	return c, nil
}

// withDefaults fills the zero fields of o with their defaults.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BackendsPerZone <= 0 {
		o.BackendsPerZone = 2
	}
	if o.ClientPods <= 0 {
		o.ClientPods = 1
	}
	if o.Load.ServiceTime == 0 {
		o.Load.ServiceTime = Duration(time.Millisecond)
	}
	if o.CrossZoneDelay == 0 {
		o.CrossZoneDelay = 2 * time.Millisecond
	}
	if o.Discovery == "" {
		o.Discovery = "auto"
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	if o.HAProxyBin == "" {
		o.HAProxyBin = "haproxy"
	}
	return o
}

// makeWorkDir creates the work directory (a temporary one, removed on
// Close unless kept, when none is given).
func (c *Cluster) makeWorkDir() error {
	c.workDir = c.opts.WorkDir
	if c.workDir != "" {
		if err := os.MkdirAll(c.workDir, 0o755); err != nil {
			return fmt.Errorf("cluster: work dir: %w", err)
		}
		return nil
	}
	var err error
	if c.workDir, err = os.MkdirTemp("", "zonelb-e2e-"); err != nil {
		return fmt.Errorf("cluster: work dir: %w", err)
	}
	if !c.opts.KeepWorkDir {
		dir := c.workDir
		c.closers = append(c.closers, func() error { return os.RemoveAll(dir) })
	}
	return nil
}

// addNodes adds one node per zone and returns which zone each node's
// address and pod range belong to.
func (c *Cluster) addNodes() (map[netip.Prefix]string, error) {
	zoneOf := map[netip.Prefix]string{}
	for i, z := range Zones {
		n, err := c.Lab.AddNode("node-" + z[len("zone-"):])
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		zoneOf[n.PodRange] = Zones[i]
		zoneOf[netip.PrefixFrom(n.Address, 32)] = Zones[i]
	}
	return zoneOf, nil
}

// addBackends adds the backend pods of every zone (not started yet).
func (c *Cluster) addBackends(zoneOf map[netip.Prefix]string) error {
	for i, z := range Zones {
		for k := 1; k <= c.opts.BackendsPerZone; k++ {
			name := fmt.Sprintf("%c%d", z[len("zone-")], k)
			pod, err := c.Nodes[i].AddPod("backend-" + name)
			if err != nil {
				return err
			}
			c.Backends = append(c.Backends, &Backend{
				Name: name, Zone: z, Pod: pod,
				Addr: netip.AddrPortFrom(pod.IP, BackendPort),
				args: backendArgs{
					Name: name, Zone: z, Listen: fmt.Sprintf(":%d", BackendPort),
					Load: c.opts.Load, CrossZoneDelay: Duration(c.opts.CrossZoneDelay),
					ZoneOf: zoneOf, DrainTimeout: Duration(5 * time.Second),
					ReceivedLog: filepath.Join(c.workDir, "received-"+name+".log"),
				},
				ready:   true,
				cluster: c,
			})
		}
	}
	return nil
}

// addClients adds the client pods on the client node, each with its pause
// process: the pod's sandbox keeps its namespace populated, so the daemon
// enrolls it whether or not a client runs.
func (c *Cluster) addClients() error {
	for k := 1; k <= c.opts.ClientPods; k++ {
		pod, err := c.ClientNode().AddPod(fmt.Sprintf("client-%d", k))
		if err != nil {
			return err
		}
		c.Clients = append(c.Clients, pod)
		cmd, err := netlab.HelperCommand(netlab.PauseRole, nil)
		if err != nil {
			return err
		}
		if _, err := pod.Start(pod.Name+"/pause", cmd); err != nil {
			return err
		}
	}
	return nil
}

// requireTools checks for the programs the cluster runs besides Go.
func requireTools() error {
	for _, tool := range []string{"iptables-restore", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("cluster: %s not found (the kube-proxy baseline needs it): run `make e2e-deps` or `apt-get install -y iptables`", tool)
		}
	}
	return nil
}

// WorkDir is where configuration files and logs are.
func (c *Cluster) WorkDir() string { return c.workDir }

// Close stops the node proxy (daemon or HAProxy; then uninstalls the BPF
// state), the API server, every process, and removes the lab. Safe to call
// more than once.
func (c *Cluster) Close() error {
	var errs []error
	c.mu.Lock()
	d, h := c.daemon, c.haproxy
	c.daemon, c.haproxy = nil, nil
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	if h != nil {
		if err := h.Stop(); err != nil && !errors.Is(err, errAlreadyExited) {
			errs = append(errs, err)
		}
	}
	if d != nil {
		if err := d.Stop(); err != nil && !errors.Is(err, errAlreadyExited) {
			errs = append(errs, err)
		}
	}
	if c.Lab != nil && len(c.Nodes) > 0 && (d != nil || c.daemonEverStarted()) {
		if err := c.Uninstall(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Lab != nil {
		errs = append(errs, c.Lab.Close())
	}
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	return errors.Join(errs...)
}

func (c *Cluster) addCloser(fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closers = append(c.closers, fn)
}

// Backend is one backend pod and its server process.
type Backend struct {
	Name string // "a1", "b2", ...
	Zone string
	Pod  *netlab.Pod
	Addr netip.AddrPort

	cluster *Cluster
	args    backendArgs

	mu    sync.Mutex
	proc  *helperProc
	ready bool // what discovery publishes
}

// Start (re)starts the backend's server in its pod and waits until it
// listens.
func (b *Backend) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc != nil && !b.proc.Exited() {
		return nil
	}
	p, err := startHelper(ctx, b.Pod, "backend "+b.Name, roleBackend, b.args, b.cluster.logFile("backend-"+b.Name))
	if err != nil {
		return err
	}
	b.proc = p
	return nil
}

// SetLoad changes the backend's service model while it runs.
func (b *Backend) SetLoad(ctx context.Context, l BackendLoad) error {
	b.mu.Lock()
	p := b.proc
	b.args.Load = l // kept for a restart
	b.mu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("backend %s is not running", b.Name)
	}
	var ack struct{ Applied bool }
	if err := p.request(ctx, l, &ack); err != nil {
		return fmt.Errorf("backend %s: set load: %w", b.Name, err)
	}
	return nil
}

// Terminate stops the backend as Kubernetes deletes a pod: SIGTERM, after
// which it sends GOAWAY, refuses new connections and finishes the calls in
// flight. It returns once the process has exited.
func (b *Backend) Terminate() error {
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop(10 * time.Second)
}

// Kill SIGKILLs the backend's server: calls in flight on it are lost.
func (b *Backend) Kill() {
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Running reports whether the backend's server runs.
func (b *Backend) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.proc != nil && !b.proc.Exited()
}

// logFile opens (appending) a log file in the work dir.
func (c *Cluster) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(c.workDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.log.Warn("cannot open log file; discarding output", "name", name, "err", err)
		return nil
	}
	return f
}

// Helper roles.
const (
	roleBackend = "zonelb-e2e-backend"
	roleClient  = "zonelb-e2e-client"
)

// Helpers are the roles of the processes the cluster starts in pods; pass
// them to netlab.RunHelpers first thing in main or TestMain (Main in this
// package does).
func Helpers() netlab.Helpers {
	return netlab.Helpers{roleBackend: runBackend, roleClient: runClient, roleHAProxy: runHAProxy}
}

// Main is the whole of main, or of TestMain, in a binary that brings the
// lab up: the lab's pods run re-executions of that binary, so Main first
// runs this process as a pod helper if it was started as one (and exits);
// otherwise it exits with run's code (os.Exit: it does not return).
//
//	func main() { cluster.Main(func() int { return run(os.Args[1:], os.Stdout, os.Stderr) }) }
//	func TestMain(m *testing.M) { cluster.Main(m.Run) }
func Main(run func() int) {
	netlab.RunHelpers(Helpers())
	os.Exit(run())
}

// helperProc is a helper process that speaks JSON lines on stdin/stdout.
type helperProc struct {
	*netlab.Process
	name  string
	stdin io.WriteCloser
	lines chan []byte // stdout lines; closed at EOF
}

// startHelper starts role in pod and waits for its {"ready":true} line.
func startHelper(ctx context.Context, pod *netlab.Pod, name, role string, args any, stderr *os.File) (*helperProc, error) {
	cmd, err := netlab.HelperCommand(role, args)
	if err != nil {
		return nil, err
	}
	// An os.Pipe for stdout, not StdoutPipe: the lab reaps the process as
	// soon as it exits, and the last line must still be readable then.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: stdout pipe: %w", name, err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("%s: stdin pipe: %w", name, err)
	}
	cmd.Stdout = w
	if stderr != nil {
		cmd.Stderr = stderr
	}
	proc, err := pod.Start(name, cmd)
	w.Close()
	if stderr != nil {
		stderr.Close()
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	h := &helperProc{Process: proc, name: name, stdin: stdin, lines: make(chan []byte, 16)}
	go func() {
		defer close(h.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 256<<20) // a window carries every latency
		for sc.Scan() {
			h.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	var msg struct{ Ready bool }
	if err := h.read(ctx, 30*time.Second, &msg); err != nil || !msg.Ready {
		proc.Kill()
		return nil, fmt.Errorf("%s did not start: %v", name, err)
	}
	return h, nil
}

// read decodes the next stdout line into v, waiting at most limit.
func (h *helperProc) read(ctx context.Context, limit time.Duration, v any) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case line, ok := <-h.lines:
		if !ok {
			return fmt.Errorf("%s exited (%v)", h.name, h.Err())
		}
		if err := json.Unmarshal(line, v); err != nil {
			return fmt.Errorf("%s: bad output %q: %w", h.name, line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%s: no answer within %v", h.name, limit)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send writes one command line.
func (h *helperProc) send(cmd any) error {
	var line []byte
	if s, ok := cmd.(string); ok {
		line = []byte(s)
	} else {
		var err error
		if line, err = json.Marshal(cmd); err != nil {
			return err
		}
	}
	if _, err := h.stdin.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("%s: send command: %w", h.name, err)
	}
	return nil
}

// request sends a command and reads its answer.
func (h *helperProc) request(ctx context.Context, cmd, answer any) error {
	if err := h.send(cmd); err != nil {
		return err
	}
	return h.read(ctx, 30*time.Second, answer)
}

// Received returns the id of every call any backend has received so far,
// with the backend's name (from the backends' received logs).
func (c *Cluster) Received() (map[string]string, error) {
	out := map[string]string{}
	for _, b := range c.Backends {
		data, err := os.ReadFile(b.args.ReceivedLog)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: received log of %s: %w", b.Name, err)
		}
		for _, id := range strings.Split(string(data), "\n") {
			if id != "" {
				out[id] = b.Name
			}
		}
	}
	return out, nil
}
