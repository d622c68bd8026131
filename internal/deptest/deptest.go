// Package deptest pins which packages a zonelb package may depend on:
// a test in the package lists what it must not know (Kubernetes, BPF, the
// daemon...), and Check fails when any of its transitive dependencies,
// for Linux and for another system, comes from there.
//
// It is test infrastructure and runs the go command (go list). Its own test
// pins the rules of the packages that have no deps_test.go of their own.
package deptest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Check fails tb when the package in the current directory, built for
// Linux or Darwin, depends (transitively, tests excluded) on a package whose
// import path is or starts with one of the forbidden prefixes; why says
// why, for the failure message.
func Check(tb testing.TB, forbidden []string, why string) {
	tb.Helper()
	for _, goos := range []string{"linux", "darwin"} {
		CheckPackages(tb, goos, []string{"."}, forbidden, why)
	}
}

// CheckPackages fails tb when any of the packages pkgs (import paths,
// directories or patterns such as ./daemon/...), built for goos, depends
// (transitively, tests excluded) on a package whose import path is or
// starts with one of the forbidden prefixes.
func CheckPackages(tb testing.TB, goos string, pkgs, forbidden []string, why string) {
	tb.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the go command, which lists the dependencies: %v", err)
	}
	cmd := exec.Command(gocmd, append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	out, err := cmd.Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		tb.Fatalf("go list -deps %v (GOOS=%s): %s", pkgs, goos, msg)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				tb.Errorf("%v depends on %s (GOOS=%s): %s", pkgs, dep, goos, why)
			}
		}
	}
}
