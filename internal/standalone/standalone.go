// Package standalone is the standalone proxy command: one upstream
// service, endpoints and zones from flags, no Kubernetes, no root. Two
// binaries run it: zonelb (as `zonelb proxy`) and zonelb-proxy, which is
// built from cmd/zonelb-proxy with nothing of the node agent, so that a
// standalone proxy's memory is the proxy's (docs/proxy.md, "Memory of the
// process").
package standalone

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/internal/cli"
	"github.com/zonelb/zonelb/internal/pprofmux"
	"github.com/zonelb/zonelb/internal/sockopt"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

const synopsis = `
Run the proxy for one upstream service with explicit endpoints and their
zones: no Kubernetes, no root. Clients connect to --listen with cleartext
HTTP/2 (gRPC) or HTTP/1.1; every request is balanced on its own over the
--to endpoints, preferring those in --zone (Peak-EWMA latency, power of two
choices; other zones take only what the local zone cannot). Other protocols
are relayed as opaque TCP to one endpoint per connection, unless --protocol
h2 says clients speak HTTP/2 only: then a connection that does not start
with the HTTP/2 preface is refused (GOAWAY), as RFC 9113 asks. SIGTERM or
SIGINT drains: GOAWAY to clients, in-flight requests finish within
--drain-timeout.

Example:
  %s --listen 127.0.0.1:15001 --zone zone-a \
    --to zone-a=127.0.0.1:9001 --to zone-b=127.0.0.1:9002`

// endpointFlags collects repeated --to ZONE=IP:PORT flags.
type endpointFlags []zone.Endpoint

func (e *endpointFlags) String() string {
	parts := make([]string, len(*e))
	for i, ep := range *e {
		parts[i] = ep.Zone + "=" + ep.Addr.String()
	}
	return strings.Join(parts, ",")
}

func (e *endpointFlags) Set(v string) error {
	zoneName, addr, found := strings.Cut(v, "=")
	if !found {
		zoneName, addr = "", v
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("endpoint %q: want [ZONE=]IP:PORT", v)
	}
	for _, ep := range *e {
		if ep.Addr == ap {
			return fmt.Errorf("endpoint %s given twice", ap)
		}
	}
	*e = append(*e, zone.Endpoint{Addr: ap, Zone: zoneName, Ready: true, Serving: true})
	return nil
}

// zoneClientsFlag is --zone-clients: how the clients spread over zones,
// as ZONE=N pairs (zone.Config.ZoneClients).
type zoneClientsFlag map[string]float64

