package bpf

// Feature probes: before loading, ask the kernel (cilium/ebpf's features)
// for each program type, map type and helper the programs use, so that an
// old kernel gets one sentence naming what it lacks instead of a verifier
// log.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// requirement is one kernel feature the programs need.
type requirement struct {
	what  string // what it is, as a plural noun phrase
	since string // the first Linux release that has it
	probe func() error
}

// kernelRequirements lists what Load needs; shortcut adds what the sk_msg
// shortcut needs.
func kernelRequirements(shortcut bool) []requirement {
	prog := func(pt ebpf.ProgramType) func() error { return func() error { return features.HaveProgramType(pt) } }
	mapType := func(mt ebpf.MapType) func() error { return func() error { return features.HaveMapType(mt) } }
	helper := func(pt ebpf.ProgramType, fn asm.BuiltinFunc) func() error {
		return func() error { return features.HaveProgramHelper(pt, fn) }
	}
	reqs := []requirement{
		{"cgroup sock_addr hooks", "4.17", prog(ebpf.CGroupSockAddr)},
		{"sock_ops programs", "4.13", prog(ebpf.SockOps)},
		{"SOCKMAP maps", "4.14", mapType(ebpf.SockMap)},
		{"LRU hash maps", "4.10", mapType(ebpf.LRUHash)},
		{"per-CPU arrays", "4.6", mapType(ebpf.PerCPUArray)},
		{"socket local storage maps", "5.2", mapType(ebpf.SkStorage)},
		{"network namespace cookies in cgroup sock_addr hooks", "5.7", helper(ebpf.CGroupSockAddr, asm.FnGetNetnsCookie)},
		{"socket local storage in cgroup sock_addr hooks", "5.3", helper(ebpf.CGroupSockAddr, asm.FnSkStorageGet)},
		{"socket local storage in sock_ops programs", "5.3", helper(ebpf.SockOps, asm.FnSkStorageGet)},
		// The listener's owner (owner_linux.go) is claimed by a syscall
		// program. (The tracing programs that see the proxy die have no
		// generic probe: cilium/ebpf's needs an attach target; a kernel
		// without them fails at load with the verifier's reason.)
		{"syscall programs", "5.14", prog(ebpf.Syscall)},
	}
	if shortcut {
		reqs = append(reqs,
			requirement{"sk_msg programs", "4.17", prog(ebpf.SkMsg)},
			requirement{"SOCKHASH maps", "4.18", mapType(ebpf.SockHash)},
		)
	}
	return reqs
}

// checkKernel probes every requirement. What the kernel lacks is reported
// in one error wrapping ErrUnsupported; a probe that could not run at all
// (no permission, say) is reported as such.
func checkKernel(reqs []requirement) error {
	var lacks []string
	var errs []error
	for _, r := range reqs {
		err := r.probe()
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			lacks = append(lacks, fmt.Sprintf("%s need Linux %s+; this kernel lacks them", r.what, r.since))
		default:
			errs = append(errs, fmt.Errorf("probe the kernel for %s: %w", r.what, err))
		}
	}
	if len(lacks) > 0 {
		errs = append([]error{fmt.Errorf("%s: %w", strings.Join(lacks, "; "), ErrUnsupported)}, errs...)
	}
	return errors.Join(errs...)
}
