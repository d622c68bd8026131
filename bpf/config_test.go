package bpf

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	base := Config{ProxyAddr4: netip.MustParseAddrPort("169.254.20.11:15001")}
	root := func() (string, error) { return "/sys/fs/cgroup/unified", nil }
	c, err := base.withDefaults().withCgroupRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	if c.PinDir != DefaultPinDir || c.CgroupPath != "/sys/fs/cgroup/unified" || c.Interface != DefaultInterface ||
		c.SocketMark != DefaultSocketMark || c.OriginalDstAttempts != DefaultOriginalDstAttempts || c.Logger == nil ||
		c.HostNetns != "/proc/self/ns/net" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}

	bad := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no proxy", func(c *Config) { c.ProxyAddr4 = netip.AddrPort{} }, "proxy IPv4"},
		{"v6 as proxy4", func(c *Config) { c.ProxyAddr4 = netip.MustParseAddrPort("[fd00::1]:1") }, "proxy IPv4"},
		{"no port", func(c *Config) { c.ProxyAddr4 = netip.MustParseAddrPort("169.254.20.11:0") }, "proxy IPv4"},
		{"unspecified", func(c *Config) { c.ProxyAddr4 = netip.MustParseAddrPort("0.0.0.0:1") }, "unspecified"},
		{"link-local v6", func(c *Config) { c.ProxyAddr6 = netip.MustParseAddrPort("[fe80::1]:1") }, "link-local"},
		{"mapped v6", func(c *Config) { c.ProxyAddr6 = netip.MustParseAddrPort("[::ffff:1.2.3.4]:1") }, "native IPv6"},
		{"relative pin dir", func(c *Config) { c.PinDir = "zonelb" }, "pin dir"},
		{"root pin dir", func(c *Config) { c.PinDir = "/" }, "pin dir"},
		{"long interface", func(c *Config) { c.Interface = "a-very-long-interface" }, "interface"},
		{"relative cgroup", func(c *Config) { c.CgroupPath = "x" }, "cgroup"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := c
			b.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("Validate() = %v, want an error about %q", err, b.want)
			}
		})
	}
}

func TestKeyEncodingRoundTrips(t *testing.T) {
	for _, s := range []string{"198.18.0.10:80", "[fd00:96::10]:443", "[::ffff:198.18.0.10]:80"} {
		ap := netip.MustParseAddrPort(s)
		got := serviceKey(ap).addrPort()
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if got != want {
			t.Errorf("service key %s round-trips to %s, want %s", s, got, want)
		}
	}
	// The C side reads ports and addresses as network-order bytes.
	k := serviceKey(netip.MustParseAddrPort("1.2.3.4:258"))
	if portHost(k.Port) != 258 || wordsAddr(k.Addr, k.Family) != netip.MustParseAddr("1.2.3.4") {
		t.Errorf("bad encoding %+v", k)
	}
	if k.Family != familyV4 || serviceKey(netip.MustParseAddrPort("[::1]:1")).Family != familyV6 {
		t.Errorf("family tags wrong")
	}
	tk := tupleKey(netip.MustParseAddrPort("[::ffff:198.19.1.2]:40000"), netip.MustParseAddrPort("169.254.20.11:15001"))
	if tk.Family != familyV4 || portHost(tk.ClientPort) != 40000 || portHost(tk.ProxyPort) != 15001 {
		t.Errorf("tuple key for a v4-mapped accepted socket must be IPv4: %+v", tk)
	}
}
