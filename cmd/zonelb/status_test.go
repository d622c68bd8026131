package main

import (
	"strings"
	"testing"

	"github.com/zonelb/zonelb/daemon"
	"github.com/zonelb/zonelb/zone"
)

// zonelb status shows each service's spill budget and why its traffic is
// split as it is.
func TestStatusShowsBudgetAndReason(t *testing.T) {
	st := daemon.StateReport{Services: []daemon.ServiceReport{{
		Service: "default/greeter:grpc",
		Balancer: zone.State{ZoneAware: true, SpillBudgetText: "80%",
			Reason: "spilling 31%: local 7.9ms over budget 7.5ms"},
	}}}
	var b strings.Builder
	printStatus(&b, st)
	for _, want := range []string{"BUDGET", "WHY", "80%", "spilling 31%: local 7.9ms over budget 7.5ms"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
