// Package netlab builds throwaway network topologies out of Linux network
// namespaces, for end-to-end tests, demos and benchmarks: nodes joined by a
// bridge, pods wired to their node by veth pairs with addresses and routes,
// one cgroup-v2 directory per pod under one cgroup per run, and processes
// started inside a pod's (or a node's) network namespace and cgroup.
//
// # Topology
//
//	fabric netns:  bridge "fabric" ── veth ── node netns (eth0 198.18.0.i/24)
//	node netns:    forwarding on; a /32 route per pod over its veth;
//	               a route to every other node's pod range via that node
//	pod netns:     eth0 10.244.i.k/32, default route via 10.244.i.1 (the node)
//
// A pod's node-side veth holds the node's pod gateway address (10.244.i.1/32,
// the same on every veth of the node, as Calico does), so pod-to-pod traffic
// is always routed by the node, never bridged: netfilter rules in the node
// namespace (kube-proxy's DNAT) see both directions of every connection.
//
// # Safety
//
// Nothing touches the host's network namespace. The bridge lives in a
// "fabric" namespace of its own, both ends of every veth are inside the
// lab's namespaces, and no namespace has a default route or any route out of
// the lab: traffic to an address the lab does not define is dropped inside
// it. The namespaces are unnamed: they live as long as the lab's file
// descriptors and processes, so they vanish even when the owner is
// SIGKILLed (its children carry Pdeathsig). On the host the lab creates only
// one cgroup directory per run (named zonelb-netlab-<pid>-<random>); Close
// removes it, and Sweep removes those of owners that died without closing,
// together with bpffs pin directories named after them.
//
// # Processes
//
// Start forks a command on a thread switched into the target namespace, into
// the target cgroup (CLONE_INTO_CGROUP), so the whole process lives there
// from its first instruction; it gets its own process group (a Ctrl-C at the
// terminal reaches only the owner, which tears down in order) and Pdeathsig.
// Binaries that use netlab re-execute themselves for helper processes: call
// RunHelpers first thing in main (or TestMain) and start helpers with
// HelperCommand.
//
// It must not be used by product code, must not route to or from the host
// namespace, and must not signal processes it did not start.
package netlab
