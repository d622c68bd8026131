package bpf

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/zonelb/zonelb/internal/testenv"
)

// tuplesOnly builds a Redirector around a fresh 4-tuple map, nothing
// attached: enough to exercise OriginalDst's lookup and retry.
func tuplesOnly(t *testing.T) (*Redirector, *ebpf.Map) {
	testenv.RequireRoot(t)
	spec, err := loadZonelb()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec.Maps[zonelbMapZlbTuples])
	if err != nil {
		t.Fatalf("create tuples map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	cfg := Config{ProxyAddr4: proxy4}.withDefaults()
	return &Redirector{cfg: cfg, log: cfg.Logger, maps: mapSet{tuples: m}}, m
}

func TestOriginalDstRetriesAMissThenFinds(t *testing.T) {
	r, m := tuplesOnly(t)
	client := netip.MustParseAddrPort("198.19.1.2:40000")
	key := tupleKey(client, proxy4)
	val := zonelbOrigDst{Addr: addrWords(vip4), Port: portNet(80), Family: familyV4, ServiceId: 7}
	var sleeps []time.Duration
	sleep := func(d time.Duration) {
		sleeps = append(sleeps, d)
		if len(sleeps) == 2 { // the entry appears while we wait
			if err := m.Put(&key, &val); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := r.lookupOriginal(client, proxy4, sleep)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if want := (Original{Addr: netip.AddrPortFrom(vip4, 80), ServiceID: 7}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if len(sleeps) != 2 || sleeps[0] != DefaultOriginalDstBackoff {
		t.Errorf("sleeps %v, want two of %v", sleeps, DefaultOriginalDstBackoff)
	}
}

func TestOriginalDstGivesUpWithSentinel(t *testing.T) {
	r, _ := tuplesOnly(t)
	lookups := 0
	_, err := r.lookupOriginal(netip.MustParseAddrPort("198.19.1.2:1"), proxy4, func(time.Duration) { lookups++ })
	if !errors.Is(err, ErrNotRedirected) {
		t.Fatalf("err = %v, want ErrNotRedirected", err)
	}
	if lookups != DefaultOriginalDstAttempts-1 {
		t.Errorf("slept %d times, want %d (bounded retry)", lookups, DefaultOriginalDstAttempts-1)
	}
	r.Close()
	if _, err := r.lookupOriginal(netip.MustParseAddrPort("198.19.1.2:1"), proxy4, func(time.Duration) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// logSink collects log messages for assertions.
type logSink struct{ lines []string }

func (l *logSink) Write(p []byte) (int, error) {
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func TestPinnedMapWithOldLayoutIsMigratedOrReplaced(t *testing.T) {
	e := newTestEnv(t)
	svc := netip.AddrPortFrom(vip4, servicePort)

	// An "old version": smaller services map (same key/value: migratable)
	// and a netns map whose key had another size (not migratable).
	old := func(spec *ebpf.CollectionSpec) error {
		spec.Maps[zonelbMapZlbServices].MaxEntries = 1024
		ns := spec.Maps[zonelbMapZlbNetns]
		ns.Key, ns.Value = nil, nil
		ns.KeySize, ns.ValueSize = 16, 4
		return nil
	}
	r1 := e.load(loadOptions{specHook: old})
	if err := r1.SetService(svc, svcID4); err != nil {
		t.Fatal(err)
	}
	r1.Close()

	sink := &logSink{}
	e.cfg.Logger = slog.New(slog.NewTextHandler(sink, nil))
	r2, err := load(e.cfg, loadOptions{})
	if err != nil {
		t.Fatalf("load over pins of another layout: %v", err)
	}
	defer r2.Close()
	if got, err := r2.Services(); err != nil || got[svc] != svcID4 {
		t.Errorf("services not migrated: %v (err %v)", got, err)
	}
	info, err := r2.maps.services.Info()
	if err != nil || info.MaxEntries != 65536 {
		t.Errorf("services map not replaced by the new size: %+v %v", info, err)
	}
	// The netns map was replaced empty; enrolling works with the new layout.
	if err := r2.EnrollNetns(e.cookie(e.pod1)); err != nil {
		t.Fatalf("enroll after replacement: %v", err)
	}
	logs := strings.Join(sink.lines, "")
	for _, want := range []string{"map=zlb_services", "entries_migrated=1", "map=zlb_netns", "entries_migrated=0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// And redirection works end to end with the replaced maps.
	e.startBackends()
	e.startProxy(r2)
	res := e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4"})[0]
	if !strings.HasPrefix(res.Reply, "proxy ") {
		t.Errorf("after migration: reply %q err %q, want the proxy", res.Reply, res.Err)
	}
}

func TestVerifierRejectionCarriesTheWholeLog(t *testing.T) {
	e := newTestEnv(t)
	broken := func(spec *ebpf.CollectionSpec) error {
		p := spec.Programs[zonelbProgZlbConnect4]
		// Read far past the end of the context: the verifier must refuse.
		p.Instructions = asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 4000, asm.Word).WithSymbol(zonelbProgZlbConnect4),
			asm.Return(),
		}
		return nil
	}
	_, err := load(e.cfg, loadOptions{specHook: broken})
	t.Cleanup(func() { Uninstall(e.cfg) })
	if err == nil {
		t.Fatal("a program the verifier must reject was loaded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "verifier log:") || !strings.Contains(msg, "invalid bpf_context access") {
		t.Errorf("error lacks the verifier log:\n%s", msg)
	}
}
