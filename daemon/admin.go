package daemon

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zonelb/zonelb/internal/pprofmux"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// StateReport is what /debug/state returns and `zonelb status` prints.
type StateReport struct {
	Node   string `json:"node"`
	Zone   string `json:"zone"`
	Source string `json:"source"`
	Ready  bool   `json:"ready"`
	// Reloads counts configuration reloads applied since start.
	Reloads    uint64           `json:"reloads"`
	Redirect   bool             `json:"redirect"`
	PricePerGB float64          `json:"pricePerGB"`
	Services   []ServiceReport  `json:"services"`
	CrossZone  []zone.PairUsage `json:"crossZone"`
	Proxy      proxy.Stats      `json:"proxy"`
}

// ServiceReport is one service port's state.
type ServiceReport struct {
	Service   string   `json:"service"`
	Frontends []string `json:"frontends"`
	// Requests reached an endpoint; LocalRequests stayed in the zone.
	Requests      uint64     `json:"requests"`
	LocalRequests uint64     `json:"localRequests"`
	Balancer      zone.State `json:"balancer"`
}

// admin serves the daemon's HTTP endpoints.
type admin struct {
	log     *slog.Logger
	metrics *Metrics
	state   func() StateReport
	ready   atomic.Bool
	servers []*http.Server
	addr    net.Addr // where the debug endpoints are served
	// faults serves the fault triggers (faults.go) beside the debug
	// endpoints; ballast is what /debug/fault/grow holds.
	faults  bool
	ballast ballast
}

func (a *admin) mux(withDebug bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{Registry: a.metrics.Registry}))
	if !withDebug {
		return mux
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/debug/state", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.state())
	})
	pprofmux.Register(mux)
	if a.faults {
		registerFaults(mux, &a.ballast)
	}
	return mux
}

// serve listens on addr; it returns once listening.
func (a *admin) serve(addr string, withDebug bool) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: a.mux(withDebug), ReadHeaderTimeout: 10 * time.Second}
	a.servers = append(a.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", "addr", addr, "err", err)
		}
	}()
	return l.Addr(), nil
}

func (a *admin) close() {
	for _, s := range a.servers {
		s.Close()
	}
}

// buildReport assembles the state report.
func buildReport(base StateReport, svcs *services, m *Metrics, acct *zone.Accounting, px *proxy.Proxy) StateReport {
	r := base
	snap := svcs.snapshot()
	frontends := map[string][]string{}
	if snap != nil {
		r.Zone = snap.Zone
		if snap.Node != "" {
			r.Node = snap.Node
		}
		for addr, id := range snap.Frontends {
			frontends[id.String()] = append(frontends[id.String()], addr.String())
		}
	}
	for _, st := range svcs.BalancerStates() {
		fe := frontends[st.Service]
		sort.Strings(fe)
		local, total := m.LocalShare(st.Service)
		r.Services = append(r.Services, ServiceReport{Service: st.Service, Frontends: fe, Requests: total, LocalRequests: local, Balancer: st.State})
	}
	if acct != nil {
		r.PricePerGB = acct.PricePerGB()
		r.CrossZone = acct.Usage()
	}
	if px != nil {
		r.Proxy = px.Stats()
	}
	return r
}
