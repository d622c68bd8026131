package zone

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigZeroValueIsValid(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	c := Config{}.withDefaults()
	if c.Decay != 10*time.Second || c.DefaultLatency != 30*time.Millisecond ||
		c.Ejection.ConsecutiveFailures != 5 || c.Spill.OnRatio != 1.25 || c.Spill.TargetRatio != 1 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestConfigNegativeMeansNone(t *testing.T) {
	c := Config{FailurePenalty: -1, OverloadPenalty: -1}
	c.Ejection.Jitter = -1
	c.Ejection.MaxEjectedShare = -1
	c.Spill.ProbeShare = -1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c = c.withDefaults()
	if c.FailurePenalty != 0 || c.OverloadPenalty != 0 || c.Ejection.Jitter != 0 ||
		c.Ejection.MaxEjectedShare != 0 || c.Spill.ProbeShare != 0 {
		t.Errorf("negative values not resolved to none: %+v", c)
	}
}

func TestConfigValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"negative decay", func(c *Config) { c.Decay = -time.Second }, "Decay"},
		{"min weight above 1", func(c *Config) { c.SlowStartMinWeight = 2 }, "SlowStartMinWeight"},
		{"zone distance 0", func(c *Config) { c.ZoneDistance = map[string]int{"b": 0} }, `ZoneDistance["b"]`},
		{"negative zone clients", func(c *Config) { c.ZoneClients = map[string]float64{"b": -1} }, `ZoneClients["b"]`},
		{"NaN zone clients", func(c *Config) { c.ZoneClients = map[string]float64{"c": math.NaN()} }, `ZoneClients["c"]`},
		{"max below base backoff", func(c *Config) { c.Ejection.MaxBackoff = time.Millisecond }, "MaxBackoff"},
		{"jitter 1", func(c *Config) { c.Ejection.Jitter = 1 }, "Jitter"},
		{"share above 1", func(c *Config) { c.Ejection.MaxEjectedShare = 1.5 }, "MaxEjectedShare"},
		{"on below target", func(c *Config) { c.Spill.OnRatio = 0.5 }, "OnRatio"},
		{"shares out of order", func(c *Config) { c.Spill.MinShare = 0.5 }, "MinShare <= InitialShare"},
		{"negative samples", func(c *Config) { c.Spill.Samples = -1 }, "Samples"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
			if _, err := NewBalancer(c); err == nil {
				t.Fatalf("NewBalancer accepted an invalid config")
			}
		})
	}
}
