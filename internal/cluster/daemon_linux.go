package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/daemon"
	"github.com/zonelb/zonelb/internal/childproc"
	"github.com/zonelb/zonelb/internal/netlab"
)

// errAlreadyExited says a node proxy (daemon or HAProxy) being stopped had
// exited already.
var errAlreadyExited = errors.New("node proxy had already exited")

// Daemon is a zonelb daemon process on the clients' node.
type Daemon struct {
	Node *netlab.Node
	// ConfigPath and LogPath are its configuration and log files.
	ConfigPath, LogPath string

	proc    *netlab.Process
	cluster *Cluster
}

// pinDir is the daemon's bpffs pin directory: netlab's naming, so that
// Close and Sweep remove it whatever happens.
func (c *Cluster) pinDir() string { return c.Lab.PinDir(c.ClientNode().Name) }

// daemonConfig writes the daemon's configuration file.
func (c *Cluster) daemonConfig() (string, error) {
	node := c.ClientNode()
	source := "file:" + c.servicesFile()
	kubeLines := ""
	if c.kube != nil {
		source = "kubernetes"
		kubeLines = "kubeconfig: " + c.kube.kubeconfig + "\n"
	}
	faults := "" // only when asked: an older binary (an upgrade) knows no such key
	if c.opts.FaultTriggers {
		faults = "  faultTriggers: true\n"
	}
	balancer := "  {}"
	if b := strings.TrimSpace(c.opts.BalancerYAML); b != "" {
		balancer = "  " + strings.ReplaceAll(b, "\n", "\n  ")
	}
	doc := fmt.Sprintf(`# zonelb daemon on %[1]s of the e2e mini cluster (written by internal/cluster)
source: %[2]s
%[3]snodeName: %[1]s
proxy:
  listen: "%[4]s"
  drainTimeout: 5s
redirect:
  pinDir: %[5]s
  cgroupPath: %[6]s
  interface: zonelb0
  enroll: all
admin:
  address: "%[7]s"
%[9]sbalancer:
%[8]s
`, node.Name, source, kubeLines, ProxyAddr, c.pinDir(), node.PodsCgroup, AdminAddr, balancer, faults)
	path := filepath.Join(c.workDir, "zonelb-"+node.Name+".yaml")
	// Written aside and renamed into place: a running daemon watching the
	// file (a reload) never reads half of it.
	if err := os.WriteFile(path+".new", []byte(doc), 0o644); err != nil {
		return "", fmt.Errorf("cluster: write daemon config: %w", err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		return "", fmt.Errorf("cluster: write daemon config: %w", err)
	}
	return path, nil
}

func (c *Cluster) daemonEverStarted() bool {
	_, err := os.Stat(filepath.Join(c.workDir, "zonelb-"+c.ClientNode().Name+".yaml"))
	return err == nil
}

// StartDaemon starts `zonelb daemon` in the clients' node and waits until
// it is ready and has enrolled every client pod's namespace.
func (c *Cluster) StartDaemon(ctx context.Context) (*Daemon, error) {
	c.mu.Lock()
	running := c.daemon != nil && !c.daemon.proc.Exited()
	haproxy := c.haproxy != nil && !c.haproxy.proc.Exited()
	c.mu.Unlock()
	if running {
		return nil, errors.New("cluster: a daemon is already running")
	}
	if haproxy {
		return nil, errors.New("cluster: HAProxy is the node proxy now: stop it first")
	}
	node := c.ClientNode()
	if c.kube != nil {
		if err := c.kube.relayInto(node); err != nil {
			return nil, err
		}
	}
	cfg, err := c.daemonConfig()
	if err != nil {
		return nil, err
	}
	logPath := c.DaemonLogPath()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cluster: daemon log: %w", err)
	}
	cmd := exec.Command(c.opts.ZonelbBin, "daemon", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	proc, err := node.Start("zonelb daemon", cmd)
	logFile.Close()
	if err != nil {
		return nil, err
	}
	d := &Daemon{Node: node, ConfigPath: cfg, LogPath: logPath, proc: proc, cluster: c}
	c.mu.Lock()
	c.daemon = d
	c.mu.Unlock()
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// waitReady polls /readyz (the daemon is ready once its listener is
// registered with the BPF hooks), then checks from every client pod that a
// new connection to the ClusterIP reaches the proxy: whatever the daemon's
// way of enrolling pod namespaces, nothing is measured before redirection
// works.
func (d *Daemon) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	client := d.Node.HTTPClient()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+AdminAddr.String()+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if err := d.pollWait(ctx, "ready"); err != nil {
			return err
		}
	}
	for _, pod := range d.cluster.Clients {
		if err := d.cluster.waitRedirected(ctx, pod, d.pollWait); err != nil {
			return err
		}
	}
	return nil
}

