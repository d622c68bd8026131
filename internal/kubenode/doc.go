// Package kubenode runs a real one-node Kubernetes cluster on this machine
// for tests and demos: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd (with runc and the bridge CNI), kubelet and
// kube-proxy in iptables mode, from the binaries that tools/kube and
// tools/containerd build into .cache/bin (`make node-bins containerd-bins`).
//
// # Isolation: the node is a namespace, as a kind node is a container
//
// Everything runs inside namespaces that Start creates and that die with
// the test: a network namespace (the node's address, the cni0 bridge, pod
// veths, kube-proxy's iptables rules, the service and pod ranges: none of
// them exist in this machine's own namespace, and the only route out is an
// interface without ports, which drops what it is given), a mount namespace (a fresh
// sysfs, bpffs at /sys/fs/bpf, tmpfs at /run, /var/lib and /var/log, so
// that the node's pins, sockets and state are its own) and a cgroup
// namespace rooted at cgroups created for the run, one per hierarchy
// (/sys/fs/cgroup/<hierarchy>/zonelb-kubenode-<id>): the kubelet's
// kubepods tree, every container and the node's own daemons live below
// them, and a BPF program attached to the node's "root" cgroup sees the
// node's pods and nothing else of this machine.
//
// Hybrid hosts (cgroup v1 controllers, cgroup2 at /sys/fs/cgroup/unified)
// and unified ones are both handled: the node mounts the same layout the
// host has. On a hybrid host the kubelet runs in its cgroup v1 mode
// (failCgroupV1: false).
//
// The test reaches the API server and the pods by opening its sockets
// inside the node's network namespace (Node.DialContext); kubectl runs
// inside the node's namespaces (Node.Kubectl).
//
// Teardown kills every process in the node's cgroups (all descendants of
// processes the harness started), removes the cgroups, and lets the
// namespaces go with their last process.
//
// It is test infrastructure: it must not be imported by product code. It
// knows nothing of zonelb.
package kubenode
