package bpf

// Mounts: bpffs for the pins, the cgroup2 hierarchy for the hooks.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupV2Root returns the first cgroup2 mount point in /proc/mounts.
func CgroupV2Root() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return unescapeMount(fields[1]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/mounts: %w", ErrUnsupported)
}

// Cgroup2Dir returns path when it is a cgroup-v2 directory, else the
// cgroup2 mount point below it (the one nearest to path). So a node's
// /sys/fs/cgroup serves on both kinds of host: on a unified one it is the
// cgroup2 mount; on a hybrid one it is a tmpfs of v1 hierarchies with
// cgroup2 at unified/. Mounted into a container with its submounts (as a
// hostPath volume is), the same holds there.
func Cgroup2Dir(path string) (string, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return "", fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if fs.Type == unix.CGROUP2_SUPER_MAGIC {
		return path, nil
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	prefix := strings.TrimSuffix(filepath.Clean(path), "/") + "/"
	best := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != "cgroup2" {
			continue
		}
		mp := unescapeMount(fields[1])
		if strings.HasPrefix(mp, prefix) && (best == "" || len(mp) < len(best)) {
			best = mp
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	if best == "" {
		return "", fmt.Errorf("%s is not a cgroup-v2 directory and no cgroup2 mount is below it", path)
	}
	return best, nil
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces etc.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func cgroupInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup-v2 directory", path)
	}
	return st.Ino, nil
}

func isBPFFS(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.BPF_FS_MAGIC
}

// ensurePinDir mounts bpffs at the parent of dir when it is not bpffs yet
// (only at /sys/fs/bpf, the conventional place) and creates dir.
func ensurePinDir(dir string) error {
	parent := filepath.Dir(dir)
	if !isBPFFS(parent) {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("%s is not on bpffs; mount bpffs there or use a pin dir under /sys/fs/bpf", parent)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", parent, err)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", parent, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	return nil
}
