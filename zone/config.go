package zone

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"
)

// Config tunes a Balancer. The zero value of every field means its
// documented default, so Config{LocalZone: "eu-west-1a"} is a complete
// configuration. Where "none" or "off" must be expressible for a field
// whose default is not zero, a negative value means it.
type Config struct {
	// LocalZone is the zone of the node the balancer runs on. "" means
	// unknown: the balancer then cannot prefer a zone and balances across
	// all endpoints.
	LocalZone string

	// IgnoreZones turns zone preference off: one Peak-EWMA P2C pool over
	// every endpoint ("zone-blind"). Accounting still records zones.
	IgnoreZones bool

	// ZoneDistance ranks the other zones for spillover: traffic that
	// leaves the local zone goes to the zones of the smallest distance
	// that have endpoints. Zones not listed (and endpoints without a
	// zone, listed under "") have distance 1, so by default all other
	// zones are equal. Values must be >= 1; the local zone's entry, if
	// any, is ignored.
	ZoneDistance map[string]int

	// ZoneClients is how the service's clients spread over the zones (any
	// unit: client nodes, or their capacity), for where spilled requests
	// go: with it, a tier of several zones takes them by residual
	// capacity, each zone weighted by its share of the usable endpoints
	// less its share of the clients (none when that is 0 or less), as
	// Envoy's zone-aware routing does; a zone that serves as many
	// clients as it has endpoints for has no room for another zone's.
	// Without it, or when the weights only restate the endpoint counts,
	// the spill goes to P2C's choice over the whole tier, and so lands on
	// each zone about in proportion to its endpoints, whatever its own
	// clients load it with. Zones not listed have no clients. Values must
	// be finite and >= 0. See docs/zone-balancing.md ("Where the spill
	// goes").
	ZoneClients map[string]float64

	// Now returns the current time. Default: the monotonic clock (as
	// time.Since, which reads one clock instead of time.Now's two).
	// Everything that depends on time (decay, backoff, slow start,
	// spillover control) reads it through this function.
	Now func() time.Time

	// Rand is the source of randomness for choosing endpoints, spilling
	// and backoff jitter. It must be safe for concurrent use when the
	// balancer is used from several goroutines. Default: the runtime's
	// per-thread generator (math/rand/v2's top-level functions).
	Rand rand.Source

	// Logger receives ejection and spillover events. Default: discard.
	Logger *slog.Logger

	// Accounting receives the bytes each request moved, by (source zone,
	// destination zone). Share one Accounting among all balancers of a
	// node. Default: a private Accounting at DefaultPricePerGB.
	Accounting *Accounting

	// Decay is the Peak-EWMA decay time (not a half-life): a latency
	// sample below the estimate moves it with weight 1-exp(-elapsed/Decay),
	// and an estimate without samples fades as exp(-elapsed/Decay).
	// Default 10s.
	Decay time.Duration

	// ProbeAfter bounds how long Peak-EWMA can starve an endpoint: when
	// P2C's loser has nothing in flight and has not answered for
	// ProbeAfter, it takes the request instead (a probe, one at a time),
	// and a probe's answer below half the estimate replaces it. Without
	// this, one slow sample (a 1s pause) prices a healthy endpoint out
	// until the peak fades below its rivals, Decay x ln(ratio): over a
	// minute at a 1000x ratio, since P2C over two endpoints always
	// compares the same pair. Each probe that does not find the endpoint
	// changed doubles the wait, up to 3 x Decay, so a truly slow endpoint
	// still gets almost nothing. Default 100ms; negative disables probes.
	ProbeAfter time.Duration

	// DefaultLatency is the estimate a new (or returning) endpoint starts
	// with, so that it is not taken for free. Default 30ms.
	DefaultLatency time.Duration

	// SlowStart is the window over which a new or returning endpoint's
	// weight ramps linearly from SlowStartMinWeight to its full weight.
	// Default 10s; negative disables slow start.
	SlowStart time.Duration

	// SlowStartMinWeight is the share of its weight an endpoint has at the
	// start of slow start, in (0, 1]. Default 0.1.
	SlowStartMinWeight float64

	// FailurePenalty: a failed request (Failure, NotReached) counts as a
	// latency sample of the larger of its TTFB and the current estimate,
	// plus FailurePenalty, so that an endpoint that fails fast never looks
	// fast while ejection decides. Additive rather than a factor, so that a
	// run of failures raises the estimate linearly, not geometrically.
	// Default 250ms; negative means none.
	FailurePenalty time.Duration

	// OverloadPenalty: an Overloaded response (HTTP 429, gRPC
	// RESOURCE_EXHAUSTED) counts like a failure with this penalty, but
	// never toward ejection: it is load, not ill health. Default 1s;
	// negative means none.
	OverloadPenalty time.Duration

	Ejection EjectionConfig
	Spill    SpillConfig
}

