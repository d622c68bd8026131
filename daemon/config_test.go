package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/zone"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults(func(k string) string {
		if k == "NODE_NAME" {
			return "node-1"
		}
		return ""
	})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "node-1" || c.Source != "kubernetes" || c.Proxy.Listen != DefaultListen ||
		c.Admin.Address != DefaultAdminAddress || c.Redirect.SocketMark != DefaultSocketMark ||
		c.Redirect.Enroll != "all" || !c.RedirectEnabled() {
		t.Fatalf("defaults: %+v", c)
	}
	off := false
	c = Config{Source: "file:/x", Redirect: RedirectConfig{Enabled: &off}}.WithDefaults(func(string) string { return "" })
	if c.Proxy.Listen != "127.0.0.1:15001" {
		t.Fatalf("without redirection the proxy listens on %s, want loopback", c.Proxy.Listen)
	}
}

// Every bad setting is rejected with an error that names its key.
func TestConfigValidationNamesTheKey(t *testing.T) {
	base := func() Config {
		return Config{NodeName: "n", Source: "kubernetes"}.WithDefaults(func(string) string { return "" })
	}
	for key, mutate := range map[string]func(*Config){
		"source":               func(c *Config) { c.Source = "etcd" },
		"nodeName":             func(c *Config) { c.NodeName = "" },
		"proxy.listen":         func(c *Config) { c.Proxy.Listen = "localhost" },
		"proxy.listen6":        func(c *Config) { c.Proxy.Listen6 = "169.254.1.1:1" },
		"proxy.drainTimeout":   func(c *Config) { c.Proxy.DrainTimeout = -1 },
		"admin.metricsAddress": func(c *Config) { c.Admin.MetricsAddress = ":x" },
		"redirect.enroll":      func(c *Config) { c.Redirect.Enroll = "some" },
		"balancer":             func(c *Config) { c.Balancer.Decay = Duration(-5) },
		"balancer.spillBudget": func(c *Config) { c.Balancer.SpillBudget = "0.5" },
		"proxy:":               func(c *Config) { c.Proxy.MaxConnsPerEndpoint = -1 },
	} {
		c := base()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(key, ":")) {
			t.Errorf("%s: got %v, want an error naming it", key, err)
		}
	}
	link := base()
	link.Proxy.Listen6 = "[fe80::1]:15001"
	if err := link.Validate(); err == nil || !strings.Contains(err.Error(), "link-local") {
		t.Errorf("fe80:: proxy address: got %v, want a link-local error", err)
	}
	ok := base()
	ok.Proxy.Listen6 = "[fd7a:6c62::11]:15001"
	if err := ok.Validate(); err != nil {
		t.Errorf("ULA proxy address rejected: %v", err)
	}
}

// Unknown keys in the file are errors, not silently ignored.
func TestConfigFileIsStrict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("proxy:\n  lisen: 1.2.3.4:5\n"), 0o644)
	if _, err := LoadConfigFile(path); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("misspelt key: got %v", err)
	}
	os.WriteFile(path, []byte("proxy: {drainTimeout: soon}\n"), 0o644)
	if _, err := LoadConfigFile(path); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("bad duration: got %v", err)
	}
}

// The spill budget is a percentage, "parity" or "latency"; it reaches every
// balancer's configuration, and its absence leaves zone's default.
func TestConfigSpillBudget(t *testing.T) {
	base := Config{NodeName: "n", Source: "kubernetes"}.WithDefaults(func(string) string { return "" })
	for in, want := range map[string]float64{"": 0, "80%": 0.8, "parity": zone.ParityBudget, "latency": zone.LatencyBudget} {
		c := base
		c.Balancer.SpillBudget = in
		zc, err := c.zoneConfig("a", nil)
		if err != nil || zc.Spill.Budget != want {
			t.Errorf("spillBudget %q: budget %v, %v; want %v", in, zc.Spill.Budget, err, want)
		}
	}
	for _, bad := range []string{"80", "-5%", "lots"} {
		c := base
		c.Balancer.SpillBudget = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "balancer.spillBudget") {
			t.Errorf("spillBudget %q: %v, want an error naming balancer.spillBudget", bad, err)
		}
	}
}

// The Peak-EWMA probe gap reaches every balancer's configuration as
// written (zero: zone's default; negative: no probes, zone.Config's
// convention), from the file too.
func TestConfigProbeAfter(t *testing.T) {
	base := Config{NodeName: "n", Source: "kubernetes"}.WithDefaults(func(string) string { return "" })
	for _, d := range []time.Duration{0, time.Second, -time.Second} {
		c := base
		c.Balancer.ProbeAfter = Duration(d)
		zc, err := c.zoneConfig("a", nil)
		if err != nil || zc.ProbeAfter != d {
			t.Errorf("probeAfter %v: zone gets %v, %v", d, zc.ProbeAfter, err)
		}
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("balancer: {probeAfter: 250ms}\n"), 0o644)
	c, err := LoadConfigFile(path)
	if err != nil || time.Duration(c.Balancer.ProbeAfter) != 250*time.Millisecond {
		t.Fatalf("balancer.probeAfter from a file: %v, %v", time.Duration(c.Balancer.ProbeAfter), err)
	}
}

// The clients' spread over zones reaches every balancer's configuration,
// from the file too, and a negative count is refused naming the key.
func TestConfigZoneClients(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("nodeName: n\nbalancer: {zoneClients: {a: 3, b: 3, c: 2.5}}\n"), 0o644)
	c, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithDefaults(func(string) string { return "" })
	zc, err := c.zoneConfig("a", nil)
	if err != nil || len(zc.ZoneClients) != 3 || zc.ZoneClients["c"] != 2.5 {
		t.Fatalf("balancer.zoneClients from a file: zone gets %v, %v", zc.ZoneClients, err)
	}
	// An empty map, unlike none, is configured: the rule is off, the
	// Nodes per zone are not followed (services.applyLocked).
	os.WriteFile(path, []byte("nodeName: n\nbalancer: {zoneClients: {}}\n"), 0o644)
	off, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if zc, err := off.WithDefaults(func(string) string { return "" }).zoneConfig("a", nil); err != nil || zc.ZoneClients == nil || len(zc.ZoneClients) != 0 {
		t.Errorf("balancer.zoneClients {}: zone gets %#v, %v; want an empty map, not nil", zc.ZoneClients, err)
	}
	c.Balancer.ZoneClients["b"] = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "balancer") || !strings.Contains(err.Error(), `ZoneClients["b"]`) {
		t.Errorf("negative zoneClients: %v, want an error naming it", err)
	}
}

// Validate reports every bad setting at once, not only the first.
func TestConfigValidationJoinsEveryError(t *testing.T) {
	c := Config{NodeName: "n", Source: "kubernetes"}.WithDefaults(func(string) string { return "" })
	c.Proxy.Listen = "localhost"
	c.Redirect.Enroll = "some"
	c.Balancer.Decay = Duration(-5)
	err := c.Validate()
	for _, key := range []string{"proxy.listen", "redirect.enroll", "balancer"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("got %v, want an error naming %s", err, key)
		}
	}
}
