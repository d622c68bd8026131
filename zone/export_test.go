package zone

// Hooks for the external tests (package zone_test), which drive the sim
// package's simulator: sim imports zone, so they cannot be in package zone.

// MakeEndpoints returns n ready endpoints in each of zones, addressed as
// makeEndpoints does.
func MakeEndpoints(n int, zones ...string) []Endpoint {
	spec := make([]zoneSpec, len(zones))
	for i, z := range zones {
		spec[i] = zoneSpec{z, n}
	}
	return makeEndpoints(spec...)
}

// MakeSpread returns counts[i] ready endpoints in zones[i], for each i.
func MakeSpread(zones []string, counts []int) []Endpoint {
	spec := make([]zoneSpec, len(zones))
	for i, z := range zones {
		spec[i] = zoneSpec{z, counts[i]}
	}
	return makeEndpoints(spec...)
}

// SetDoubt sets how many standard errors a remote level is judged above
// its estimate (1 by default; 0 takes remote levels at face value).
func (b *Balancer) SetDoubt(d float64) { b.doubt = d }

// SetZoneProbation turns zone probation (one endpoint at a time probes a
// zone that is down) on or off; it is on by default.
func (b *Balancer) SetZoneProbation(on bool) { b.zoneProbation = on }

// SetQueueLimits turns the queue limit (budget rule: a request whose
// endpoint already has a queue of ours over budget crosses) on or off; it
// is on by default.
func (b *Balancer) SetQueueLimits(on bool) { b.noQueueLimit = !on }
