// Package e2e is zonelb's end-to-end test (TestMiniCluster): on the mini
// cluster of package internal/cluster (a real kube-apiserver, real nodes
// in network namespaces, three zones, the real zonelb binary with its BPF
// redirection) it checks the kube-proxy baselines, per-request balancing
// and zone preference, spillover, failover, fail-open and a restart, and
// that the Grafana dashboard and the alerting rules read what the clients
// measured.
//
// It holds tests only: the lab they run on lives in internal/cluster.
package e2e
