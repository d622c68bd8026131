// Package discovery tells the daemon what to balance: the node's own zone,
// the Services zonelb takes over with their ClusterIPs and ports, and for
// each taken-over port the endpoints behind it, as one immutable [Snapshot]
// that is rebuilt and published whenever something changes.
//
// Two sources produce the same model: [KubeSource] watches the Kubernetes
// API with client-go shared informers, and [FileSource] reads a YAML or
// JSON file and watches it, for use without Kubernetes and for demos.
// Endpoints are [zone.Endpoint] values that the daemon hands to the
// balancer as they are.
//
// # Which service ports zonelb takes over
//
// Only TCP ports with at least one ClusterIP (not headless, not
// ExternalName) are considered. Of those, a port is taken over when
//
//   - its appProtocol is grpc, h2c or kubernetes.io/h2c (any case), or
//   - its Service carries the annotation zonelb.io/enabled: "true"
//     (all its TCP ports), or
//   - its Namespace carries the label zonelb.io/enabled: "true"
//     (all TCP ports of all its Services),
//
// unless the Service's annotation or the Namespace's label
// zonelb.io/enabled is "false": an opt-out wins over every reason to take a
// port over. Any other value of the key is ignored and logged.
//
// Endpoints are merged from every EndpointSlice labelled
// kubernetes.io/service-name with the Service's name; each endpoint's
// target port is the number its own slice gives the service port's name.
// The node's zone is its topology.kubernetes.io/zone label (or the
// deprecated failure-domain.beta.kubernetes.io/zone).
//
// This package only observes: it never writes to the API server, programs
// no BPF map, and knows nothing of the proxy or the balancer's state.
package discovery
