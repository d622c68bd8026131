package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat. The kernel's ABI
// fixes it at 100 on Linux regardless of the scheduler tick.
const userHZ = 100

// procCPU reads utime+stime of every thread of pid, from /proc/PID/stat.
// Its resolution is 10 ms, which is why the benchmark prefers the cgroup's
// microsecond counter and keeps this as a cross-check.
func procCPU(procRoot string, pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	utime, stime, err := parseProcStat(string(b))
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// parseProcStat returns utime and stime (fields 14 and 15) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(stat string) (utime, stime int64, err error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, errors.New("no ')' closing the command name")
	}
	// After ") " come field 3 (state) onwards: utime is field 14, so index
	// 11 here, stime index 12.
	fields := strings.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	if utime, err = strconv.ParseInt(fields[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime %q: %w", fields[11], err)
	}
	if stime, err = strconv.ParseInt(fields[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime %q: %w", fields[12], err)
	}
	return utime, stime, nil
}

// procMemory reads VmHWM (peak resident set) and VmRSS of pid in kB.
func procMemory(procRoot string, pid int) (hwmKB, rssKB int64, err error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	return parseProcStatusMemory(f)
}

func parseProcStatusMemory(r io.Reader) (hwmKB, rssKB int64, err error) {
	sc := bufio.NewScanner(r)
	found := 0
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmHWM" && key != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s %q: %w", key, value, err)
		}
		if key == "VmHWM" {
			hwmKB = kb
		} else {
			rssKB = kb
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read status: %w", err)
	}
	if found < 2 {
		return 0, 0, errors.New("status lacks VmHWM or VmRSS (kernel thread or exited process?)")
	}
	return hwmKB, rssKB, nil
}

// cgroupMount finds where the cgroup v2 hierarchy is mounted, from a
// /proc/mounts-format listing. Hosts mount it in different places (the
// unified half of a hybrid setup, or /sys/fs/cgroup), so it is never assumed.
func cgroupMount(mounts io.Reader) (string, error) {
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	return "", errors.New("no cgroup2 file system mounted")
}

// cgroup is a cgroup v2 directory made for one proxy process, so that its
// CPU time is read in microseconds and includes every thread, also those that
// have exited.
type cgroup struct {
	path string
	dir  *os.File
}

// newCgroup creates parent/name. The caller must remove it.
func newCgroup(parent, name string) (*cgroup, error) {
	path := filepath.Join(parent, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	dir, err := os.Open(path)
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("open cgroup %s: %w", path, err)
	}
	return &cgroup{path: path, dir: dir}, nil
}

// usage reads the cgroup's total CPU time (user+system).
func (c *cgroup) usage() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(c.path, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("read cgroup CPU usage: %w", err)
	}
	return parseCPUStatUsage(string(b))
}

func parseCPUStatUsage(cpuStat string) (time.Duration, error) {
	for line := range strings.Lines(cpuStat) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && key == "usage_usec" {
			us, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("usage_usec %q: %w", value, err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cpu.stat has no usage_usec")
}

// remove deletes the cgroup; its processes must have been waited for. The
// kernel may report the directory busy for a moment after the last process
// is reaped, so removal is retried a bounded number of times.
func (c *cgroup) remove() error {
	_ = c.dir.Close()
	var err error
	for range 50 {
		if err = os.Remove(c.path); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", c.path, err)
}
