package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/testenv"
)

// memV1Root is the cgroup-v1 memory hierarchy on hybrid hosts (this
// project's machine: v1 controllers under /sys/fs/cgroup, cgroup2 at
// /sys/fs/cgroup/unified).
const memV1Root = "/sys/fs/cgroup/memory"

// memCgroup is a v1 memory cgroup with a limit, made for one process so
// that the kernel's OOM killer ends it: nested under that process's own
// memory cgroup (whatever limits and accounting hold there still hold;
// nothing outside the subtree changes), removed at cleanup.
type memCgroup struct {
	dir, parent string
}

// newMemCgroup creates the cgroup with limit bytes (memory and
// memory+swap) and moves pid into it. Memory pid already uses stays
// charged where it is (move_charge_at_immigrate is off): only what it
// allocates from now on counts against the limit. At cleanup a process
// still inside goes back to the parent, and the directory is removed.
func newMemCgroup(t *testing.T, pid int, limit int64) *memCgroup {
	t.Helper()
	if _, err := os.Stat(filepath.Join(memV1Root, "memory.limit_in_bytes")); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("no cgroup-v1 memory hierarchy at %s (the OOM test needs a memory cgroup with a limit): %v", memV1Root, err))
	}
	parent, err := memCgroupOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	cg := &memCgroup{parent: filepath.Join(memV1Root, parent),
		dir: filepath.Join(memV1Root, parent, fmt.Sprintf("zonelb-e2e-oom-%d-%d", os.Getpid(), pid))}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		t.Fatalf("create memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.remove(); err != nil {
			t.Errorf("memory cgroup: %v", err)
		}
	})
	for _, kv := range [][2]string{
		{"memory.limit_in_bytes", strconv.FormatInt(limit, 10)},
		{"memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10)}, // no swapping out of the OOM
		{"cgroup.procs", strconv.Itoa(pid)},
	} {
		if kv[0] == "memory.memsw.limit_in_bytes" {
			if _, err := os.Stat(filepath.Join(cg.dir, kv[0])); err != nil {
				continue // no swap accounting: no swap to escape to either
			}
		}
		if err := os.WriteFile(filepath.Join(cg.dir, kv[0]), []byte(kv[1]), 0o644); err != nil {
			t.Fatalf("memory cgroup %s: write %s: %v", cg.dir, kv[0], err)
		}
	}
	return cg
}

// memCgroupOf reads pid's v1 memory cgroup path from /proc/pid/cgroup.
func memCgroupOf(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "4:memory:/some/path"
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && parts[1] == "memory" {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("process %d has no v1 memory cgroup (%v)", pid, sc.Err())
}

// oomKills is the number of processes the OOM killer ended in the cgroup
// ("oom_kill N" in memory.oom_control).
func (cg *memCgroup) oomKills() (int, error) {
	b, err := os.ReadFile(filepath.Join(cg.dir, "memory.oom_control"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no oom_kill in %s/memory.oom_control: %q", cg.dir, b)
}

// remove moves any process left inside back to the parent and removes the
// directory, polling while the last task leaves (rmdir says EBUSY).
func (cg *memCgroup) remove() error {
	if b, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs")); err == nil {
		for _, p := range strings.Fields(string(b)) {
			if err := os.WriteFile(filepath.Join(cg.parent, "cgroup.procs"), []byte(p), 0o644); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("move %s back to %s: %w", p, cg.parent, err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(cg.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove %s: %w", cg.dir, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the kernel's cgroup state
	}
}
