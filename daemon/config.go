package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/internal/duration"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// Config is the daemon's configuration: a YAML file (deploy/ ships one in
// a ConfigMap), then flags, then the environment for what the downward API
// provides (NODE_NAME). Every field has a documented default; Validate
// names every bad field, joined.
type Config struct {
	// NodeName is this node's name; default $NODE_NAME.
	NodeName string `json:"nodeName,omitempty"`
	// Source is where services and endpoints come from: "kubernetes", or
	// "file:/path/to/services.yaml" (see daemon/discovery). Default
	// kubernetes.
	Source string `json:"source,omitempty"`
	// Kubeconfig is a kubeconfig file for the kubernetes source; "" uses
	// the in-cluster service account.
	Kubeconfig string `json:"kubeconfig,omitempty"`

	Proxy    ProxyConfig    `json:"proxy"`
	Redirect RedirectConfig `json:"redirect"`
	Admin    AdminConfig    `json:"admin"`
	Balancer BalancerConfig `json:"balancer"`
}

// ProxyConfig configures the node proxy.
type ProxyConfig struct {
	// Listen is where the proxy accepts the connections the BPF hooks
	// steer to it: the node-local address. Default 169.254.20.11:15001
	// (127.0.0.1:15001 when redirection is off).
	Listen string `json:"listen,omitempty"`
	// Listen6 is the node-local IPv6 address and port for connections to
	// IPv6 service addresses, e.g. "[fd7a:6c62::11]:15001" (a ULA, which
	// pods route to; not fe80::). Optional: without it, IPv6 service
	// addresses are not redirected and go their usual way.
	Listen6 string `json:"listen6,omitempty"`
	// DrainTimeout bounds how long in-flight requests may finish on
	// SIGTERM. Default 30s.
	DrainTimeout Duration `json:"drainTimeout,omitempty"`
	// MinConnsPerEndpoint and MaxConnsPerEndpoint bound upstream
	// connections per endpoint (see proxy.Config). Defaults 1 and 16.
	MinConnsPerEndpoint int `json:"minConnsPerEndpoint,omitempty"`
	MaxConnsPerEndpoint int `json:"maxConnsPerEndpoint,omitempty"`
}

// RedirectConfig configures the eBPF redirection.
type RedirectConfig struct {
	// Enabled turns BPF redirection on. Default true; false runs the
	// proxy without it (clients must then dial the proxy themselves).
	Enabled *bool `json:"enabled,omitempty"`
	// PinDir is the bpffs directory for pinned state. Default
	// /sys/fs/bpf/zonelb.
	PinDir string `json:"pinDir,omitempty"`
	// CgroupPath is the cgroup-v2 directory the hooks attach to, or a
	// directory with the cgroup2 mount below it (a hybrid host's
	// /sys/fs/cgroup, whose cgroup2 is unified/). Default: the cgroup2
	// mount.
	CgroupPath string `json:"cgroupPath,omitempty"`
	// Interface is the dummy interface holding the proxy address. Default
	// zonelb0.
	Interface string `json:"interface,omitempty"`
	// SocketMark marks the proxy's upstream sockets so they are never
	// redirected. Default 0x5a4c.
	SocketMark uint32 `json:"socketMark,omitempty"`
	// Enroll says which pod network namespaces are redirected: "all"
	// (every network namespace other than the host's, for processes under
	// CgroupPath: the attach cgroup is the scope) or "none" (only those
	// enrolled one by one through the BPF API, as tests do). Default all.
	Enroll string `json:"enroll,omitempty"`
}

// AdminConfig configures the admin HTTP endpoints.
type AdminConfig struct {
	// Address serves /healthz, /readyz, /debug/state, /debug/pprof/ and
	// /metrics. Default 127.0.0.1:15000 (loopback: pprof stays local).
	Address string `json:"address,omitempty"`
	// MetricsAddress, if set, also serves /metrics there (for Prometheus,
	// e.g. 0.0.0.0:15090).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// FaultTriggers serves POST /debug/fault/panic and /debug/fault/grow
	// on Address, for tests that make the daemon panic or run out of
	// memory (faults.go). Off by default; never for production.
	FaultTriggers bool `json:"faultTriggers,omitempty"`
}

