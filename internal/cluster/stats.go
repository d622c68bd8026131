package cluster

import (
	"maps"
	"regexp"
	"slices"
	"time"
)

// Window is what one or more clients saw between two snapshots.
type Window struct {
	// Start and End are wall-clock times (Unix nanoseconds) of the
	// window, as the client's clock reads them (the same clock as the
	// harness: one machine).
	Start, End int64
	OK, Failed int
	// ByBackend and ByZone count successful calls by the backend (its
	// name) and zone that answered them.
	ByBackend map[string]int
	ByZone    map[string]int
	// BytesByZone counts the request and response payload bytes of
	// successful calls by the answering zone.
	BytesByZone map[string]int64
	// ViaProxy counts successful calls whose backend saw a caller other
	// than the client pod itself (zonelb's node proxy); the others came
	// straight from the pod (kube-proxy's DNAT keeps the source).
	ViaProxy int
	// Dials counts connections the client opened.
	Dials int
	// Skipped counts calls an open-loop client could not start because
	// every one of its Concurrency slots was busy.
	Skipped int
	// LatenciesUS are the successful calls' latencies in microseconds.
	LatenciesUS []int64
	// Failures lists failed calls (at most maxFailures kept per client
	// window; Failed counts them all).
	Failures []Failure
	// Conns lists every connection the client opened, in its last window
	// only (Client.Stop).
	Conns []Conn `json:",omitempty"`
}

// Failure is one failed call.
type Failure struct {
	Start, End int64  // Unix nanoseconds
	ID         string // the call's CallHeader id
	// Conn is the local address of the connection the call was sent on,
	// "" if it never was (e.g. failed fast while the channel was in
	// transient failure).
	Conn string
	Code string // gRPC status code
	Msg  string
}

// upstreamRE finds the endpoint the node proxy names in a failure.
var upstreamRE = regexp.MustCompile(`upstream (\d+\.\d+\.\d+\.\d+:\d+)`)

// Upstream is the endpoint (ip:port) the node proxy names in the
// failure's message, "" if it names none.
func (f Failure) Upstream() string {
	if m := upstreamRE.FindStringSubmatch(f.Msg); m != nil {
		return m[1]
	}
	return ""
}

// OnKilledPod reports whether the call was in flight on a killed backend
// pod: the proxy names the pod's address, and the call started before the
// pod's process was gone (gone maps killed pods' addresses to then).
func (f Failure) OnKilledPod(gone map[string]time.Time) bool {
	u := f.Upstream()
	at, ok := gone[u]
	return u != "" && ok && f.Start < at.UnixNano()
}

// Conn is one client connection.
type Conn struct {
	Local string
	// Remote is where the kernel really sent it: the node proxy's address
	// when the BPF hooks redirected it, else the ClusterIP ("" if unknown).
	Remote string
	// DialStart, Established and Broken (first read or write error; 0 if
	// none) are Unix nanoseconds.
	DialStart, Established, Broken int64
	Err                            string `json:",omitempty"`
}

// Redirected reports whether the connection went to the node proxy.
func (c Conn) Redirected() bool { return c.Remote == ProxyAddr.String() }

// maxFailures bounds the failures a client keeps per window. The soak
// classifies every failure (saveable or not), so it must hold all of a
// window's: 200 was exceeded when a zone failed under load (304 failed,
// 204 kept); a Failure is ~200 bytes, so 5000 is ~1 MB at worst.
const maxFailures = 5000

func newWindow(start time.Time) *Window {
	return &Window{
		Start:       start.UnixNano(),
		ByBackend:   map[string]int{},
		ByZone:      map[string]int{},
		BytesByZone: map[string]int64{},
	}
}

// Merge returns the union of windows (of several clients, or of
// consecutive snapshots).
func Merge(ws ...Window) Window {
	out := Window{ByBackend: map[string]int{}, ByZone: map[string]int{}, BytesByZone: map[string]int64{}}
	for i, w := range ws {
		if i == 0 || w.Start < out.Start {
			out.Start = w.Start
		}
		out.End = max(out.End, w.End)
		out.OK += w.OK
		out.Failed += w.Failed
		out.ViaProxy += w.ViaProxy
		out.Dials += w.Dials
		out.Skipped += w.Skipped
		for k, v := range w.ByBackend {
			out.ByBackend[k] += v
		}
		for k, v := range w.ByZone {
			out.ByZone[k] += v
		}
		for k, v := range w.BytesByZone {
			out.BytesByZone[k] += v
		}
		out.LatenciesUS = append(out.LatenciesUS, w.LatenciesUS...)
		out.Failures = append(out.Failures, w.Failures...)
		out.Conns = append(out.Conns, w.Conns...)
	}
	slices.Sort(out.LatenciesUS)
	return out
}

// Duration is the window's length.
func (w Window) Duration() time.Duration { return time.Duration(w.End - w.Start) }

// Share is the share of successful calls answered in zone.
func (w Window) Share(zone string) float64 {
	if w.OK == 0 {
		return 0
	}
	return float64(w.ByZone[zone]) / float64(w.OK)
}

// ByteShare is the share of payload bytes exchanged with zone.
func (w Window) ByteShare(zone string) float64 {
	var total int64
	for _, v := range w.BytesByZone {
		total += v
	}
	if total == 0 {
		return 0
	}
	return float64(w.BytesByZone[zone]) / float64(total)
}

