package main

import (
	"runtime/debug"
	"testing"
)

// zonelb proxy lowers the collector's target to proxyGCPercent, unless
// the operator set GOGC.
func TestSetProxyGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	setProxyGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != proxyGCPercent {
		t.Fatalf("GOGC unset: collector target %d, want %d", got, proxyGCPercent)
	}
	setProxyGC(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC=100 in the environment: collector target changed to %d", got)
	}
}
