package childproc

import "syscall"

// childProcAttr makes the kernel kill a child when the test binary dies,
// so that a crashed or killed test leaves no etcd or kube-apiserver behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
