// Package deploy is zonelb's Kustomize base (`kubectl apply -k deploy/`),
// its Dockerfile and Grafana dashboard, and the tests that hold them to
// what the daemon needs: the manifests' invariants, a server-side dry-run
// of every object against a real kube-apiserver, the ClusterRole checked
// with RBAC on while acting as the ServiceAccount, and the DaemonSet's
// capability set tried for real against the BPF loader.
//
// The Go API only reads the base as kubectl would build it ([Objects]),
// so that other tests (the daemon's integration tests) can apply the very
// RBAC objects a cluster gets. It must not grow into a Kustomize
// implementation: it supports exactly the kustomization fields the base
// uses and rejects any other, so that adding one without support fails a
// test instead of silently diverging from kubectl.
package deploy
