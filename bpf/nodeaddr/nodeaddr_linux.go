package nodeaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// handle opens a netlink handle in the namespace at path ("" = caller's).
func handle(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	return h, nil
}

// Ensure creates the dummy interface if missing, brings it up and makes
// its addresses exactly s.Addrs. It is idempotent.
func Ensure(s Spec) error {
	if s.Name == "" {
		return errors.New("nodeaddr: empty interface name")
	}
	h, err := handle(s.Netns)
	if err != nil {
		return err
	}
	defer h.Close()

	link, err := h.LinkByName(s.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		if link, err = create(h, s.Name); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("find interface %s: %w", s.Name, err)
	}
	if !ours(h, link) {
		return fmt.Errorf("interface %s exists but is a %s with ports or not a dummy/bridge: refusing to touch it", s.Name, link.Type())
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", s.Name, err)
	}

	want := map[netip.Prefix]bool{}
	for _, p := range s.Addrs {
		p = p.Masked()
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
		want[p] = true
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			// No duplicate address detection: the address is ours alone and
			// must be usable at once.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, s.Name, err)
		}
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", s.Name, err)
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		if ip.IsLinkLocalUnicast() && ip.Is6() {
			continue
		}
		if want[netip.PrefixFrom(ip, ones).Masked()] {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, s.Name, err)
		}
	}
	return nil
}

// Remove deletes the interface; a missing interface is not an error. It
// refuses to delete an interface that is not a dummy.
func Remove(name, netnsPath string) error {
	h, err := handle(netnsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if !ours(h, link) {
		return fmt.Errorf("interface %s is a %s with ports or not a dummy/bridge: refusing to delete it", name, link.Type())
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}

// Exists reports whether the interface is present.
func Exists(name, netnsPath string) (bool, error) {
	h, err := handle(netnsPath)
	if err != nil {
		return false, err
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find interface %s: %w", name, err)
	}
	return true, nil
}

// create adds a dummy interface, or a port-less bridge on kernels built
// without CONFIG_DUMMY (seen on this project's VMs). Both only hold local
// addresses; neither forwards anything.
func create(h *netlink.Handle, name string) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	err := h.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create interface %s: %w", name, err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find interface %s after creating it: %w", name, err)
	}
	return link, nil
}

// ours reports whether link is something this package would have created:
// a dummy, or a bridge without ports.
func ours(h *netlink.Handle, link netlink.Link) bool {
	switch link.Type() {
	case "dummy":
		return true
	case "bridge":
		// A bridge with ports is someone's real network: never ours.
		return !hasPorts(h, link)
	}
	return false
}

func hasPorts(h *netlink.Handle, bridge netlink.Link) bool {
	links, err := h.LinkList()
	if err != nil {
		return true // cannot tell: treat as not ours
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == bridge.Attrs().Index {
			return true
		}
	}
	return false
}