// BalancerConfig tunes the zone balancers (see zone.Config for each).
type BalancerConfig struct {
	Decay Duration `json:"decay,omitempty"`
	// ProbeAfter bounds how long Peak-EWMA may starve an endpoint (see
	// zone.Config.ProbeAfter). Default zone.DefaultProbeAfter; a
	// negative duration ("-1s") turns the probes off.
	ProbeAfter      Duration `json:"probeAfter,omitempty"`
	DefaultLatency  Duration `json:"defaultLatency,omitempty"`
	SlowStart       Duration `json:"slowStart,omitempty"`
	PricePerGB      *float64 `json:"pricePerGB,omitempty"`
	IgnoreZones     bool     `json:"ignoreZones,omitempty"`
	MaxEjectedShare *float64 `json:"maxEjectedShare,omitempty"`
	// ZoneDistance ranks other zones for spillover (nearest first).
	ZoneDistance map[string]int `json:"zoneDistance,omitempty"`
	// ZoneClients is how the services' clients spread over the zones
	// (say, the cluster's nodes per zone), for where spilled requests go
	// (zone.Config.ZoneClients). Default none: P2C over the remote zones.
	ZoneClients map[string]float64 `json:"zoneClients,omitempty"`
	// SpillBudget is every service's latency budget, as a percentage of
	// the local zone's unloaded latency level ("50%"), "parity" or
	// "latency" (see docs/zone-balancing.md). A Service overrides it with
	// the annotation zonelb.io/spill-budget. Default
	// zone.DefaultSpillBudget.
	SpillBudget string `json:"spillBudget,omitempty"`
}

// Duration is a time.Duration written as "10s" in YAML.
type Duration = duration.Duration

// Defaults.
const (
	DefaultListen       = "169.254.20.11:15001"
	DefaultAdminAddress = "127.0.0.1:15000"
	DefaultDrainTimeout = 30 * time.Second
	DefaultSocketMark   = 0x5a4c
)

