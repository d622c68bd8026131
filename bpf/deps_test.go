package bpf

import (
	"testing"

	"github.com/zonelb/zonelb/internal/deptest"
)

// The redirection knows addresses and service ids only: not Kubernetes,
// not the balancers, not the proxy or the daemon.
func TestMustNotKnowKubernetes(t *testing.T) {
	deptest.Check(t, []string{
		"k8s.io", "sigs.k8s.io",
		"github.com/zonelb/zonelb/daemon", "github.com/zonelb/zonelb/proxy", "github.com/zonelb/zonelb/zone",
	}, "bpf must not know Kubernetes, the balancers or the proxy")
}
