// Package configs holds the configuration templates of the peer proxies that
// zonelb's benchmark runs beside it (HAProxy, nginx, Caddy) and renders them
// for one run. It only renders text: it starts nothing, and it refuses any
// address that is not on loopback so that a benchmark can never send traffic
// off the machine.
package configs

import (
	"bytes"
	"embed"
	"fmt"
	"net"
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
	// Listen is the proxy's loopback host:port.
	Listen string
	// Upstreams are the backends' loopback host:port addresses.
	Upstreams []string
	// Dir is a scratch directory the proxy may write into (pid and temp files).
	Dir string
	// Workload is WorkloadGRPC or WorkloadHTTP.
	Workload string
}

// Render fills template name with p after checking that every address is on
// loopback.
func Render(name string, p Params) ([]byte, error) {
	if err := requireLoopback(p.Listen); err != nil {
		return nil, fmt.Errorf("render %s: listen address: %w", name, err)
	}
	if len(p.Upstreams) == 0 {
		return nil, fmt.Errorf("render %s: no upstreams", name)
	}
	for _, u := range p.Upstreams {
		if err := requireLoopback(u); err != nil {
			return nil, fmt.Errorf("render %s: upstream: %w", name, err)
		}
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

func requireLoopback(hostPort string) error {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("parse %q: %w", hostPort, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback IP address", hostPort)
	}
	return nil
}