// Rate is successful calls per second over the window.
func (w Window) Rate() float64 {
	d := w.Duration().Seconds()
	if d <= 0 {
		return 0
	}
	return float64(w.OK) / d
}

// Percentile returns the p-th percentile latency (nearest rank), 0 when
// there is none.
func (w Window) Percentile(p float64) time.Duration {
	lat := w.LatenciesUS
	if len(lat) == 0 {
		return 0
	}
	if !slices.IsSorted(lat) {
		lat = slices.Sorted(slices.Values(lat))
	}
	i := int(p/100*float64(len(lat))+0.999999) - 1
	i = min(max(i, 0), len(lat)-1)
	return time.Duration(lat[i]) * time.Microsecond
}

// Backends returns the names of the backends that answered, sorted.
func (w Window) Backends() []string {
	return slices.Sorted(maps.Keys(w.ByBackend))
}

// FailedSince counts the failures of calls that started at or after t.
func (w Window) FailedSince(t time.Time) int {
	n := 0
	for _, f := range w.Failures {
		if f.Start >= t.UnixNano() {
			n++
		}
	}
	return n
}

// Saveable returns the failures whose call never reached a backend
// (received has no entry for their id) and that inFlight does not excuse
// (a call in flight on a process that a test killed is lost with it, not
// saveable). A failure without an id is saveable: nothing proves it
// reached anyone.
func Saveable(fs []Failure, received map[string]string, inFlight func(Failure) bool) []Failure {
	var out []Failure
	for _, f := range fs {
		if _, ok := received[f.ID]; ok && f.ID != "" {
			continue
		}
		if inFlight != nil && inFlight(f) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// connInMsgRE finds the local address of the connection a grpc-go
// transport error names ("read tcp4 10.244.1.12:39984->10.96.0.10:80").
var connInMsgRE = regexp.MustCompile(`tcp4? (\d+\.\d+\.\d+\.\d+:\d+)->`)

// ConnOf returns the connection a failed call went out on or, for a call
// that never went out (failed fast while its channel was in transient
// failure), the connection whose failure the error names.
func (w Window) ConnOf(f Failure) (Conn, bool) {
	local := f.Conn
	if local == "" {
		if m := connInMsgRE.FindStringSubmatch(f.Msg); m != nil {
			local = m[1]
		}
	}
	if local == "" {
		return Conn{}, false
	}
	// A local address can come back on a later connection (the kernel
	// reuses ports): the call's is the last one dialled before it started,
	// or, if none was, the first listed.
	var best Conn
	found := false
	for _, c := range w.Conns {
		if c.Local != local {
			continue
		}
		if !found {
			best, found = c, true
			continue
		}
		if c.DialStart <= f.Start && (best.DialStart > f.Start || c.DialStart > best.DialStart) {
			best = c
		}
	}
	return best, found
}

// ProxyDeath is one death of the node proxy under load (a SIGKILL, an OOM
// kill, a panic), for telling which failed calls died with it. Times are
// the harness's clock, which the clients share (one machine).
type ProxyDeath struct {
	// Before is just before the death was provoked. Sent is the moment
	// from which the hooks may steer no connect to the proxy (kill(2) has
	// returned, the panic began, ...).
	Before, Sent time.Time
	// Restarted, if set, is when a successor was started: connects from
	// then on may be steered to it. Next, if set, is when the next fault
	// that could break the successor's connections began (a connection
	// broken from then on broke for that reason).
	Restarted, Next time.Time
}

// SteeredAfter lists the connections the kernel sent to the proxy although
// they were dialled after d.Sent (and before the successor started): what
// the hooks must never do.
func (w Window) SteeredAfter(d ProxyDeath) []Conn {
	var out []Conn
	for _, c := range w.Conns {
		if mayBeProxied(c) && c.DialStart >= d.Sent.UnixNano() && (d.Restarted.IsZero() || c.DialStart < d.Restarted.UnixNano()) {
			out = append(out, c)
		}
	}
	return out
}

// LostWith reports whether failed call f was lost with the dying proxy: it
// went out on, or failed with, a connection that a connect begun before
// d.Sent steered to the proxy, and that broke with it (from d.Before on,
// before d.Next). That covers the calls in flight on the proxy, a
// connection the proxy's socket had accepted but whose HTTP/2 preface the
// process had not yet answered (grpc-go then counts a failed connection
// attempt and fails the channel's calls fast until its reconnect backoff
// ends: the kernel completed the handshake for the proxy, and no hook can
// take the connection back), and calls put on the proxy's connection in
// the instant between the reset's arrival and grpc-go closing it.
//
// The break is bounded by d.Next, not by d.Restarted: Broken is when the
// client first read or wrote after the reset, which on a loaded machine
// can come after the dead proxy was reaped and its successor started (a
// connection to the successor cannot have been dialled before d.Sent
// unless its connect stalled past the restart, and then it breaks only at
// the next fault).
func (w Window) LostWith(f Failure, d ProxyDeath) bool {
	c, ok := w.ConnOf(f)
	return ok && mayBeProxied(c) && c.DialStart < d.Sent.UnixNano() && c.Broken >= d.Before.UnixNano() &&
		(d.Next.IsZero() || c.Broken < d.Next.UnixNano())
}

// mayBeProxied: the connection went to the proxy, or its destination is
// unknown because it was reset before the client could read it from
// /proc/net/tcp (a reset socket leaves the table): between a proxy's death
// and the next fault, only the dying proxy resets connections.
func mayBeProxied(c Conn) bool { return c.Redirected() || c.Remote == "" }
