package configs

import (
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
