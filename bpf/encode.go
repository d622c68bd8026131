package bpf

import (
	"encoding/binary"
	"net/netip"
)

// The C structs hold addresses as four 32-bit words and ports as 16-bit
// values, all in network byte order in memory. The generated Go structs
// are marshalled in host order, so each word is built from the wire bytes
// with the native byte order.

func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = binary.NativeEndian.Uint32(b[:])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func wordsAddr(w [4]uint32, family uint8) netip.Addr {
	if family == familyV4 {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], w[0])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	return netip.AddrFrom16(b)
}

func portNet(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func portHost(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// Family tags of the C side (ZLB_FAMILY_*), and orig_dst flags.
const (
	familyV4     = 4
	familyV6     = 6
	origV4Mapped = 1
)

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// serviceKey encodes a selected service address. An IPv4 address written
// as ::ffff:a.b.c.d is the IPv4 service (the hooks match v4-mapped
// connects against IPv4 entries).
func serviceKey(ap netip.AddrPort) zonelbSvcKey {
	a := ap.Addr().Unmap()
	return zonelbSvcKey{Addr: addrWords(a), Port: portNet(ap.Port()), Family: familyOf(a)}
}

func (k zonelbSvcKey) addrPort() netip.AddrPort {
	return netip.AddrPortFrom(wordsAddr(k.Addr, k.Family), portHost(k.Port))
}

// tupleKey encodes a connection as the proxy sees it: client is the
// accepted socket's remote end, proxy its local end.
func tupleKey(client, proxy netip.AddrPort) zonelbTupleKey {
	c, p := client.Addr().Unmap(), proxy.Addr().Unmap()
	return zonelbTupleKey{
		Client:     addrWords(c),
		Proxy:      addrWords(p),
		ClientPort: portNet(client.Port()),
		ProxyPort:  portNet(proxy.Port()),
		Family:     familyOf(c),
	}
}

func (o zonelbOrigDst) original() Original {
	return Original{
		Addr:      netip.AddrPortFrom(wordsAddr(o.Addr, o.Family), portHost(o.Port)),
		ServiceID: o.ServiceId,
		V4Mapped:  o.Flags&origV4Mapped != 0,
	}
}
