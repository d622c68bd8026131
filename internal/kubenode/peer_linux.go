package kubenode

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/zonelb/zonelb/internal/childproc"
)

// Peer is a process in a network namespace of its own, joined to the
// node's cni0 bridge with an address of the pod subnet outside the range
// the node's IPAM hands out: an endpoint that no kubelet of this node made,
// as a pod of another node is (a test registers it with an EndpointSlice).
type Peer struct {
	Name string
	IP   string
	proc *childproc.Proc
}

// StartPeer starts bin with args and env in a new network namespace on the
// node's bridge at ip (in PodSubnet, .200 and up). The bridge exists once
// the node runs a pod. The peer stops with the node, or with Stop.
func (n *Node) StartPeer(name, ip string, env []string, bin string, args ...string) (*Peer, error) {
	if net.ParseIP(ip).To4() == nil {
		return nil, fmt.Errorf("peer %s: bad address %q", name, ip)
	}
	cmd := n.Command(context.Background(), "unshare", append([]string{"--net", "--", bin}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	p, err := childproc.Start("peer-"+name, filepath.Join(n.Dir, "peer-"+name+".log"), cmd)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.procs["peer-"+name] = p
	n.logs = append(n.logs, "peer-"+name)
	n.mu.Unlock()
	peer := &Peer{Name: name, IP: ip, proc: p}
	if err := n.wirePeer(peer, bin); err != nil {
		p.Stop(stopGrace)
		return nil, err
	}
	return peer, nil
}

// wirePeer waits for the peer's own namespace, then adds a veth from the
// bridge into it with the address and a default route via the gateway.
func (n *Node) wirePeer(peer *Peer, bin string) error {
	target, err := n.waitPeerNetns(peer, bin)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := n.addPeerVeth(peer, target); err != nil {
		return err
	}
	return configurePeerLinks(peer, target)
}

// waitPeerNetns waits (10s at most) until the peer's process runs bin and
// returns a handle on its network namespace, which must be neither the
// node's nor this process's.
func (n *Node) waitPeerNetns(peer *Peer, bin string) (netns.NsHandle, error) {
	pid := peer.proc.Pid()
	nodeNS := n.netnsFD
	hostNS, err := netns.Get()
	if err != nil {
		return -1, fmt.Errorf("own netns: %w", err)
	}
	defer hostNS.Close()
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return -1, fmt.Errorf("peer %s: %w", peer.Name, err)
	}
	// The process runs bin only after the wrappers (sh, nsenter, unshare)
	// have exec'd their way there: only then is its namespace its own.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == want {
			h, err := netns.GetFromPid(pid)
			if err != nil {
				return -1, fmt.Errorf("peer %s: netns: %w", peer.Name, err)
			}
			if h.Equal(nodeNS) || h.Equal(hostNS) {
				h.Close()
				return -1, fmt.Errorf("peer %s: runs in a namespace not its own", peer.Name)
			}
			return h, nil
		}
		if peer.proc.Exited() {
			return -1, fmt.Errorf("peer %s exited: %s", peer.Name, childproc.Tail(peer.proc.Log, 10))
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("peer %s: no namespace of its own within 10s", peer.Name)
		}
		time.Sleep(20 * time.Millisecond) // waiting for unshare to run, bounded by deadline
	}
}

// addPeerVeth adds a veth whose node side is a port of cni0 and whose
// other side is eth0 in target.
func (n *Node) addPeerVeth(peer *Peer, target netns.NsHandle) error {
	nl, err := netlink.NewHandleAt(n.netnsFD)
	if err != nil {
		return fmt.Errorf("netlink in node: %w", err)
	}
	defer nl.Close()
	bridge, err := nl.LinkByName("cni0")
	if err != nil {
		return fmt.Errorf("peer %s: bridge cni0 (created with the node's first pod): %w", peer.Name, err)
	}
	hostSide := "vp-" + peer.Name
	if len(hostSide) > 15 {
		hostSide = hostSide[:15]
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostSide, MasterIndex: bridge.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(target)}
	if err := nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("peer %s: add veth: %w", peer.Name, err)
	}
	if err := nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("peer %s: veth up: %w", peer.Name, err)
	}
	return nil
}

// configurePeerLinks, in target, brings lo and eth0 up with the peer's
// address on eth0 and a default route via the bridge.
func configurePeerLinks(peer *Peer, target netns.NsHandle) error {
	pl, err := netlink.NewHandleAt(target)
	if err != nil {
		return fmt.Errorf("netlink in peer %s: %w", peer.Name, err)
	}
	defer pl.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := pl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("peer %s: %s: %w", peer.Name, name, err)
		}
		if name == "eth0" {
			_, subnet, _ := net.ParseCIDR(PodSubnet)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(peer.IP), Mask: subnet.Mask}}
			if err := pl.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("peer %s: address: %w", peer.Name, err)
			}
		}
		if err := pl.LinkSetUp(l); err != nil {
			return fmt.Errorf("peer %s: %s up: %w", peer.Name, name, err)
		}
	}
	eth0, _ := pl.LinkByName("eth0")
	if err := pl.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP(BridgeIP)}); err != nil {
		return fmt.Errorf("peer %s: default route: %w", peer.Name, err)
	}
	return nil
}

// Stop ends the peer's process (its namespace goes with it).
func (p *Peer) Stop() { p.proc.Stop(stopGrace) }
