package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/testenv"
)

const dashboardPath = "grafana/zonelb.json"

// daemonMetrics are the metric families the daemon exposes, as the
// DaemonSet contract names them (the BPF ones come from bpf's collector).
// Histograms are listed by their family name.
//
// When the daemon's registry exists, this list should come from it (as
// bpfMetrics does from the collector) rather than from this table.
var daemonMetrics = []string{
	"zonelb_requests_total",
	"zonelb_request_duration_seconds",
	"zonelb_cross_zone_bytes_total",
	"zonelb_cross_zone_cost_dollars_total",
	"zonelb_endpoints",
	"zonelb_spillover_active",
	"zonelb_spill_local_level_seconds",
	"zonelb_spill_budgeted_level_seconds",
	"zonelb_spill_reason",
	"zonelb_ready",
	"zonelb_spillover_transitions_total",
	"zonelb_retries_total",
	"zonelb_active_requests",
	"zonelb_build_info",
}

// bpfMetrics returns the names bpf's Prometheus collector describes.
func bpfMetrics(t *testing.T) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 64)
	bpf.NewCollector(nil).Describe(ch)
	close(ch)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatal("bpf's collector describes no metric")
	}
	return names
}

// dashboard is the part of the Grafana JSON the tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return &d
}

var metricName = regexp.MustCompile(`\bzonelb_[a-z0-9_]+`)

// histogramSeries maps a histogram's series names to its family.
func familyOf(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(daemonMetrics, f) {
			return f
		}
	}
	return name
}

