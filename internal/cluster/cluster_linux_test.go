package cluster

import (
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func backendsFor(t *testing.T, ready map[string]bool) []*Backend {
	t.Helper()
	var bs []*Backend
	for i, name := range []string{"a1", "a2", "b1", "b2", "c1", "c2"} {
		bs = append(bs, &Backend{
			Name:  name,
			Zone:  "zone-" + name[:1],
			Addr:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(i/2 + 1), byte(10 + i%2)}), BackendPort),
			ready: ready == nil || ready[name],
		})
	}
	return bs
}

var probRE = regexp.MustCompile(`-A KUBE-SVC-GREETER (?:-m statistic --mode random --probability ([0-9.]+) )?-j KUBE-SEP-(\w+)`)

// shares reads the chance of each endpoint from the rules: a rule is
// reached with what the rules before it left, and taken with its
// probability (1 without a statistic match).
func shares(t *testing.T, rules string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	left := 1.0
	for _, m := range probRE.FindAllStringSubmatch(rules, -1) {
		p := 1.0
		if m[1] != "" {
			var err error
			if p, err = strconv.ParseFloat(m[1], 64); err != nil {
				t.Fatal(err)
			}
		}
		out[strings.ToLower(m[2])] = left * p
		left *= 1 - p
	}
	return out
}

func TestBaselineRandomGivesEveryReadyEndpointAnEqualChance(t *testing.T) {
	rules := baselineRules(BaselineRandom, backendsFor(t, nil))
	got := shares(t, rules)
	if len(got) != 6 {
		t.Fatalf("want 6 endpoints in the rules, got %v:\n%s", got, rules)
	}
	for name, p := range got {
		if p < 1.0/6-1e-9 || p > 1.0/6+1e-9 {
			t.Errorf("%s has chance %.6f, want 1/6", name, p)
		}
	}
	if !strings.Contains(rules, "-A KUBE-SEP-A1 -p tcp -m tcp -j DNAT --to-destination 10.244.1.10:50051") ||
		!strings.Contains(rules, "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80") ||
		!strings.Contains(rules, "-A PREROUTING") {
		t.Errorf("rules lack the DNAT, the ClusterIP match or the PREROUTING hook:\n%s", rules)
	}
	if !strings.HasPrefix(rules, "*nat\n") || !strings.HasSuffix(rules, "COMMIT\n") {
		t.Errorf("not an iptables-restore document:\n%s", rules)
	}
}

func TestBaselinePreferSameZone(t *testing.T) {
	got := shares(t, baselineRules(BaselinePreferSameZone, backendsFor(t, nil)))
	if len(got) != 2 || got["a1"] != 0.5 || got["a2"] != 0.5 {
		t.Errorf("with zone-a ready: %v, want a1 and a2 at 1/2", got)
	}
	// No ready endpoint in zone: every ready endpoint, as kube-proxy does.
	got = shares(t, baselineRules(BaselinePreferSameZone, backendsFor(t, map[string]bool{"b1": true, "c2": true})))
	if len(got) != 2 || got["b1"] != 0.5 || got["c2"] != 0.5 {
		t.Errorf("with zone-a gone: %v, want b1 and c2 at 1/2", got)
	}
}

func TestBaselineSkipsNotReadyEndpointsAndNoneInstallsNothing(t *testing.T) {
	got := shares(t, baselineRules(BaselineRandom, backendsFor(t, map[string]bool{"a1": true, "b2": true, "c1": true})))
	if len(got) != 3 || got["a2"] != 0 {
		t.Errorf("not-ready endpoints in the rules: %v", got)
	}
	for _, b := range []Baseline{BaselineNone, BaselineRandom} {
		ready := map[string]bool{}
		if b == BaselineNone {
			ready = nil
		}
		if rules := baselineRules(b, backendsFor(t, ready)); strings.Contains(rules, "-j KUBE-SVC-GREETER") {
			t.Errorf("%v with no endpoint to use still matches the ClusterIP:\n%s", b, rules)
		}
	}
}

func TestProcessCPUReadsOwnStat(t *testing.T) {
	// Burn a little CPU so the figure is above zero.
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i
	}
	_ = x
	got, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got <= 0 {
		t.Errorf("own CPU time %v, want > 0", got)
	}
	if _, err := processCPU(-1); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}
