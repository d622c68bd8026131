package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/testenv"
)

func TestParseProcStatCountsFieldsAfterTheCommandName(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (we ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 100 1000 200"
	u, s, err := parseProcStat(stat)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if u != 1234 || s != 567 {
		t.Fatalf("utime %d stime %d, want 1234 567", u, s)
	}
	if _, _, err := parseProcStat("4242 (x) S 1 2"); err == nil {
		t.Fatal("want an error for a short line")
	}
}

func TestProcCPUOfSelf(t *testing.T) {
	if _, err := procCPU("/proc", os.Getpid()); err != nil {
		t.Fatalf("procCPU(self): %v", err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "7"), 0o755); err != nil {
		t.Fatal(err)
	}
	stat := "7 (p) S 1 7 7 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 1 1 1"
	if err := os.WriteFile(filepath.Join(dir, "7", "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := procCPU(dir, 7)
	if err != nil || got != 2*time.Second {
		t.Fatalf("procCPU = %v, %v; want 2s (200 ticks at USER_HZ 100)", got, err)
	}
}

func TestParseProcStatusMemory(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    5432 kB\nThreads:\t1\n"
	hwm, rss, err := parseProcStatusMemory(strings.NewReader(status))
	if err != nil || hwm != 9876 || rss != 5432 {
		t.Fatalf("got hwm %d rss %d err %v, want 9876 5432", hwm, rss, err)
	}
	if _, _, err := parseProcStatusMemory(strings.NewReader("Name:\tkthreadd\n")); err == nil {
		t.Fatal("want an error when VmHWM is missing")
	}
}

func TestCgroupMountFindsCgroup2WhereverMounted(t *testing.T) {
	hybrid := "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
	if got, err := cgroupMount(strings.NewReader(hybrid)); err != nil || got != "/sys/fs/cgroup/unified" {
		t.Fatalf("hybrid: %q %v", got, err)
	}
	if _, err := cgroupMount(strings.NewReader("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n")); err == nil {
		t.Fatal("want an error without cgroup2")
	}
}

func TestParseCPUStatUsage(t *testing.T) {
	got, err := parseCPUStatUsage("usage_usec 236613\nuser_usec 200000\nsystem_usec 36613\n")
	if err != nil || got != 236613*time.Microsecond {
		t.Fatalf("got %v %v", got, err)
	}
	if _, err := parseCPUStatUsage("user_usec 1\n"); err == nil {
		t.Fatal("want an error without usage_usec")
	}
}

// TestCgroupAccountsAChildsCPU starts a busy child inside a fresh cgroup and
// checks the cgroup saw CPU time. It needs root to create cgroups.
func TestCgroupAccountsAChildsCPU(t *testing.T) {
	testenv.RequireRoot(t)
	mounts, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer mounts.Close()
	root, err := cgroupMount(mounts)
	if err != nil {
		testenv.SkipOrFail(t, "no cgroup2: "+err.Error())
	}
	cg, err := newCgroup(root, "zonelb-bench-test-"+filepath.Base(t.Name()))
	if err != nil {
		t.Fatalf("newCgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.remove(); err != nil {
			t.Error(err)
		}
	})
	sup := newSupervisor(testLogger(t), "taskset", "nice")
	t.Cleanup(func() { sup.stopAll(time.Second) })
	// A bounded busy loop in a shell: about 20k iterations.
	err = sup.run(t.Context(), procSpec{Name: "busy", Path: "sh", Args: []string{"-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"}, Cgroup: cg, LogPath: filepath.Join(t.TempDir(), "busy.log")})
	if err != nil {
		t.Fatalf("run busy child: %v", err)
	}
	used, err := cg.usage()
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	if used <= 0 {
		t.Fatalf("cgroup usage %v after a busy child; want > 0", used)
	}
}
