//go:build !linux

package kubetest

import "syscall"

// childProcAttr: without Pdeathsig, children are stopped by the cleanups only.
func childProcAttr() *syscall.SysProcAttr { return nil }
