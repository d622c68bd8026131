package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/internal/sockopt"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// agent is one run of the node agent. start opens the pieces in the order
// traffic needs them and pushes the release of each onto one cleanup
// stack, so that a failure halfway releases exactly what was opened; apply
// takes every discovery snapshot; drain stops new traffic and lets the
// streams in flight finish.
type agent struct {
	opts Options
	cfg  Config
	log  *slog.Logger

	acct    *zone.Accounting
	red     *bpf.Redirector // nil when redirection is off
	svcs    *services
	metrics atomic.Pointer[Metrics]           // set once the first snapshot is in
	direct  atomic.Pointer[frontendListeners] // without BPF only
	px      *proxy.Proxy
	lns     []net.Listener // the proxy's own listeners: IPv4 (or any), then IPv6
	adm     *admin
	reloads atomic.Uint64

	first     chan struct{} // closed by the first applied snapshot
	firstDone atomic.Bool
	srcErr    chan error // discovery's end
	serveErr  chan error // a proxy listener's end
	stopSrc   context.CancelFunc
	drained   bool // the proxy was shut down by drain

	cleanup []func() // run last first by close
}

func newAgent(opts Options) (*agent, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FirstSnapshotTimeout == 0 {
		opts.FirstSnapshotTimeout = 60 * time.Second
	}
	return &agent{
		opts:     opts,
		cfg:      opts.Config,
		log:      opts.Logger,
		first:    make(chan struct{}),
		srcErr:   make(chan error, 1),
		serveErr: make(chan error, 2),
		stopSrc:  func() {},
	}, nil
}

// onClose pushes a release onto the cleanup stack.
func (a *agent) onClose(f func()) { a.cleanup = append(a.cleanup, f) }

// close releases everything start opened, last opened first.
func (a *agent) close() {
	for i := len(a.cleanup) - 1; i >= 0; i-- {
		a.cleanup[i]()
	}
	a.cleanup = nil
}

// start brings the agent up to serving traffic. On error, close releases
// what it opened.
//
// BPF comes first: it creates the node-local address the proxy listens
// on, and redirection stays off until the listener is registered
// (fail-open). Discovery is complete and the proxy is listening before
// that registration, which is what turns redirection on.
func (a *agent) start(ctx context.Context) error {
	var err error
	if a.acct, err = zone.NewAccounting(a.cfg.pricePerGB()); err != nil {
		return err
	}
	if err := a.loadBPF(); err != nil {
		return err
	}
	a.svcs = newServices(a.log, a.acct, a.cfg.balancerConfigs(a.acct, a.log), originalDstOf(a.red))
	if err := a.startDiscovery(ctx); err != nil {
		return err
	}
	if err := a.startPodOptOut(); err != nil {
		return err
	}
	if err := a.startProxy(ctx); err != nil {
		return err
	}
	if err := a.startAdmin(); err != nil {
		return err
	}
	if err := a.registerListeners(); err != nil {
		return err
	}
	a.watchConfig()
	a.adm.ready.Store(true)
	a.log.Info("zonelb daemon ready", "proxy", a.lns[0].Addr().String(), "admin", a.adm.addr.String(), "redirect", a.red != nil, "zone", a.svcs.snapshot().Zone)
	if a.opts.OnReady != nil {
		a.opts.OnReady(Info{ProxyAddr: netip.MustParseAddrPort(a.lns[0].Addr().String()), AdminAddr: a.adm.addr, Redirector: a.red})
	}
	return nil
}

// loadBPF loads the redirection when it is on. Closing keeps the pins:
// redirection state outlives the daemon and is reused by the next one.
func (a *agent) loadBPF() error {
	if !a.cfg.RedirectEnabled() {
		return nil
	}
	red, err := bpf.Load(a.cfg.bpfConfig(a.log))
	if err != nil {
		return fmt.Errorf("load BPF redirection: %w", err)
	}
	a.red = red
	a.onClose(func() {
		if err := red.Close(); err != nil {
			a.log.Warn("close BPF redirector", "err", err)
		}
	})
	return nil
}

// startPodOptOut watches this node's pods labelled OptOutLabel=false and
// keeps their cgroups in the BPF opt-out map (kubernetes source and
// redirection only). It stops when the agent closes.
func (a *agent) startPodOptOut() error {
	if a.red == nil || a.cfg.FilePath() != "" {
		return nil
	}
	client, err := kubeClient(a.cfg, a.opts)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	o := &podOptOut{log: a.log.With("component", "optout"), client: client, node: a.cfg.NodeName,
		root: a.red.CgroupPath(), red: a.red}
	go func() {
		defer close(done)
		o.run(ctx)
	}()
	a.onClose(func() { stop(); <-done })
	return nil
}

