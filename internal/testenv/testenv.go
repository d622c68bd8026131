// Package testenv holds helpers that decide whether a test may run here,
// and the one bounded poll the tests use (WaitFor).
//
// Privileged tests (root, BPF, network namespaces, cgroups) skip with a
// reason on a developer's machine, but fail when the CI environment variable
// is set: a green CI must never hide that the privileged path did not run.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI set to anything but ""
// or "false").
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// SkipOrFail skips the test with reason, or fails it when running in CI.
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("required in CI but unavailable: %s", reason)
	}
	tb.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "needs root (BPF, namespaces, cgroups)")
	}
}
