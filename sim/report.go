package sim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

func writeTable(w io.Writer, sc *Scenario, rs []Result, o options) {
	header := []string{"policy", "cross req", "cross bytes", "$/day", "p50", "p99", "p99.9", "success", "util max/mean"}
	extra := extraColumns(sc)
	header = append(header, extra...)
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		row := []string{
			string(r.Policy),
			pct(r.CrossRequests),
			pct(r.CrossBytes),
			fmt.Sprintf("%.2f", r.CostPerDay),
			ms(r.P50), ms(r.P99), ms(r.P999),
			fmt.Sprintf("%.3f%%", 100*r.Success),
			fmt.Sprintf("%.2f/%.2f", r.UtilMax, r.UtilMean),
		}
		for _, x := range extra {
			switch x {
			case "moved":
				if r.Moved < 0 {
					row = append(row, "never")
				} else {
					row = append(row, ms(r.Moved))
				}
			case "failed in window":
				row = append(row, fmt.Sprint(r.WindowFailed))
			case "p99 / no stall":
				row = append(row, fmt.Sprintf("%.2fx", r.P99Ratio))
			case "step: first-second p99":
				row = append(row, ms(r.StepP99))
			case "step: settled local / worst dip":
				row = append(row, fmt.Sprintf("%s / %.1f pts", pct(r.StepSettled), 100*r.StepDip))
			case "flips/node":
				if r.Policy == Zonelb {
					row = append(row, fmt.Sprintf("%.1f", r.Flips))
				} else {
					row = append(row, "-")
				}
			}
		}
		rows = append(rows, row)
	}

	title := fmt.Sprintf("%s: %s (%v, seed %d, %d requests measured per policy)",
		sc.Name, sc.Description, sc.Duration, o.seed, maxRequests(rs))
	printRows(w, title, header, rows, o.markdown)
}

// printRows prints a titled table as markdown or aligned text.
func printRows(w io.Writer, title string, header []string, rows [][]string, markdown bool) {
	if markdown {
		fmt.Fprintf(w, "\n**%s**\n\n", title)
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
		for _, row := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		return
	}
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
}

func extraColumns(sc *Scenario) []string {
	var extra []string
	if sc.Watch != nil {
		extra = append(extra, "moved", "failed in window")
	}
	if sc.Baseline != "" {
		extra = append(extra, "p99 / no stall")
	}
	if sc.Step != nil {
		extra = append(extra, "step: first-second p99", "step: settled local / worst dip")
	}
	if len(sc.Zones) > 1 {
		extra = append(extra, "flips/node")
	}
	return extra
}

func maxRequests(rs []Result) int {
	n := 0
	for _, r := range rs {
		n = max(n, r.Requests)
	}
	return n
}

func pct(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) }

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fms", float64(d)/1e6)
}
