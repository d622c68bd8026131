package standalone

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/zonelb/zonelb/internal/cli"
	"github.com/zonelb/zonelb/zone"
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

// Bad usage is one line naming the command the user ran, and exit status
// 2, before anything listens.
func TestRunRefusesBadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "zonelb-proxy: no endpoints: give at least one --to ZONE=IP:PORT"},
		{[]string{"--to", "a=127.0.0.1"}, `zonelb-proxy: invalid value "a=127.0.0.1" for flag -to: endpoint "a=127.0.0.1": want [ZONE=]IP:PORT`},
		{[]string{"--to", "a=127.0.0.1:1", "--to", "b=127.0.0.1:1"}, "endpoint 127.0.0.1:1 given twice"},
		{[]string{"--to", "a=127.0.0.1:1", "--protocol", "h3"}, `zonelb-proxy: --protocol "h3": want auto or h2`},
		{[]string{"--to", "a=127.0.0.1:1", "--listen", "localhost"}, `zonelb-proxy: --listen "localhost": want IP:PORT`},
		{[]string{"--to", "a=127.0.0.1:1", "--log-level", "loud"}, `zonelb-proxy: --log-level "loud"`},
		{[]string{"--to", "a=127.0.0.1:1", "--price-per-gb", "-1"}, "zonelb-proxy: --price-per-gb: "},
		{[]string{"--to", "a=127.0.0.1:1", "--spill-budget", "lots"}, "zonelb-proxy: --spill-budget: "},
		{[]string{"--to", "a=127.0.0.1:1", "--zone-clients", "a=3,b"}, `zonelb-proxy: invalid value "a=3,b" for flag -zone-clients: "b": want ZONE=N pairs`},
		{[]string{"--to", "a=127.0.0.1:1", "--zone-clients", "a=-1"}, `"a=-1": want ZONE=N pairs with N >= 0`},
		{[]string{"--to", "a=127.0.0.1:1", "--zone-clients", "a=1,a=2"}, `zone "a" given twice`},
	} {
		var stdout, stderr bytes.Buffer
		if code := Run("zonelb-proxy", tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit status %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if got := stderr.String(); !strings.Contains(got, tc.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%q: stderr %q, want one line with %q", tc.args, got, tc.want)
		}
	}
}

// --zone-clients reaches the balancer: the spill goes to the zones with
// room (a: 2 of 4 endpoints for a third of the clients; b: 1 for a third,
// none).
func TestZoneClientsFlag(t *testing.T) {
	fs := cli.NewFlagSet("zonelb-proxy")
	var f proxyFlags
	f.register(fs)
	if err := fs.Parse([]string{"--zone", "c", "--to", "c=127.0.0.1:1", "--to", "a=127.0.0.2:1", "--to", "a=127.0.0.3:1", "--to", "b=127.0.0.4:1", "--zone-clients", "a=1, b=1,c=1"}); err != nil {
		t.Fatal(err)
	}
	if got := f.zoneClients.String(); got != "a=1,b=1,c=1" {
		t.Errorf("--zone-clients reads back as %q", got)
	}
	acct, err := zone.NewAccounting(0)
	if err != nil {
		t.Fatal(err)
	}
	bal, err := f.newBalancer(acct, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := bal.State()
	if len(st.Spill) != 1 || len(st.Spill[0].SpillTo) != 1 || st.Spill[0].SpillTo["a"] != 1 {
		t.Errorf("spill state %+v: want all of the spill to zone a", st.Spill)
	}
}
