// Command zonelb is zonelb's one binary: the node agent, the standalone
// proxy, the balancing simulator and the tools around them, as subcommands.
//
// It is flags and wiring only: what each subcommand does lives in daemon,
// proxy, zone, sim and bpf, and none of those knows this command.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/zonelb/zonelb/sim"

	"github.com/zonelb/zonelb/internal/standalone"
)

// command is one subcommand. run returns the process exit status: 0 on
// success, 1 on a runtime failure, 2 on bad usage.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"daemon":    {"run the node agent: discovery, eBPF redirection, the proxy, metrics", runDaemon},
		"proxy":     {"run the proxy for one service with explicit endpoints (no Kubernetes, no root; also built alone as zonelb-proxy)", runProxy},
		"sim":       {"simulate balancing policies across zones at scale, driving the real balancer", sim.Main},
		"status":    {"print a running daemon's services, zones, spillover and cross-zone bytes", runStatus},
		"uninstall": {"remove zonelb's eBPF programs, pins and interface from this node", runUninstall},
		"version":   {"print the version", runVersion},
	}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if c, ok := cmds[args[1]]; ok {
				return c.run([]string{"--help"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "zonelb: unknown command %q (run 'zonelb --help')\n", args[1])
			return 2
		}
		usage(stdout, cmds)
		return 0
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "zonelb: unknown command %q (run 'zonelb --help')\n", name)
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`zonelb: a node-level, zone-aware, per-request gRPC/HTTP2 proxy for Kubernetes.

Usage:
  zonelb <command> [flags]

Commands:
`)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nRun 'zonelb <command> --help' for a command's flags.\n")
	io.WriteString(w, b.String())
}

func runProxy(args []string, stdout, stderr io.Writer) int {
	return standalone.Run("zonelb proxy", args, stdout, stderr)
}