func TestDashboardCoversTheMetrics(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	known := append(slices.Clone(daemonMetrics), bpfMetrics(t)...)
	vars := map[string]bool{"__rate_interval": true}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource is not the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			for _, m := range metricName.FindAllString(target.Expr, -1) {
				f := familyOf(m)
				if !slices.Contains(known, f) {
					t.Errorf("panel %q queries %s, which zonelb does not expose", p.Title, m)
				}
				used[f] = true
			}
			for _, ref := range regexp.MustCompile(`\$\{?([a-z_]+)`).FindAllStringSubmatch(target.Expr, -1) {
				if !vars[ref[1]] {
					t.Errorf("panel %q uses $%s, which the dashboard does not define", p.Title, ref[1])
				}
			}
		}
	}
	for _, m := range known {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestDashboardQueries evaluates the panels' PromQL with promtool on
// synthetic series: every query must parse, and the ones whose arithmetic
// is not obvious (the local share, which PromQL cannot express with a
// plain selector; cost per day; quantiles; error codes) must give the
// values worked out by hand below.
func TestDashboardQueries(t *testing.T) {
	promtool := findPromtool(t)
	d := loadDashboard(t)

	// Grafana's variables, as "All" would expand them.
	expand := strings.NewReplacer(`$__rate_interval`, `2m`, `$instance`, `.*`, `$service`, `.*`)
	type query struct{ panel, ref, expr string }
	var queries []query
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			queries = append(queries, query{p.Title, target.RefID, expand.Replace(target.Expr)})
		}
	}

	// Every query parses: as recording rules for `promtool check rules`.
	var rules []map[string]string
	for i, q := range queries {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("zonelb_dashboard:query_%d", i), "expr": q.expr})
	}
	ruleFile := writeYAML(t, "rules.yaml", map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if out, err := exec.Command(promtool, "check", "rules", ruleFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	// Synthetic traffic, one sample a minute, evaluated at 10m: counters
	// grow by N a minute, so every rate is N/60 per second exactly.
	//   node n1 in zone a: 30/s stay in a; 9/s OK and 1/s UNAVAILABLE go to b
	//   node n2 in zone b: 15/s stay in b; 5/s go to a
	// Local share = (30+15)/(30+10+15+5) = 0.75.
	req := func(node, src, dst, code string, perMinute int) map[string]string {
		return map[string]string{
			"series": fmt.Sprintf(`zonelb_requests_total{instance=%q,service="apps/greeter",src_zone=%q,dst_zone=%q,code=%q}`, node, src, dst, code),
			"values": fmt.Sprintf("0+%dx20", perMinute),
		}
	}
	series := []map[string]string{
		req("n1", "a", "a", "OK", 1800),
		req("n1", "a", "b", "OK", 540),
		req("n1", "a", "b", "UNAVAILABLE", 60),
		req("n2", "b", "b", "OK", 900),
		req("n2", "b", "a", "OK", 300),
		// 0.125 $/s from a to b (exact in binary, as promtool compares
		// exactly): 10800 $/day.
		{"series": `zonelb_cross_zone_cost_dollars_total{instance="n1",src_zone="a",dst_zone="b"}`, "values": "0+7.5x20"},
		// 1800 requests a minute to zone a, half of them within 5ms: the
		// median is the first bucket's upper bound.
		{"series": `zonelb_request_duration_seconds_bucket{instance="n1",service="apps/greeter",dst_zone="a",le="0.005"}`, "values": "0+900x20"},
		{"series": `zonelb_request_duration_seconds_bucket{instance="n1",service="apps/greeter",dst_zone="a",le="0.01"}`, "values": "0+1800x20"},
		{"series": `zonelb_request_duration_seconds_bucket{instance="n1",service="apps/greeter",dst_zone="a",le="+Inf"}`, "values": "0+1800x20"},
		{"series": `zonelb_spillover_active{instance="n1",service="apps/greeter"}`, "values": "1x20"},
		{"series": `zonelb_spillover_active{instance="n2",service="apps/greeter"}`, "values": "0x20"},
		{"series": `zonelb_spillover_active{instance="n2",service="apps/other"}`, "values": "0x20"},
		// 10 B/s from a to b; same-zone pairs are counted too but are not
		// cross-zone bytes: the panels leave them out.
		{"series": `zonelb_cross_zone_bytes_total{instance="n1",src_zone="a",dst_zone="b",direction="sent"}`, "values": "0+600x20"},
		{"series": `zonelb_cross_zone_bytes_total{instance="n1",src_zone="a",dst_zone="a",direction="sent"}`, "values": "0+60000x20"},
		{"series": `zonelb_bpf_connects_total{instance="n1",outcome="redirected"}`, "values": "0+600x20"},
		{"series": `zonelb_bpf_connects_total{instance="n1",outcome="not_selected"}`, "values": "0+60x20"},
	}
	type sample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	expect := map[[2]string][]sample{
		{"Requests/s", "A"}:                            {{"{}", 60}},
		{"Local share", "A"}:                           {{"{}", 0.75}},
		{"Local share by service", "A"}:                {{`{service="apps/greeter"}`, 0.75}},
		{"Request rate by destination zone", "A"}:      {{`{dst_zone="a"}`, 35}, {`{dst_zone="b"}`, 25}},
		{"Cross-zone cost/day", "A"}:                   {{"{}", 10800}},
		{"Cross-zone cost per day by zone pair", "A"}:  {{`{src_zone="a",dst_zone="b"}`, 10800}},
		{"Latency p50 / p99 by destination zone", "A"}: {{`{dst_zone="a"}`, 0.005}},
		{"Errors by code", "A"}:                        {{`{code="UNAVAILABLE"}`, 1}},
		{"Services spilling", "A"}:                     {{"{}", 1}},
		{"Calls leaving the zone, by service", "A"}:    {{`{service="apps/greeter"}`, 0.25}},
		{"Cross-zone bytes/day", "A"}:                  {{"{}", 864000}},
		{"Cross-zone bytes by zone pair", "A"}:         {{`{src_zone="a",dst_zone="b",direction="sent"}`, 10}},
		{"Connects by outcome", "A"}:                   {{`{outcome="redirected"}`, 10}, {`{outcome="not_selected"}`, 1}},
	}
	var tests []map[string]any
	for _, q := range queries {
		want, ok := expect[[2]string{q.panel, q.ref}]
		if !ok {
			continue
		}
		delete(expect, [2]string{q.panel, q.ref})
		tests = append(tests, map[string]any{"expr": q.expr, "eval_time": "10m", "exp_samples": want})
	}
	for k := range maps.Keys(expect) {
		t.Errorf("no query %s of panel %q to check", k[1], k[0])
	}
	testFile := writeYAML(t, "dashboard_test.yaml", map[string]any{
		"rule_files":          []string{},
		"evaluation_interval": "1m",
		"tests":               []any{map[string]any{"interval": "1m", "input_series": series, "promql_expr_test": tests}},
	})
	if out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

func writeYAML(t *testing.T, name string, v any) string {
	t.Helper()
	raw, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// findPromtool looks for promtool on PATH, then in the module's .cache/bin
// where `make test-deps` puts it (deploy/deploy.mk).
func findPromtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if dir, err := kubetest.BinDir(); err == nil {
		if p := filepath.Join(dir, "promtool"); fileExists(p) {
			return p
		}
	}
	testenv.SkipOrFail(t, "promtool not found on PATH or in .cache/bin: run `make test-deps` (deploy/deploy.mk)")
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
