package sim

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Pause is a stall of the whole node for For from At (simulated time):
// on a busy machine the scheduler, another tenant or the kernel takes
// the CPU away from everything that runs on it for tens of milliseconds
// at a time. Which parts of the node it stops is the Model's choice
// (PauseProxy, PauseEndpoints).
type Pause struct {
	At, For time.Duration
}

// PauseOrder is the order in which the node proxy handles, when a pause
// ends, the work that reached it during the pause: new requests and
// responses wait in its sockets alike, and the pause decides nothing of
// the order in which it reads them.
type PauseOrder int

const (
	// Interleaved handles them in a seeded random order.
	Interleaved PauseOrder = iota
	// ArrivalsFirst picks every new request before it reads any waiting
	// response: the in-flight counts the picks see are the highest the
	// pause can make them.
	ArrivalsFirst
)

// Pauses returns a seeded schedule of pauses from from to to: a Poisson
// number of perSecond a second, each lasting between shortest and
// longest (log-uniform: short ones are the more common), none
// overlapping the previous one.
func Pauses(seed uint64, from, to time.Duration, perSecond float64, shortest, longest time.Duration) []Pause {
	rnd := rand.New(rand.NewPCG(seed, 0x9a05e))
	var out []Pause
	t := from
	for {
		t += time.Duration(rnd.ExpFloat64() / perSecond * float64(time.Second))
		if t >= to {
			return out
		}
		ratio := float64(longest) / float64(shortest)
		d := time.Duration(float64(shortest) * math.Pow(ratio, rnd.Float64()))
		out = append(out, Pause{At: t, For: d})
		t += d
	}
}

// pauses is the engine's view of a pause schedule.
type pauses struct {
	spans     []Pause // sorted by At, not overlapping
	proxy     bool    // the node proxy stops: picks and responses wait
	endpoints bool    // every endpoint stops serving
	order     PauseOrder
	rnd       *rand.Rand // Interleaved order
	held      []event    // proxy work waiting for the pause's end
}

// during returns the end of the pause that covers t, or t when none does.
func (p *pauses) during(t int64) int64 {
	i, _ := slices.BinarySearchFunc(p.spans, t, func(s Pause, t int64) int {
		switch {
		case int64(s.At+s.For) <= t:
			return -1
		case int64(s.At) > t:
			return 1
		}
		return 0
	})
	if i < len(p.spans) && int64(p.spans[i].At) <= t && t < int64(p.spans[i].At+p.spans[i].For) {
		return int64(p.spans[i].At + p.spans[i].For)
	}
	return t
}

// served returns when work of d ns started at t is done on an endpoint
// that makes no progress during the pauses.
func (p *pauses) served(t, d int64) int64 {
	if p == nil || !p.endpoints {
		return t + d
	}
	t = p.during(t)
	for _, s := range p.spans {
		from, to := int64(s.At), int64(s.At+s.For)
		if to <= t {
			continue
		}
		if from >= t+d {
			break
		}
		d -= from - t
		t = to
	}
	return t + d
}

// hold keeps ev, proxy work that falls in a pause, for the pause's end;
// it returns false when ev is not in a pause.
func (e *engine) hold(ev event) bool {
	p := e.pauses
	if p == nil || !p.proxy {
		return false
	}
	end := p.during(ev.at)
	if end == ev.at {
		return false
	}
	if len(p.held) == 0 {
		e.at(time.Duration(end), func(e *engine) { e.release() })
	}
	p.held = append(p.held, ev)
	return true
}

// release hands the proxy what reached it during the pause that just
// ended, in the pause order, all at the same instant.
func (e *engine) release() {
	p := e.pauses
	held := p.held
	p.held = nil
	switch p.order {
	case ArrivalsFirst:
		slices.SortStableFunc(held, func(a, b event) int {
			return cmp.Compare(sendsFirst(a), sendsFirst(b))
		})
	default:
		p.rnd.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	}
	for _, ev := range held {
		e.schedule(e.now, ev.kind, ev.n, ev.r, ev.ep)
	}
}

// sendsFirst orders new requests (evSend) before the rest.
func sendsFirst(ev event) int {
	if ev.kind == evSend {
		return 0
	}
	return 1
}
