// Command zonelb-proxy is the standalone proxy alone: `zonelb proxy` (one
// upstream service, endpoints and zones from flags, no Kubernetes, no root)
// in a binary that carries nothing of the node agent.
//
// It exists for memory: every package linked into a Go binary runs its
// initialisers and brings its interface tables, so `zonelb proxy` in the one
// binary starts by touching client-go's, cilium/ebpf's and the Prometheus
// client's code and data, about half of its resident memory
// (docs/proxy.md, "Memory of the process").
package main

import (
	"os"

	"github.com/zonelb/zonelb/internal/standalone"
)

func main() { os.Exit(standalone.Run("zonelb-proxy", os.Args[1:], os.Stdout, os.Stderr)) }
