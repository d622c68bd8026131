package main

import (
	"fmt"
	"io"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon"

	"github.com/zonelb/zonelb/internal/cli"
)

const uninstallSynopsis = `
Remove everything the daemon installed on this node: the eBPF programs and
links, the pinned maps under the pin directory, and the zonelb0 interface
with the proxy address. Pods' connections then go to their destinations as
if zonelb had never been there. Needs root.`

func runUninstall(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("zonelb uninstall")
	configPath := fs.String("config", "", "the daemon's YAML configuration (for its pin directory, cgroup and interface)")
	if code, done := cli.Parse(fs, uninstallSynopsis, args, stdout, stderr); done {
		return code
	}
	var cfg daemon.Config
	if *configPath != "" {
		var err error
		if cfg, err = daemon.LoadConfigFile(*configPath); err != nil {
			return cli.UsageError(stderr, "zonelb uninstall", "%v", err)
		}
	}
	bc := cfg.WithDefaults(func(string) string { return "" }).BPFConfig()
	if err := bpf.Uninstall(bc); err != nil {
		fmt.Fprintf(stderr, "zonelb uninstall: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "zonelb: BPF programs, maps, pins and the proxy interface removed")
	return 0
}
