package interop

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCheckSpread(t *testing.T) {
	for _, tt := range []struct {
		name    string
		calls   map[string]int64
		wantErr string
	}{
		{"even", map[string]int64{"a": 30, "b": 31, "c": 29}, ""},
		{"uneven but above the floor", map[string]int64{"a": 10, "b": 45, "c": 45}, ""},
		{"pinned", map[string]int64{"a": 90, "b": 0, "c": 0}, "b handled 0 (0.0%), c handled 0 (0.0%)"},
		{"one starved", map[string]int64{"a": 50, "b": 45, "c": 5}, "c handled 5 (5.0%)"},
		{"no calls", map[string]int64{"a": 0, "b": 0}, "no calls reached any of the 2 servers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSpread(tt.calls, 0.10)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckSpread(%v) = %v, want nil", tt.calls, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckSpread(%v) = %v, want an error containing %q", tt.calls, err, tt.wantErr)
			}
		})
	}
}

func TestCallsBetween(t *testing.T) {
	before := map[string]CallStats{"a": {Total: 5, Methods: map[string]int64{"/m": 2}}}
	after := map[string]CallStats{
		"a": {Total: 9, Methods: map[string]int64{"/m": 3, "/n": 3}},
		"b": {Total: 4, Methods: map[string]int64{"/m": 4}},
	}
	if got := FormatCalls(CallsBetween(before, after, "")); got != "a=4 b=4" {
		t.Errorf("all methods: %s, want a=4 b=4", got)
	}
	if got := FormatCalls(CallsBetween(before, after, "/m")); got != "a=1 b=4" {
		t.Errorf("method /m: %s, want a=1 b=4", got)
	}
}

func TestSettingsFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	s, err := SettingsFromEnv(env(nil))
	if err != nil || s.Rounds != 3 || s.Parallel != 4 || s.Direct {
		t.Errorf("defaults: %+v, %v; want 3 rounds, 4 in parallel, through the proxy", s, err)
	}
	s, err = SettingsFromEnv(env(map[string]string{"ZONELB_INTEROP_ROUNDS": "100", "ZONELB_INTEROP_TARGET": "direct", "ZONELB_INTEROP_PARALLEL": "1"}))
	if err != nil || s.Rounds != 100 || s.Parallel != 1 || !s.Direct {
		t.Errorf("set: %+v, %v; want 100 rounds, 1 in parallel, direct", s, err)
	}
	for _, bad := range []map[string]string{
		{"ZONELB_INTEROP_ROUNDS": "0"},
		{"ZONELB_INTEROP_ROUNDS": "many"},
		{"ZONELB_INTEROP_TARGET": "elsewhere"},
	} {
		if _, err := SettingsFromEnv(env(bad)); err == nil {
			t.Errorf("SettingsFromEnv(%v) accepted a bad value", bad)
		}
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	b := newTailBuffer(8)
	b.Write([]byte("0123456789"))
	b.Write([]byte("ab"))
	if got, want := b.String(), "[4 earlier bytes dropped]\n456789ab"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}

func TestLineSplitterHandsOverTheFirstLine(t *testing.T) {
	first := make(chan string, 1)
	s := &lineSplitter{dst: newTailBuffer(1024), first: first}
	for _, chunk := range []string{`{"grpc":`, `"x"}` + "\nsecond\n", "third\n"} {
		s.Write([]byte(chunk))
	}
	if got := <-first; got != `{"grpc":"x"}` {
		t.Errorf("first line = %q", got)
	}
	if got := s.dst.String(); got != "{\"grpc\":\"x\"}\nsecond\nthird\n" {
		t.Errorf("output = %q, want everything", got)
	}
}

// A process that ignores SIGTERM is killed after the grace period, and Stop
// says so: the harness relies on that to fail a proxy that does not shut
// down.
func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	first := make(chan string, 1)
	// The ignored SIGTERM survives the exec, so no shell is left behind.
	p, err := startProcess(testLogger(t), "stubborn", "/bin/sh", []string{"-c", `trap "" TERM; echo ready; exec sleep 60`}, first)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	// The trap is in place once the ready line is out.
	if _, err := waitLine(t.Context(), p, first); err != nil {
		t.Fatal(err)
	}
	err = p.Stop(100 * time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop = %v, want ErrKilled", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("process still running after Stop returned")
	}
}

func TestStopSendsSIGTERMFirst(t *testing.T) {
	p, err := startProcess(testLogger(t), "sleeper", "/bin/sleep", []string{"60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	// sleep dies of SIGTERM (no handler): an unsuccessful exit, not a kill.
	err = p.Stop(10 * time.Second)
	if err == nil || errors.Is(err, ErrKilled) {
		t.Fatalf("Stop = %v, want the exit by signal", err)
	}
	if err := p.Stop(time.Second); err == nil {
		t.Error("second Stop forgot how the process ended")
	}
}

// The harness must report a failing case, not swallow it: a client pointed
// at a port where nothing listens fails with its output.
func TestClientReportsFailure(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildClient(t.Context(), CacheDir(root))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	c := Client{Bin: bin, Timeout: time.Minute}
	res := c.Run(t.Context(), Job{Case: "empty_unary", Addr: closed})
	if res.Err == nil {
		t.Fatalf("empty_unary against %s (nothing listening) passed; output:\n%s", closed, res.Output)
	}
	if !strings.Contains(string(res.Output), "Unavailable") {
		t.Errorf("output does not say why it failed:\n%s", res.Output)
	}
}