// EjectionConfig tunes passive health checking.
type EjectionConfig struct {
	// ConsecutiveFailures ejects an endpoint after this many failures
	// (Failure or NotReached) in a row. Default 5; negative disables
	// ejection. An endpoint back from ejection is on probation: its first
	// failure ejects it again with a doubled backoff.
	ConsecutiveFailures int

	// BaseBackoff is the first ejection's duration; each ejection in a row
	// doubles it, up to MaxBackoff. Defaults 1s and 1m.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration

	// Jitter spreads each backoff uniformly over [1-Jitter, 1+Jitter]
	// times its nominal value, so that endpoints ejected together do not
	// return together. In [0, 1). Default 0.25; negative means none.
	Jitter float64

	// MaxEjectedShare caps the ejected endpoints at this share of the
	// service's endpoints (rounded down): with one endpoint, or when most
	// fail at once, ejecting would only move the problem. In [0, 1].
	// Default 0.5, enough to eject a whole zone out of two. Negative means
	// 0 (never eject).
	MaxEjectedShare float64
}

// SpillConfig tunes load-aware spillover out of the local zone. See
// docs/zone-balancing.md for the rule and the reasoning behind each
// default.
type SpillConfig struct {
	// Budget is the spill rule in one number: how far the local zone's
	// latency level (mean time to first byte) may rise above its own
	// unloaded level, as a share of that level, before requests spill.
	// 0.5 lets the local level reach 1.5x its unloaded level; only the
	// requests that would push it further go to other zones, and never
	// to zones slower than the local one. Default DefaultSpillBudget.
	// Negative selects the parity rule instead (ParityBudget): keep
	// requests local until the local level reaches TargetRatio times the
	// remote zones' (OnRatio, TargetRatio and ProbeShare apply only to
	// it); LatencyBudget selects the latency rule, the far end of the
	// budgets: no preference for the local zone beyond its measured
	// latency. See ParseSpillBudget for the text form.
	Budget float64

	// Interval is the control period: how often zone latency levels are
	// refreshed and the spill share adjusted. Default 100ms.
	Interval time.Duration

	// OnRatio (parity rule only): spillover starts when the local zone's
	// latency level exceeds OnRatio times the level of the nearest other
	// zones. Default 1.25. Must be >= TargetRatio: the gap is the
	// hysteresis.
	OnRatio float64

	// TargetRatio (parity rule only): while spilling, the share spilled
	// is adjusted so that the local level sits at TargetRatio times the
	// remote level; when the local zone keeps below it, the share
	// shrinks to zero and spillover stops. Default 1.0.
	TargetRatio float64

	// Gain is the controller's speed: the spill share is multiplied by
	// exp(Gain x error x seconds), the error (local level over the
	// budgeted level, or over the remote level times TargetRatio, minus
	// 1) capped to [-1, 1]. Default 2 (4 oscillates on a queue model: the
	// latency it reads lags the load by the queueing delay).
	Gain float64

	// InitialShare is the share spilled when spillover starts, MinShare
	// the share below which it stops, MaxShare the most ever spilled
	// while the local zone has usable endpoints (the rest keeps the local
	// latency level measured). Defaults 0.02, 0.005, 0.95.
	InitialShare, MinShare, MaxShare float64

	// Samples, StaleAfter and LevelTime shape zone latency levels. Each
	// control period, the n requests completed in a zone move its fast
	// level toward their mean latency with weight n/(n+w), w the samples
	// behind the level (at most Samples), which fade by exp(-t/StaleAfter).
	// A zone's level is used once Samples requests completed there (until
	// then a gate assumes parity and does not open); a closed gate probes
	// the level behind it while that level rests on fewer than Samples
	// recent samples. The slow level, used to switch spillover on and off,
	// averages the fast one over LevelTime. Defaults 20, 30s, 1s.
	Samples    int
	StaleAfter time.Duration
	LevelTime  time.Duration

	// ProbeShare (parity rule only): while the level behind a closed
	// gate is stale, at most one request in 1/ProbeShare is sent there to
	// measure it; while it is not known yet (fewer than Samples requests
	// ever), one in 10. Default 0.001; negative disables probing. The
	// budget rule needs no probes: it learns a remote level only once the
	// local zone is over budget, from the requests it then spills.
	ProbeShare float64
}

