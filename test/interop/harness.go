package interop

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/testenv"
)

// Settings are the knobs `make test` and `make interop` turn through the
// environment.
type Settings struct {
	// Rounds of all Cases() (ZONELB_INTEROP_ROUNDS, default 3).
	Rounds int
	// Direct runs the client against the servers with no proxy in between
	// (ZONELB_INTEROP_TARGET=direct): it proves the harness itself, and
	// gives a baseline.
	Direct bool
	// Parallel is how many cases of a round run at once
	// (ZONELB_INTEROP_PARALLEL, default 4).
	Parallel int
	// ProxyBin is a prebuilt zonelb binary to use instead of building
	// cmd/zonelb (ZONELB_BIN, as the Makefile sets it).
	ProxyBin string
}

// SettingsFromEnv reads Settings through getenv (os.Getenv in tests).
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{Rounds: 3, Parallel: 4, ProxyBin: getenv("ZONELB_BIN")}
	for _, knob := range []struct {
		name string
		dst  *int
	}{{"ZONELB_INTEROP_ROUNDS", &s.Rounds}, {"ZONELB_INTEROP_PARALLEL", &s.Parallel}} {
		v := getenv(knob.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("%s=%q: want a positive integer", knob.name, v)
		}
		*knob.dst = n
	}
	switch t := strings.ToLower(getenv("ZONELB_INTEROP_TARGET")); t {
	case "", "proxy":
	case "direct":
		s.Direct = true
	default:
		return s, fmt.Errorf("ZONELB_INTEROP_TARGET=%q: want proxy or direct", t)
	}
	return s, nil
}

// Zones returns the zones of the three servers a Stack starts, one each;
// the proxy runs in the first.
func Zones() []string { return []string{"zone-a", "zone-b", "zone-c"} }

// Stack is a running set of interop servers, one per zone, and (unless
// direct) a zonelb proxy in front of them, plus a client ready to run.
type Stack struct {
	Servers []*Server
	// Proxy is nil in direct mode.
	Proxy  *Proxy
	Client Client
}

// stopGrace is how long a child gets between SIGTERM and SIGKILL; the
// proxy's graceful shutdown must fit in it.
const stopGrace = 15 * time.Second

// Start builds what is needed, starts one server per zone and, unless
// s.Direct, a proxy in front of them. Everything started is stopped in
// tb.Cleanup; a child that does not exit cleanly on SIGTERM fails the test,
// since graceful shutdown is part of the proxy's contract.
func Start(tb testing.TB, logger *slog.Logger, s Settings) *Stack {
	tb.Helper()
	ctx := tb.Context()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	if !s.Direct && s.ProxyBin == "" && !HasProxy(root) {
		testenv.SkipOrFail(tb, "cmd/zonelb does not exist yet; set ZONELB_INTEROP_TARGET=direct to run the harness without the proxy")
	}
	clientBin, err := BuildClient(ctx, CacheDir(root))
	if err != nil {
		tb.Fatal(err)
	}
	binDir := tb.TempDir()
	serverBin, err := BuildServer(ctx, root, binDir)
	if err != nil {
		tb.Fatal(err)
	}
	st := &Stack{Client: Client{Bin: clientBin, Args: SoakArgs(), Timeout: 90 * time.Second}}
	var endpoints []Endpoint
	for _, zone := range Zones() {
		srv, err := StartServer(ctx, logger, serverBin, "server-"+zone)
		if err != nil {
			tb.Fatal(err)
		}
		stopOnCleanup(tb, srv.Process)
		st.Servers = append(st.Servers, srv)
		endpoints = append(endpoints, Endpoint{Zone: zone, Addr: srv.Addr})
	}
	st.Proxy = StartProxyFor(tb, logger, s, endpoints)
	return st
}

// StartProxyFor builds (or takes s.ProxyBin) and starts a zonelb proxy in
// zone Zones()[0] in front of endpoints, stopped in tb.Cleanup. In direct mode
// it returns nil: callers then talk to the endpoints themselves.
func StartProxyFor(tb testing.TB, logger *slog.Logger, s Settings, endpoints []Endpoint) *Proxy {
	tb.Helper()
	if s.Direct {
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	bin := s.ProxyBin
	if bin == "" {
		if !HasProxy(root) {
			testenv.SkipOrFail(tb, "cmd/zonelb does not exist yet; set ZONELB_INTEROP_TARGET=direct to run the harness without the proxy")
		}
		if bin, err = BuildProxy(tb.Context(), root, tb.TempDir()); err != nil {
			tb.Fatal(err)
		}
	}
	p, err := StartProxy(tb.Context(), logger, ProxyConfig{Bin: bin, Zone: Zones()[0], Endpoints: endpoints, Admin: true,
		// The suite checks gRPC semantics and per-request spread over all
		// three servers; zone preference (which would keep every call on
		// the zone-a server) is tested in zone/, daemon/ and test/e2e.
		ExtraArgs: []string{"--ignore-zones"}})
	if err != nil {
		tb.Fatal(err)
	}
	stopOnCleanup(tb, p.Process)
	return p
}

// stopOnCleanup registers p.Stop; cleanups run last-in first-out, so the
// proxy stops before the servers behind it.
func stopOnCleanup(tb testing.TB, p *Process) {
	tb.Cleanup(func() {
		if err := p.Stop(stopGrace); err != nil {
			tb.Errorf("stop %s: %v\noutput:\n%s", p.Name, err, p.Output())
		}
	})
}

// Target is where the i-th job of a round goes: the proxy, or in direct
// mode the servers in turn, so that the spread check holds there too.
func (st *Stack) Target(i int) string {
	if st.Proxy != nil {
		return st.Proxy.Addr
	}
	return st.Servers[i%len(st.Servers)].Addr
}

// Calls collects every server's CallStats.
func (st *Stack) Calls(ctx context.Context) (map[string]CallStats, error) {
	return CollectCalls(ctx, st.Servers)
}
