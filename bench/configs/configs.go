// Package configs holds the configuration templates of the peer proxies that
// zonelb's benchmark runs beside it (HAProxy, nginx, Caddy) and renders them
// for one run; `make bench-e2e` renders the same HAProxy template for
// HAProxy as the node proxy of its mini cluster. It only renders text: it
// starts nothing, and it refuses any address that is not on loopback (or,
// for the mini cluster, outside the lab's own prefixes) so that a benchmark
// can never send traffic off the machine.
package configs

import (
	"bytes"
	"embed"
	"fmt"
	"net/netip"
	"strings"
	"text/template"
)

//go:embed *.tmpl
var templateFiles embed.FS

// Template names, one per peer proxy.
const (
	HAProxy = "haproxy.cfg.tmpl"
	Nginx   = "nginx.conf.tmpl"
	Caddy   = "caddy.json.tmpl"
)

// Workloads a configuration is rendered for. nginx needs to know: it can
// proxy HTTP/2 upstream only with grpc_pass.
const (
	WorkloadGRPC = "grpc"
	WorkloadHTTP = "http"
)

// Params are the values a template sees.
type Params struct {
	// Listen is the proxy's loopback host:port, or for HAProxy an
	// inherited listening socket: fd@N, or "fd@${VAR}" (quoted, expanded
	// by HAProxy from its environment).
	Listen string
	// Upstreams are the backends' loopback host:port addresses.
	Upstreams []string
	// Dir is a scratch directory the proxy may write into (pid and temp files).
	Dir string
	// Workload is WorkloadGRPC or WorkloadHTTP.
	Workload string
	// Threads is HAProxy's nbthread (default 1: one worker, like every
	// peer of make bench).
	Threads int
}

// loopback are the prefixes Render accepts.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Render fills template name with p after checking that every address is on
// loopback.
func Render(name string, p Params) ([]byte, error) {
	return RenderWithin(name, p, loopback)
}

// RenderWithin is Render for a proxy that runs inside an isolated lab
// (network namespaces with no route out, such as the e2e mini cluster):
// every address must be in one of allowed, which must not reach beyond the
// lab. An inherited socket (Listen fd@...) has no address to check.
func RenderWithin(name string, p Params, allowed []netip.Prefix) ([]byte, error) {
	if inherited(p.Listen) {
		if name != HAProxy {
			return nil, fmt.Errorf("render %s: listen %s: only HAProxy takes an inherited socket", name, p.Listen)
		}
	} else if err := requireWithin(p.Listen, allowed); err != nil {
		return nil, fmt.Errorf("render %s: listen address: %w", name, err)
	}
	if len(p.Upstreams) == 0 {
		return nil, fmt.Errorf("render %s: no upstreams", name)
	}
	for _, u := range p.Upstreams {
		if err := requireWithin(u, allowed); err != nil {
			return nil, fmt.Errorf("render %s: upstream: %w", name, err)
		}
	}
	if p.Threads == 0 {
		p.Threads = 1
	}
	if p.Threads < 0 {
		return nil, fmt.Errorf("render %s: %d threads", name, p.Threads)
	}
	if p.Workload != WorkloadGRPC && p.Workload != WorkloadHTTP {
		return nil, fmt.Errorf("render %s: unknown workload %q", name, p.Workload)
	}
	if p.Dir == "" {
		return nil, fmt.Errorf("render %s: no scratch directory", name)
	}
	tmpl, err := template.New(name).Option("missingkey=error").ParseFS(templateFiles, name)
	if err != nil {
		return nil, fmt.Errorf("parse template %s: %w", name, err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, p); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return out.Bytes(), nil
}

// inherited reports whether listen names an inherited socket (HAProxy's
// fd@ address, possibly quoted).
func inherited(listen string) bool {
	return strings.HasPrefix(strings.TrimPrefix(listen, `"`), "fd@")
}

func requireWithin(hostPort string, allowed []netip.Prefix) error {
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return fmt.Errorf("parse %q: %w", hostPort, err)
	}
	for _, p := range allowed {
		if p.Contains(ap.Addr().Unmap()) {
			return nil
		}
	}
	return fmt.Errorf("%q is outside %v", hostPort, allowed)
}
