// Package kubenode tests zonelb as a user installs it: `kubectl apply -k`
// of deploy/ (only the image reference set, by a Kustomize overlay as the
// README shows) on a real kubelet node (internal/kubenode), with the image
// that `make image` builds, steering real client pods' gRPC calls to a
// ClusterIP Service through the DaemonSet's proxy.
//
// Run through `make test` (root; it builds the binaries and images first);
// off CI it skips without them, under CI it fails.
package kubenode
