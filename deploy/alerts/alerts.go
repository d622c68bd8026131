// Package alerts is the one source of zonelb's Prometheus alerting rules.
// From it, `make alerts` (go generate) writes the plain rules file
// (deploy/prometheus/zonelb-alerts.yaml, for a Prometheus configured by
// hand) and the PrometheusRule of the optional kustomize component
// deploy/components/prometheus-operator (for prometheus-operator users;
// outside the base, so that `kubectl apply -k deploy/` works on a cluster
// without that CRD). docs/operating.md says what each alert means and what
// to do about it; deploy/prometheus/zonelb-alerts.test.yaml holds
// `promtool test rules` unit tests for each.
//
// It knows the daemon's metric names and nothing of the daemon's code.
package alerts

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

//go:generate go run ./generate -out ..

// Options are the alerts' settings. Zero values mean the defaults.
type Options struct {
	// MaxCostPerDay is the cross-zone cost, in US dollars per day and per
	// node, above which ZonelbCrossZoneCostHigh fires. Default 50.
	MaxCostPerDay float64
	// FailOpenHold is how long ZonelbNodeProxyFailingOpen stays true after
	// the last connect that went around the proxy. Default 5m.
	FailOpenHold time.Duration
	// Job is a regular expression for the scrape job of the daemons, for
	// ZonelbDaemonNotReady's `up` check. Default ".*zonelb.*".
	Job string
}

func (o Options) withDefaults() Options {
	if o.MaxCostPerDay == 0 {
		o.MaxCostPerDay = 50
	}
	if o.FailOpenHold == 0 {
		o.FailOpenHold = 5 * time.Minute
	}
	if o.Job == "" {
		o.Job = ".*zonelb.*"
	}
	return o
}

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// Group is a rule group, as both file formats write it.
type Group struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

const runbook = "https://github.com/zonelb/zonelb/blob/main/docs/operating.md#"

// Names of the alerts.
const (
	FailOpen     = "ZonelbNodeProxyFailingOpen"
	Spilling     = "ZonelbSpillingSustained"
	SpillBudget  = "ZonelbSpillOverBudget"
	CrossZone    = "ZonelbCrossZoneCostHigh"
	Ejected      = "ZonelbEndpointsEjected"
	BPFDetached  = "ZonelbBPFProgramDetached"
	DaemonNotRdy = "ZonelbDaemonNotReady"
)

// FailOpenExpr is ZonelbNodeProxyFailingOpen's expression: connects that
// the BPF hook let through to their original destination because the
// proxy's listener was not registered, or its process was exiting
// (zonelb_bpf_connects_total{outcome="proxy_down"|"proxy_exiting"}),
// counted by the pinned counter map, which
// outlives the daemon. While the daemon runs, the counter is read at every
// scrape; when the daemon was down, the first scrape after its restart
// reads what happened meanwhile. The expression compares the counter with
// its last value seen at least hold ago (up to a day), so it is true from
// the scrape that shows a failed-open connect until hold has passed
// without another, however long the daemon was away. Its value is the
// number of such connects in that time. A broken scrape alone (up == 0)
// never makes it true.
func FailOpenExpr(hold time.Duration) string {
	const c = `zonelb_bpf_connects_total{outcome=~"proxy_down|proxy_exiting"}`
	return fmt.Sprintf(`sum without (outcome) (%s - last_over_time(%s[1d] offset %s)) > 0`, c, c, model.Duration(hold))
}

