package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/zonelb/zonelb/bench/configs"
)

// Binaries are the programs the benchmark runs, as paths or names on PATH.
type Binaries struct {
	GHZ     string
	H2load  string
	HAProxy string
	Nginx   string
	Caddy   string
	Zonelb  string
	Backend string
	Taskset string
	Nice    string
	Go      string
}

// Peer names, in the order tables list them.
const (
	PeerDirect  = "direct"
	PeerZonelb  = "zonelb"
	PeerHAProxy = "haproxy"
	PeerNginx   = "nginx"
	PeerCaddy   = "caddy"
)

// AllPeers lists every peer the benchmark knows, in table order.
func AllPeers() []string {
	return []string{PeerDirect, PeerZonelb, PeerHAProxy, PeerNginx, PeerCaddy}
}

// Workload names.
const (
	WorkloadGRPC = configs.WorkloadGRPC
	WorkloadHTTP = configs.WorkloadHTTP
)

// AllWorkloads lists both workloads: gRPC unary through ghz, h2c GET
// through h2load.
func AllWorkloads() []string { return []string{WorkloadGRPC, WorkloadHTTP} }

// peerLabel is how tables name a peer, with what makes it comparable.
func peerLabel(name string) string {
	switch name {
	case PeerDirect:
		return "direct (no proxy)"
	case PeerZonelb:
		return "zonelb (GOMAXPROCS=1)"
	case PeerHAProxy:
		return "HAProxy (nbthread 1, proto h2)"
	case PeerNginx:
		return "nginx (1 worker)"
	case PeerCaddy:
		return "Caddy (GOMAXPROCS=1, h2c)"
	}
	return name
}

// proxySetup is what a peer needs to be started for one measurement.
type proxySetup struct {
	Listen    string
	Upstreams []string
	Dir       string
	Workload  string
	// Admin, when set, asks zonelb to serve pprof there (profiling only).
	Admin string
}

// proxyCommand writes the peer's configuration into s.Dir and returns how to
// start it. Every peer runs as one process with one worker thread doing the
// proxying, so that its pid's CPU time is the proxy's cost.
func proxyCommand(peer string, b Binaries, s proxySetup) (procSpec, error) {
	params := configs.Params{Listen: s.Listen, Upstreams: s.Upstreams, Dir: s.Dir, Workload: s.Workload}
	spec := procSpec{Name: peer, LogPath: filepath.Join(s.Dir, peer+".log")}
	switch peer {
	case PeerZonelb:
		spec.Path = b.Zonelb
		spec.Args = []string{"--listen", s.Listen, "--zone", "zone-a", "--log-level", "warn"}
		for _, u := range s.Upstreams {
			spec.Args = append(spec.Args, "--to", "zone-a="+u)
		}
		if s.Admin != "" {
			spec.Args = append(spec.Args, "--admin", s.Admin)
		}
		spec.Env = []string{"GOMAXPROCS=1"}
		return spec, nil
	case PeerHAProxy:
		path, err := renderTo(configs.HAProxy, params, "haproxy.cfg")
		if err != nil {
			return procSpec{}, err
		}
		// -db: stay in the foreground, one process.
		spec.Path, spec.Args = b.HAProxy, []string{"-db", "-f", path}
		return spec, nil
	case PeerNginx:
		path, err := renderTo(configs.Nginx, params, "nginx.conf")
		if err != nil {
			return procSpec{}, err
		}
		spec.Path, spec.Args = b.Nginx, []string{"-c", path, "-p", s.Dir, "-e", "stderr"}
		return spec, nil
	case PeerCaddy:
		path, err := renderTo(configs.Caddy, params, "caddy.json")
		if err != nil {
			return procSpec{}, err
		}
		spec.Path, spec.Args = b.Caddy, []string{"run", "--config", path}
		// Caddy keeps state under the XDG directories; keep it in the
		// scratch directory rather than the user's home.
		spec.Env = []string{"GOMAXPROCS=1", "XDG_DATA_HOME=" + s.Dir, "XDG_CONFIG_HOME=" + s.Dir, "HOME=" + s.Dir}
		return spec, nil
	}
	return procSpec{}, fmt.Errorf("no proxy command for peer %q", peer)
}

func renderTo(template string, params configs.Params, file string) (string, error) {
	b, err := configs.Render(template, params)
	if err != nil {
		return "", err
	}
	path := filepath.Join(params.Dir, file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// rotate returns peers starting at offset, so that across runs no peer is
// always measured first or last while the machine warms up or gets busy.
func rotate(peers []string, offset int) []string {
	if len(peers) == 0 {
		return nil
	}
	offset %= len(peers)
	return slices.Concat(peers[offset:], peers[:offset])
}
