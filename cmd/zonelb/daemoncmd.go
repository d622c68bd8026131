package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/zonelb/zonelb/daemon"

	"github.com/zonelb/zonelb/internal/cli"
)

const daemonSynopsis = `
Run the node agent: discover gRPC services and their endpoints (from the
Kubernetes API, or a file), steer pods' connections to them into the node
proxy with eBPF, balance every request by zone and latency, and serve
/metrics, /healthz, /readyz, /debug/state and /debug/pprof/ on the admin
address. Settings come from the YAML file given by --config, then these
flags; NODE_NAME comes from the environment (the downward API). SIGTERM
drains; BPF state stays pinned for the next daemon. Needs root (BPF,
netlink) unless --redirect=false.`

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("zonelb daemon")
	var (
		configPath = fs.String("config", "", "YAML configuration file (watched: balancer settings reload live)")
		source     = fs.String("source", "", `where services come from: "kubernetes" or "file:/path" (default kubernetes)`)
		node       = fs.String("node-name", "", "this node's name (default $NODE_NAME)")
		kubeconfig = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster service account)")
		listen     = fs.String("listen", "", "proxy address, the node-local address pods are steered to (default "+daemon.DefaultListen+")")
		adminAddr  = fs.String("admin", "", "admin address (default "+daemon.DefaultAdminAddress+")")
		metrics    = fs.String("metrics", "", "extra address serving only /metrics, e.g. 0.0.0.0:15090")
		redirect   = fs.String("redirect", "", "true or false: eBPF redirection (default true)")
		logs       cli.LogFlags
	)
	logs.Register(fs)
	if code, done := cli.Parse(fs, daemonSynopsis, args, stdout, stderr); done {
		return code
	}
	log, err := logs.Logger(stderr)
	if err != nil {
		return cli.UsageError(stderr, "zonelb daemon", "%v", err)
	}
	// client-go logs through klog; send it to the same structured log.
	klog.SetSlogLogger(log.With("component", "client-go"))

	var cfg daemon.Config
	if *configPath != "" {
		if cfg, err = daemon.LoadConfigFile(*configPath); err != nil {
			return cli.UsageError(stderr, "zonelb daemon", "%v", err)
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Source, *source)
	set(&cfg.NodeName, *node)
	set(&cfg.Kubeconfig, *kubeconfig)
	set(&cfg.Proxy.Listen, *listen)
	set(&cfg.Admin.Address, *adminAddr)
	set(&cfg.Admin.MetricsAddress, *metrics)
	switch *redirect {
	case "":
	case "true", "false":
		v := *redirect == "true"
		cfg.Redirect.Enabled = &v
	default:
		return cli.UsageError(stderr, "zonelb daemon", "--redirect %q: want true or false", *redirect)
	}
	cfg = cfg.WithDefaults(os.Getenv)
	if err := cfg.Validate(); err != nil {
		return cli.UsageError(stderr, "zonelb daemon", "config: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.Run(ctx, daemon.Options{Config: cfg, ConfigPath: *configPath, Logger: log, Version: version}); err != nil {
		log.Error("daemon failed", "err", err)
		return 1
	}
	return 0
}
