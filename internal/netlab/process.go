package netlab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a process the lab started. The lab waits for it (once), so
// its state is known without polling; signals go through the pidfd that
// os.Process holds, never to a recycled pid.
type Process struct {
	// Name says what the process is, for messages.
	Name string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, valid once done is closed

	stopOnce sync.Once
}

func startedProcess(name string, cmd *exec.Cmd) *Process {
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Cmd is the command the process runs.
func (p *Process) Cmd() *exec.Cmd { return p.cmd }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for status 0); valid once Done is
// closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig unless the process has already exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s (pid %d) has exited", p.Name, p.Pid())
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.Name, p.Pid(), err)
	}
	return nil
}

// Wait waits for the process to exit, at most until ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("wait for %s (pid %d): %w", p.Name, p.Pid(), ctx.Err())
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL; it returns once the
// process is gone, with its exit error (a process stopped by a signal
// reports it). Calling Stop again returns at once.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	return p.err
}

// KilledBySignal reports whether err (from Err, Stop or Wait) says the
// process died of sig.
func KilledBySignal(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
