package bpf

// Counters is a snapshot of the hooks' per-reason counters, summed over
// CPUs. Every field only grows while the pinned counter map lives.
type Counters struct {
	// Connect outcomes (cgroup/connect4 and connect6).
	Redirected     uint64 // rewritten to the proxy
	SkipHostNetns  uint64 // connect from the host network namespace
	SkipNotEnroll  uint64 // namespace not enrolled
	SkipNotSelect  uint64 // destination not a selected service
	SkipMarked     uint64 // socket carries the proxy's SO_MARK
	SkipProxyDown  uint64 // proxy listener not registered (fail-open)
	SkipNotTCP     uint64 // UDP, MPTCP, raw...
	SkipNoV6Proxy  uint64 // IPv6 service but no IPv6 proxy address
	StorageFailed  uint64 // could not keep the original destination: not redirected
	TupleRecorded  uint64 // sockops wrote the 4-tuple entry
	TupleFailed    uint64 // sockops could not write it
	PeerRewritten  uint64 // getpeername answered with the original destination
	ShortcutSocket uint64 // sockets added to the sk_msg shortcut map
	// SkipProxyExiting counts connects that failed open because the
	// listener's process was exiting (killed, panicking) while the
	// listener was still registered.
	SkipProxyExiting uint64
	// ProxyExits counts registered proxy processes seen beginning to exit.
	ProxyExits uint64
	// SkipOptedOut counts connects from a cgroup opted out of redirection
	// (OptOutCgroup: a pod labelled zonelb.io/redirect=false).
	SkipOptedOut uint64

	// Listener state at the time of the snapshot (not counters).
	ProxyListening4 bool
	ProxyListening6 bool
}

// field returns the field that the C counter k (enum zlb_counter, whose
// constants bpf2go generates) is summed into; nil for none. Keyed by the
// generated constants, so that a reordering in zonelb.c cannot swap two
// fields; contract_test.go checks that every counter has its field.
func (c *Counters) field(k zonelbZlbCounter) *uint64 {
	switch k {
	case zonelbZlbCounterZLB_C_REDIRECTED:
		return &c.Redirected
	case zonelbZlbCounterZLB_C_SKIP_HOST_NETNS:
		return &c.SkipHostNetns
	case zonelbZlbCounterZLB_C_SKIP_NOT_ENROLLED:
		return &c.SkipNotEnroll
	case zonelbZlbCounterZLB_C_SKIP_NOT_SELECTED:
		return &c.SkipNotSelect
	case zonelbZlbCounterZLB_C_SKIP_MARKED:
		return &c.SkipMarked
	case zonelbZlbCounterZLB_C_SKIP_PROXY_DOWN:
		return &c.SkipProxyDown
	case zonelbZlbCounterZLB_C_SKIP_NOT_TCP:
		return &c.SkipNotTCP
	case zonelbZlbCounterZLB_C_SKIP_NO_V6PROXY:
		return &c.SkipNoV6Proxy
	case zonelbZlbCounterZLB_C_STORAGE_FAILED:
		return &c.StorageFailed
	case zonelbZlbCounterZLB_C_TUPLE_RECORDED:
		return &c.TupleRecorded
	case zonelbZlbCounterZLB_C_TUPLE_FAILED:
		return &c.TupleFailed
	case zonelbZlbCounterZLB_C_GETPEERNAME_REWRITTEN:
		return &c.PeerRewritten
	case zonelbZlbCounterZLB_C_SKIP_PROXY_EXITING:
		return &c.SkipProxyExiting
	case zonelbZlbCounterZLB_C_PROXY_EXITS:
		return &c.ProxyExits
	case zonelbZlbCounterZLB_C_SKIP_OPTED_OUT:
		return &c.SkipOptedOut
	case zonelbZlbCounterZLB_C_SHORTCUT_SOCKETS:
		return &c.ShortcutSocket
	}
	return nil
}
