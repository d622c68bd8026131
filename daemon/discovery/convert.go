package discovery

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zonelb/zonelb/zone"
)

// Node labels that carry the node's zone, the GA one first.
var zoneLabels = []string{
	"topology.kubernetes.io/zone",
	"failure-domain.beta.kubernetes.io/zone", // deprecated; still set by old clusters
}

// nodeZone returns the zone a Node is labelled with, or "".
func nodeZone(node *corev1.Node) string {
	if node == nil {
		return ""
	}
	for _, key := range zoneLabels {
		if z := node.Labels[key]; z != "" {
			return z
		}
	}
	return ""
}

// nodeCounts tells whether a Node counts among its zone's clients
// (Snapshot.ZoneNodes): it is Ready and not cordoned, so pods run there.
func nodeCounts(node *corev1.Node) bool {
	if node == nil || node.Spec.Unschedulable {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// convertService turns a Service, its Namespace (nil when unknown) and the
// EndpointSlices labelled with its name into the model. It returns nil when
// zonelb takes over none of the Service's ports, or the Service has no
// cluster IP to take over (headless, ExternalName). Problems that do not
// stop the conversion (an opt switch with a value other than "true" or
// "false", an address that does not parse) come back as warnings.
func convertService(svc *corev1.Service, ns *corev1.Namespace, endpointSlices []*discoveryv1.EndpointSlice) (*Service, []string) {
	var warnings []string
	name := ServiceName{Namespace: svc.Namespace, Name: svc.Name}

	svcSwitch := parseOptSwitch(svc.Annotations)
	if svcSwitch == optInvalid {
		warnings = append(warnings, fmt.Sprintf("service %s: annotation %s=%q is neither \"true\" nor \"false\"; ignored",
			name, EnabledKey, svc.Annotations[EnabledKey]))
	}
	nsSwitch := optUnset
	if ns != nil {
		nsSwitch = parseOptSwitch(ns.Labels)
		if nsSwitch == optInvalid {
			warnings = append(warnings, fmt.Sprintf("namespace %s: label %s=%q is neither \"true\" nor \"false\"; ignored",
				ns.Name, EnabledKey, ns.Labels[EnabledKey]))
		}
	}

	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, warnings
	}
	clusterIPs, warn := serviceClusterIPs(svc)
	warnings = append(warnings, warn...)
	if len(clusterIPs) == 0 {
		return nil, warnings
	}

	// Slices in name order, so that merging is deterministic.
	endpointSlices = slices.Clone(endpointSlices)
	slices.SortFunc(endpointSlices, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })

	out := &Service{Name: name, ClusterIPs: clusterIPs}
	if v, ok := svc.Annotations[SpillBudgetKey]; ok {
		budget, err := zone.ParseSpillBudget(v)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("service %s: annotation %s: %v; ignored (the daemon's spillBudget applies)",
				name, SpillBudgetKey, err))
		} else {
			out.SpillBudget = budget
		}
	}
	for _, sp := range svc.Spec.Ports {
		appProtocol := ""
		if sp.AppProtocol != nil {
			appProtocol = *sp.AppProtocol
		}
		selected, why := selectPort(nsSwitch, svcSwitch, string(sp.Protocol), appProtocol)
		if !selected || sp.Port <= 0 || sp.Port > 65535 {
			continue
		}
		eps, warn := mergeEndpoints(sp.Name, endpointSlices)
		for _, w := range warn {
			warnings = append(warnings, fmt.Sprintf("service %s: %s", name, w))
		}
		out.Ports = append(out.Ports, ServicePort{
			Name:        sp.Name,
			Port:        uint16(sp.Port),
			Protocol:    string(corev1.ProtocolTCP),
			AppProtocol: appProtocol,
			SelectedBy:  why,
			Endpoints:   eps,
		})
	}
	if len(out.Ports) == 0 {
		return nil, warnings
	}
	return out, warnings
}

// serviceClusterIPs returns the Service's cluster IPs (IPv4 in 4-byte form),
// with a warning for each that does not parse.
func serviceClusterIPs(svc *corev1.Service) ([]netip.Addr, []string) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	var warnings []string
	for _, s := range ips {
		if s == "" || s == corev1.ClusterIPNone {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("service %s/%s: cluster IP %q: %v", svc.Namespace, svc.Name, s, err))
			continue
		}
		out = append(out, ip.Unmap())
	}
	return out, warnings
}

// mergeEndpoints collects the endpoints of the TCP service port named
// portName from endpointSlices (already in name order). Each slice resolves
// the port name to its own number (pods of a rollout may differ), so each
// endpoint gets the number of the slice it came from. An address listed by
// several slices (a transient state while the controller moves endpoints)
// appears once, with the most usable conditions among its copies.
func mergeEndpoints(portName string, endpointSlices []*discoveryv1.EndpointSlice) ([]zone.Endpoint, []string) {
	var warnings []string
	byAddr := make(map[netip.AddrPort]int) // index into out
	var out []zone.Endpoint
	for _, es := range endpointSlices {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name no address zonelb can connect to
		}
		port, ok := slicePort(es, portName)
		if !ok {
			continue
		}
		for i := range es.Endpoints {
			ep := &es.Endpoints[i]
			if len(ep.Addresses) == 0 {
				continue
			}
			// The API says consumers must use the first address; the
			// others are reserved.
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("endpointslice %s: address %q: %v", es.Name, ep.Addresses[0], err))
				continue
			}
			e := zone.Endpoint{
				Addr:        netip.AddrPortFrom(ip.Unmap(), port),
				Zone:        deref(ep.Zone),
				Node:        deref(ep.NodeName),
				Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready, // nil means ready
				Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			// nil serving means unknown: defer to ready, as the API says.
			e.Serving = e.Ready
			if ep.Conditions.Serving != nil {
				e.Serving = *ep.Conditions.Serving
			}
			if j, dup := byAddr[e.Addr]; dup {
				if usability(e) > usability(out[j]) {
					out[j] = e
				}
				continue
			}
			byAddr[e.Addr] = len(out)
			out = append(out, e)
		}
	}
	sortEndpoints(out)
	return out, warnings
}

// slicePort finds the number the slice gives the TCP port named name.
func slicePort(es *discoveryv1.EndpointSlice, name string) (uint16, bool) {
	for _, p := range es.Ports {
		if deref(p.Name) != name {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			return 0, false // a nil port means "all ports": nothing to connect to
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

// usability ranks an endpoint's conditions: ready beats serving beats
// neither, and not terminating beats terminating.
func usability(e zone.Endpoint) int {
	r := 0
	if e.Ready {
		r += 4
	}
	if e.Serving {
		r += 2
	}
	if !e.Terminating {
		r++
	}
	return r
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
