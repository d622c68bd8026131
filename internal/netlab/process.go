package netlab

import (
	"os/exec"
	"syscall"

	"github.com/zonelb/zonelb/internal/childproc"
)

// Process is a process the lab started (package childproc: waited for
// once, signalled through the pidfd os.Process holds).
type Process = childproc.Proc

func startedProcess(name string, cmd *exec.Cmd) *Process { return childproc.Adopt(name, cmd) }

// KilledBySignal reports whether err (from Err, Stop or Wait) says the
// process died of sig.
func KilledBySignal(err error, sig syscall.Signal) bool { return childproc.KilledBySignal(err, sig) }
