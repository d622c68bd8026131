package soak

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
)

// report writes the run's summary and checks the bounds: no saveable
// failed call; from the end of the first fifth on (minute 2 of 10), the
// daemon's RSS grows by at most 5 %, and goroutines, fds, upstream
// connections and BPF map entries, read at quiet moments (no fault active
// or undone in the last 5 s, the same load), end within 5 % of their level
// then (or within one, for counts under 20, where 5 % is less than one).
func report(t *testing.T, dur time.Duration, seed uint64, evs []event, samples []sample, last cluster.Window, received map[string]string) result {
	var b strings.Builder
	var errs []string
	all := last
	var ws []cluster.Window
	for _, s := range samples {
		ws = append(ws, s.W)
	}
	all = cluster.Merge(append(ws, last)...)
	lost := inFlight(evs, all)
	saveable := cluster.Saveable(all.Failures, received, lost)
	for _, c := range steeredAfterKill(evs, all) {
		errs = append(errs, fmt.Sprintf("connection %s dialled after a daemon kill was steered to the dying proxy", c.Local))
	}
	fmt.Fprintf(&b, "soak: %v, seed %d, %d faults, %d samples\n\n", dur, seed, len(evs), len(samples))
	fmt.Fprintf(&b, "calls: %d ok, %d failed (%d recorded), %d saveable; in-zone share %.3f; %d connections\n",
		all.OK, all.Failed, len(all.Failures), len(saveable), all.Share(cluster.ClientZone), len(all.Conns))
	if all.Failed > len(all.Failures) {
		errs = append(errs, fmt.Sprintf("%d failures but only %d recorded: cannot classify them", all.Failed, len(all.Failures)))
	}
	causes := map[string]int{}
	for _, f := range all.Failures {
		kind := "saveable"
		switch {
		case received[f.ID] != "":
			kind = "reached a backend"
		case lost(f):
			kind = "in flight on a killed process"
		}
		causes[kind+": "+f.Code+" "+cause(f.Msg)]++
	}
	keys := make([]string, 0, len(causes))
	for k := range causes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("failures by cause:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %5d  %s\n", causes[k], k)
	}
	for i, f := range saveable {
		if i == 20 {
			break
		}
		errs = append(errs, fmt.Sprintf("saveable failed call %s at %+.3fs: %s %q (conn %q)%s", f.ID,
			time.Duration(f.Start-samples[0].W.Start).Seconds(), f.Code, f.Msg, f.Conn, connDetail(all, evs, f)))
	}
	if len(saveable) > 0 {
		errs = append(errs, fmt.Sprintf("%d saveable failed calls", len(saveable)))
	}

	b.WriteString(killDetail(all, evs))
	b.WriteString("\nfaults:\n")
	for _, ev := range evs {
		fmt.Fprintf(&b, "  %6.1fs  %-70s %s\n", ev.At.Seconds(), ev.Kind, ev.Target)
	}

	// Leak bounds, on the daemon that lives from the end of the first
	// fifth on.
	early := dur / 5
	final := samples[len(samples)-1].D.Pid
	type metric struct {
		name string
		get  func(cluster.DaemonSample) float64
	}
	metrics := []metric{
		{"RSS MiB", func(d cluster.DaemonSample) float64 { return float64(d.RSSBytes) / (1 << 20) }},
		{"goroutines", func(d cluster.DaemonSample) float64 { return float64(d.Goroutine) }},
		{"open fds", func(d cluster.DaemonSample) float64 { return float64(d.FDs) }},
		{"upstream conns", func(d cluster.DaemonSample) float64 { return float64(d.UpstreamConns) }},
		{"zlb_tuples", func(d cluster.DaemonSample) float64 { return float64(d.MapEntries["zlb_tuples"]) }},
		{"zlb_services", func(d cluster.DaemonSample) float64 { return float64(d.MapEntries["zlb_services"]) }},
		{"zlb_netns", func(d cluster.DaemonSample) float64 { return float64(d.MapEntries["zlb_netns"]) }},
	}
	window := func(from, to time.Duration, quiet bool) []cluster.DaemonSample {
		var out []cluster.DaemonSample
		for _, s := range samples {
			if s.T >= from && s.T < to && s.D.Pid == final && s.DErr == "" && (!quiet || s.Quiet) {
				out = append(out, s.D)
			}
		}
		return out
	}
	fmt.Fprintf(&b, "\nleak bounds (daemon pid %d, from %v to the end):\n", final, early)
	fmt.Fprintf(&b, "  %-15s %10s %10s %8s %s\n", "", "at start", "at end", "change", "bound")
	for i, m := range metrics {
		quiet := i > 0 // RSS: every sample; the others at quiet moments
		from := window(early, early+30*time.Second, quiet)
		to := window(dur-60*time.Second, dur+time.Minute, quiet)
		if i == 0 {
			to = window(dur-30*time.Second, dur+time.Minute, false)
		}
		if len(from) == 0 || len(to) == 0 {
			errs = append(errs, fmt.Sprintf("%s: no samples to compare (%d at the start, %d at the end)", m.name, len(from), len(to)))
			continue
		}
		var fv, tv []float64
		for _, d := range from {
			fv = append(fv, m.get(d))
		}
		for _, d := range to {
			tv = append(tv, m.get(d))
		}
		base, end := median(fv), median(tv)
		change := 0.0
		if base > 0 {
			change = end/base - 1
		}
		bound, ok := "+5%", change <= 0.05
		if i > 0 {
			slack := math.Max(0.05*base, 0)
			if base < 20 {
				slack = 1
			}
			bound, ok = "within 5% (1 under 20)", math.Abs(end-base) <= slack
		}
		verdict := "ok"
		if !ok {
			verdict = "EXCEEDED"
			errs = append(errs, fmt.Sprintf("%s went from %.1f to %.1f (%+.1f%%), bound %s", m.name, base, end, 100*change, bound))
		}
		fmt.Fprintf(&b, "  %-15s %10.1f %10.1f %+7.1f%% %s: %s\n", m.name, base, end, 100*change, bound, verdict)
	}

	b.WriteString("\nevery 10 s:\n")
	fmt.Fprintf(&b, "  %6s %7s %6s %7s %8s %5s %4s %5s %7s  %s\n", "t", "calls/s", "failed", "in-zone", "RSS MiB", "gorout", "fds", "upstr", "tuples", "fault")
	for i := 0; i < len(samples); i += 10 {
		group := samples[i:min(i+10, len(samples))]
		var gw []cluster.Window
		active := ""
		for _, s := range group {
			gw = append(gw, s.W)
			if s.Active != "" {
				active = s.Active
			}
		}
		w := cluster.Merge(gw...)
		s := group[len(group)-1]
		fmt.Fprintf(&b, "  %5.0fs %7.0f %6d %7.3f %8.1f %5d %4d %5d %7d  %s\n", s.T.Seconds(), w.Rate(), w.Failed,
			w.Share(cluster.ClientZone), float64(s.D.RSSBytes)/(1<<20), s.D.Goroutine, s.D.FDs, s.D.UpstreamConns,
			s.D.MapEntries["zlb_tuples"], short(active))
	}
	return result{text: b.String(), errs: errs}
}

