package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// netnsEnroller keeps the BPF map of enrolled network namespaces equal to
// the set of network namespaces that have a process under the attach
// cgroup, except the host's: on a Kubernetes node, the pods' namespaces.
// It rescans /proc every interval; a namespace's cookie is computed once,
// when its inode is first seen.
type netnsEnroller struct {
	log       *slog.Logger
	cgroupRel string // the attach cgroup, relative to the cgroup2 mount ("/" for all)
	hostIno   uint64
	enroll    func(cookie uint64) error
	unenroll  func(cookie uint64) error
	cookieOf  func(path string) (uint64, error)

	known map[uint64]uint64 // netns inode -> cookie
}

func newNetnsEnroller(log *slog.Logger, cgroupMount, cgroupPath string, enroll, unenroll func(uint64) error, cookieOf func(string) (uint64, error)) (*netnsEnroller, error) {
	rel, err := filepath.Rel(cgroupMount, cgroupPath)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("cgroup %s is not under the cgroup2 mount %s", cgroupPath, cgroupMount)
	}
	host, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	return &netnsEnroller{
		log: log, cgroupRel: filepath.Join("/", rel), hostIno: host,
		enroll: enroll, unenroll: unenroll, cookieOf: cookieOf,
		known: map[uint64]uint64{},
	}, nil
}

func (e *netnsEnroller) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		e.scan()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scan enrolls new pod namespaces and unenrolls vanished ones.
func (e *netnsEnroller) scan() {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		e.log.Warn("scan /proc for pod network namespaces", "err", err)
		return
	}
	seen := map[uint64]bool{}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
		ino, err := netnsInode(nsPath)
		if err != nil || ino == e.hostIno || seen[ino] {
			continue
		}
		if _, ok := e.known[ino]; !ok && !e.inCgroup(pid) {
			continue
		}
		seen[ino] = true
		if _, ok := e.known[ino]; ok {
			continue
		}
		cookie, err := e.cookieOf(nsPath)
		if err != nil {
			continue // the process exited meanwhile
		}
		if err := e.enroll(cookie); err != nil {
			e.log.Warn("enroll network namespace", "pid", pid, "err", err)
			continue
		}
		e.known[ino] = cookie
		e.log.Debug("enrolled network namespace", "pid", pid, "cookie", cookie)
	}
	for ino, cookie := range e.known {
		if !seen[ino] {
			if err := e.unenroll(cookie); err != nil {
				e.log.Warn("unenroll network namespace", "cookie", cookie, "err", err)
				continue
			}
			delete(e.known, ino)
		}
	}
}

// inCgroup reports whether pid's cgroup-v2 path is under the attach cgroup.
func (e *netnsEnroller) inCgroup(pid int) bool {
	if e.cgroupRel == "/" {
		return true
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p == e.cgroupRel || strings.HasPrefix(p, e.cgroupRel+"/")
		}
	}
	return false
}

func netnsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