// waitRedirected runs a probe client in pod, one call per new connection,
// until a call went through the node proxy; pollWait waits one step and
// fails when the proxy has exited.
func (c *Cluster) waitRedirected(ctx context.Context, pod *netlab.Pod, pollWait func(ctx context.Context, what string) error) error {
	probe, err := c.StartClient(ctx, pod, Workload{Concurrency: 1, RedialEvery: 1, Rate: 50})
	if err != nil {
		return err
	}
	defer probe.Stop(context.Background())
	for {
		if err := pollWait(ctx, "redirecting "+pod.Name+"'s connections"); err != nil {
			return err
		}
		w, err := probe.Snapshot(ctx)
		if err != nil {
			return err
		}
		if w.ViaProxy > 0 {
			return nil
		}
	}
}

// pollWait waits one polling step, failing when the daemon has exited or
// ctx has ended.
func (d *Daemon) pollWait(ctx context.Context, what string) error {
	select {
	case <-d.proc.Done():
		return fmt.Errorf("cluster: zonelb daemon exited (%v) before %s; log %s:\n%s", d.proc.Err(), what, d.LogPath, childproc.Tail(d.LogPath, 30))
	case <-ctx.Done():
		return fmt.Errorf("cluster: zonelb daemon not %s: %w; log %s:\n%s", what, ctx.Err(), d.LogPath, childproc.Tail(d.LogPath, 30))
	case <-time.After(50 * time.Millisecond): // polling another process
		return nil
	}
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.proc.Pid() }

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool { return d.proc.Exited() }

// Stop sends SIGTERM (the daemon drains) and waits until it has exited.
func (d *Daemon) Stop() error {
	if d.proc.Exited() {
		return errAlreadyExited
	}
	err := d.proc.Stop(30 * time.Second)
	if netlab.KilledBySignal(err, syscall.SIGKILL) {
		return fmt.Errorf("cluster: zonelb daemon did not stop on SIGTERM within 30s; killed")
	}
	if err != nil {
		return fmt.Errorf("cluster: zonelb daemon exit: %w; log:\n%s", err, childproc.Tail(d.LogPath, 20))
	}
	return nil
}

// Kill SIGKILLs the daemon and waits until it is gone.
func (d *Daemon) Kill() { d.proc.Kill() }

// Signal sends sig to the daemon without waiting (see Wait).
func (d *Daemon) Signal(sig syscall.Signal) error { return d.proc.Signal(sig) }

// Wait waits until the daemon has exited and been reaped, at most until
// ctx ends.
func (d *Daemon) Wait(ctx context.Context) error { return d.proc.Wait(ctx) }

// CPUTime is the CPU time (user + system) the daemon has used so far.
func (d *Daemon) CPUTime() (time.Duration, error) {
	return processCPU(d.proc.Pid())
}

// processCPU reads utime+stime of pid from /proc/pid/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of %d: %w", pid, err)
	}
	// The command name may hold spaces: fields count from after ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// State is the daemon's /debug/state.
func (d *Daemon) State(ctx context.Context) (daemon.StateReport, error) {
	var st daemon.StateReport
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+AdminAddr.String()+"/debug/state", nil)
	if err != nil {
		return st, err
	}
	resp, err := d.Node.HTTPClient().Do(req)
	if err != nil {
		return st, fmt.Errorf("cluster: daemon state: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return st, fmt.Errorf("cluster: daemon state: %s: %s", resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("cluster: decode daemon state: %w", err)
	}
	return st, nil
}

// Post sends a POST to the daemon's admin address (path with its query)
// and returns the body of a 200 answer.
func (d *Daemon) Post(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+AdminAddr.String()+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := d.Node.HTTPClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("cluster: daemon POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("cluster: daemon POST %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("cluster: daemon POST %s: %s: %s", path, resp.Status, body)
	}
	return string(body), nil
}

// WaitState polls the daemon's state until cond holds, at most limit.
func (d *Daemon) WaitState(ctx context.Context, limit time.Duration, what string, cond func(daemon.StateReport) bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st, err := d.State(ctx)
		if err == nil && cond(st) {
			return nil
		}
		if err := d.pollWait(ctx, what); err != nil {
			return err
		}
	}
}

// Status runs `zonelb status` against the daemon, in its node, and returns
// what it prints.
func (d *Daemon) Status(ctx context.Context) (string, error) {
	return d.cluster.runOnNode(ctx, d.Node, nil, d.cluster.opts.ZonelbBin, "status", "--admin", AdminAddr.String())
}

// Uninstall runs `zonelb uninstall` with the daemon's configuration in
// the clients' node (programs, links, pins and zonelb0 go), and checks
// that the pin directory is gone.
func (c *Cluster) Uninstall() error {
	cfg := filepath.Join(c.workDir, "zonelb-"+c.ClientNode().Name+".yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := c.runOnNode(ctx, c.ClientNode(), nil, c.opts.ZonelbBin, "uninstall", "--config", cfg); err != nil {
		return fmt.Errorf("cluster: zonelb uninstall: %w: %s", err, out)
	}
	if _, err := os.Stat(c.pinDir()); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster: pin directory %s still there after zonelb uninstall (%v)", c.pinDir(), err)
	}
	return nil
}