// Defaults, exported so that documentation, flags and tests can name them.
const (
	DefaultDecay              = 10 * time.Second
	DefaultDefaultLatency     = 30 * time.Millisecond
	DefaultProbeAfter         = 100 * time.Millisecond
	DefaultSlowStart          = 10 * time.Second
	DefaultSlowStartMinWeight = 0.1
	DefaultFailurePenalty     = 250 * time.Millisecond
	DefaultOverloadPenalty    = time.Second

	DefaultConsecutiveFailures = 5
	DefaultBaseBackoff         = time.Second
	DefaultMaxBackoff          = time.Minute
	DefaultJitter              = 0.25
	DefaultMaxEjectedShare     = 0.5

	DefaultSpillBudget       = 0.5
	DefaultSpillInterval     = 100 * time.Millisecond
	DefaultSpillOnRatio      = 1.25
	DefaultSpillTargetRatio  = 1.0
	DefaultSpillGain         = 2.0
	DefaultSpillInitialShare = 0.02
	DefaultSpillMinShare     = 0.005
	DefaultSpillMaxShare     = 0.95
	DefaultSpillLevelTime    = time.Second
	DefaultSpillSamples      = 20
	DefaultSpillStaleAfter   = 30 * time.Second
	DefaultSpillProbeShare   = 0.001
)

