// Package pprofmux puts net/http/pprof's handlers on a mux of one's own
// (importing net/http/pprof alone registers them on http.DefaultServeMux,
// which zonelb never serves). It knows nothing else.
package pprofmux

import (
	"net/http"
	"net/http/pprof"
)

// Register serves the profiles under /debug/pprof/ on mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
