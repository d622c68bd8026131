package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/zonelb/zonelb/daemon"
)

// DaemonSample is the daemon's resource use at one instant, for soak
// tests: what must not leak.
type DaemonSample struct {
	At        time.Time
	Pid       int
	RSSBytes  int64
	FDs       int
	Goroutine int
	// UpstreamConns are the daemon's established TCP connections to
	// backends (port BackendPort), from /proc/PID/net/tcp of its node.
	UpstreamConns int
	// MapEntries are the entries of the pinned BPF maps that grow with
	// traffic or churn, by map name.
	MapEntries map[string]int
}

// Sample reads the daemon's RSS, open fds, goroutines (its /metrics),
// upstream connections and BPF map entries.
func (d *Daemon) Sample(ctx context.Context) (DaemonSample, error) {
	pid := d.Pid()
	s := DaemonSample{At: time.Now(), Pid: pid, MapEntries: map[string]int{}}
	var errs []error
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				s.RSSBytes = kb << 10
			}
		}
	}
	errs = append(errs, err)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	s.FDs = len(fds)
	errs = append(errs, err)
	s.UpstreamConns, err = establishedTo(fmt.Sprintf("/proc/%d/net/tcp", pid), BackendPort)
	errs = append(errs, err)
	s.Goroutine, err = d.metric(ctx, "go_goroutines")
	errs = append(errs, err)
	for _, name := range []string{"zlb_tuples", "zlb_services", "zlb_netns"} {
		n, err := mapEntries(filepath.Join(d.cluster.pinDir(), name))
		s.MapEntries[name] = n
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("cluster: sample daemon %d: %w", pid, err)
	}
	return s, nil
}

// metric reads one unlabelled gauge from the daemon's /metrics.
func (d *Daemon) metric(ctx context.Context, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+AdminAddr.String()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := d.Node.HTTPClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// establishedTo counts ESTABLISHED sockets in a /proc/net/tcp file whose
// remote port is port.
func establishedTo(path string, port int) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // 01: TCP_ESTABLISHED
			continue
		}
		if r, err := procAddr(f[2]); err == nil && int(r.Port()) == port {
			n++
		}
	}
	return n, nil
}

func mapEntries(path string) (int, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	var k, v []byte
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// SetZonelbBin switches the binary the next StartDaemon runs (an upgrade).
func (c *Cluster) SetZonelbBin(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.ZonelbBin = path
}

// ReloadDaemon rewrites the running daemon's configuration file with
// balancerYAML under balancer: and waits until the daemon has applied it.
func (c *Cluster) ReloadDaemon(ctx context.Context, balancerYAML string) error {
	c.mu.Lock()
	d := c.daemon
	c.opts.BalancerYAML = balancerYAML
	c.mu.Unlock()
	if d == nil || d.Exited() {
		return errors.New("cluster: no daemon running to reload")
	}
	st, err := d.State(ctx)
	if err != nil {
		return err
	}
	// A new file renamed into place: the daemon never reads a half-written
	// one.
	path, err := c.daemonConfig()
	if err != nil {
		return err
	}
	if path != d.ConfigPath {
		return fmt.Errorf("cluster: config path moved from %s to %s", d.ConfigPath, path)
	}
	return d.WaitState(ctx, 30*time.Second, "reloaded", func(s daemon.StateReport) bool { return s.Reloads > st.Reloads })
}
