package runner

import (
	"context"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func TestStopAllEndsEveryStartedProcess(t *testing.T) {
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	dir := t.TempDir()
	var procs []*proc
	for i, name := range []string{"a", "b"} {
		p, err := sup.start(procSpec{Name: name, Path: "sleep", Args: []string{"60"}, LogPath: filepath.Join(dir, name+".log"), CPUs: []string{"", "0"}[i]})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		procs = append(procs, p)
	}
	sup.stopAll(2 * time.Second)
	for _, p := range procs {
		if !p.Exited() {
			t.Fatalf("%s (pid %d) still running after stopAll", p.name, p.Pid())
		}
	}
	if len(sup.live) != 0 {
		t.Fatalf("supervisor still tracks %d processes", len(sup.live))
	}
}

func TestRunStopsTheProcessWhenContextEnds(t *testing.T) {
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	t.Cleanup(func() { sup.stopAll(time.Second) })
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- sup.run(ctx, procSpec{Name: "sleeper", Path: "sleep", Args: []string{"60"}, LogPath: filepath.Join(t.TempDir(), "s.log")})
	}()
	// Wait until the process is tracked, then cancel.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sup.mu.Lock()
		n := len(sup.live)
		sup.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sleeper never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("run returned nil after its context was cancelled")
	}
	sup.mu.Lock()
	defer sup.mu.Unlock()
	if len(sup.live) != 0 {
		t.Fatal("process still tracked after run returned")
	}
}

func TestRunReportsAFailingProcess(t *testing.T) {
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	err := sup.run(t.Context(), procSpec{Name: "false", Path: "false", LogPath: filepath.Join(t.TempDir(), "f.log")})
	if err == nil {
		t.Fatal("run of a failing command returned nil")
	}
}

func TestWaitListeningSeesAnExitedProcess(t *testing.T) {
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	p, err := sup.start(procSpec{Name: "quitter", Path: "true", LogPath: filepath.Join(t.TempDir(), "q.log")})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	if err := waitListening(t.Context(), p, addr, 10*time.Second); err == nil {
		t.Fatal("waitListening succeeded for a process that never listened")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer l.Close()
	if err := waitListening(t.Context(), p, addr, 10*time.Second); err != nil {
		t.Fatalf("waitListening on a listening port: %v", err)
	}
}

func TestNiceAppliesToTheStartedProgram(t *testing.T) {
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	var out strings.Builder
	// `nice` without arguments prints its own niceness: it must be 3 above
	// the test's.
	base, err := exec.Command("nice").Output()
	if err != nil {
		t.Fatal(err)
	}
	err = sup.run(t.Context(), procSpec{Name: "nice", Path: "nice", Nice: 3, CPUs: "0", Stdout: &out, LogPath: filepath.Join(t.TempDir(), "n.log")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := strconv.Atoi(strings.TrimSpace(string(base)))
	if got := strings.TrimSpace(out.String()); got != strconv.Itoa(min(b+3, 19)) {
		t.Fatalf("niceness %q, want %d", got, min(b+3, 19))
	}
}
