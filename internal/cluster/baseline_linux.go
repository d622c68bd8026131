package cluster

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/zonelb/zonelb/internal/netlab"
)

// Baseline is how the clients' node translates the Service's ClusterIP
// when zonelb does not take a connection: the kube-proxy emulation.
type Baseline int

const (
	// BaselineNone installs no rule: without zonelb the ClusterIP is
	// unreachable.
	BaselineNone Baseline = iota
	// BaselineRandom is kube-proxy's iptables mode: each new connection
	// is DNATed to a ready endpoint chosen at random (statistic match),
	// and every packet of it follows (conntrack).
	BaselineRandom
	// BaselinePreferSameZone is kube-proxy with the Service's
	// trafficDistribution: PreferSameZone: only the ready endpoints of the
	// node's zone when there is any, else all ready endpoints; random
	// among them per connection.
	BaselinePreferSameZone
)

func (b Baseline) String() string {
	switch b {
	case BaselineNone:
		return "none"
	case BaselineRandom:
		return "kube-proxy"
	case BaselinePreferSameZone:
		return "kube-proxy PreferSameZone"
	}
	return fmt.Sprintf("Baseline(%d)", int(b))
}

// SetBaseline installs the rules of b in the clients' node, for the
// endpoints ready now; they follow endpoint changes made with SetReady.
func (c *Cluster) SetBaseline(b Baseline) error {
	c.mu.Lock()
	c.baseline = b
	c.mu.Unlock()
	return c.syncBaseline()
}

// baselineRules renders the nat table for iptables-restore, as kube-proxy
// structures it: KUBE-SERVICES matches the ClusterIP, KUBE-SVC-* picks an
// endpoint with the statistic match (1/n, then 1/(n-1), ..., so that each
// of n endpoints gets 1/n), KUBE-SEP-* DNATs to it. The whole table is
// replaced atomically; the namespace holds no other rule.
func baselineRules(b Baseline, backends []*Backend) string {
	var eps []*Backend
	if b != BaselineNone {
		for _, be := range backends {
			if be.isReady() {
				eps = append(eps, be)
			}
		}
	}
	if b == BaselinePreferSameZone {
		var local []*Backend
		for _, be := range eps {
			if be.Zone == ClientZone {
				local = append(local, be)
			}
		}
		if len(local) > 0 {
			eps = local
		}
	}
	var sb strings.Builder
	sb.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	sb.WriteString(":KUBE-SERVICES - [0:0]\n:KUBE-SVC-GREETER - [0:0]\n")
	for _, be := range eps {
		fmt.Fprintf(&sb, ":KUBE-SEP-%s - [0:0]\n", strings.ToUpper(be.Name))
	}
	// Pods' packets arrive over their veth (PREROUTING); the node's own
	// connections go through OUTPUT.
	sb.WriteString("-A PREROUTING -m comment --comment \"kube-proxy emulation\" -j KUBE-SERVICES\n")
	sb.WriteString("-A OUTPUT -m comment --comment \"kube-proxy emulation\" -j KUBE-SERVICES\n")
	if len(eps) > 0 {
		fmt.Fprintf(&sb, "-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport %d -m comment --comment \"%s/%s:%s (%s)\" -j KUBE-SVC-GREETER\n",
			ServiceVIP.Addr(), ServiceVIP.Port(), ServiceNamespace, ServiceName, ServicePortName, b)
	}
	for i, be := range eps {
		sep := "KUBE-SEP-" + strings.ToUpper(be.Name)
		if left := len(eps) - i; left > 1 {
			fmt.Fprintf(&sb, "-A KUBE-SVC-GREETER -m statistic --mode random --probability %.11f -j %s\n", 1/float64(left), sep)
		} else {
			fmt.Fprintf(&sb, "-A KUBE-SVC-GREETER -j %s\n", sep)
		}
		fmt.Fprintf(&sb, "-A %s -p tcp -m tcp -j DNAT --to-destination %s\n", sep, be.Addr)
	}
	sb.WriteString("COMMIT\n")
	return sb.String()
}

// syncBaseline replaces the clients' node's nat table with the current
// baseline's rules.
func (c *Cluster) syncBaseline() error {
	c.mu.Lock()
	b := c.baseline
	c.mu.Unlock()
	rules := baselineRules(b, c.Backends)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := c.runOnNode(ctx, c.ClientNode(), strings.NewReader(rules), "iptables-restore"); err != nil {
		return fmt.Errorf("cluster: install %s rules: %w: %s\nrules:\n%s", b, err, out, rules)
	}
	c.log.Debug("baseline rules installed", "baseline", b.String())
	return nil
}

// BaselineRules returns the nat table of the clients' node as iptables-save
// prints it.
func (c *Cluster) BaselineRules(ctx context.Context) (string, error) {
	return c.runOnNode(ctx, c.ClientNode(), nil, "iptables-save", "-t", "nat")
}

// runOnNode runs a command in a node's namespace (in its system cgroup)
// and returns its combined output.
func (c *Cluster) runOnNode(ctx context.Context, node *netlab.Node, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := node.Start(name, cmd)
	if err != nil {
		return "", err
	}
	if err := p.Wait(ctx); err != nil {
		p.Kill()
		return out.String(), fmt.Errorf("%s in %s: %w", name, node.Name, err)
	}
	return out.String(), nil
}
