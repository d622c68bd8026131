package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/zonelb/zonelb/internal/cli"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = "dev"

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("zonelb version")
	if code, done := cli.Parse(fs, "Print zonelb's version and the Go version it was built with.", args, stdout, stderr); done {
		return code
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	fmt.Fprintf(stdout, "zonelb %s (%s)\n", version, goVersion)
	return 0
}
