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

	// Listener state at the time of the snapshot (not counters).
	ProxyListening4 bool
	ProxyListening6 bool
}

// counterIndex maps the C enum zlb_counter to Counters fields; the order
// is the C enum's.
func (c *Counters) fields() []*uint64 {
	return []*uint64{
		&c.Redirected,
		&c.SkipHostNetns,
		&c.SkipNotEnroll,
		&c.SkipNotSelect,
		&c.SkipMarked,
		&c.SkipProxyDown,
		&c.SkipNotTCP,
		&c.SkipNoV6Proxy,
		&c.StorageFailed,
		&c.TupleRecorded,
		&c.TupleFailed,
		&c.PeerRewritten,
		&c.ShortcutSocket,
		&c.SkipProxyExiting,
		&c.ProxyExits,
	}
}
