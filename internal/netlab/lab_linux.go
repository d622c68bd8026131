package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/bpf"
)

// Prefix starts the name of everything a lab creates on the host (its
// cgroup directory, and pin directories from PinDir), followed by the
// owner's pid: Sweep recognises leftovers by it.
const Prefix = "zonelb-netlab-"

// BPFFSRoot is where PinDir places pin directories.
const BPFFSRoot = "/sys/fs/bpf"

// Names of the interfaces the lab creates.
const (
	// FabricBridge is the bridge in the fabric namespace.
	FabricBridge = "fabric"
	// Uplink is a node's interface on the fabric.
	Uplink = "eth0"
	// PodInterface is a pod's interface to its node.
	PodInterface = "eth0"
)

// Config shapes a lab. The zero value is a complete configuration.
type Config struct {
	// Logger receives what the lab creates and removes. Default: discard.
	Logger *slog.Logger
	// Underlay is the fabric's subnet: node i (from 1) gets its i-th
	// address. Default 198.18.0.0/24 (the benchmarking range).
	Underlay netip.Prefix
	// PodRanges is split into one /24 per node: node i gets the i-th.
	// Default 10.244.0.0/16, so node 1's pods are 10.244.1.10, .11, ...
	PodRanges netip.Prefix
	// StopGrace is how long Close waits after SIGTERM before SIGKILL.
	// Default 5s.
	StopGrace time.Duration
}

// Lab is one run's topology. Build it with New, AddNode and AddPod; Close
// removes everything. Methods are safe for concurrent use.
type Lab struct {
	cfg    Config
	log    *slog.Logger
	id     string
	cgroup string // the run's cgroup directory
	fabric *Netns
	bridge int // the fabric bridge's ifindex

	mu      sync.Mutex
	closed  bool
	nodes   []*Node
	procs   []*Process
	cleanup []func() error
}

// Node is a node's network namespace with its uplink, pod range and
// cgroups.
type Node struct {
	*Netns
	Name  string
	Index int // from 1, in the order nodes were added
	// Address is the node's address on the fabric.
	Address netip.Addr
	// PodRange is the node's pod subnet; Gateway (its first address) is
	// the pods' default gateway, held by the node's end of every pod veth.
	PodRange netip.Prefix
	Gateway  netip.Addr
	// PodsCgroup holds the cgroups of the node's pods: the directory a
	// node agent attaches cgroup BPF programs to.
	PodsCgroup string
	// SystemCgroup holds the node's own processes (agents).
	SystemCgroup string

	lab  *Lab
	pods []*Pod
}

// Pod is a pod's network namespace, address and cgroup.
type Pod struct {
	*Netns
	Name   string
	Node   *Node
	IP     netip.Addr
	Cgroup string
	// HostInterface is the name of the pod's veth end in the node's
	// namespace.
	HostInterface string
}

// New creates the run's cgroup directory and the fabric namespace with its
// bridge. Close removes them, also when New itself fails half-way.
func New(cfg Config) (_ *Lab, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.Underlay.IsValid() {
		cfg.Underlay = netip.MustParsePrefix("198.18.0.0/24")
	}
	if !cfg.PodRanges.IsValid() {
		cfg.PodRanges = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !cfg.Underlay.Addr().Is4() || !cfg.PodRanges.Addr().Is4() || cfg.PodRanges.Bits() > 16 {
		return nil, fmt.Errorf("netlab: want an IPv4 underlay and IPv4 pod ranges of /16 or wider, got %v and %v", cfg.Underlay, cfg.PodRanges)
	}
	cfg.Underlay = cfg.Underlay.Masked()
	cfg.PodRanges = cfg.PodRanges.Masked()
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 5 * time.Second
	}
	root, err := bpf.CgroupV2Root()
	if err != nil {
		return nil, err
	}
	rnd := make([]byte, 3)
	if _, err := rand.Read(rnd); err != nil {
		return nil, fmt.Errorf("netlab: random run id: %w", err)
	}
	l := &Lab{cfg: cfg, id: fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(rnd))}
	l.log = cfg.Logger.With("lab", l.id)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	l.cgroup = filepath.Join(root, Prefix+l.id)
	if err := os.Mkdir(l.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: create cgroup %s: %w", l.cgroup, err)
	}
	if l.fabric, err = newNetns("fabric"); err != nil {
		return nil, err
	}
	nl := l.fabric.Netlink()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: FabricBridge}}
	if err := nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("netlab: create bridge in fabric netns: %w", err)
	}
	link, err := nl.LinkByName(FabricBridge)
	if err != nil {
		return nil, fmt.Errorf("netlab: find bridge: %w", err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("netlab: bridge up: %w", err)
	}
	l.bridge = link.Attrs().Index
	l.log.Info("lab created", "cgroup", l.cgroup)
	return l, nil
}