func (z *zoneClientsFlag) String() string {
	if z == nil || len(*z) == 0 {
		return ""
	}
	parts := make([]string, 0, len(*z))
	for name, n := range *z {
		parts = append(parts, name+"="+strconv.FormatFloat(n, 'g', -1, 64))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (z *zoneClientsFlag) Set(v string) error {
	m := make(map[string]float64)
	for _, pair := range strings.Split(v, ",") {
		name, num, ok := strings.Cut(strings.TrimSpace(pair), "=")
		n, err := strconv.ParseFloat(num, 64)
		if !ok || name == "" || err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n < 0 {
			return fmt.Errorf("%q: want ZONE=N pairs with N >= 0, such as a=3,b=3,c=2", pair)
		}
		if _, dup := m[name]; dup {
			return fmt.Errorf("zone %q given twice", name)
		}
		m[name] = n
	}
	*z = m
	return nil
}

// proxyFlags are the flags of `zonelb proxy`.
type proxyFlags struct {
	listen, localZone, service, admin string
	drain                             time.Duration
	minConns, maxConns, streamWindow  int
	protocol                          string
	ignoreZones                       bool
	spillBudget                       string
	price                             float64
	endpoints                         endpointFlags
	zoneClients                       zoneClientsFlag
	logs                              cli.LogFlags
}

func (f *proxyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", "127.0.0.1:15001", "address to accept client connections on")
	fs.StringVar(&f.localZone, "zone", "", "this proxy's zone: endpoints in it are preferred")
	fs.StringVar(&f.service, "service", "default", "service name used in logs and metrics")
	fs.StringVar(&f.admin, "admin", "", "address for /debug/pprof/ and /debug/stats (empty: off)")
	fs.DurationVar(&f.drain, "drain-timeout", 30*time.Second, "how long in-flight requests may finish after SIGTERM")
	fs.IntVar(&f.minConns, "min-conns-per-endpoint", proxy.DefaultMinConnsPerEndpoint, "upstream connections kept per endpoint (raise for servers that balance by connection)")
	fs.IntVar(&f.maxConns, "max-conns-per-endpoint", proxy.DefaultMaxConnsPerEndpoint, "upstream connections allowed per endpoint")
	fs.IntVar(&f.streamWindow, "stream-window", proxy.DefaultStreamWindow, "HTTP/2 flow-control window per stream, bytes (bounds memory per stream)")
	fs.StringVar(&f.protocol, "protocol", "auto", "what clients speak: auto (HTTP/2, HTTP/1.1 or opaque TCP, told apart by the first bytes) or h2 (HTTP/2 with prior knowledge only)")
	fs.BoolVar(&f.ignoreZones, "ignore-zones", false, "balance over all endpoints by latency alone, ignoring zones")
	fs.StringVar(&f.spillBudget, "spill-budget", zone.FormatSpillBudget(zone.DefaultSpillBudget),
		"how far the local zone's latency may rise above its unloaded level before requests spill to other zones (a percentage), parity, or latency")
	fs.Float64Var(&f.price, "price-per-gb", zone.DefaultPricePerGB, "USD per GB (10^9 bytes) crossing zones, charged on each side (for the cost estimate)")
	fs.Var(&f.endpoints, "to", "endpoint as ZONE=IP:PORT (repeatable; ZONE may be omitted)")
	fs.Var(&f.zoneClients, "zone-clients", "how the clients spread over zones, as ZONE=N pairs (a=3,b=3,c=2): spilled requests go to the zones with room, endpoints less clients (default: over the other zones' endpoints alike)")
	f.logs.Register(fs)
}

// proxyGCPercent is the collector's GOGC for `zonelb proxy` when the
// environment does not set GOGC. The proxy's live heap is under 1 MB, so
// what sets its resident memory is the collector's minimum heap target,
// 4 MB x GOGC/100, which the heap grows to between cycles: 70 makes it
// 2.8 MB. It costs about as many collections per call as 100 did before
// the engine's bytes per call were halved (1850 -> 945 B): at 5000 gRPC
// calls/s, 13 cycles per 25,000 calls where the earlier build at 100 ran
// 15 or 16; peak RSS after 1000 calls/s is 19.8 MiB instead of 21.1
// (docs/proxy.md, "Memory of the process").
const proxyGCPercent = 70

// setProxyGC applies proxyGCPercent unless getenv("GOGC") is set, in
// which case the runtime has already applied the operator's choice.
func setProxyGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(proxyGCPercent)
	}
}

// Run runs the command called name ("zonelb proxy" or "zonelb-proxy") with
// args until SIGTERM or SIGINT has drained it, and returns the process's
// exit status: 0, 1 on a runtime failure, 2 on bad usage.
func Run(name string, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet(name)
	var f proxyFlags
	f.register(fs)
	if code, done := cli.Parse(fs, fmt.Sprintf(synopsis, name), args, stdout, stderr); done {
		return code
	}
	setProxyGC(os.Getenv)
	if len(f.endpoints) == 0 {
		return cli.UsageError(stderr, name, "no endpoints: give at least one --to ZONE=IP:PORT")
	}
	var proto proxy.Protocol
	switch f.protocol {
	case "auto":
	case "h2":
		proto = proxy.ProtocolHTTP2
	default:
		return cli.UsageError(stderr, name, "--protocol %q: want auto or h2", f.protocol)
	}
	if _, err := netip.ParseAddrPort(f.listen); err != nil {
		return cli.UsageError(stderr, name, "--listen %q: want IP:PORT", f.listen)
	}
	log, err := f.logs.Logger(stderr)
	if err != nil {
		return cli.UsageError(stderr, name, "%v", err)
	}
	acct, err := zone.NewAccounting(f.price)
	if err != nil {
		return cli.UsageError(stderr, name, "--price-per-gb: %v", err)
	}
	p, err := f.newProxy(acct, proto, log)
	if err != nil {
		return cli.UsageError(stderr, name, "%v", err)
	}
	if err := f.serve(p, log); err != nil {
		return 1
	}
	log.Info("stopped", "stats", fmt.Sprintf("%+v", p.Stats()))
	for _, u := range acct.Usage() {
		if u.Requests > 0 {
			log.Info("traffic by zone pair", "from", u.From, "to", u.To, "requests", u.Requests,
				"bytes_sent", u.BytesSent, "bytes_received", u.BytesReceived, "cross_zone", u.CrossZone, "cost_usd", u.CostUSD)
		}
	}
	return 0
}

