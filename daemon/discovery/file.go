package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/zonelb/zonelb/zone"
)

// DefaultPollInterval is how often the file source looks for a change.
const DefaultPollInterval = 500 * time.Millisecond

// File is the on-disk form of a snapshot, in YAML or JSON. Every service
// and port in the file is taken over: the file is explicit, so the
// selection rules of the Kubernetes source do not apply. Example:
//
//	node: node-a            # optional
//	zone: zone-a            # the node's own zone
//	services:
//	- namespace: default    # optional, default "default"
//	  name: greeter
//	  clusterIPs: [127.0.0.10]
//	  ports:
//	  - name: grpc          # optional when the service has one port
//	    port: 8080
//	    appProtocol: grpc   # optional, informational
//	    endpoints:
//	    - address: 127.0.0.1:9001
//	      zone: zone-a
//	      node: node-1      # optional
//	      weight: 2         # optional, default 1
//	      ready: true       # optional, default true
//	      serving: true     # optional, default: as ready
//	      terminating: false
type File struct {
	Node     string        `json:"node,omitempty"`
	Zone     string        `json:"zone,omitempty"`
	Services []FileService `json:"services"`
}

// FileService is one service of a [File].
type FileService struct {
	Namespace  string     `json:"namespace,omitempty"`
	Name       string     `json:"name"`
	ClusterIPs []string   `json:"clusterIPs"`
	Ports      []FilePort `json:"ports"`
}

// FilePort is one port of a [FileService] and its endpoints.
type FilePort struct {
	Name        string         `json:"name,omitempty"`
	Port        int            `json:"port"`
	Protocol    string         `json:"protocol,omitempty"` // only TCP; default TCP
	AppProtocol string         `json:"appProtocol,omitempty"`
	Endpoints   []FileEndpoint `json:"endpoints"`
}

// FileEndpoint is one endpoint of a [FilePort].
type FileEndpoint struct {
	Address     string `json:"address"` // ip:port, [ipv6]:port
	Zone        string `json:"zone,omitempty"`
	Node        string `json:"node,omitempty"`
	Weight      uint32 `json:"weight,omitempty"`
	Ready       *bool  `json:"ready,omitempty"`
	Serving     *bool  `json:"serving,omitempty"`
	Terminating bool   `json:"terminating,omitempty"`
}

// ParseFile decodes a YAML or JSON document and checks it. Unknown fields
// are errors (a misspelt key must not be silently ignored), and every
// problem found is reported with the path of the field at fault, for
// example "services[0].ports[1].endpoints[2].address".
func ParseFile(data []byte) (*Snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty document")
	}
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return f.Snapshot()
}

// LoadFile reads and parses the file at path. The daemon calls it at start
// so that a bad file stops it with a clear error.
func LoadFile(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read discovery file: %w", err)
	}
	snap, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("discovery file %s: %w", path, err)
	}
	return snap, nil
}

// Snapshot validates f and converts it to the model. Every invalid field
// is reported, joined.
func (f *File) Snapshot() (*Snapshot, error) {
	c := fileChecker{owner: make(map[netip.AddrPort]string)}
	services := make(map[ServiceName]*Service, len(f.Services))
	for i, fs := range f.Services {
		at := fmt.Sprintf("services[%d]", i)
		name := ServiceName{Namespace: fs.Namespace, Name: fs.Name}
		if name.Namespace == "" {
			name.Namespace = "default"
		}
		if fs.Name == "" {
			c.fail(at+".name", "required")
		} else if _, dup := services[name]; dup {
			c.fail(at+".name", "service %s is listed twice", name)
		}
		services[name] = c.service(at, name, fs)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return &Snapshot{Node: f.Node, Zone: f.Zone, Services: services, Frontends: frontendsOf(services)}, nil
}

// fileChecker converts a File's services, collecting what is invalid.
type fileChecker struct {
	errs  []error
	owner map[netip.AddrPort]string // frontend -> field that claimed it
}

func (c *fileChecker) fail(field, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// service converts services[i] (at).
func (c *fileChecker) service(at string, name ServiceName, fs FileService) *Service {
	svc := &Service{Name: name}
	if len(fs.ClusterIPs) == 0 {
		c.fail(at+".clusterIPs", "at least one address is required")
	}
	for j, s := range fs.ClusterIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			c.fail(fmt.Sprintf("%s.clusterIPs[%d]", at, j), "%q is not an IP address", s)
			continue
		}
		svc.ClusterIPs = append(svc.ClusterIPs, ip.Unmap())
	}
	if len(fs.Ports) == 0 {
		c.fail(at+".ports", "at least one port is required")
	}
	portNames := make(map[string]bool)
	for j, fp := range fs.Ports {
		pat := fmt.Sprintf("%s.ports[%d]", at, j)
		if fp.Name == "" && len(fs.Ports) > 1 {
			c.fail(pat+".name", "required when a service has more than one port")
		}
		if portNames[fp.Name] {
			c.fail(pat+".name", "port name %q is used twice", fp.Name)
		}
		portNames[fp.Name] = true
		svc.Ports = append(svc.Ports, c.port(pat, fp, svc.ClusterIPs))
	}
	return svc
}