// ID is the run's unique id (owner pid and a random suffix).
func (l *Lab) ID() string { return l.id }

// Cgroup is the run's cgroup directory.
func (l *Lab) Cgroup() string { return l.cgroup }

// Fabric is the namespace holding the bridge that joins the nodes.
func (l *Lab) Fabric() *Netns { return l.fabric }

// PinDir names a bpffs directory for this run (it is not created): Close
// and Sweep remove directories so named.
func (l *Lab) PinDir(suffix string) string {
	return filepath.Join(BPFFSRoot, Prefix+l.id+"-"+suffix)
}

// Nodes returns the nodes in the order they were added.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// Defer registers fn to run at Close after every process has stopped and
// before the namespaces and cgroups go, last registered first.
func (l *Lab) Defer(fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanup = append(l.cleanup, fn)
}

// nthAddr is the n-th address of p (0 is p's own address).
func nthAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// AddNode creates a node namespace joined to the fabric, with forwarding
// on and routes to every other node's pods.
func (l *Lab) AddNode(name string) (*Node, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("netlab: lab is closed")
	}
	idx := len(l.nodes) + 1
	if idx >= 1<<(32-l.cfg.Underlay.Bits())-1 || idx > 250 {
		return nil, fmt.Errorf("netlab: no address left for node %d in %v", idx, l.cfg.Underlay)
	}
	n := &Node{
		Name:         name,
		Index:        idx,
		Address:      nthAddr(l.cfg.Underlay, idx),
		PodRange:     netip.PrefixFrom(nthAddr(l.cfg.PodRanges, idx<<8), 24),
		SystemCgroup: filepath.Join(l.cgroup, name, "system"),
		PodsCgroup:   filepath.Join(l.cgroup, name, "pods"),
		lab:          l,
	}
	n.Gateway = nthAddr(n.PodRange, 1)
	for _, dir := range []string{filepath.Join(l.cgroup, name), n.SystemCgroup, n.PodsCgroup} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("netlab: create cgroup %s: %w", dir, err)
		}
	}
	ns, err := newNetns("node/" + name)
	if err != nil {
		return nil, err
	}
	n.Netns = ns
	l.nodes = append(l.nodes, n) // from here on, Close releases it

	if err := linkUp(ns.Netlink(), "lo"); err != nil {
		return nil, fmt.Errorf("netlab: node %s: %w", name, err)
	}
	fabricEnd := fmt.Sprintf("n%d", idx)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: fabricEnd, MasterIndex: l.bridge},
		PeerName:      Uplink,
		PeerNamespace: netlink.NsFd(int(ns.handle)),
	}
	if err := l.fabric.Netlink().LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netlab: node %s: create uplink veth: %w", name, err)
	}
	if err := linkUp(l.fabric.Netlink(), fabricEnd); err != nil {
		return nil, fmt.Errorf("netlab: node %s: %w", name, err)
	}
	if err := addAddr(ns.Netlink(), Uplink, netip.PrefixFrom(n.Address, l.cfg.Underlay.Bits())); err != nil {
		return nil, fmt.Errorf("netlab: node %s: %w", name, err)
	}
	if err := linkUp(ns.Netlink(), Uplink); err != nil {
		return nil, fmt.Errorf("netlab: node %s: %w", name, err)
	}
	if err := ns.WriteSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, fmt.Errorf("netlab: node %s: %w", name, err)
	}
	for _, other := range l.nodes[:len(l.nodes)-1] {
		if err := routeVia(ns.Netlink(), other.PodRange, other.Address); err != nil {
			return nil, fmt.Errorf("netlab: node %s: route to %s's pods: %w", name, other.Name, err)
		}
		if err := routeVia(other.Netlink(), n.PodRange, n.Address); err != nil {
			return nil, fmt.Errorf("netlab: node %s: route to %s's pods: %w", other.Name, name, err)
		}
	}
	l.log.Info("node added", "node", name, "address", n.Address, "pods", n.PodRange)
	return n, nil
}

