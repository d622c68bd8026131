package deploy

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

//go:embed grafana/zonelb.json
var dashboardJSON []byte

// PanelQuery is one query of a panel of the Grafana dashboard
// (deploy/grafana/zonelb.json).
type PanelQuery struct {
	PanelID    int
	PanelTitle string
	PanelType  string
	RefID      string
	// Expr is the PromQL as Grafana stores it, with its variables
	// ($instance, $service, $__rate_interval).
	Expr   string
	Legend string
}

// DashboardQueries returns every query of every panel of the dashboard,
// in panel order.
func DashboardQueries() ([]PanelQuery, error) {
	var d struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				RefID        string `json:"refId"`
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, fmt.Errorf("deploy: grafana/zonelb.json: %w", err)
	}
	var out []PanelQuery
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out = append(out, PanelQuery{PanelID: p.ID, PanelTitle: p.Title, PanelType: p.Type, RefID: t.RefID, Expr: t.Expr, Legend: t.LegendFormat})
		}
	}
	return out, nil
}

// Expand replaces the dashboard's variables as Grafana would with "All"
// selected for $instance and $service, and rateInterval for
// $__rate_interval.
func (q PanelQuery) Expand(rateInterval time.Duration) string {
	return strings.NewReplacer(
		"$__rate_interval", model.Duration(rateInterval).String(),
		"$instance", ".*",
		"$service", ".*",
	).Replace(q.Expr)
}