// LoadConfigFile reads a YAML config file; unknown keys are errors.
func LoadConfigFile(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults fills unset fields from defaults and the environment.
func (c Config) WithDefaults(getenv func(string) string) Config {
	if c.NodeName == "" {
		c.NodeName = getenv("NODE_NAME")
	}
	if c.Source == "" {
		c.Source = "kubernetes"
	}
	if c.Redirect.Enabled == nil {
		t := true
		c.Redirect.Enabled = &t
	}
	if c.Proxy.Listen == "" {
		c.Proxy.Listen = DefaultListen
		if !*c.Redirect.Enabled {
			// Without BPF there is no zonelb0 to hold the link-local
			// address: listen on loopback.
			c.Proxy.Listen = "127.0.0.1:15001"
		}
	}
	if c.Proxy.DrainTimeout == 0 {
		c.Proxy.DrainTimeout = Duration(DefaultDrainTimeout)
	}
	if c.Redirect.Enabled == nil {
		t := true
		c.Redirect.Enabled = &t
	}
	if c.Redirect.SocketMark == 0 {
		c.Redirect.SocketMark = DefaultSocketMark
	}
	if c.Redirect.Enroll == "" {
		c.Redirect.Enroll = "all"
	}
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	return c
}

// RedirectEnabled reports whether BPF redirection is on.
func (c Config) RedirectEnabled() bool { return c.Redirect.Enabled == nil || *c.Redirect.Enabled }

// FilePath returns the path of a file source, or "".
func (c Config) FilePath() string {
	p, _ := strings.CutPrefix(c.Source, "file:")
	if p == c.Source {
		return ""
	}
	return p
}

// Validate reports every invalid setting, each naming its key, joined.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Source == "kubernetes":
		if c.NodeName == "" {
			bad("nodeName: required with source kubernetes (set NODE_NAME from the downward API)")
		}
	case c.FilePath() != "":
	default:
		bad("source %q: want kubernetes or file:/path", c.Source)
	}
	if _, err := netip.ParseAddrPort(c.Proxy.Listen); err != nil {
		bad("proxy.listen %q: want IP:PORT", c.Proxy.Listen)
	}
	if c.Proxy.Listen6 != "" {
		switch ap, err := netip.ParseAddrPort(c.Proxy.Listen6); {
		case err != nil || !ap.Addr().Is6() || ap.Addr().Is4In6():
			bad("proxy.listen6 %q: want [IPv6]:PORT", c.Proxy.Listen6)
		case ap.Addr().IsLinkLocalUnicast():
			bad("proxy.listen6 %q: a link-local (fe80::) address is not routable from pods; use a ULA", c.Proxy.Listen6)
		case !c.RedirectEnabled():
			bad("proxy.listen6: only used with redirect.enabled")
		}
	}
	if c.Proxy.DrainTimeout < 0 {
		bad("proxy.drainTimeout %v: must not be negative", time.Duration(c.Proxy.DrainTimeout))
	}
	for _, a := range []struct{ name, addr string }{{"admin.address", c.Admin.Address}, {"admin.metricsAddress", c.Admin.MetricsAddress}} {
		if a.addr == "" && a.name != "admin.address" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.addr); err != nil {
			bad("%s %q: want IP:PORT", a.name, a.addr)
		}
	}
	if c.Redirect.Enroll != "all" && c.Redirect.Enroll != "none" {
		bad("redirect.enroll %q: want all or none", c.Redirect.Enroll)
	}
	if _, err := c.proxyConfig(nil, nil); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.zoneConfig("", nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// The translation of this configuration into the configurations of the
// packages the daemon wires (bpf, proxy, zone) is below, in one place.

// BPFConfig is the BPF part of the configuration.
func (c Config) BPFConfig() bpf.Config {
	return c.bpfConfig(slog.New(slog.DiscardHandler))
}

func (c Config) bpfConfig(log *slog.Logger) bpf.Config {
	return bpf.Config{
		PinDir:         c.Redirect.PinDir,
		CgroupPath:     c.Redirect.CgroupPath,
		ProxyAddr4:     c.listen4(),
		ProxyAddr6:     c.listen6(),
		SocketMark:     c.Redirect.SocketMark,
		Interface:      c.Redirect.Interface,
		EnrollAllNetns: c.Redirect.Enroll == "all",
		Logger:         log.With("component", "bpf"),
	}
}

// listen6 is the IPv6 proxy address, or the zero AddrPort.
func (c Config) listen6() netip.AddrPort {
	if c.Proxy.Listen6 == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(c.Proxy.Listen6)
}

// listen4 is the proxy address (IPv4, or any address when redirection is
// off). Validate has checked it.
func (c Config) listen4() netip.AddrPort {
	return netip.MustParseAddrPort(c.Proxy.Listen)
}

// proxyConfig is the proxy part of the configuration.
func (c Config) proxyConfig(router proxy.Router, obs proxy.Observer) (proxy.Config, error) {
	pc := proxy.Config{
		Router:              router,
		Observer:            obs,
		MinConnsPerEndpoint: c.Proxy.MinConnsPerEndpoint,
		MaxConnsPerEndpoint: c.Proxy.MaxConnsPerEndpoint,
	}
	if c.RedirectEnabled() {
		pc.SocketMark = c.Redirect.SocketMark
	}
	if router == nil {
		pc.Router = proxy.StaticRouter{} // validation only
	}
	if err := pc.Validate(); err != nil {
		return pc, fmt.Errorf("proxy: %w", err)
	}
	return pc, nil
}

// zoneConfig is the balancer configuration for a node in localZone.
func (c Config) zoneConfig(localZone string, acct *zone.Accounting) (zone.Config, error) {
	b := c.Balancer
	zc := zone.Config{
		LocalZone:      localZone,
		IgnoreZones:    b.IgnoreZones,
		ZoneDistance:   b.ZoneDistance,
		ZoneClients:    b.ZoneClients,
		Accounting:     acct,
		Decay:          time.Duration(b.Decay),
		ProbeAfter:     time.Duration(b.ProbeAfter),
		DefaultLatency: time.Duration(b.DefaultLatency),
		SlowStart:      time.Duration(b.SlowStart),
	}
	if b.MaxEjectedShare != nil {
		zc.Ejection.MaxEjectedShare = *b.MaxEjectedShare
	}
	if b.SpillBudget != "" {
		v, err := zone.ParseSpillBudget(b.SpillBudget)
		if err != nil {
			return zc, fmt.Errorf("balancer.spillBudget: %w", err)
		}
		zc.Spill.Budget = v
	}
	if err := zc.Validate(); err != nil {
		return zc, fmt.Errorf("balancer: %w", err)
	}
	return zc, nil
}

// balancerConfigs returns what builds a balancer configuration for the
// node's zone, charging acct and logging to log.
func (c Config) balancerConfigs(acct *zone.Accounting, log *slog.Logger) func(localZone string) (zone.Config, error) {
	return func(localZone string) (zone.Config, error) {
		zc, err := c.zoneConfig(localZone, acct)
		zc.Logger = log.With("component", "balancer")
		return zc, err
	}
}

// pricePerGB is the configured price of a cross-zone GB.
func (c Config) pricePerGB() float64 {
	if c.Balancer.PricePerGB != nil {
		return *c.Balancer.PricePerGB
	}
	return zone.DefaultPricePerGB
}