// Pods returns the node's pods in the order they were added.
func (n *Node) Pods() []*Pod {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

// AddPod creates a pod namespace on the node: a veth to the node, the next
// address of the node's pod range, a /32 route to it on the node, a
// default route via the node in the pod, and the pod's cgroup.
func (n *Node) AddPod(name string) (*Pod, error) {
	l := n.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("netlab: lab is closed")
	}
	k := len(n.pods) + 1
	if k > 200 {
		return nil, fmt.Errorf("netlab: node %s is full", n.Name)
	}
	p := &Pod{
		Name:          name,
		Node:          n,
		IP:            nthAddr(n.PodRange, 9+k),
		Cgroup:        filepath.Join(n.PodsCgroup, name),
		HostInterface: fmt.Sprintf("vp%d", k),
	}
	if err := os.Mkdir(p.Cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: create cgroup %s: %w", p.Cgroup, err)
	}
	ns, err := newNetns("pod/" + name)
	if err != nil {
		return nil, err
	}
	p.Netns = ns
	n.pods = append(n.pods, p)

	fail := func(err error) (*Pod, error) { return nil, fmt.Errorf("netlab: pod %s: %w", name, err) }
	if err := linkUp(ns.Netlink(), "lo"); err != nil {
		return fail(err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostInterface},
		PeerName:      PodInterface,
		PeerNamespace: netlink.NsFd(int(ns.handle)),
	}
	if err := n.Netlink().LinkAdd(veth); err != nil {
		return fail(fmt.Errorf("create veth: %w", err))
	}
	if err := addAddr(n.Netlink(), p.HostInterface, netip.PrefixFrom(n.Gateway, 32)); err != nil {
		return fail(err)
	}
	if err := linkUp(n.Netlink(), p.HostInterface); err != nil {
		return fail(err)
	}
	if err := addAddr(ns.Netlink(), PodInterface, netip.PrefixFrom(p.IP, 32)); err != nil {
		return fail(err)
	}
	if err := linkUp(ns.Netlink(), PodInterface); err != nil {
		return fail(err)
	}
	if err := routeDev(n.Netlink(), p.HostInterface, netip.PrefixFrom(p.IP, 32), n.Gateway); err != nil {
		return fail(fmt.Errorf("node route: %w", err))
	}
	if err := routeDev(ns.Netlink(), PodInterface, netip.PrefixFrom(n.Gateway, 32), netip.Addr{}); err != nil {
		return fail(fmt.Errorf("gateway route: %w", err))
	}
	pl, err := ns.Netlink().LinkByName(PodInterface)
	if err != nil {
		return fail(err)
	}
	if err := ns.Netlink().RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: n.Gateway.AsSlice()}); err != nil {
		return fail(fmt.Errorf("default route via %s: %w", n.Gateway, err))
	}
	l.log.Info("pod added", "pod", name, "node", n.Name, "ip", p.IP)
	return p, nil
}

func linkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, dev string, p netip.Prefix) error {
	link, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find %s: %w", dev, err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(p.Addr(), p.Bits())}); err != nil {
		return fmt.Errorf("add %v to %s: %w", p, dev, err)
	}
	return nil
}

func routeVia(h *netlink.Handle, dst netip.Prefix, gw netip.Addr) error {
	return h.RouteAdd(&netlink.Route{Dst: ipNet(dst.Addr(), dst.Bits()), Gw: gw.AsSlice()})
}

// routeDev adds a link-scope route to dst over dev, with src as the
// preferred source when valid.
func routeDev(h *netlink.Handle, dev string, dst netip.Prefix, src netip.Addr) error {
	link, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find %s: %w", dev, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst.Addr(), dst.Bits()), Scope: netlink.SCOPE_LINK}
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	return h.RouteAdd(r)
}

// LinkBytes returns the bytes received and sent by an interface of the
// namespace (for example a node's Uplink: what crossed between nodes).
func (n *Netns) LinkBytes(dev string) (rx, tx uint64, err error) {
	link, err := n.Netlink().LinkByName(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("find %s in netns %s: %w", dev, n.name, err)
	}
	st := link.Attrs().Statistics
	if st == nil {
		return 0, 0, fmt.Errorf("no statistics for %s in netns %s", dev, n.name)
	}
	return st.RxBytes, st.TxBytes, nil
}

// Start runs cmd in the node's namespace, in its system cgroup.
func (n *Node) Start(name string, cmd *exec.Cmd) (*Process, error) {
	return n.lab.start(n.Netns, n.SystemCgroup, name, cmd)
}

// Start runs cmd in the pod's namespace and cgroup.
func (p *Pod) Start(name string, cmd *exec.Cmd) (*Process, error) {
	return p.Node.lab.start(p.Netns, p.Cgroup, name, cmd)
}

