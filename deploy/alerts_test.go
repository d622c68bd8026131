package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/zonelb/zonelb/deploy/alerts"
)

const (
	alertsFile     = "prometheus/zonelb-alerts.yaml"
	alertsTestFile = "prometheus/zonelb-alerts.test.yaml"
	ruleComponent  = "components/prometheus-operator/prometheusrule.yaml"
)

// TestAlertFilesGenerated holds the rules file and the PrometheusRule to
// their one source, package alerts.
func TestAlertFilesGenerated(t *testing.T) {
	for path, gen := range map[string]func(alerts.Options) ([]byte, error){
		alertsFile:    alerts.PlainFile,
		ruleComponent: alerts.PrometheusRule,
	} {
		want, err := gen(alerts.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what deploy/alerts generates: run `make alerts`", path)
		}
	}
	// The component is optional: the base must not pull it (or any
	// prometheus-operator object) in.
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "PrometheusRule" {
			t.Errorf("the base holds a PrometheusRule: kubectl apply -k deploy/ would fail without its CRD")
		}
	}
	var comp struct {
		Kind      string   `json:"kind"`
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile("components/prometheus-operator/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &comp); err != nil {
		t.Fatal(err)
	}
	if comp.Kind != "Component" || !slices.Equal(comp.Resources, []string{"prometheusrule.yaml"}) {
		t.Errorf("components/prometheus-operator: kind %q resources %v, want a Component of prometheusrule.yaml", comp.Kind, comp.Resources)
	}
}

// TestAlertRules checks the rules with promtool and runs their unit
// tests (deploy/prometheus/zonelb-alerts.test.yaml).
func TestAlertRules(t *testing.T) {
	promtool := findPromtool(t)
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTestFile}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	// The PrometheusRule's groups are valid rules too.
	var pr struct {
		Spec map[string]any `json:"spec"`
	}
	raw, err := os.ReadFile(ruleComponent)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &pr); err != nil {
		t.Fatal(err)
	}
	f := writeYAML(t, "groups.yaml", pr.Spec)
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules (the PrometheusRule's spec): %v\n%s", err, out)
	}
}

// TestEveryAlertIsTested wants, for every alert, a unit test where it
// fires and one where it must not.
func TestEveryAlertIsTested(t *testing.T) {
	raw, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range doc.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range alerts.Rules(alerts.Options{}) {
		for _, r := range g.Rules {
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: want a unit test where it fires (%v) and one where it does not (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
}

// TestAlertMetricsExist wants every metric an alert reads to be one the
// daemon exposes: a renamed metric would silence an alert for good.
func TestAlertMetricsExist(t *testing.T) {
	known := append(slices.Clone(daemonMetrics), bpfMetrics(t)...)
	for _, g := range alerts.Rules(alerts.Options{}) {
		for _, r := range g.Rules {
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s reads no zonelb metric: %s", r.Alert, r.Expr)
			}
			for _, m := range names {
				if !slices.Contains(known, familyOf(m)) {
					t.Errorf("%s reads %s, which zonelb does not expose", r.Alert, m)
				}
			}
		}
	}
}
