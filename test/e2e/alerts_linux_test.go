package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/zonelb/zonelb/deploy/alerts"
	"github.com/zonelb/zonelb/internal/cluster"
)

// failOpenHold is the e2e test's hold of ZonelbNodeProxyFailingOpen (5m in
// deploy/): the test waits it out to see the alert end.
const failOpenHold = 10 * time.Second

// e2eRuleFile writes deploy's alerting rules, with the test's hold, for
// the harness's Prometheus to evaluate.
func e2eRuleFile(t *testing.T) string {
	t.Helper()
	raw, err := alerts.PlainFile(alerts.Options{FailOpenHold: failOpenHold})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "zonelb-alerts.yaml")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// failOpenState evaluates ZonelbNodeProxyFailingOpen's expression at the
// first scrape after now, and reads the alert's state from Prometheus's
// own rule evaluation.
func failOpenState(t *testing.T, ctx context.Context, prom *cluster.Prometheus) (model.Vector, promv1.AlertState) {
	t.Helper()
	at, err := prom.WaitScraped(ctx, time.Now(), 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v, err := prom.Query(ctx, alerts.FailOpenExpr(failOpenHold), at)
	if err != nil {
		t.Fatal(err)
	}
	// Rules are evaluated every scrape interval too: wait one so that the
	// evaluation has seen the scrape.
	time.Sleep(2 * prom.Interval) // the rule evaluation runs on its own clock
	res, err := prom.API.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var state promv1.AlertState
	for _, a := range res.Alerts {
		if a.Labels["alertname"] == alerts.FailOpen {
			state = a.State
		}
	}
	return v, state
}

// checkFailOpenQuiet wants the fail-open alert false while the proxy
// serves.
func checkFailOpenQuiet(t *testing.T, ctx context.Context, prom *cluster.Prometheus) {
	t.Helper()
	if v, state := failOpenState(t, ctx, prom); len(v) != 0 || state != "" {
		t.Errorf("%s while the proxy serves: expression %v, alert state %q; want neither", alerts.FailOpen, v, state)
	}
}

// checkFailOpenAfterRestart is run once the killed daemon is back: the
// first scrapes read the pinned counter of connects that went around the
// proxy while it was away, so the alert is true; once the hold has passed
// without another, it is false again.
func checkFailOpenAfterRestart(t *testing.T, ctx context.Context, prom *cluster.Prometheus, direct int) {
	t.Helper()
	v, state := failOpenState(t, ctx, prom)
	if len(v) != 1 || v[0].Metric["instance"] != "node-a" || float64(v[0].Value) < 1 || state != promv1.AlertStateFiring {
		t.Fatalf("%s after the restart: expression %v, alert %q; want it firing for node-a with the connects that went around the proxy", alerts.FailOpen, v, state)
	}
	t.Logf("%s fired after the restart: %v connects went around the proxy (the clients dialled %d times after the kill)", alerts.FailOpen, v[0].Value, direct)
	deadline := time.Now().Add(failOpenHold + 10*time.Second)
	for {
		v, state := failOpenState(t, ctx, prom)
		if len(v) == 0 && state == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still true %v after the restart with no connect going around the proxy: expression %v, alert %q", alerts.FailOpen, failOpenHold+10*time.Second, v, state)
		}
	}
}
