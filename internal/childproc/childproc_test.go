package childproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogExitAndTail(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p, err := Start("printer", log, exec.Command("sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err == nil || !p.Exited() {
		t.Fatalf("Err %v, Exited %v: want the exit status 3, exited", err, p.Exited())
	}
	if got := Tail(log, 2); got != "line 5\noops" {
		t.Errorf("Tail(2) = %q, want the last two lines, standard error included", got)
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 2); !strings.Contains(got, "no such file") {
		t.Errorf("Tail of a missing file = %q, want the error", got)
	}
}

func TestStopEndsWithSIGTERMThenSIGKILL(t *testing.T) {
	dir := t.TempDir()
	polite, err := Start("polite", filepath.Join(dir, "a.log"), exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	polite.Stop(time.Minute) // sleep dies of SIGTERM at once
	if err := polite.Err(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("after Stop: %v, want killed by SIGTERM", err)
	}
	// A shell that ignores SIGTERM and waits on a pipe: no grandchild is
	// left behind.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := exec.Command("sh", "-c", "trap '' TERM; echo ready; read x")
	cmd.Stdin = r
	stubborn, err := Start("stubborn", filepath.Join(dir, "b.log"), cmd)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); Tail(stubborn.Log, 1) != "ready"; {
		if time.Now().After(deadline) {
			t.Fatal("the shell did not set its trap within 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling a process's log, bounded
	}
	stubborn.Stop(100 * time.Millisecond)
	if err := stubborn.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("after Stop: %v, want killed by SIGKILL after the grace", err)
	}
	var none *Proc
	none.Stop(time.Second) // safe on nil
}