// newProxy builds the balancer over the --to endpoints and the proxy.
func (f *proxyFlags) newProxy(acct *zone.Accounting, proto proxy.Protocol, log *slog.Logger) (*proxy.Proxy, error) {
	bal, err := f.newBalancer(acct, log)
	if err != nil {
		return nil, err
	}
	return proxy.New(proxy.Config{
		Router:              proxy.StaticRouter{Service: f.service, Picker: bal, Protocol: proto},
		Logger:              log,
		MinConnsPerEndpoint: f.minConns,
		MaxConnsPerEndpoint: f.maxConns,
		StreamWindow:        f.streamWindow,
	})
}

// newBalancer builds the balancer over the --to endpoints.
func (f *proxyFlags) newBalancer(acct *zone.Accounting, log *slog.Logger) (*zone.Balancer, error) {
	budget, err := zone.ParseSpillBudget(f.spillBudget)
	if err != nil {
		return nil, fmt.Errorf("--spill-budget: %w", err)
	}
	zc := zone.Config{
		LocalZone:   f.localZone,
		IgnoreZones: f.ignoreZones,
		ZoneClients: f.zoneClients,
		Accounting:  acct,
		Logger:      log.With("component", "balancer"),
	}
	zc.Spill.Budget = budget
	bal, err := zone.NewBalancer(zc)
	if err != nil {
		return nil, err
	}
	bal.Update(f.endpoints)
	return bal, nil
}

// serve runs p on --listen (and the admin endpoints) until SIGTERM or
// SIGINT, then drains. The error, already logged, says it stopped early.
func (f *proxyFlags) serve(p *proxy.Proxy, log *slog.Logger) error {
	// MPTCP off: the node's BPF liveness map (a SOCKMAP) refuses MPTCP
	// sockets, and the proxy gains nothing from it on a node.
	l, err := sockopt.ListenConfig().Listen(context.Background(), "tcp", f.listen)
	if err != nil {
		log.Error("listen failed", "addr", f.listen, "err", err)
		return err
	}
	log.Info("proxy listening", "addr", l.Addr().String(), "zone", f.localZone, "service", f.service, "endpoints", f.endpoints.String())
	if f.admin != "" {
		stop, err := serveAdmin(f.admin, p, log)
		if err != nil {
			log.Error("admin listener failed", "addr", f.admin, "err", err)
			return err
		}
		defer stop()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- p.Serve(l) }()
	select {
	case err := <-serveErr:
		log.Error("proxy stopped", "err", err)
		if err == nil {
			err = errors.New("proxy stopped serving")
		}
		return err
	case <-ctx.Done():
	}
	log.Info("draining", "timeout", f.drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	if err := p.Shutdown(dctx); err != nil {
		log.Warn("drain cut short", "err", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, proxy.ErrClosed) {
		log.Warn("serve ended", "err", err)
	}
	return nil
}

// serveAdmin serves pprof and the proxy's counters on addr.
func serveAdmin(addr string, p *proxy.Proxy, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	pprofmux.Register(mux)
	mux.HandleFunc("/debug/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Stats())
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("admin server stopped", "err", err)
		}
	}()
	log.Info("admin listening", "addr", l.Addr().String())
	return func() { srv.Close() }, nil
}
