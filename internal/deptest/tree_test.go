package deptest

import (
	"path/filepath"
	"testing"
)

const mod = "github.com/zonelb/zonelb/"

// testInfra is what exists for tests, demos and benchmarks only.
var testInfra = []string{
	mod + "internal/cluster", mod + "internal/netlab", mod + "internal/kubetest", mod + "internal/kubenode",
	mod + "internal/testservice", mod + "internal/childproc", mod + "internal/proxycmd",
	mod + "internal/testenv", mod + "internal/deptest", mod + "internal/funclen", mod + "internal/demoreport",
	"testing",
}

var (
	kubernetes = []string{"k8s.io", "sigs.k8s.io"}
	bpfLibs    = []string{"github.com/cilium/ebpf", "github.com/vishvananda", mod + "bpf"}
)

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// What each package's doc comment says it must not know, pinned (for
// Linux, where every package builds; zone, proxy and bpf pin theirs for
// another system too, in their own deps_test.go).
func TestTheTreeKeepsItsDependencies(t *testing.T) {
	for _, rule := range []struct {
		pkgs      []string
		forbidden []string
		why       string
	}{
		{[]string{"proxy", "zone", "bpf/...", "daemon/...", "cmd/zonelb", "cmd/zonelb-proxy", "internal/standalone", "internal/cli"}, testInfra,
			"product code must not import test infrastructure"},
		{[]string{"proxy", "zone", "bpf/...", "daemon/...", "cmd/zonelb"},
			[]string{"k8s.io/client-go/kubernetes", "k8s.io/client-go/informers"},
			"client-go's clientset and informer factory register every API group at start-up, ~10 MB of RSS in every zonelb process: daemon/kubeapi serves the daemon's five resources"},
		{[]string{"cmd/zonelb-proxy", "internal/standalone", "internal/cli"},
			join(kubernetes, bpfLibs, []string{mod + "daemon", mod + "sim", "github.com/prometheus"}, testInfra),
			"the standalone proxy binary carries the proxy and nothing of the node agent: every linked package's initialisers and interface tables are resident memory"},
		{[]string{"sim"}, join(kubernetes, bpfLibs, []string{mod + "proxy", mod + "daemon", "net/http"}, testInfra),
			"the simulator drives the zone package and nothing else of the product"},
		{[]string{"daemon/discovery"}, join(bpfLibs, []string{mod + "proxy"}),
			"discovery only observes: it knows nothing of the proxy or BPF"},
		{[]string{"internal/sockopt"}, join(kubernetes, bpfLibs, []string{mod + "proxy"}),
			"sockopt knows sockets only"},
		{[]string{"internal/grpccode", "internal/pprofmux", "internal/duration", "internal/eintr"},
			join(kubernetes, bpfLibs, []string{mod + "proxy", mod + "daemon", mod + "zone"}),
			"the small helpers know nothing of the product"},
		{[]string{"internal/netnsrun"}, join(kubernetes, []string{"github.com/cilium/ebpf", mod + "bpf", mod + "proxy", mod + "daemon", mod + "zone"}),
			"netnsrun knows netns handles, nothing of what lives in them"},
		{[]string{"internal/kubenode"}, []string{mod + "proxy", mod + "daemon", mod + "zone", mod + "bpf", mod + "internal/cluster"},
			"the real node knows nothing of zonelb"},
		{[]string{"internal/demoreport"}, []string{mod + "internal/cluster", mod + "internal/netlab"},
			"the demo report knows nothing of the mini cluster"},
		{[]string{"internal/childproc", "internal/proxycmd", "internal/testservice"},
			join(kubernetes, bpfLibs, []string{mod + "proxy", mod + "daemon", mod + "zone",
				mod + "internal/cluster", mod + "internal/netlab", mod + "internal/kubetest"}),
			"the process helpers and the test backend know nothing of what they run or stand behind"},
	} {
		var dirs []string
		for _, p := range rule.pkgs {
			dirs = append(dirs, "./"+filepath.ToSlash(filepath.Join("..", "..", p)))
		}
		CheckPackages(t, "linux", dirs, rule.forbidden, rule.why)
	}
}