// Rules returns zonelb's alerting rules.
func Rules(o Options) []Group {
	o = o.withDefaults()
	rule := func(name, expr, forDur, severity, summary, description string) Rule {
		return Rule{
			Alert: name, Expr: expr, For: forDur,
			Labels: map[string]string{"severity": severity},
			Annotations: map[string]string{
				"summary":     summary,
				"description": description,
				"runbook_url": runbook + strings.ToLower(name),
			},
		}
	}
	cost := strconv.FormatFloat(o.MaxCostPerDay, 'f', -1, 64)
	return []Group{{Name: "zonelb", Rules: []Rule{
		rule(FailOpen, FailOpenExpr(o.FailOpenHold), "", "warning",
			"zonelb on {{ $labels.instance }}: {{ $value }} connections went around the node proxy (failed open)",
			"The BPF hook let pods' connections go straight to their Service address because the node proxy's listener was gone or its process exiting (daemon killed, crashed, upgrading or draining). They still work through kube-proxy, without per-request balancing or zone preference."),
		rule(SpillBudget, `max by (instance, service) (zonelb_spill_local_level_seconds{distance="1"} > 1.25 * zonelb_spill_budgeted_level_seconds{distance="1"})`, "15m", "warning",
			"zonelb on {{ $labels.instance }}: {{ $labels.service }} runs over its spill budget",
			"The local zone's latency level has stayed more than 25% above the level the service's spill budget allows for 15 minutes: spilling the excess to other zones does not hold it (they are full, slower, or the share is capped)."),
		rule(Spilling, `max by (instance, service) (zonelb_spill_reason{reason="spilling"}) == 1`, "30m", "warning",
			"zonelb on {{ $labels.instance }}: {{ $labels.service }} has spilled out of its zone for 30 minutes",
			"The local zone's latency has been over the service's spill budget for 30 minutes, so the balancer keeps sending the excess to other zones: the local zone lacks capacity for its demand, and the crossing costs money and latency."),
		rule(CrossZone, `sum by (instance) (rate(zonelb_cross_zone_cost_dollars_total[15m])) * 86400 > `+cost, "30m", "warning",
			"zonelb on {{ $labels.instance }}: cross-zone traffic costs ${{ $value | printf \"%.2f\" }} a day",
			"Traffic from this node to other zones has cost more than $"+cost+" a day (at the configured price per GB) for 30 minutes."),
		rule(Ejected, `sum by (instance, service, zone) (zonelb_endpoints{state="ejected"}) > 0`, "5m", "warning",
			"zonelb on {{ $labels.instance }}: {{ $value }} endpoints of {{ $labels.service }} in {{ $labels.zone }} ejected",
			"Passive health checking has kept endpoints out of the balancer for 5 minutes: their calls failed or their connections were refused."),
		rule(BPFDetached, `min by (instance, program) (zonelb_bpf_program_attached) == 0`, "1m", "critical",
			"zonelb on {{ $labels.instance }}: BPF program {{ $labels.program }} detached",
			"The daemon's program for this cgroup hook is no longer attached to the pods' cgroup: connections on that hook are not steered to the node proxy."),
		rule(DaemonNotRdy, `min by (instance) (zonelb_ready) == 0 or min by (instance) (up{job=~"`+o.Job+`"}) == 0`, "5m", "critical",
			"zonelb on {{ $labels.instance }} not ready",
			"The daemon has not been ready (or not answering scrapes) for 5 minutes. While it is not ready its node fails open: pods' connections bypass it."),
	}}}
}

// PlainFile is the rules file for a Prometheus configured by hand
// (rule_files:).
func PlainFile(o Options) ([]byte, error) {
	body, err := yaml.Marshal(map[string]any{"groups": Rules(o)})
	if err != nil {
		return nil, err
	}
	return append([]byte(header), body...), nil
}

// PrometheusRule is the same rules as a prometheus-operator PrometheusRule
// (monitoring.coreos.com/v1), for the kustomize component.
func PrometheusRule(o Options) ([]byte, error) {
	body, err := yaml.Marshal(map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name":      "zonelb",
			"namespace": "zonelb",
			"labels":    map[string]string{"app.kubernetes.io/name": "zonelb"},
		},
		"spec": map[string]any{"groups": Rules(o)},
	})
	if err != nil {
		return nil, err
	}
	return append([]byte(header), body...), nil
}

const header = "# Generated by deploy/alerts (make alerts); edit deploy/alerts/alerts.go, not this file.\n"