// withDefaults returns c with every zero field replaced by its default and
// every negative "none" marker resolved.
func (c Config) withDefaults() Config {
	if c.Rand == nil {
		c.Rand = runtimeSource{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setDur(&c.Decay, DefaultDecay)
	setDur(&c.DefaultLatency, DefaultDefaultLatency)
	setDurOrNone(&c.ProbeAfter, DefaultProbeAfter)
	setDur(&c.SlowStart, DefaultSlowStart)
	setFloat(&c.SlowStartMinWeight, DefaultSlowStartMinWeight)
	setDurOrNone(&c.FailurePenalty, DefaultFailurePenalty)
	setDurOrNone(&c.OverloadPenalty, DefaultOverloadPenalty)

	e := &c.Ejection
	if e.ConsecutiveFailures == 0 {
		e.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	setDur(&e.BaseBackoff, DefaultBaseBackoff)
	setDur(&e.MaxBackoff, DefaultMaxBackoff)
	switch {
	case e.Jitter == 0:
		e.Jitter = DefaultJitter
	case e.Jitter < 0:
		e.Jitter = 0
	}
	switch {
	case e.MaxEjectedShare == 0:
		e.MaxEjectedShare = DefaultMaxEjectedShare
	case e.MaxEjectedShare < 0:
		e.MaxEjectedShare = 0
	}

	s := &c.Spill
	setFloat(&s.Budget, DefaultSpillBudget)
	setDur(&s.Interval, DefaultSpillInterval)
	setFloat(&s.OnRatio, DefaultSpillOnRatio)
	setFloat(&s.TargetRatio, DefaultSpillTargetRatio)
	setFloat(&s.Gain, DefaultSpillGain)
	setFloat(&s.InitialShare, DefaultSpillInitialShare)
	setFloat(&s.MinShare, DefaultSpillMinShare)
	setFloat(&s.MaxShare, DefaultSpillMaxShare)
	setDur(&s.LevelTime, DefaultSpillLevelTime)
	if s.Samples == 0 {
		s.Samples = DefaultSpillSamples
	}
	setDur(&s.StaleAfter, DefaultSpillStaleAfter)
	switch {
	case s.ProbeShare == 0:
		s.ProbeShare = DefaultSpillProbeShare
	case s.ProbeShare < 0:
		s.ProbeShare = 0
	}
	return c
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// setDurOrNone applies the default to 0 and turns a negative "none" into 0.
func setDurOrNone(d *time.Duration, def time.Duration) {
	switch {
	case *d == 0:
		*d = def
	case *d < 0:
		*d = 0
	}
}

func setFloat(f *float64, def float64) {
	if *f == 0 {
		*f = def
	}
}

// validateZones reports the bad entries of ZoneDistance and ZoneClients
// to bad (see Validate).
func (c Config) validateZones(bad func(field string, v any, want string)) {
	for z, d := range c.ZoneDistance {
		if z != c.LocalZone && d < 1 {
			bad(fmt.Sprintf("ZoneDistance[%q]", z), d, ">= 1")
		}
	}
	for z, n := range c.ZoneClients {
		if math.IsNaN(n) || math.IsInf(n, 0) || n < 0 {
			bad(fmt.Sprintf("ZoneClients[%q]", z), n, "finite and >= 0")
		}
	}
}

// Validate reports every field of c, after defaults, that is out of range.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("zone config: %s = %v, want %s", field, v, want))
	}
	positiveDur := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, d, "> 0")
		}
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

	positiveDur("Decay", c.Decay)
	positiveDur("DefaultLatency", c.DefaultLatency)
	if w := c.SlowStartMinWeight; !finite(w) || w <= 0 || w > 1 {
		bad("SlowStartMinWeight", w, "in (0, 1]")
	}
	c.validateZones(bad)

	e := c.Ejection
	positiveDur("Ejection.BaseBackoff", e.BaseBackoff)
	positiveDur("Ejection.MaxBackoff", e.MaxBackoff)
	if e.MaxBackoff < e.BaseBackoff {
		bad("Ejection.MaxBackoff", e.MaxBackoff, fmt.Sprintf(">= BaseBackoff (%v)", e.BaseBackoff))
	}
	if j := e.Jitter; !finite(j) || j >= 1 {
		bad("Ejection.Jitter", j, "in [0, 1)")
	}
	if m := e.MaxEjectedShare; !finite(m) || m > 1 {
		bad("Ejection.MaxEjectedShare", m, "in [0, 1]")
	}

	s := c.Spill
	if b := s.Budget; !finite(b) || b > MaxSpillBudget {
		bad("Spill.Budget", b, fmt.Sprintf("<= %v (or negative for the parity or latency rule)", MaxSpillBudget))
	}
	positiveDur("Spill.Interval", s.Interval)
	positiveDur("Spill.StaleAfter", s.StaleAfter)
	positiveDur("Spill.LevelTime", s.LevelTime)
	if r := s.TargetRatio; !finite(r) || r <= 0 {
		bad("Spill.TargetRatio", r, "> 0")
	}
	if r := s.OnRatio; !finite(r) || r < s.TargetRatio {
		bad("Spill.OnRatio", r, fmt.Sprintf(">= TargetRatio (%v)", s.TargetRatio))
	}
	if g := s.Gain; !finite(g) || g <= 0 {
		bad("Spill.Gain", g, "> 0")
	}
	shares := []struct {
		name string
		v    float64
	}{{"Spill.MinShare", s.MinShare}, {"Spill.InitialShare", s.InitialShare}, {"Spill.MaxShare", s.MaxShare}}
	for _, sh := range shares {
		if !finite(sh.v) || sh.v <= 0 || sh.v > 1 {
			bad(sh.name, sh.v, "in (0, 1]")
		}
	}
	if !(s.MinShare <= s.InitialShare && s.InitialShare <= s.MaxShare) {
		bad("Spill shares", fmt.Sprintf("min %v, initial %v, max %v", s.MinShare, s.InitialShare, s.MaxShare),
			"MinShare <= InitialShare <= MaxShare")
	}
	if s.Samples < 1 {
		bad("Spill.Samples", s.Samples, ">= 1")
	}
	if p := s.ProbeShare; !finite(p) || p > 1 {
		bad("Spill.ProbeShare", p, "in [0, 1]")
	}
	return errors.Join(errs...)
}

// runtimeSource draws from the runtime's per-thread generator: safe for
// concurrent use and without a shared lock.
type runtimeSource struct{}

func (runtimeSource) Uint64() uint64 { return rand.Uint64() }
