// Package cluster is zonelb's mini cluster on one machine, for the e2e
// test, `make demo` and `make bench-e2e`: three zones, one node each, as
// network namespaces joined by a bridge (package internal/netlab); gRPC
// backend pods in every zone and client pods in zone-a; the real zonelb
// daemon (bin/zonelb) on the clients' node with its eBPF redirection (or,
// for make bench-e2e, HAProxy as the node proxy behind the same hooks:
// haproxy_linux.go); the
// kube-proxy baseline as iptables DNAT rules with the statistic match in
// that node's namespace; and discovery from a real kube-apiserver when its
// binaries are built (`make kube-bins`), from the file source otherwise.
//
// # Addresses (inside the lab only)
//
//	node-a, node-b, node-c   198.18.0.1-3 on the fabric bridge, zones zone-a, zone-b, zone-c
//	pods of node i           10.244.i.10, .11, ... (routed by the node, never NATed)
//	Service default/greeter  ClusterIP 10.96.0.10 port 80 (grpc) -> pods' port 50051
//	zonelb proxy             169.254.20.11:15001 on node-a (zonelb0); HAProxy
//	                         listens there instead when it is the node proxy
//	zonelb admin             127.0.0.1:15000 in node-a's namespace
//	kube-apiserver           127.0.0.1:<port> in the host namespace, reached from
//	                         node-a as 127.0.0.1:6443 through a relay (below)
//
// No namespace has a route out of the lab: the ClusterIP is only meaningful
// where the rules or the BPF hooks translate it, and nothing else is
// routed anywhere.
//
// # Reaching the API server without a route out
//
// kube-apiserver and etcd run on the host's loopback (package
// internal/kubetest). The daemon in node-a's namespace reaches them through
// a relay in the harness process: its listening socket is opened inside
// node-a's namespace on 127.0.0.1:6443 (a socket keeps the namespace it was
// created in), and each accepted connection is joined to a connection the
// harness dials to the API server on the host's loopback. TLS is end to end
// (the serving certificate names 127.0.0.1). Both legs are loopback
// connections; no interface, address or route joins the lab to the host.
// It is the local API-server proxy pattern that some installers run on
// every node.
//
// # What is emulated, and how
//
//   - Cross-zone latency: there is no netem here, so each backend adds
//     Options.CrossZoneDelay to a call whose caller (the peer address it
//     sees) is in another zone.
//   - Load: each backend serves Capacity calls at a time, each taking
//     ServiceTime; further calls queue. Overloading a zone lowers its
//     capacity and raises its service time at run time.
//   - kube-proxy: DNAT to a random endpoint per connection (iptables
//     statistic match) in PREROUTING of node-a, the path pods' packets take;
//     PreferSameZone keeps only zone-a's endpoints while any is ready.
//   - Endpoint controller: the harness writes EndpointSlices (or the file)
//     itself, as ready, or not ready and terminating when it stops a pod.
//
// Processes in pods are re-executions of the running binary (see
// netlab.RunHelpers): make Main (this package) the whole of main and
// TestMain.
//
// It is test infrastructure: it must not be imported by product code, must
// not touch the host's network (it creates only netlab namespaces, one
// cgroup and bpffs pins per run), and must stop only processes it started.
package cluster
