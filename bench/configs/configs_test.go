package configs

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func params(t *testing.T, workload string) Params {
	return Params{Listen: "127.0.0.1:15001", Upstreams: []string{"127.0.0.1:9001", "127.0.0.1:9002"}, Dir: t.TempDir(), Workload: workload}
}

func TestRenderRefusesNonLoopbackAddresses(t *testing.T) {
	p := params(t, WorkloadGRPC)
	p.Upstreams = append(p.Upstreams, "10.96.0.10:80")
	if _, err := Render(HAProxy, p); err == nil {
		t.Fatal("rendered a config with a non-loopback upstream")
	}
	p = params(t, WorkloadGRPC)
	p.Listen = "0.0.0.0:15001"
	if _, err := Render(Nginx, p); err == nil {
		t.Fatal("rendered a config listening beyond loopback")
	}
	if _, err := Render(Caddy, Params{Listen: "127.0.0.1:1", Dir: "x", Workload: WorkloadGRPC}); err == nil {
		t.Fatal("rendered a config without upstreams")
	}
}

func TestRenderPutsEveryUpstreamAndTheRightProtocol(t *testing.T) {
	for _, tc := range []struct {
		tmpl, workload string
		want           []string
	}{
		{HAProxy, WorkloadGRPC, []string{"bind 127.0.0.1:15001 proto h2", "server b0 127.0.0.1:9001 proto h2", "server b1 127.0.0.1:9002 proto h2", "nbthread 1"}},
		{Nginx, WorkloadGRPC, []string{"listen 127.0.0.1:15001 http2;", "server 127.0.0.1:9001;", "server 127.0.0.1:9002;", "grpc_pass grpc://upstreams;", "worker_processes 1;"}},
		{Nginx, WorkloadHTTP, []string{"proxy_pass http://upstreams;", "proxy_http_version 1.1;"}},
		{Caddy, WorkloadGRPC, []string{`"listen": ["127.0.0.1:15001"]`, `{"dial": "127.0.0.1:9001"}, {"dial": "127.0.0.1:9002"}`, `"versions": ["h2c"]`}},
	} {
		out, err := Render(tc.tmpl, params(t, tc.workload))
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.tmpl, tc.workload, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s/%s lacks %q:\n%s", tc.tmpl, tc.workload, w, out)
			}
		}
	}
}

// TestRenderedConfigsPassTheProxiesOwnCheck asks each installed proxy to
// validate its rendered configuration. `make bench` installs them; where
// one is missing (a plain `go test`) its check is skipped.
func TestRenderedConfigsPassTheProxiesOwnCheck(t *testing.T) {
	for _, tc := range []struct {
		name, tmpl, bin string
		args            func(path, dir string) []string
	}{
		{"haproxy", HAProxy, "haproxy", func(path, _ string) []string { return []string{"-c", "-q", "-f", path} }},
		{"nginx", Nginx, "nginx", func(path, dir string) []string { return []string{"-t", "-q", "-c", path, "-p", dir, "-e", "stderr"} }},
		{"caddy", Caddy, "caddy", func(path, _ string) []string { return []string{"validate", "--config", path} }},
	} {
		for _, workload := range []string{WorkloadGRPC, WorkloadHTTP} {
			t.Run(tc.name+"/"+workload, func(t *testing.T) {
				bin, err := exec.LookPath(tc.bin)
				if err != nil {
					t.Skipf("%s not installed (make bench installs it)", tc.bin)
				}
				p := params(t, workload)
				out, err := Render(tc.tmpl, p)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(p.Dir, "config")
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(bin, tc.args(path, p.Dir)...)
				cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+p.Dir, "XDG_CONFIG_HOME="+p.Dir, "HOME="+p.Dir)
				if msg, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s rejects its config: %v\n%s\n%s", tc.bin, err, msg, out)
				}
			})
		}
	}
}

// nodeProxyParams are HAProxy as the node proxy of the e2e mini cluster: an
// inherited listener, lab addresses as servers, two threads.
func nodeProxyParams(t *testing.T) (Params, []netip.Prefix) {
	lab := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	return Params{Listen: `"fd@${ZONELB_LISTEN_FD}"`, Upstreams: []string{"10.244.1.10:50051", "10.244.2.10:50051"},
		Dir: t.TempDir(), Workload: WorkloadGRPC, Threads: 2}, lab
}

func TestRenderWithinKeepsToTheLab(t *testing.T) {
	p, lab := nodeProxyParams(t)
	out, err := RenderWithin(HAProxy, p, lab)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`bind "fd@${ZONELB_LISTEN_FD}" proto h2`, "nbthread 2", "balance roundrobin",
		"server b0 10.244.1.10:50051 proto h2", "server b1 10.244.2.10:50051 proto h2"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
	p.Upstreams = append(p.Upstreams, "198.51.100.1:80")
	if _, err := RenderWithin(HAProxy, p, lab); err == nil {
		t.Error("rendered an upstream outside the lab")
	}
	p, _ = nodeProxyParams(t)
	if _, err := Render(HAProxy, p); err == nil {
		t.Error("Render took lab addresses for loopback")
	}
	if _, err := RenderWithin(Nginx, p, lab); err == nil {
		t.Error("rendered an inherited socket for nginx, which cannot take one")
	}
	p.Listen = "10.96.0.10:80"
	if _, err := RenderWithin(HAProxy, p, lab); err == nil {
		t.Error("rendered a listener outside the lab")
	}
}

// TestNodeProxyConfigPassesHAProxysCheck gives HAProxy's own check a real
// listening socket for the inherited fd (it refuses anything else).
func TestNodeProxyConfigPassesHAProxysCheck(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed (make bench and make bench-e2e install it)")
	}
	p, lab := nodeProxyParams(t)
	out, err := RenderWithin(HAProxy, p, lab)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.Dir, "haproxy.cfg")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "-c", "-q", "-f", path)
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
	cmd.Env = append(os.Environ(), "ZONELB_LISTEN_FD=3")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("haproxy rejects its config: %v\n%s\n%s", err, msg, out)
	}
}
