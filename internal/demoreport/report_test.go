package demoreport

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// TestRenderCarriesEveryValue renders a small run and reads every charted
// value back from the page's data-value attributes, and the table's cells
// from its text; the page references nothing outside itself. (The demo's
// own test, cmd/zonelb-demo's TestDemoReport, does the same through
// headless Chromium on a real run.)
func TestRenderCarriesEveryValue(t *testing.T) {
	half := 0.5
	r := Results{
		Generated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Setup:     []string{"three zones"},
		Table:     Table{Columns: []string{"kube-proxy", "zonelb"}, Rows: []Row{{Label: "in-zone share of requests", Cells: []string{"33.3%", "100.0%"}}, {Label: "  a1 (zone-a)", Cells: []string{"-", "51 (51.0%)"}}}},
		Live: Live{Title: "live", Zones: []string{"zone-a", "zone-b"}, Events: []Event{{At: 1, Name: "zone-a overloaded"}},
			Seconds: []Second{
				{Start: 0, Rate: 600, Share: map[string]float64{"zone-a": 1, "zone-b": 0}, P99Ms: 3.25, MetricLocalShare: &half},
				{Start: 1, Rate: 598, Share: map[string]float64{"zone-a": 0.6666666666666666, "zone-b": 0.3333333333333333}, P99Ms: 12.5, Failed: 3},
			}},
	}
	dir := t.TempDir()
	path, err := Write(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Read(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := Render(back)
	if err != nil {
		t.Fatal(err)
	}
	if refs := regexp.MustCompile(`(?i)(src|href)\s*=|url\(|@import|<script|<link`).FindAllString(string(page), -1); len(refs) > 0 {
		t.Errorf("the page references outside resources: %v (%s)", refs, path)
	}
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	got, cells := pointsAndCells(doc)
	want := map[string]string{
		"shares/zone-a/0": "1", "shares/zone-b/0": "0", "shares/zone-a/1": "0.6666666666666666", "shares/zone-b/1": "0.3333333333333333",
		"shares/zone-a (zonelb's metrics)/0": "0.5",
		"p99/p99/0":                          "3.25", "p99/p99/1": "12.5",
		"failures/failed/0": "0", "failures/failed/1": "3",
	}
	if len(got) != len(want) {
		t.Errorf("%d charted points, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("point %s = %q, want %q", k, got[k], v)
		}
	}
	if s := strings.Join(cells, "|"); s != "in-zone share of requests|33.3%|100.0%|  a1 (zone-a)|-|51 (51.0%)" {
		t.Errorf("table cells %q", s)
	}
}

// pointsAndCells is every charted point of doc (chart/series/second to
// value) and the text of every table cell, in document order.
func pointsAndCells(doc *html.Node) (map[string]string, []string) {
	got := map[string]string{}
	var cells []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			var class, chart, series, second, value string
			for _, a := range n.Attr {
				switch a.Key {
				case "class":
					class = a.Val
				case "data-chart":
					chart = a.Val
				case "data-series":
					series = a.Val
				case "data-second":
					second = a.Val
				case "data-value":
					value = a.Val
				}
			}
			if class == "pt" {
				got[chart+"/"+series+"/"+second] = value
			}
			if n.Data == "td" && n.FirstChild != nil {
				cells = append(cells, n.FirstChild.Data)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return got, cells
}
