package discovery

import rbacv1 "k8s.io/api/rbac/v1"

// PolicyRules returns every permission [KubeSource] uses, and no more: it
// only lists and watches. The daemon's ClusterRole must grant these (a
// test runs the source against an RBAC-enforcing API server with exactly
// them); deploy/ can compare its manifest with this list.
func PolicyRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		// services: ports, ClusterIPs, opt-in annotation; namespaces:
		// the opt-out label; nodes: the own node's zone, and every
		// node's zone for the clients' spread (Snapshot.ZoneNodes).
		{APIGroups: []string{""}, Resources: []string{"services", "namespaces", "nodes"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}
}
