package discovery

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/zonelb/zonelb/zone"
)

const goodYAML = `
node: node-a
zone: zone-a
services:
- name: greeter
  clusterIPs: [127.0.0.10, "::1"]
  ports:
  - name: grpc
    port: 8080
    appProtocol: grpc
    endpoints:
    - address: 127.0.0.1:9002
      zone: zone-b
      weight: 3
    - address: 127.0.0.1:9001
      zone: zone-a
      node: node-1
      ready: false
    - address: "[::1]:9003"
      zone: zone-a
      ready: false
      serving: true
      terminating: true
  - name: admin
    port: 8081
    endpoints: []
- namespace: shop
  name: cart
  clusterIPs: [127.0.0.11]
  ports:
  - port: 80
    endpoints:
    - address: 127.0.0.1:9100
`

func TestParseFile(t *testing.T) {
	snap, err := ParseFile([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Node != "node-a" || snap.Zone != "zone-a" || len(snap.Services) != 2 {
		t.Fatalf("snapshot = %+v", snap)
	}
	greeter := snap.Services[ServiceName{"default", "greeter"}]
	if greeter == nil {
		t.Fatal("namespace did not default to \"default\"")
	}
	want := []zone.Endpoint{
		{Addr: netip.MustParseAddrPort("127.0.0.1:9001"), Zone: "zone-a", Node: "node-1"},
		{Addr: netip.MustParseAddrPort("127.0.0.1:9002"), Zone: "zone-b", Weight: 3, Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort("[::1]:9003"), Zone: "zone-a", Serving: true, Terminating: true},
	}
	got := greeter.Port("grpc").Endpoints
	if len(got) != len(want) {
		t.Fatalf("endpoints = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("endpoint %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// 2 addresses x 2 ports + 1.
	if len(snap.Frontends) != 5 {
		t.Errorf("frontends = %v, want 5", snap.Frontends)
	}
	svc, port, ok := snap.Lookup(netip.MustParseAddrPort("[::1]:8081"))
	if !ok || svc != greeter || port.Name != "admin" || port.SelectedBy != "file" || port.Protocol != "TCP" {
		t.Errorf("Lookup([::1]:8081) = %v %+v %v", svc, port, ok)
	}
	if _, port, ok := snap.Lookup(netip.MustParseAddrPort("127.0.0.11:80")); !ok || port.ID(ServiceName{"shop", "cart"}).String() != "shop/cart" {
		t.Errorf("Lookup(127.0.0.11:80) = %+v %v", port, ok)
	}
}

func TestParseFileJSON(t *testing.T) {
	doc := `{"zone":"z","services":[{"name":"s","clusterIPs":["::ffff:127.0.0.10"],"ports":[{"port":80,"endpoints":[{"address":"[::ffff:127.0.0.1]:81","zone":"z"}]}]}]}`
	snap, err := ParseFile([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	// IPv4-mapped addresses are stored in their IPv4 form.
	if _, ok := snap.Frontends[netip.MustParseAddrPort("127.0.0.10:80")]; !ok {
		t.Errorf("frontends = %v, want 127.0.0.10:80", snap.Frontends)
	}
	if _, port, ok := snap.Lookup(netip.MustParseAddrPort("127.0.0.10:80")); !ok || len(port.Endpoints) != 1 ||
		port.Endpoints[0].Addr != netip.MustParseAddrPort("127.0.0.1:81") {
		t.Errorf("Lookup = %+v, %v", port, ok)
	}
}

func TestParseFileErrorsNameTheField(t *testing.T) {
	base := func(port string) string {
		return "services:\n- name: s\n  clusterIPs: [127.0.0.10]\n  ports:\n" + port
	}
	tests := []struct {
		name, doc string
		want      []string // substrings, each must appear
	}{
		{"empty", "  \n", []string{"empty document"}},
		{"unknown field", "zone: z\nservcies: []\n", []string{`unknown field "servcies"`}},
		{"wrong type", base("  - port: eighty\n"), []string{"port"}},
		{"missing name", "services:\n- clusterIPs: [127.0.0.10]\n  ports: [{port: 80}]\n", []string{"services[0].name: required"}},
		{"no clusterIPs", "services:\n- name: s\n  ports: [{port: 80}]\n", []string{"services[0].clusterIPs: at least one"}},
		{"bad clusterIP", "services:\n- name: s\n  clusterIPs: [10.0.0.300]\n  ports: [{port: 80}]\n", []string{"services[0].clusterIPs[0]", "10.0.0.300"}},
		{"no ports", "services:\n- name: s\n  clusterIPs: [127.0.0.10]\n", []string{"services[0].ports: at least one"}},
		{"port range", base("  - port: 70000\n"), []string{"services[0].ports[0].port", "70000"}},
		{"UDP", base("  - port: 53\n    protocol: UDP\n"), []string{"services[0].ports[0].protocol", "TCP only"}},
		{"unnamed among several", base("  - port: 80\n  - name: b\n    port: 81\n"), []string{"services[0].ports[0].name: required"}},
		{"duplicate port name", base("  - name: a\n    port: 80\n  - name: a\n    port: 81\n"), []string{"services[0].ports[1].name", `"a" is used twice`}},
		{"bad endpoint", base("  - port: 80\n    endpoints:\n    - address: 127.0.0.1\n"), []string{"services[0].ports[0].endpoints[0].address", "ip:port"}},
		{"endpoint port 0", base("  - port: 80\n    endpoints:\n    - address: 127.0.0.1:0\n"), []string{"endpoints[0].address", "port 0"}},
		{"duplicate endpoint", base("  - port: 80\n    endpoints:\n    - address: 127.0.0.1:1\n    - address: 127.0.0.1:1\n"), []string{"endpoints[1].address", "twice"}},
		{"duplicate service", "services:\n- {name: s, clusterIPs: [127.0.0.10], ports: [{port: 80}]}\n- {name: s, clusterIPs: [127.0.0.11], ports: [{port: 80}]}\n",
			[]string{"services[1].name", "default/s is listed twice"}},
		{"shared frontend", "services:\n- {name: a, clusterIPs: [127.0.0.10], ports: [{port: 80}]}\n- {name: b, clusterIPs: [127.0.0.10], ports: [{port: 80}]}\n",
			[]string{"services[1].ports[0].port", "127.0.0.10:80 is already used by services[0].ports[0]"}},
		{"several problems at once", "services:\n- {name: a, clusterIPs: [x], ports: [{port: 0}]}\n", []string{"clusterIPs[0]", "ports[0].port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile([]byte(tt.doc))
			if err == nil {
				t.Fatal("ParseFile succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

// publishRecorder collects published snapshots.
type publishRecorder struct {
	mu    sync.Mutex
	snaps []*Snapshot
}

func (r *publishRecorder) publish(s *Snapshot) {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
}

func (r *publishRecorder) all() []*Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Snapshot(nil), r.snaps...)
}

func TestFileSourceFollowsChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "discovery.yaml")
		write := func(doc string) { t.Helper(); writeRenamed(t, path, doc) }
		two := `
zone: zone-a
services:
- {name: a, clusterIPs: [127.0.0.10], ports: [{port: 80, endpoints: [{address: "127.0.0.1:81", zone: zone-a}]}]}
- {name: b, clusterIPs: [127.0.0.11], ports: [{port: 80, endpoints: [{address: "127.0.0.1:82", zone: zone-a}]}]}
`
		write(two)

		rec, poll, stop := runPolledFileSource(t, path)

		synctest.Wait()
		if n := len(rec.all()); n != 1 {
			t.Fatalf("%d snapshots after start, want 1", n)
		}
		first := rec.all()[0]

		// Service b's endpoint moves to another zone.
		write(strings.Replace(two, `"127.0.0.1:82", zone: zone-a`, `"127.0.0.1:82", zone: zone-b`, 1))
		poll()
		snaps := rec.all()
		if len(snaps) != 2 {
			t.Fatalf("%d snapshots after a change, want 2", len(snaps))
		}
		second := snaps[1]
		if got := second.Services[ServiceName{"default", "b"}].Ports[0].Endpoints[0].Zone; got != "zone-b" {
			t.Errorf("b's endpoint zone = %q, want zone-b", got)
		}
		if first.Services[ServiceName{"default", "a"}] != second.Services[ServiceName{"default", "a"}] {
			t.Error("unchanged service a was not reused")
		}
		if first.Services[ServiceName{"default", "b"}].Ports[0].Endpoints[0].Zone != "zone-a" {
			t.Error("the first snapshot was modified")
		}

		// An in-place rewrite of the same size, as fast as the test can
		// go (same coarse mtime tick, same inode).
		same := strings.Replace(two, `"127.0.0.1:81", zone: zone-a`, `"127.0.0.1:81", zone: zone-x`, 1)
		if err := os.WriteFile(path, []byte(same), 0o644); err != nil {
			t.Fatal(err)
		}
		poll()
		snaps = rec.all()
		if len(snaps) != 3 || snaps[2].Services[ServiceName{"default", "a"}].Ports[0].Endpoints[0].Zone != "zone-x" {
			t.Fatalf("same-size in-place rewrite missed: %d snapshots", len(snaps))
		}

		// No change: nothing published.
		poll()
		if n := len(rec.all()); n != 3 {
			t.Fatalf("%d snapshots after an idle poll, want 3", n)
		}

		// An invalid file is skipped; the last good snapshot stays.
		write("services: [{name: a}]\n")
		poll()
		if n := len(rec.all()); n != 3 {
			t.Fatalf("%d snapshots after an invalid file, want 3", n)
		}
		// A removed file too.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		poll()
		// Back with valid content: published.
		write(`{"zone":"zone-c","services":[]}`)
		poll()
		snaps = rec.all()
		if len(snaps) != 4 || snaps[3].Zone != "zone-c" || len(snaps[3].Services) != 0 {
			t.Fatalf("after the fix: %d snapshots, last %+v", len(snaps), snaps[len(snaps)-1])
		}

		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

// writeRenamed writes doc to path by write-then-rename, as editors and
// ConfigMap updates do: the poller must notice a new file at the same
// path.
func writeRenamed(t *testing.T, path, doc string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runPolledFileSource runs a file source on path with a fake clock (in a
// synctest bubble); poll advances it by one poll interval, and stop ends
// the source and returns what Run returned.
func runPolledFileSource(t *testing.T, path string) (rec *publishRecorder, poll func(), stop func() error) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	src, err := NewFileSource(FileConfig{Path: path, Clock: clk, PollInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec = new(publishRecorder)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.publish) }()
	poll = func() {
		synctest.Wait()
		clk.Step(time.Second)
		synctest.Wait()
	}
	stop = func() error {
		cancel()
		return <-done
	}
	return rec, poll, stop
}

func TestFileSourceFailsOnBadStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.yaml")
	if err := os.WriteFile(path, []byte("services: [{name: a}]"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := NewFileSource(FileConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(t.Context(), func(*Snapshot) { t.Error("published a snapshot of an invalid file") })
	if err == nil || !strings.Contains(err.Error(), "services[0].clusterIPs") || !strings.Contains(err.Error(), path) {
		t.Errorf("Run = %v, want an error naming the file and the field", err)
	}
}

func TestDebounceLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clocktesting.NewFakeClock(time.Unix(0, 0))
		signal := make(chan struct{}, 1)
		var mu sync.Mutex
		rebuilds := 0
		count := func() int { mu.Lock(); defer mu.Unlock(); return rebuilds }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			debounceLoop(ctx, clk, 100*time.Millisecond, signal, func() { mu.Lock(); rebuilds++; mu.Unlock() })
			close(done)
		}()
		send := func() {
			select {
			case signal <- struct{}{}:
			default:
			}
		}

		synctest.Wait()
		clk.Step(time.Hour)
		synctest.Wait()
		if n := count(); n != 0 {
			t.Fatalf("%d rebuilds without a change, want 0", n)
		}

		// A burst of changes: one rebuild, 100 ms after the first.
		send()
		synctest.Wait()
		clk.Step(60 * time.Millisecond)
		send()
		synctest.Wait()
		clk.Step(39 * time.Millisecond)
		send()
		synctest.Wait()
		if n := count(); n != 0 {
			t.Fatalf("%d rebuilds 99 ms after the first change, want 0", n)
		}
		clk.Step(time.Millisecond)
		synctest.Wait()
		if n := count(); n != 1 {
			t.Fatalf("%d rebuilds 100 ms after the first change, want 1", n)
		}
		// The changes signalled during the window were taken by that
		// rebuild: no second one.
		clk.Step(time.Hour)
		synctest.Wait()
		if n := count(); n != 1 {
			t.Fatalf("%d rebuilds after quiet, want 1", n)
		}
		// A change after the rebuild starts a new window.
		send()
		synctest.Wait()
		clk.Step(100 * time.Millisecond)
		synctest.Wait()
		if n := count(); n != 2 {
			t.Fatalf("%d rebuilds after a second change, want 2", n)
		}

		cancel()
		<-done
	})
}
