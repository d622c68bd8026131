package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/zonelb/zonelb/internal/childproc"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/netlab"
)

// PrometheusAddr is where the harness's Prometheus listens, on the
// loopback of the clients' node's namespace (next to the daemon's admin
// address it scrapes).
const PrometheusAddr = "127.0.0.1:9090"

// PrometheusJob is the scrape job's name: the `job` label of the daemon's
// series. The `instance` label is the node's name, as a Kubernetes
// service discovery relabelled to the node name would give.
const PrometheusJob = "zonelb"

// PrometheusOptions shape the harness's Prometheus.
type PrometheusOptions struct {
	// Bin is the prometheus binary. Default: FindPrometheus.
	Bin string
	// ScrapeInterval is how often the daemon is scraped (and rules
	// evaluated). Default 1s.
	ScrapeInterval time.Duration
	// RuleFiles are loaded as the server's rule files (alerting rules).
	RuleFiles []string
}

// Prometheus is a real Prometheus server (Debian's prometheus package,
// extracted into .cache/bin by `make test-deps`) running in the clients'
// node's namespace and scraping the zonelb daemon's /metrics there.
type Prometheus struct {
	API      promv1.API
	Interval time.Duration
	LogPath  string
	proc     interface{ Exited() bool }
}

// FindPrometheus looks for the prometheus binary on PATH, then in the
// module's .cache/bin where deploy/deploy.mk extracts it.
func FindPrometheus() (string, error) {
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p, nil
	}
	dir, err := kubetest.BinDir()
	if err == nil {
		p := filepath.Join(dir, "prometheus")
		if _, err = os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("cluster: prometheus not found on PATH or in .cache/bin (%v): run `make test-deps` (deploy/deploy.mk extracts it from Debian's prometheus package)", err)
}

// StartPrometheus starts Prometheus in the clients' node and waits until
// it answers queries. It scrapes AdminAddr/metrics whether or not a daemon
// runs (a scrape of a stopped daemon fails, and its series go stale, as
// with a real one). It stops with the cluster.
func (c *Cluster) StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Prometheus, error) {
	if opts.Bin == "" {
		bin, err := FindPrometheus()
		if err != nil {
			return nil, err
		}
		opts.Bin = bin
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = time.Second
	}
	node := c.ClientNode()
	dir := filepath.Join(c.workDir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: prometheus dir: %w", err)
	}
	cfgPath, err := writePrometheusConfig(dir, opts, node.Name)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cluster: prometheus log: %w", err)
	}
	cmd := exec.Command(opts.Bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address="+PrometheusAddr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	proc, err := node.Start("prometheus", cmd)
	logFile.Close()
	if err != nil {
		return nil, err
	}
	client, err := promapi.NewClient(promapi.Config{
		Address:      "http://" + PrometheusAddr,
		RoundTripper: &http.Transport{DialContext: node.DialContext, DisableKeepAlives: true},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: prometheus client: %w", err)
	}
	p := &Prometheus{API: promv1.NewAPI(client), Interval: opts.ScrapeInterval, LogPath: logPath, proc: proc}
	if err := p.waitAnswering(ctx, proc, node.Name); err != nil {
		return nil, err
	}
	return p, nil
}

// waitAnswering polls the server (60s at most) until it answers a query,
// and fails early if proc exits.
func (p *Prometheus) waitAnswering(ctx context.Context, proc *netlab.Process, nodeName string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if _, err := p.API.Buildinfo(ctx); err == nil {
			return nil
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("cluster: prometheus exited (%v); log %s:\n%s", proc.Err(), p.LogPath, childproc.Tail(p.LogPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("cluster: prometheus not answering at %s in %s: %w; log:\n%s", PrometheusAddr, nodeName, ctx.Err(), childproc.Tail(p.LogPath, 20))
		case <-time.After(100 * time.Millisecond): // polling another process
		}
	}
}

// writePrometheusConfig writes dir/prometheus.yml: one scrape job of the
// daemon's AdminAddr labelled with nodeName, and opts.RuleFiles.
func writePrometheusConfig(dir string, opts PrometheusOptions, nodeName string) (string, error) {
	var rules strings.Builder
	if len(opts.RuleFiles) > 0 {
		rules.WriteString("rule_files:\n")
	}
	for _, f := range opts.RuleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			return "", fmt.Errorf("cluster: rule file %s: %w", f, err)
		}
		fmt.Fprintf(&rules, "  - %q\n", abs)
	}
	cfg := fmt.Sprintf(`# Prometheus of the e2e mini cluster (written by internal/cluster)
global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
%[2]sscrape_configs:
  - job_name: %[3]s
    metrics_path: /metrics
    static_configs:
      - targets: ["%[4]s"]
        labels:
          node: %[5]s
    relabel_configs:
      - target_label: instance
        replacement: %[5]s
`, model.Duration(opts.ScrapeInterval), rules.String(), PrometheusJob, AdminAddr, nodeName)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", fmt.Errorf("cluster: prometheus config: %w", err)
	}
	return cfgPath, nil
}

// Query evaluates expr at t.
func (p *Prometheus) Query(ctx context.Context, expr string, t time.Time) (model.Vector, error) {
	v, warnings, _, err := p.API.Query(ctx, expr, t)
	if err != nil {
		return nil, fmt.Errorf("prometheus: query %s: %w", expr, err)
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("prometheus: query %s: warnings %v", expr, warnings)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("prometheus: query %s: a %s, not an instant vector", expr, v.Type())
	}
	return vec, nil
}

// WaitScraped waits until the daemon has been scraped successfully at or
// after t (the target is up and its last scrape is no older than t), so
// that a query at the time of that scrape sees what happened before t.
func (p *Prometheus) WaitScraped(ctx context.Context, t time.Time, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last promv1.ActiveTarget
	for {
		res, err := p.API.Targets(ctx)
		if err == nil {
			for _, at := range res.Active {
				if at.ScrapePool == PrometheusJob {
					last = at
					if at.Health == promv1.HealthGood && !at.LastScrape.Before(t) {
						return at.LastScrape, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("prometheus: no successful scrape of the daemon since %s within %v (last: %s at %s, %q)",
				t.Format(time.StampMilli), limit, last.Health, last.LastScrape.Format(time.StampMilli), last.LastError)
		case <-time.After(p.Interval / 4): // polling another process
		}
	}
}

// Exited reports whether the Prometheus process has exited.
func (p *Prometheus) Exited() bool { return p.proc.Exited() }