// start forks cmd from a thread inside ns, directly into cgroupDir. The
// child gets Pdeathsig (it must not outlive the lab's owner) and its own
// process group (a terminal's Ctrl-C reaches the owner only, which stops
// children in order).
//
// If cmd uses StdoutPipe or StderrPipe, read them to the end before the
// process is waited for; the lab waits as soon as the process exits, so a
// protocol over stdout should use an os.Pipe whose write end is given as
// cmd.Stdout instead.
func (l *Lab) start(ns *Netns, cgroupDir, name string, cmd *exec.Cmd) (*Process, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("netlab: lab is closed")
	}
	cg, err := os.Open(cgroupDir)
	if err != nil {
		return nil, fmt.Errorf("netlab: open cgroup %s: %w", cgroupDir, err)
	}
	defer cg.Close()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
	if err := ns.Do(cmd.Start); err != nil {
		return nil, fmt.Errorf("netlab: start %s in %s: %w", name, ns.name, err)
	}
	p := startedProcess(name, cmd)
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.log.Debug("process started", "name", name, "pid", p.Pid(), "netns", ns.name)
	return p, nil
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after
// StopGrace), runs the Defer functions, releases the namespaces, and
// removes the run's pin directories and cgroups. It is safe to call more
// than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	cleanup := l.cleanup
	nodes := l.nodes
	l.mu.Unlock()

	var errs []error
	// Stop everything at once, then wait: a slow process does not delay
	// the others' signal.
	for _, p := range procs {
		_ = p.Signal(syscall.SIGTERM) // an error: it has exited
	}
	deadline := time.NewTimer(l.cfg.StopGrace)
	for _, p := range procs {
		select {
		case <-p.Done():
		case <-deadline.C:
			deadline.Reset(0)
		}
		if !p.Exited() {
			l.log.Warn("process did not stop on SIGTERM; killing it", "name", p.Name, "pid", p.Pid())
			p.Kill()
		}
	}
	deadline.Stop()
	for i := len(cleanup) - 1; i >= 0; i-- {
		if err := cleanup[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range nodes {
		for _, p := range n.pods {
			errs = append(errs, p.close())
		}
		errs = append(errs, n.close())
	}
	if l.fabric != nil {
		errs = append(errs, l.fabric.close())
	}
	errs = append(errs, removePins(filepath.Join(BPFFSRoot, Prefix+l.id)))
	if l.cgroup != "" {
		errs = append(errs, removeCgroupTree(l.cgroup))
	}
	err := errors.Join(errs...)
	if err != nil {
		l.log.Error("lab teardown incomplete", "err", err)
	} else {
		l.log.Info("lab removed")
	}
	return err
}

// removePins removes bpffs directories whose names start with prefix.
func removePins(prefix string) error {
	matches, err := filepath.Glob(prefix + "*")
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range matches {
		if !isBPFFS(m) {
			errs = append(errs, fmt.Errorf("netlab: %s is not on bpffs: left alone", m))
			continue
		}
		if err := os.RemoveAll(m); err != nil {
			errs = append(errs, fmt.Errorf("netlab: remove pins %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// removeCgroupTree removes a cgroup directory and its children, deepest
// first. A cgroup whose last task has just exited can stay busy for a
// moment, so removal is retried for a bounded time.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("netlab: list cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := syscall.Rmdir(dirs[i])
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				return fmt.Errorf("netlab: remove cgroup %s: %w", dirs[i], err)
			}
			time.Sleep(20 * time.Millisecond) // the kernel releases exited tasks asynchronously
		}
	}
	return nil
}

// Sweep removes what labs of dead owners left behind: cgroup directories
// and bpffs pin directories named Prefix<pid>-... whose pid no longer runs.
// A lab's namespaces need no sweeping (they die with their owner and its
// children). Directories of running owners are never touched, and a cgroup
// that still holds a process is left alone.
func Sweep(log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root, err := bpf.CgroupV2Root()
	if err != nil {
		return err
	}
	var errs []error
	for _, base := range []string{BPFFSRoot, root} {
		entries, err := os.ReadDir(base)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("netlab: sweep %s: %w", base, err))
			}
			continue
		}
		for _, e := range entries {
			pid, ok := ownerPid(e.Name())
			if !ok || !e.IsDir() || processExists(pid) {
				continue
			}
			path := filepath.Join(base, e.Name())
			if base == BPFFSRoot {
				err = removePins(path)
			} else {
				err = removeCgroupTree(path)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			log.Info("removed a dead lab's leftovers", "path", path, "owner_pid", pid)
		}
	}
	return errors.Join(errs...)
}

// ownerPid parses the owner pid out of Prefix<pid>-<random>[-suffix].
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
