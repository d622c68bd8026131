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

// zonelb status names where a spill goes: every zone of the tier, or,
// by residual capacity, the zones with room and their shares.
func TestStatusShowsWhereTheSpillGoes(t *testing.T) {
	for _, tc := range []struct {
		sp   zone.SpillState
		want string
	}{
		{zone.SpillState{Active: true, Share: 0.31, Zones: []string{"a", "b"}}, "on (31% to a,b)"},
		{zone.SpillState{Active: true, Share: 0.31, Zones: []string{"a", "b", "c"}, SpillTo: map[string]float64{"a": 0.8, "c": 0.2}}, "on (31% to a 80%,c 20%)"},
	} {
		st := daemon.StateReport{Services: []daemon.ServiceReport{{
			Service:  "default/greeter:grpc",
			Balancer: zone.State{ZoneAware: true, Spill: []zone.SpillState{tc.sp}},
		}}}
		var b strings.Builder
		printStatus(&b, st)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("status lacks %q:\n%s", tc.want, b.String())
		}
	}
}
