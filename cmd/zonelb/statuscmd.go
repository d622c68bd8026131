package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zonelb/zonelb/daemon"

	"github.com/zonelb/zonelb/internal/cli"
	"github.com/zonelb/zonelb/zone"
)

const statusSynopsis = `
Ask a running daemon for its state (its /debug/state) and print it as
tables: services with their endpoints per zone, the share of requests that
stayed in the node's zone, spillover, and the bytes that crossed zones with
their estimated cost.`

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("zonelb status")
	addr := fs.String("admin", daemon.DefaultAdminAddress, "the daemon's admin address")
	asJSON := fs.Bool("json", false, "print the raw JSON state")
	if code, done := cli.Parse(fs, statusSynopsis, args, stdout, stderr); done {
		return code
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + *addr + "/debug/state")
	if err != nil {
		fmt.Fprintf(stderr, "zonelb status: cannot reach the daemon at %s: %v\n", *addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "zonelb status: %s answered %s: %v\n", *addr, resp.Status, err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var st daemon.StateReport
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "zonelb status: unreadable state from %s: %v\n", *addr, err)
		return 1
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st daemon.StateReport) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	redirect := "on"
	if !st.Redirect {
		redirect = "off"
	}
	fmt.Fprintf(w, "node %s  zone %s  source %s  redirect %s  %s\n", orDash(st.Node), orDash(st.Zone), st.Source, redirect, ready)
	fmt.Fprintf(w, "proxy: %d requests, %d in flight, %d retries, %d upstream connections opened\n\n",
		st.Proxy.Requests, st.Proxy.ActiveRequests, st.Proxy.Retries, st.Proxy.UpstreamConns)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tFRONTENDS\tREQUESTS\tLOCAL SHARE\tSPILLOVER\tBUDGET\tWHY")
	for _, s := range st.Services {
		share := "-"
		if s.Requests > 0 {
			share = fmt.Sprintf("%.1f%%", 100*float64(s.LocalRequests)/float64(s.Requests))
		}
		spill := "off"
		for _, sp := range s.Balancer.Spill {
			if sp.Active {
				spill = fmt.Sprintf("on (%.0f%% to %s)", 100*sp.Share, spillZones(sp))
				break
			}
		}
		if !s.Balancer.ZoneAware {
			spill = "zone-blind"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Service, strings.Join(s.Frontends, ","), s.Requests, share, spill,
			orDash(s.Balancer.SpillBudgetText), orDash(s.Balancer.Reason))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tZONE\tENDPOINT\tSTATE\tLATENCY\tIN FLIGHT")
	for _, s := range st.Services {
		eps := s.Balancer.Endpoints
		sort.SliceStable(eps, func(i, j int) bool { return eps[i].Endpoint.Zone < eps[j].Endpoint.Zone })
		for _, e := range eps {
			state := "ready"
			switch {
			case e.Ejected:
				state = "ejected"
			case e.Endpoint.Terminating:
				state = "terminating"
			case !e.Endpoint.Ready:
				state = "not ready"
			case e.SlowStartWeight < 1:
				state = fmt.Sprintf("slow start %.0f%%", 100*e.SlowStartWeight)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", s.Service, orDash(e.Endpoint.Zone), e.Endpoint.Addr, state, e.Estimate.Round(10*time.Microsecond), e.InFlight)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "FROM ZONE\tTO ZONE\tREQUESTS\tBYTES SENT\tBYTES RECEIVED\tEST. COST (USD, $%.3f/GB each way)\n", st.PricePerGB)
	for _, u := range st.CrossZone {
		cost := "-"
		if u.CrossZone {
			cost = fmt.Sprintf("%.6f", u.CostUSD)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", orDash(u.From), orDash(u.To), u.Requests, u.BytesSent, u.BytesReceived, cost)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// spillZones names the zones a tier's spill goes to: with the share each
// takes when they go by residual capacity ("a 80%,c 20%"), else all.
func spillZones(sp zone.SpillState) string {
	if len(sp.SpillTo) == 0 {
		return strings.Join(sp.Zones, ",")
	}
	var parts []string
	for _, z := range sp.Zones {
		if w := sp.SpillTo[z]; w > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", z, 100*w))
		}
	}
	return strings.Join(parts, ",")
}
