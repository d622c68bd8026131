// Command generate writes zonelb's alerting rules from package alerts:
// <out>/prometheus/zonelb-alerts.yaml and
// <out>/components/prometheus-operator/prometheusrule.yaml.
//
//	go run ./deploy/alerts/generate -out deploy -max-cost-per-day 20
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zonelb/zonelb/deploy/alerts"
)

func main() {
	var o alerts.Options
	out := flag.String("out", "deploy", "the deploy directory")
	flag.Float64Var(&o.MaxCostPerDay, "max-cost-per-day", 0, "cross-zone cost per node per day (USD) above which ZonelbCrossZoneCostHigh fires (default 50)")
	flag.DurationVar(&o.FailOpenHold, "fail-open-hold", 0, "how long ZonelbNodeProxyFailingOpen stays true after the last failed-open connect (default 5m)")
	flag.StringVar(&o.Job, "job", "", "regular expression of the daemons' scrape job, for ZonelbDaemonNotReady (default .*zonelb.*)")
	flag.Parse()
	if err := write(*out, o); err != nil {
		fmt.Fprintln(os.Stderr, "generate alerts:", err)
		os.Exit(1)
	}
}

func write(out string, o alerts.Options) error {
	plain, err := alerts.PlainFile(o)
	if err != nil {
		return err
	}
	pr, err := alerts.PrometheusRule(o)
	if err != nil {
		return err
	}
	for path, data := range map[string][]byte{
		filepath.Join(out, "prometheus", "zonelb-alerts.yaml"):                         plain,
		filepath.Join(out, "components", "prometheus-operator", "prometheusrule.yaml"): pr,
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
