package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/zonelb/zonelb/internal/netlab"
	"github.com/zonelb/zonelb/zone"
)

// Phase is one measured run of a workload.
type Phase struct {
	Name string
	// Window is everything the clients saw.
	Window Window
	// Windows are the snapshots taken along the way, in order.
	Windows []Window
	// UplinkBytes is what crossed the clients' node's uplink (received
	// plus sent, with headers): with one node per zone, exactly the bytes
	// that crossed a zone boundary, whatever path the calls took.
	UplinkBytes uint64
	// ProxyCPU is the CPU time (utime+stime) the node proxy used during
	// the phase: the zonelb daemon or HAProxy, whichever ran (0 without
	// either).
	ProxyCPU time.Duration
	// Elapsed is the phase's wall-clock length.
	Elapsed time.Duration
	// Events are the events that ran, with when they ran (from the
	// phase's start).
	Events []EventMark
}

// EventMark is an event of a phase as it ran.
type EventMark struct {
	Name string
	At   time.Duration
}

// CrossZoneBytesPerSecond is UplinkBytes over the phase.
func (p Phase) CrossZoneBytesPerSecond() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.UplinkBytes) / p.Elapsed.Seconds()
}

// CostPerDay is the cross-zone cost of a day at the phase's byte rate, at
// pricePerGB charged on each side of the crossing (zone.CrossZoneCost).
func (p Phase) CostPerDay(pricePerGB float64) float64 {
	return zone.CrossZoneCost(uint64(p.CrossZoneBytesPerSecond()*86400), pricePerGB)
}

// CPUPerRequest is the proxy's CPU time per successful call.
func (p Phase) CPUPerRequest() time.Duration {
	if p.Window.OK == 0 {
		return 0
	}
	return p.ProxyCPU / time.Duration(p.Window.OK)
}

// PhaseEvent is something to do at a moment of a phase (the live
// scenario: overload a zone, kill pods).
type PhaseEvent struct {
	At   time.Duration
	Name string
	Do   func(ctx context.Context) error
}

// RunPhase starts w in every client pod, snapshots every interval for d
// (running events when due, each right after a snapshot), stops the clients and returns the
// measurements. tick, if set, is called after each snapshot.
func (c *Cluster) RunPhase(ctx context.Context, name string, w Workload, d, interval time.Duration, events []PhaseEvent, tick func(elapsed time.Duration, last Window)) (Phase, error) {
	ph := Phase{Name: name}
	node := c.ClientNode()
	rx0, tx0, err := node.LinkBytes(netlab.Uplink)
	if err != nil {
		return ph, err
	}
	proxyCPU := c.nodeProxyCPU()
	var cpu0 time.Duration
	if proxyCPU != nil {
		cpu0, _ = proxyCPU()
	}
	cs, err := c.StartClients(ctx, w)
	if err != nil {
		return ph, err
	}
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	next := 0
	for time.Since(start) < d {
		select {
		case <-ctx.Done():
			cs.Stop(context.Background())
			return ph, ctx.Err()
		case <-t.C:
		}
		win, err := cs.Snapshot(ctx)
		if err != nil {
			cs.Stop(context.Background())
			return ph, err
		}
		ph.Windows = append(ph.Windows, win)
		if tick != nil {
			tick(time.Since(start), win)
		}
		// Events run right after a snapshot: the window that follows is
		// the first to see them.
		for next < len(events) && time.Since(start) >= events[next].At {
			at := time.Since(start)
			if err := events[next].Do(ctx); err != nil {
				cs.Stop(context.Background())
				return ph, fmt.Errorf("%s: %s: %w", name, events[next].Name, err)
			}
			ph.Events = append(ph.Events, EventMark{Name: events[next].Name, At: at})
			next++
		}
	}
	last, err := cs.Stop(ctx)
	if err != nil {
		return ph, err
	}
	ph.Elapsed = time.Since(start)
	ph.Windows = append(ph.Windows, last)
	ph.Window = Merge(ph.Windows...)
	rx1, tx1, err := node.LinkBytes(netlab.Uplink)
	if err != nil {
		return ph, err
	}
	ph.UplinkBytes = (rx1 - rx0) + (tx1 - tx0)
	if proxyCPU != nil {
		if cpu1, err := proxyCPU(); err == nil {
			ph.ProxyCPU = cpu1 - cpu0
		}
	}
	return ph, nil
}

// nodeProxyCPU returns how to read the running node proxy's CPU time (the
// daemon's or HAProxy's), or nil when neither runs.
func (c *Cluster) nodeProxyCPU() func() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.daemon != nil && !c.daemon.Exited():
		return c.daemon.CPUTime
	case c.haproxy != nil && !c.haproxy.Exited():
		return c.haproxy.CPUTime
	}
	return nil
}

// Daemon returns the daemon started last (nil if none).
func (c *Cluster) Daemon() *Daemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.daemon
}

// WarmUp runs w until the share of calls answered in the clients' zone has
// been at least settled in two consecutive windows of at least 100 calls
// (or limit passes), and returns the windows it saw. A freshly started
// balancer learns the other zones' latency by probing them (see
// docs/zone-balancing.md); measurements of the steady state start after it.
func (c *Cluster) WarmUp(ctx context.Context, w Workload, settled float64, limit time.Duration) ([]Window, error) {
	cs, err := c.StartClients(ctx, w)
	if err != nil {
		return nil, err
	}
	var ws []Window
	good := 0
	deadline := time.Now().Add(limit)
	for good < 2 && time.Now().Before(deadline) {
		if err := SleepCtx(ctx, 500*time.Millisecond); err != nil {
			cs.Stop(context.Background())
			return ws, err
		}
		win, err := cs.Snapshot(ctx)
		if err != nil {
			cs.Stop(context.Background())
			return ws, err
		}
		ws = append(ws, win)
		if win.OK >= 100 && win.Share(ClientZone) >= settled {
			good++
		} else {
			good = 0
		}
	}
	last, err := cs.Stop(ctx)
	ws = append(ws, last)
	if err != nil {
		return ws, err
	}
	if good < 2 {
		return ws, fmt.Errorf("cluster: in-zone share did not settle at %.3f within %v", settled, limit)
	}
	return ws, nil
}
