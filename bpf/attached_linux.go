package bpf

// Attached: whether the cgroup hooks this handle attached are still in
// force, asked of the kernel at every call (an operator's `bpftool cgroup
// detach`, or another agent replacing the programs, shows at once).

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf/link"
)

// Attached reports, for each cgroup hook (by program name without the
// "zlb_" prefix: connect4, connect6, getpeername4, getpeername6, sockops),
// whether the program this handle attached is among the programs the
// kernel runs for that hook on Config.CgroupPath. A handle from Open
// attached nothing and reports nothing (an empty map).
func (r *Redirector) Attached() (map[string]bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, errors.New("bpf: redirector closed")
	}
	if len(r.progIDs) == 0 {
		return nil, nil // opened, not loaded: it attached nothing
	}
	cg, err := os.Open(r.cfg.CgroupPath)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", r.cfg.CgroupPath, err)
	}
	defer cg.Close()
	out := make(map[string]bool, len(cgroupHooks))
	for _, hook := range cgroupHooks {
		id, ok := r.progIDs[hook.prog]
		if !ok {
			continue
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: hook.attach})
		if err != nil {
			return nil, fmt.Errorf("query %s programs of %s: %w", hook.attach, r.cfg.CgroupPath, err)
		}
		out[strings.TrimPrefix(hook.prog, "zlb_")] = slices.ContainsFunc(res.Programs, func(p link.AttachedProgram) bool { return p.ID == id })
	}
	return out, nil
}
