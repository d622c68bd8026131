package bpf

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/zonelb/zonelb/internal/testenv"
)

// An old kernel gets one sentence per missing feature, wrapping
// ErrUnsupported, not a verifier log.
func TestCheckKernelNamesWhatIsMissing(t *testing.T) {
	missing := fmt.Errorf("no such program type: %w", ebpf.ErrNotSupported)
	err := checkKernel([]requirement{
		{"cgroup sock_addr hooks", "4.17", func() error { return missing }},
		{"LRU hash maps", "4.10", func() error { return nil }},
		{"socket local storage maps", "5.2", func() error { return missing }},
	})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("checkKernel = %v, want ErrUnsupported", err)
	}
	for _, want := range []string{
		"cgroup sock_addr hooks need Linux 4.17+; this kernel lacks them",
		"socket local storage maps need Linux 5.2+",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("checkKernel = %q, want it to say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "LRU") {
		t.Errorf("checkKernel = %q names a feature the kernel has", err)
	}

	denied := errors.New("operation not permitted")
	err = checkKernel([]requirement{{"sock_ops programs", "4.13", func() error { return denied }}})
	if !errors.Is(err, denied) || errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "probe the kernel for sock_ops programs") {
		t.Errorf("a probe that cannot run: %v, want it reported as such, not as unsupported", err)
	}
}

// This kernel (the one the privileged tests load into) has everything.
func TestKernelHasWhatLoadNeeds(t *testing.T) {
	testenv.RequireRoot(t)
	if err := checkKernel(kernelRequirements(true)); err != nil {
		t.Fatal(err)
	}
}
