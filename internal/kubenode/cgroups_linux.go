package kubenode

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hierarchy is one cgroup mount of the host under /sys/fs/cgroup.
type hierarchy struct {
	mountpoint string // e.g. /sys/fs/cgroup/cpu, or /sys/fs/cgroup itself
	v2         bool
	options    string // v1 mount options naming the hierarchy: "cpu", "none,name=systemd"
}

// hostHierarchies lists the cgroup mounts of this machine from
// /proc/self/mountinfo, and whether /sys/fs/cgroup is a tmpfs holding them
// (hybrid or v1) rather than the cgroup2 mount itself (unified).
func hostHierarchies() (hs []hierarchy, tmpfsRoot bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, false, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		mp, fstype := fields[4], tail[0]
		if mp != "/sys/fs/cgroup" && !strings.HasPrefix(mp, "/sys/fs/cgroup/") {
			continue
		}
		switch fstype {
		case "tmpfs":
			if mp == "/sys/fs/cgroup" {
				tmpfsRoot = true
			}
		case "cgroup2":
			hs = append(hs, hierarchy{mountpoint: mp, v2: true})
		case "cgroup":
			var opts []string
			named := false
			for o := range strings.SplitSeq(tail[2], ",") {
				if o == "rw" || o == "ro" || strings.HasPrefix(o, "release_agent=") || o == "clone_children" || o == "noprefix" || o == "xattr" || o == "cpuset_v2_mode" || o == "favordynmods" {
					continue
				}
				if strings.HasPrefix(o, "name=") {
					named = true
				}
				opts = append(opts, o)
			}
			if named && len(opts) == 1 {
				opts = append([]string{"none"}, opts...)
			}
			hs = append(hs, hierarchy{mountpoint: mp, options: strings.Join(opts, ",")})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, false, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(hs) == 0 {
		return nil, false, errors.New("no cgroup mount under /sys/fs/cgroup")
	}
	return hs, tmpfsRoot, nil
}

// createCgroups makes name in every hierarchy and returns the new
// directories. cpuset needs its cpus and mems before a task may join.
func createCgroups(hs []hierarchy, name string) ([]string, error) {
	var dirs []string
	for _, h := range hs {
		dir := filepath.Join(h.mountpoint, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return dirs, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		dirs = append(dirs, dir)
		if !h.v2 && slices.Contains(strings.Split(h.options, ","), "cpuset") {
			for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h.mountpoint, file))
				if err != nil {
					return dirs, fmt.Errorf("read %s: %w", file, err)
				}
				if err := os.WriteFile(filepath.Join(dir, file), v, 0o644); err != nil {
					return dirs, fmt.Errorf("write %s/%s: %w", dir, file, err)
				}
			}
		}
	}
	return dirs, nil
}

// cgroupPids lists the processes in dir and every cgroup below it.
func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for f := range strings.FieldsSeq(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killCgroups SIGKILLs every process in the cgroups (and below) until none
// is left or the deadline passes. Every one of them descends from a
// process the harness started: nothing else is ever placed there.
func killCgroups(dirs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, dir := range dirs {
			left = append(left, cgroupPids(dir)...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in the node's cgroups after %v: %v", timeout, left)
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // polling the kernel's reaping, bounded by deadline
	}
}

// removeCgroups removes the cgroups, children first. A cgroup is removed
// once its last process has been reaped, so rmdir is retried briefly.
func removeCgroups(dirs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var errs []error
	for _, root := range dirs {
		var all []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, path)
			}
			return nil
		})
		// Deepest first.
		slices.SortFunc(all, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, dir := range all {
			for {
				err := os.Remove(dir)
				if err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
					break
				}
				time.Sleep(50 * time.Millisecond) // waiting for the kernel to release the cgroup, bounded
			}
		}
	}
	return errors.Join(errs...)
}
