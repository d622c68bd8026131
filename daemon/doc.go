// Package daemon is zonelb's node agent: it discovers services and their
// endpoints (from the Kubernetes API or a file), feeds the balancers, programs
// the BPF redirection, runs the proxy, and serves metrics and the admin API.
//
// It is where the pieces meet and the only package besides cmd that knows
// Kubernetes (through daemon/discovery). The pieces it wires do not know
// about each other: proxy consumes a Router, zone knows only endpoints, bpf
// knows only addresses.
package daemon
