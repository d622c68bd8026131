//go:build !linux

package childproc

import "syscall"

// childProcAttr: without Pdeathsig, children are stopped by the cleanups only.
func childProcAttr() *syscall.SysProcAttr { return nil }
