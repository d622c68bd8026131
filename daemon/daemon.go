package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/daemon/kubeapi"
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
	KubeClient *kubeapi.Client
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
func Run(ctx context.Context, opts Options) error {
	a, err := newAgent(opts)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return err
	}
	a.wait(ctx)
	a.drain()
	return nil
}

func newSource(cfg Config, opts Options, log *slog.Logger) (discovery.Source, error) {
	if p := cfg.FilePath(); p != "" {
		return discovery.NewFileSource(discovery.FileConfig{Path: p, Logger: log.With("component", "discovery")})
	}
	client, err := kubeClient(cfg, opts)
	if err != nil {
		return nil, err
	}
	return discovery.NewKubeSource(discovery.KubeConfig{Client: client, NodeName: cfg.NodeName, Logger: log.With("component", "discovery")})
}

// kubeClient is the client of the kubernetes source: opts.KubeClient, or
// one built from the configured kubeconfig or the in-cluster account.
func kubeClient(cfg Config, opts Options) (*kubeapi.Client, error) {
	if opts.KubeClient != nil {
		return opts.KubeClient, nil
	}
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
	client, err := kubeapi.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
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
