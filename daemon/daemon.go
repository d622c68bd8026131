package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// Options are what the command line gives the daemon.
type Options struct {
	Config Config
	// ConfigPath is the config file, watched for changes; "" for none.
	ConfigPath string
	Logger     *slog.Logger
	Version    string
	// KubeClient overrides the client built from the configuration
	// (tests).
	KubeClient kubernetes.Interface
	// OnReady, if set, is called once the daemon serves traffic.
	OnReady func(Info)
	// FirstSnapshotTimeout bounds the wait for discovery at start.
	// Default 60s.
	FirstSnapshotTimeout time.Duration
}

// Info describes a running daemon.
type Info struct {
	ProxyAddr netip.AddrPort
	AdminAddr net.Addr
	// Redirector is the BPF redirector (nil when redirection is off), for
	// tests that enroll namespaces themselves.
	Redirector *bpf.Redirector
}

// Run runs the node agent until ctx ends, then drains and returns.
//
// Start order matters for traffic: discovery is complete and the proxy is
// listening before the listener is registered with the BPF hooks, since
// registration is what turns redirection on. On the way out the listener
// closes first, which turns redirection off in the kernel at once (new
// connections go straight to their destination), and then the proxy drains.
func Run(ctx context.Context, opts Options) (err error) {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if opts.FirstSnapshotTimeout == 0 {
		opts.FirstSnapshotTimeout = 60 * time.Second
	}
	listen := netip.MustParseAddrPort(cfg.Proxy.Listen)

	acct, err := zone.NewAccounting(cfg.pricePerGB())
	if err != nil {
		return err
	}

	// BPF first: it creates the node-local address the proxy listens on.
	// Redirection stays off until the listener is registered (fail-open).
	var red *bpf.Redirector
	origDst := func(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, errNotRedirected }
	if cfg.RedirectEnabled() {
		red, err = bpf.Load(cfg.bpfConfig(log))
		if err != nil {
			return fmt.Errorf("load BPF redirection: %w", err)
		}
		defer func() {
			// Close keeps the pins: redirection state outlives the daemon
			// and is reused by the next one.
			if cerr := red.Close(); cerr != nil {
				log.Warn("close BPF redirector", "err", cerr)
			}
		}()
		origDst = func(c net.Conn) (netip.AddrPort, error) {
			o, err := red.OriginalDst(c)
			if errors.Is(err, bpf.ErrNotRedirected) {
				return netip.AddrPort{}, errNotRedirected
			}
			return o.Addr, err
		}
	}

	zoneCfg := func(c Config) func(string) (zone.Config, error) {
		return func(localZone string) (zone.Config, error) {
			zc, err := c.zoneConfig(localZone, acct)
			zc.Logger = log.With("component", "balancer")
			return zc, err
		}
	}
	svcs := newServices(log, acct, zoneCfg(cfg), origDst)
	var metrics atomic.Pointer[Metrics]
	var direct atomic.Pointer[frontendListeners] // without BPF only

	// Discovery: apply every snapshot to the balancers and the BPF map.
	src, err := newSource(cfg, opts, log)
	if err != nil {
		return err
	}
	first := make(chan struct{})
	var firstDone atomic.Bool
	srcCtx, stopSrc := context.WithCancel(context.Background())
	defer stopSrc()
	srcErr := make(chan error, 1)
	go func() {
		srcErr <- src.Run(srcCtx, func(snap *discovery.Snapshot) {
			start := time.Now()
			if err := svcs.apply(snap); err != nil {
				log.Error("apply services", "err", err)
			}
			if m := metrics.Load(); m != nil {
				m.setLocalZone(snap.Zone)
			}
			if fl := direct.Load(); fl != nil {
				fl.sync(snap)
			}
			if red != nil {
				added, removed, err := syncServiceMap(red, snap)
				if err != nil {
					log.Error("program BPF service map", "err", err)
				}
				if added+removed > 0 {
					log.Info("BPF service map updated", "selected", added, "deselected", removed)
				}
			}
			log.Info("services applied", "services", len(snap.Services), "frontends", len(snap.Frontends), "zone", snap.Zone, "took", time.Since(start).String())
			if firstDone.CompareAndSwap(false, true) {
				close(first)
			}
		})
	}()
	select {
	case <-first:
	case err := <-srcErr:
		return fmt.Errorf("discovery: %w", err)
	case <-time.After(opts.FirstSnapshotTimeout):
		return fmt.Errorf("discovery: no snapshot within %v", opts.FirstSnapshotTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}

	m := NewMetrics(svcs.snapshot().Zone, opts.Version, svcs, acct, nil, redirectorCollectors(red)...)
	metrics.Store(m)
	pcfg, err := cfg.proxyConfig(svcs, m)
	if err != nil {
		return err
	}
	pcfg.Logger = log.With("component", "proxy")
	px, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	m.setProxy(px)

	l, err := bpf.ListenConfig().Listen(ctx, "tcp", listen.String())
	if err != nil {
		px.Shutdown(context.Background())
		return fmt.Errorf("proxy listen on %s: %w", listen, err)
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- px.Serve(l) }()
	var l6 net.Listener
	if a6 := cfg.listen6(); a6.IsValid() {
		if l6, err = bpf.ListenConfig().Listen(ctx, "tcp6", a6.String()); err != nil {
			l.Close()
			px.Shutdown(context.Background())
			return fmt.Errorf("proxy listen on %s: %w", a6, err)
		}
		go func() { serveErr <- px.Serve(l6) }()
	}
	if red == nil {
		fl := newFrontendListeners(log.With("component", "frontends"), px)
		direct.Store(fl)
		fl.sync(svcs.snapshot())
		defer fl.closeAll()
	}

	var reloads atomic.Uint64
	adm := &admin{log: log, metrics: m}
	m.registerReady(adm.ready.Load)
	base := StateReport{Node: cfg.NodeName, Source: cfg.Source, Redirect: red != nil}
	adm.state = func() StateReport {
		r := buildReport(base, svcs, m, acct, px)
		r.Ready = adm.ready.Load()
		r.Reloads = reloads.Load()
		return r
	}
	adminAddr, err := adm.serve(cfg.Admin.Address, true)
	if err != nil {
		l.Close()
		px.Shutdown(context.Background())
		return fmt.Errorf("admin listen on %s: %w", cfg.Admin.Address, err)
	}
	defer adm.close()
	if cfg.Admin.MetricsAddress != "" {
		if _, err := adm.serve(cfg.Admin.MetricsAddress, false); err != nil {
			l.Close()
			px.Shutdown(context.Background())
			return fmt.Errorf("metrics listen on %s: %w", cfg.Admin.MetricsAddress, err)
		}
	}

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	if red != nil {
		for _, ln := range []net.Listener{l, l6} {
			if ln == nil {
				continue
			}
			if err := red.RegisterListener(ln.(*net.TCPListener)); err != nil {
				px.Shutdown(context.Background())
				return fmt.Errorf("register proxy listener with BPF: %w", err)
			}
		}
	}
	if opts.ConfigPath != "" {
		go watchConfig(bg, log, opts.ConfigPath, cfg, func(next Config) {
			if err := svcs.reconfigure(zoneCfg(next)); err != nil {
				log.Error("reload balancer configuration", "err", err)
				return
			}
			reloads.Add(1)
			log.Info("configuration reloaded")
		})
	}

	adm.ready.Store(true)
	log.Info("zonelb daemon ready", "proxy", l.Addr().String(), "admin", adminAddr.String(), "redirect", red != nil, "zone", svcs.snapshot().Zone)
	if opts.OnReady != nil {
		opts.OnReady(Info{ProxyAddr: netip.MustParseAddrPort(l.Addr().String()), AdminAddr: adminAddr, Redirector: red})
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error("proxy stopped", "err", err)
	case err := <-srcErr:
		log.Error("discovery stopped", "err", err)
	}

	// Drain: not ready; the closed listener leaves the BPF liveness map so
	// new connections go straight to their destination; GOAWAY to clients;
	// in-flight streams finish until the drain timeout.
	adm.ready.Store(false)
	drain := time.Duration(cfg.Proxy.DrainTimeout)
	log.Info("draining", "timeout", drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := px.Shutdown(dctx); err != nil {
		log.Warn("drain cut short", "err", err)
	}
	stopSrc()
	log.Info("stopped")
	return nil
}

// BPFConfig is the BPF part of the configuration.
func (c Config) BPFConfig() bpf.Config {
	return c.bpfConfig(slog.New(slog.DiscardHandler))
}

func (c Config) bpfConfig(log *slog.Logger) bpf.Config {
	return bpf.Config{
		PinDir:         c.Redirect.PinDir,
		CgroupPath:     c.Redirect.CgroupPath,
		ProxyAddr4:     netip.MustParseAddrPort(c.Proxy.Listen),
		ProxyAddr6:     c.listen6(),
		SocketMark:     c.Redirect.SocketMark,
		Interface:      c.Redirect.Interface,
		EnrollAllNetns: c.Redirect.Enroll == "all",
		Logger:         log.With("component", "bpf"),
	}
}

// listen6 is the IPv6 proxy address, or the zero AddrPort.
func (c Config) listen6() netip.AddrPort {
	if c.Proxy.Listen6 == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(c.Proxy.Listen6)
}

// source is a discovery source.
type source interface {
	Run(ctx context.Context, publish func(*discovery.Snapshot)) error
}

func newSource(cfg Config, opts Options, log *slog.Logger) (source, error) {
	if p := cfg.FilePath(); p != "" {
		return discovery.NewFileSource(discovery.FileConfig{Path: p, Logger: log.With("component", "discovery")})
	}
	client := opts.KubeClient
	if client == nil {
		var rc *rest.Config
		var err error
		if cfg.Kubeconfig != "" {
			rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		} else {
			rc, err = rest.InClusterConfig()
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes client config: %w", err)
		}
		rc.UserAgent = "zonelb/" + opts.Version
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	return discovery.NewKubeSource(discovery.KubeConfig{Client: client, NodeName: cfg.NodeName, Logger: log.With("component", "discovery")})
}

// watchConfig polls the config file and calls apply with each new valid
// version. Settings that need a restart are reported, not applied.
func watchConfig(ctx context.Context, log *slog.Logger, path string, current Config, apply func(Config)) {
	stat := func() (time.Time, int64) {
		fi, err := os.Stat(path)
		if err != nil {
			return time.Time{}, -1
		}
		return fi.ModTime(), fi.Size()
	}
	mt, sz := stat()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		nmt, nsz := stat()
		if nmt.Equal(mt) && nsz == sz {
			continue
		}
		mt, sz = nmt, nsz
		next, err := LoadConfigFile(path)
		if err == nil {
			next = next.WithDefaults(os.Getenv)
			err = next.Validate()
		}
		if err != nil {
			log.Error("config change rejected; keeping the running configuration", "path", path, "err", err)
			continue
		}
		restart := current
		restart.Balancer = next.Balancer
		if !reflect.DeepEqual(restart, next) {
			log.Warn("config change outside balancer settings needs a restart to take effect", "path", path)
		}
		if !reflect.DeepEqual(current.Balancer, next.Balancer) {
			apply(next)
		}
		current.Balancer = next.Balancer
	}
}