// cause shortens a failure message to its kind (addresses and ports out).
func cause(msg string) string {
	for _, k := range []string{"connection reset by peer", "unexpected EOF", "broken pipe", "EOF", "connection refused",
		"server preface", "deadline exceeded", "context canceled"} {
		if strings.Contains(msg, k) {
			return k
		}
	}
	if len(msg) > 60 {
		return msg[:60]
	}
	return msg
}

func short(kind string) string {
	if i := strings.IndexAny(kind, "(,:"); i > 0 {
		return strings.TrimSpace(kind[:i])
	}
	return kind
}

// plot draws RSS and the in-zone share of calls against time, one panel
// each, as SVG (hand-written: no plotting dependency).
func plot(samples []sample) string {
	const w, h, left, top, panel, gap = 900, 420, 70, 30, 150, 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	tMax := samples[len(samples)-1].T.Seconds()
	x := func(t float64) float64 { return left + (w-left-20)*t/tMax }
	draw := func(y0 int, title string, yMax float64, yFmt func(float64) string, val func(sample) (float64, bool), color string) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, y0-8, title)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, y0, w-left-20, panel)
		for i := 0; i <= 4; i++ {
			v := yMax * float64(i) / 4
			y := float64(y0+panel) - float64(panel)*float64(i)/4
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, yFmt(v))
		}
		for _, s := range samples {
			if s.Active != "" {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#f3e0e0"/>`+"\n", x(s.T.Seconds()), y0, x(1)-x(0), panel)
			}
		}
		var pts []string
		for _, s := range samples {
			if v, ok := val(s); ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.T.Seconds()), float64(y0+panel)-float64(panel)*math.Min(v/yMax, 1)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
	}
	rssMax := 0.0
	for _, s := range samples {
		rssMax = math.Max(rssMax, float64(s.D.RSSBytes)/(1<<20))
	}
	rssMax = math.Ceil(rssMax/10)*10 + 10
	draw(top, "daemon RSS (MiB); shaded: a fault active", rssMax, func(v float64) string { return fmt.Sprintf("%.0f", v) },
		func(s sample) (float64, bool) { return float64(s.D.RSSBytes) / (1 << 20), s.D.RSSBytes > 0 }, "#1f77b4")
	draw(top+panel+gap, "in-zone share of successful calls (zone-a)", 1, func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) },
		func(s sample) (float64, bool) { return s.W.Share(cluster.ClientZone), s.W.OK > 0 }, "#2ca02c")
	y := top + 2*panel + gap + 25
	for i := 0; i <= 5; i++ {
		t := tMax * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", x(t), y, t)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// connDetail describes the connection a failed call went out on (or whose
// failure it names), with its times relative to the daemon's kill.
func connDetail(w cluster.Window, evs []event, f cluster.Failure) string {
	c, ok := w.ConnOf(f)
	if !ok {
		return " (no connection)"
	}
	var kill event
	for _, ev := range evs {
		if ev.Kind == evDaemonKill {
			kill = ev
		}
	}
	ref := kill.Sent[""].UnixNano()
	ms := func(ns int64) string {
		if ns == 0 || ref == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.3fms", float64(ns-ref)/1e6)
	}
	return fmt.Sprintf(" conn %s->%q dialled=%s established=%s broken=%s err=%q (from the daemon kill; kill(2) began %s, restarted %s)",
		c.Local, c.Remote, ms(c.DialStart), ms(c.Established), ms(c.Broken), c.Err, ms(kill.Before.UnixNano()), ms(kill.Restarted.UnixNano()))
}

// killDetail lists, for each daemon kill, the connections that broke
// from the kill on, with their times relative to kill(2)'s return.
func killDetail(w cluster.Window, evs []event) string {
	var b strings.Builder
	for _, ev := range evs {
		sent, ok := ev.Sent[""]
		if !ok {
			continue
		}
		ref := sent.UnixNano()
		ms := func(ns int64) string { return fmt.Sprintf("%+.3fms", float64(ns-ref)/1e6) }
		fmt.Fprintf(&b, "\ndaemon kill at %.1fs: kill(2) began %s, reaped %s, successor started then; connections broken:\n",
			ev.At.Seconds(), ms(ev.Before.UnixNano()), ms(ev.Restarted.UnixNano()))
		for _, c := range w.Conns {
			if c.Broken >= ev.Before.UnixNano() && c.Broken < ev.Before.Add(2*time.Second).UnixNano() {
				fmt.Fprintf(&b, "  %s->%q dialled %s established %s broken %s: %s\n", c.Local, c.Remote,
					ms(c.DialStart), ms(c.Established), ms(c.Broken), c.Err)
			}
		}
	}
	return b.String()
}
