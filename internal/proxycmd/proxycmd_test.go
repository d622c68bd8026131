package proxycmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeProxy writes a script that stands in for the zonelb binary: it logs
// as `zonelb proxy` does, with its arguments, then waits on SIGTERM.
func fakeProxy(t *testing.T, body string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "zonelb")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartReadsTheAddressAndStops(t *testing.T) {
	bin := fakeProxy(t, `echo "time=x level=INFO msg=\"starting\"" >&2
echo "time=x level=INFO msg=\"proxy listening\" addr=127.0.0.1:4711 args=\"$*\"" >&2
trap 'exit 0' TERM
while :; do sleep 0.05; done`)
	p, err := Start(t.Context(), bin, "--zone", "a")
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != "127.0.0.1:4711" {
		t.Errorf("Addr = %q, want the logged 127.0.0.1:4711", p.Addr)
	}
	p.Stop(10 * time.Second)
	if !p.Exited() {
		t.Error("Stop returned with the process running")
	}
	p.Stop(time.Second) // again: at once
}

func TestStartFailsWhenTheProxyExits(t *testing.T) {
	bin := fakeProxy(t, `echo "level=ERROR msg=\"listen: address in use\"" >&2; exit 1`)
	if _, err := Start(t.Context(), bin); err == nil || !strings.Contains(err.Error(), "exited before it listened") {
		t.Fatalf("Start = %v, want the exit reported", err)
	}
}

func TestStartInFrontPassesTheEndpoints(t *testing.T) {
	argv := filepath.Join(t.TempDir(), "argv")
	bin := fakeProxy(t, `echo "$*" > `+argv+`
echo "level=INFO msg=\"proxy listening\" addr=127.0.0.1:4711" >&2
trap 'exit 0' TERM
while :; do sleep 0.05; done`)
	p, err := StartInFront(t.Context(), bin, "zone-a", "demo",
		[]Endpoint{{"zone-a", "127.0.0.1:1001"}, {"zone-b", "127.0.0.1:1002"}}, "--ignore-zones")
	if err != nil {
		t.Fatal(err)
	}
	p.Stop(10 * time.Second)
	got, err := os.ReadFile(argv)
	if err != nil {
		t.Fatal(err)
	}
	want := "proxy --listen 127.0.0.1:0 --zone zone-a --service demo --to zone-a=127.0.0.1:1001 --to zone-b=127.0.0.1:1002 --ignore-zones\n"
	if string(got) != want {
		t.Errorf("command line %q, want %q", got, want)
	}
}
