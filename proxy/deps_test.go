package proxy

import (
	"testing"

	"github.com/zonelb/zonelb/internal/deptest"
)

// The proxy forwards what a Router and a Picker tell it: it knows nothing
// of Kubernetes, of BPF, or of the daemon that wires it.
func TestKnowsNothingOfKubernetesOrBPF(t *testing.T) {
	deptest.Check(t, []string{
		"k8s.io", "sigs.k8s.io",
		"github.com/cilium/ebpf", "github.com/vishvananda",
		"github.com/zonelb/zonelb/bpf", "github.com/zonelb/zonelb/daemon",
	}, "the proxy must know nothing of Kubernetes or BPF")
}