// port converts one port (pat) served on clusterIPs, claiming its
// frontends.
func (c *fileChecker) port(pat string, fp FilePort, clusterIPs []netip.Addr) ServicePort {
	if fp.Port < 1 || fp.Port > 65535 {
		c.fail(pat+".port", "%d is not a port number (1-65535)", fp.Port)
	}
	if fp.Protocol != "" && fp.Protocol != "TCP" {
		c.fail(pat+".protocol", "%q is not supported: zonelb takes over TCP only", fp.Protocol)
	}
	sp := ServicePort{
		Name:        fp.Name,
		Port:        uint16(fp.Port),
		Protocol:    "TCP",
		AppProtocol: fp.AppProtocol,
		SelectedBy:  "file",
	}
	for _, ip := range clusterIPs {
		if sp.Port == 0 || fp.Port > 65535 {
			break // reported above
		}
		key := netip.AddrPortFrom(ip, sp.Port)
		if prev, taken := c.owner[key]; taken {
			c.fail(pat+".port", "frontend %s is already used by %s", key, prev)
			continue
		}
		c.owner[key] = pat
	}
	sp.Endpoints = c.endpoints(pat, fp.Endpoints)
	sortEndpoints(sp.Endpoints)
	return sp
}

// endpoints converts one port's endpoints (pat.endpoints).
func (c *fileChecker) endpoints(pat string, fes []FileEndpoint) []zone.Endpoint {
	var out []zone.Endpoint
	seen := make(map[netip.AddrPort]bool)
	for k, fe := range fes {
		eat := fmt.Sprintf("%s.endpoints[%d]", pat, k)
		addr, err := netip.ParseAddrPort(fe.Address)
		if err != nil {
			c.fail(eat+".address", "%q is not ip:port ([ipv6]:port for IPv6)", fe.Address)
			continue
		}
		if addr.Port() == 0 {
			c.fail(eat+".address", "%q has port 0", fe.Address)
			continue
		}
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		if seen[addr] {
			c.fail(eat+".address", "%s is listed twice for this port", addr)
			continue
		}
		seen[addr] = true
		ready := fe.Ready == nil || *fe.Ready
		serving := ready
		if fe.Serving != nil {
			serving = *fe.Serving
		}
		out = append(out, zone.Endpoint{
			Addr:        addr,
			Zone:        fe.Zone,
			Node:        fe.Node,
			Weight:      fe.Weight,
			Ready:       ready,
			Serving:     serving,
			Terminating: fe.Terminating,
		})
	}
	return out
}

// FileConfig configures a [FileSource]. Optional fields mean their default
// when zero.
type FileConfig struct {
	// Path of the YAML or JSON file. Required.
	Path string
	// Logger receives reload errors. Default: discard.
	Logger *slog.Logger
	// PollInterval is how often the file is read again and compared.
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// Clock times the polling. Default: the real clock.
	Clock clock.WithTicker
}

// FileSource publishes the snapshot a file describes, and a new one each
// time the file changes. It re-reads the file every poll interval and
// compares the bytes, rather than using inotify or modification times:
// that needs no dependency, follows the symlink swaps with which Kubernetes
// updates a mounted ConfigMap, and cannot miss a same-size rewrite within
// one tick of the file system's coarse timestamps. The files are small
// (a few KB per hundred endpoints), so the reads cost nothing that matters.
// A file that fails to read or validate is logged and skipped: the last
// good snapshot stays.
type FileSource struct {
	cfg FileConfig
	log *slog.Logger
}

// NewFileSource checks cfg and fills in defaults.
func NewFileSource(cfg FileConfig) (*FileSource, error) {
	if cfg.Path == "" {
		return nil, errors.New("discovery: FileConfig.Path is required")
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("discovery: FileConfig.PollInterval %v is negative", cfg.PollInterval)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FileSource{cfg: cfg, log: log.With("source", "file", "path", cfg.Path)}, nil
}

// Run loads the file and publishes its snapshot, then polls for changes
// and publishes each new valid version, until ctx ends. It fails at once
// if the first load fails. publish is called from one goroutine, one call
// at a time.
func (s *FileSource) Run(ctx context.Context, publish func(*Snapshot)) error {
	last, err := os.ReadFile(s.cfg.Path)
	if err != nil {
		return fmt.Errorf("read discovery file: %w", err)
	}
	current, err := ParseFile(last)
	if err != nil {
		return fmt.Errorf("discovery file %s: %w", s.cfg.Path, err)
	}
	publish(current)

	ticker := s.cfg.Clock.NewTicker(s.cfg.PollInterval)
	defer ticker.Stop()
	readFailed := false // log a failing read once, not every poll
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C():
		}
		data, err := os.ReadFile(s.cfg.Path)
		if err != nil {
			if !readFailed {
				s.log.Error("discovery file unreadable; keeping the last good snapshot", "err", err)
			}
			readFailed = true
			continue
		}
		readFailed = false
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		snap, err := ParseFile(data)
		if err != nil {
			s.log.Error("discovery file invalid; keeping the last good snapshot", "err", err)
			continue
		}
		reuseUnchanged(current.Services, snap.Services)
		if snap.Node == current.Node && sameSnapshot(current, snap) {
			continue
		}
		current = snap
		s.log.Info("discovery file reloaded", "services", len(snap.Services), "frontends", len(snap.Frontends))
		publish(current)
	}
}
