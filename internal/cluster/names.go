package cluster

import "net/netip"

// The mini cluster's fixed names and addresses (all inside the lab).
var (
	// Zones, one node each; clients live in the first.
	Zones = []string{"zone-a", "zone-b", "zone-c"}
	// ServiceVIP is the Service's ClusterIP and port: in kubetest's
	// service range, routed nowhere.
	ServiceVIP = netip.MustParseAddrPort("10.96.0.10:80")
	// ProxyAddr is where zonelb's node proxy listens on the clients'
	// node.
	ProxyAddr = netip.MustParseAddrPort("169.254.20.11:15001")
	// AdminAddr is the daemon's admin address in its node's namespace.
	AdminAddr = netip.MustParseAddrPort("127.0.0.1:15000")
)

// Fixed names.
const (
	ServiceNamespace = "default"
	ServiceName      = "greeter"
	ServicePortName  = "grpc"
	BackendPort      = 50051
	// ClientZone is where the client pods and the zonelb daemon run.
	ClientZone = "zone-a"
)
