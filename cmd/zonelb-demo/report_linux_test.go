package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/internal/demoreport"
	"github.com/zonelb/zonelb/internal/testenv"
)

func TestMain(m *testing.M) { cluster.Main(m.Run) }

// TestDemoReport runs the demo (shorter modes, the full live scenario),
// then loads its report in headless Chromium (in a network namespace of
// its own with only loopback: the page must need nothing from anywhere)
// and checks that the DOM Chromium built carries the run's own numbers:
// every charted point is the results file's value for that second, and
// the side-by-side table is the results file's table. The DOM and a
// screenshot are kept in the test's artifact directory (go test
// -artifacts).
func TestDemoReport(t *testing.T) {
	testenv.RequireRoot(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testenv.SkipOrFail(t, "chromium not found: run `make test-deps` (test/e2e/e2e.mk installs Debian's chromium)")
	}
	bin := cluster.ZonelbBin(t)
	art := t.ArtifactDir()
	reportDir := filepath.Join(art, "demo-report")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--zonelb", bin, "--duration", "2s", "--report-dir", reportDir}, &stdout, &stderr); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	m := regexp.MustCompile(`Report \(.*\): (\S+)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("the demo printed no report path:\n%s", stdout.String())
	}
	page := m[1]
	res, err := demoreport.Read(filepath.Join(filepath.Dir(page), "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	// Self-contained: nothing to fetch (the SVG namespace is a name, not
	// a fetch).
	if refs := regexp.MustCompile(`(?i)(src|href)\s*=|url\(|@import|<script|<link`).FindAllString(string(raw), -1); len(refs) > 0 {
		t.Errorf("report.html references outside resources: %v", refs)
	}

	dom := chrome(t, chromium, art, "--dump-dom", "file://"+page)
	if err := os.WriteFile(filepath.Join(art, "report.dom.html"), dom, 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(art, "report.png")
	chrome(t, chromium, art, "--screenshot="+shot, "--window-size=1000,2000", "--hide-scrollbars", "file://"+page)
	checkScreenshot(t, shot)

	doc, err := html.Parse(bytes.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	want, metricSeconds := chartPointsOf(res)
	got, rows := domPointsAndRows(doc)
	// With Prometheus installed (make test-deps), the demo charts zonelb's
	// own metrics beside the clients' count for every second.
	if _, err := cluster.FindPrometheus(); err == nil && metricSeconds < len(res.Live.Seconds) {
		t.Errorf("zonelb's metrics (Prometheus) charted for %d of %d seconds", metricSeconds, len(res.Live.Seconds))
	}
	if len(res.Live.Seconds) < 10 {
		t.Errorf("the results file has %d seconds of the live scenario, want its whole timeline", len(res.Live.Seconds))
	}
	checkChartPoints(t, want, got)
	checkTableRows(t, res, rows)
	// The zonelb column of the results is the demo's own printed table.
	for _, r := range res.Table.Rows {
		if len(r.Cells) > 0 && !strings.Contains(stdout.String(), r.Cells[len(r.Cells)-1]) {
			t.Errorf("row %q: %q is not in what the demo printed", r.Label, r.Cells[len(r.Cells)-1])
		}
	}
	t.Logf("report, DOM and screenshot in %s", art)
}

// chartPointsOf is every point the report must chart, keyed
// chart/series/second, from the results file, and how many seconds carry
// zonelb's own metrics.
func chartPointsOf(res demoreport.Results) (map[string]string, int) {
	want := map[string]string{}
	metricSeconds := 0
	for _, s := range res.Live.Seconds {
		sec := demoreport.Value(s.Start)
		for _, z := range res.Live.Zones {
			want["shares/"+z+"/"+sec] = demoreport.Value(s.Share[z])
		}
		if s.MetricLocalShare != nil {
			want["shares/"+res.Live.Zones[0]+" (zonelb's metrics)/"+sec] = demoreport.Value(*s.MetricLocalShare)
			metricSeconds++
		}
		want["p99/p99/"+sec] = demoreport.Value(s.P99Ms)
		want["failures/failed/"+sec] = demoreport.Value(float64(s.Failed))
	}
	return want, metricSeconds
}

// domPointsAndRows is every charted point in the DOM (keyed as
// chartPointsOf) and the cells of the side-by-side table's rows.
func domPointsAndRows(doc *html.Node) (map[string]string, [][]string) {
	got := map[string]string{}
	var rows [][]string
	walk(doc, func(n *html.Node) {
		if attr(n, "class") == "pt" {
			got[attr(n, "data-chart")+"/"+attr(n, "data-series")+"/"+attr(n, "data-second")] = attr(n, "data-value")
		}
		if n.Data == "tr" && inTable(n, "side-by-side") {
			var cells []string
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Type == html.ElementNode && (c.Data == "td" || c.Data == "th") {
					cells = append(cells, strings.TrimSpace(text(c)))
				}
			}
			rows = append(rows, cells)
		}
	})
	return got, rows
}

// checkChartPoints fails for each point on which the DOM and the results
// file disagree, or that only one of them has.
func checkChartPoints(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("chart point %s: the DOM says %q, the results file %q", k, got[k], v)
		}
		delete(got, k)
	}
	for k, v := range got {
		t.Errorf("chart point %s=%s is not in the results file", k, v)
	}
}

// checkTableRows fails unless the DOM's side-by-side table has the results
// file's header and rows.
func checkTableRows(t *testing.T, res demoreport.Results, rows [][]string) {
	t.Helper()
	wantRows := [][]string{append([]string{""}, res.Table.Columns...)}
	for _, r := range res.Table.Rows {
		wantRows = append(wantRows, append([]string{strings.TrimSpace(r.Label)}, r.Cells...))
	}
	if len(rows) != len(wantRows) {
		t.Errorf("side-by-side table: %d rows in the DOM, %d in the results file", len(rows), len(wantRows))
	}
	for i := range min(len(rows), len(wantRows)) {
		if strings.Join(rows[i], " | ") != strings.Join(wantRows[i], " | ") {
			t.Errorf("side-by-side row %d: the DOM says %q, the results file %q", i, rows[i], wantRows[i])
		}
	}
}

// chrome runs headless Chromium in a network namespace of its own (only
// loopback, down): nothing it does can leave the machine. It returns what
// Chromium wrote to stdout.
func chrome(t *testing.T, chromium, dir string, args ...string) []byte {
	t.Helper()
	profile := t.TempDir()
	base := []string{"-n", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", append(base, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errOut.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "chromium.log"), errOut.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// checkScreenshot wants a PNG of the page with something drawn on it.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	b := img.Bounds()
	colors := map[uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
		}
	}
	if b.Dx() < 800 || len(colors) < 8 {
		t.Errorf("screenshot %s: %v with %d colours: nothing rendered", path, b, len(colors))
	}
}

func walk(n *html.Node, fn func(*html.Node)) {
	if n.Type == html.ElementNode {
		fn(n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, fn)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func inTable(n *html.Node, id string) bool {
	for p := n.Parent; p != nil; p = p.Parent {
		if p.Type == html.ElementNode && p.Data == "table" {
			return attr(p, "id") == id
		}
	}
	return false
}

func text(n *html.Node) string {
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return b.String()
}
