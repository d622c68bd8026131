package nodeaddr

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/zonelb/zonelb/internal/testenv"
)

// testNetns creates a throwaway named network namespace.
func testNetns(t *testing.T) string {
	testenv.RequireRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	name := "zlbt-na-" + hex.EncodeToString(b)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is left in the new namespace and dies
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { netns.DeleteNamed(name) })
	return filepath.Join("/run/netns", name)
}

func addrsOf(t *testing.T, path, name string) []string {
	t.Helper()
	h, err := handle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue
		}
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

func TestEnsureIsIdempotentAndConverges(t *testing.T) {
	ns := testNetns(t)
	spec := Spec{Name: "zonelb0", Netns: ns, Addrs: []netip.Prefix{
		netip.MustParsePrefix("169.254.20.11/32"), netip.MustParsePrefix("fd00:20::11/128")}}
	for range 2 {
		if err := Ensure(spec); err != nil {
			t.Fatalf("ensure: %v", err)
		}
	}
	if got := addrsOf(t, ns, "zonelb0"); !slices.Equal(got, []string{"169.254.20.11/32", "fd00:20::11/128"}) {
		t.Errorf("addresses %v", got)
	}
	// A changed address replaces the old one.
	spec.Addrs = []netip.Prefix{netip.MustParsePrefix("169.254.20.12/32")}
	if err := Ensure(spec); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(t, ns, "zonelb0"); !slices.Equal(got, []string{"169.254.20.12/32"}) {
		t.Errorf("stale addresses kept: %v", got)
	}
	for range 2 {
		if err := Remove("zonelb0", ns); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	if ok, err := Exists("zonelb0", ns); err != nil || ok {
		t.Errorf("still exists after remove (err %v)", err)
	}
}

func TestRefusesForeignInterfaces(t *testing.T) {
	ns := testNetns(t)
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "zonelb0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "zlbpeer"}); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(Spec{Name: "zonelb0", Netns: ns}); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("Ensure on a veth: %v, want refusal", err)
	}
	if err := Remove("zonelb0", ns); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("Remove on a veth: %v, want refusal", err)
	}
}