// startDiscovery runs the source and waits for its first snapshot. The
// source outlives ctx: it keeps the balancers current while the proxy
// drains, and stops after.
func (a *agent) startDiscovery(ctx context.Context) error {
	src, err := newSource(a.cfg, a.opts, a.log)
	if err != nil {
		return err
	}
	srcCtx, stop := context.WithCancel(context.Background())
	a.stopSrc = stop
	a.onClose(stop)
	go func() { a.srcErr <- src.Run(srcCtx, a.apply) }()
	select {
	case <-a.first:
		return nil
	case err := <-a.srcErr:
		return fmt.Errorf("discovery: %w", err)
	case <-time.After(a.opts.FirstSnapshotTimeout):
		return fmt.Errorf("discovery: no snapshot within %v", a.opts.FirstSnapshotTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply applies one snapshot to the balancers, the metrics, the direct
// frontends and the BPF service map. Discovery calls it one at a time.
func (a *agent) apply(snap *discovery.Snapshot) {
	start := time.Now()
	if err := a.svcs.apply(snap); err != nil {
		a.log.Error("apply services", "err", err)
	}
	if m := a.metrics.Load(); m != nil {
		m.setLocalZone(snap.Zone)
	}
	if fl := a.direct.Load(); fl != nil {
		fl.sync(snap)
	}
	if a.red != nil {
		added, removed, err := syncServiceMap(a.red, snap)
		if err != nil {
			a.log.Error("program BPF service map", "err", err)
		}
		if added+removed > 0 {
			a.log.Info("BPF service map updated", "selected", added, "deselected", removed)
		}
	}
	a.log.Info("services applied", "services", len(snap.Services), "frontends", len(snap.Frontends), "zone", snap.Zone, "took", time.Since(start).String())
	if a.firstDone.CompareAndSwap(false, true) {
		close(a.first)
	}
}

// startProxy builds the proxy and its listeners (and, without BPF, the
// direct frontend listeners).
func (a *agent) startProxy(ctx context.Context) error {
	m := NewMetrics(a.svcs.snapshot().Zone, a.opts.Version, a.svcs, a.acct, nil, redirectorCollectors(a.red)...)
	a.metrics.Store(m)
	pcfg, err := a.cfg.proxyConfig(a.svcs, m)
	if err != nil {
		return err
	}
	pcfg.Logger = a.log.With("component", "proxy")
	if a.px, err = proxy.New(pcfg); err != nil {
		return err
	}
	m.setProxy(a.px)
	a.onClose(func() {
		if !a.drained {
			a.px.Shutdown(context.Background())
		}
	})
	if err := a.listen(ctx, "tcp", a.cfg.listen4()); err != nil {
		return err
	}
	if a6 := a.cfg.listen6(); a6.IsValid() {
		if err := a.listen(ctx, "tcp6", a6); err != nil {
			return err
		}
	}
	if a.red == nil {
		fl := newFrontendListeners(a.log.With("component", "frontends"), a.px)
		a.direct.Store(fl)
		fl.sync(a.svcs.snapshot())
		a.onClose(fl.closeAll)
	}
	return nil
}

// listen opens one proxy listener (MPTCP off, as the liveness SOCKMAP
// requires) and serves it.
func (a *agent) listen(ctx context.Context, network string, addr netip.AddrPort) error {
	l, err := sockopt.ListenConfig().Listen(ctx, network, addr.String())
	if err != nil {
		return fmt.Errorf("proxy listen on %s: %w", addr, err)
	}
	a.lns = append(a.lns, l)
	a.onClose(func() { l.Close() })
	go func() { a.serveErr <- a.px.Serve(l) }()
	return nil
}

// startAdmin serves the admin endpoints and, if configured, /metrics on
// its own address.
func (a *agent) startAdmin() error {
	m := a.metrics.Load()
	a.adm = &admin{log: a.log, metrics: m, faults: a.cfg.Admin.FaultTriggers}
	m.registerReady(a.adm.ready.Load)
	a.onClose(a.adm.close)
	base := StateReport{Node: a.cfg.NodeName, Source: a.cfg.Source, Redirect: a.red != nil}
	a.adm.state = func() StateReport {
		r := buildReport(base, a.svcs, m, a.acct, a.px)
		r.Ready = a.adm.ready.Load()
		r.Reloads = a.reloads.Load()
		return r
	}
	var err error
	if a.adm.addr, err = a.adm.serve(a.cfg.Admin.Address, true); err != nil {
		return fmt.Errorf("admin listen on %s: %w", a.cfg.Admin.Address, err)
	}
	if a.cfg.Admin.MetricsAddress != "" {
		if _, err := a.adm.serve(a.cfg.Admin.MetricsAddress, false); err != nil {
			return fmt.Errorf("metrics listen on %s: %w", a.cfg.Admin.MetricsAddress, err)
		}
	}
	return nil
}

// registerListeners puts the proxy's listeners in the BPF liveness map,
// which turns redirection on.
func (a *agent) registerListeners() error {
	if a.red == nil {
		return nil
	}
	for _, l := range a.lns {
		if err := a.red.RegisterListener(l.(*net.TCPListener)); err != nil {
			return fmt.Errorf("register proxy listener with BPF: %w", err)
		}
	}
	return nil
}

// watchConfig follows the config file, if any, and applies balancer
// changes to every service.
func (a *agent) watchConfig() {
	if a.opts.ConfigPath == "" {
		return
	}
	bg, stop := context.WithCancel(context.Background())
	a.onClose(stop)
	go watchConfig(bg, a.log, a.opts.ConfigPath, a.cfg, func(next Config) {
		if err := a.svcs.reconfigure(next.balancerConfigs(a.acct, a.log)); err != nil {
			a.log.Error("reload balancer configuration", "err", err)
			return
		}
		a.reloads.Add(1)
		a.log.Info("configuration reloaded")
	})
}

// wait returns when ctx ends, a proxy listener fails or discovery stops.
func (a *agent) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case err := <-a.serveErr:
		a.log.Error("proxy stopped", "err", err)
	case err := <-a.srcErr:
		a.log.Error("discovery stopped", "err", err)
	}
}

// drain: not ready; the closed listeners leave the BPF liveness map so new
// connections go straight to their destination; GOAWAY to clients;
// in-flight streams finish until the drain timeout. Discovery stops after.
func (a *agent) drain() {
	a.adm.ready.Store(false)
	timeout := time.Duration(a.cfg.Proxy.DrainTimeout)
	a.log.Info("draining", "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	a.drained = true
	if err := a.px.Shutdown(ctx); err != nil {
		a.log.Warn("drain cut short", "err", err)
	}
	a.stopSrc()
	a.log.Info("stopped")
}
