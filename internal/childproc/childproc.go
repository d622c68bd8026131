// Package childproc runs the helper processes of zonelb's test harnesses
// (etcd, kube-apiserver, a node's kubelet and containerd...): each writes
// to its own log file, is reaped by one goroutine so that its state is
// known without polling, is killed by the kernel if the test binary dies
// (on Linux), and stops with SIGTERM, then SIGKILL after a grace period.
// Tail gives the last lines of a log for failure messages.
//
// It is test infrastructure and must not know what the processes are.
package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process a harness started. It is waited for once, so its
// state is known without polling; signals go through the pidfd that
// os.Process holds, never to a recycled pid.
type Proc struct {
	// Name says what the process is, for messages; Log is its log file
	// ("" for a process whose output the caller placed).
	Name, Log string

	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	waitErr  error         // valid once done is closed
	stopOnce sync.Once
}

// Start starts cmd with its standard error, and its standard output unless
// the caller set one, appended to the file logPath.
func Start(name, logPath string, cmd *exec.Cmd) (*Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", logPath, err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = logFile
	}
	cmd.Stderr = logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go p.reap(logFile)
	return p, nil
}

// Adopt takes over a command the caller started, with its output where
// the caller put it (Log stays empty): Adopt waits for it.
func Adopt(name string, cmd *exec.Cmd) *Proc {
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	go p.reap(nil)
	return p
}

func (p *Proc) reap(logFile *os.File) {
	p.waitErr = p.cmd.Wait()
	if logFile != nil {
		logFile.Close()
	}
	close(p.done)
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Cmd is the command the process runs.
func (p *Proc) Cmd() *exec.Cmd { return p.cmd }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for status 0); it waits for the
// exit.
func (p *Proc) Err() error {
	<-p.done
	return p.waitErr
}

// Signal sends sig unless the process has already exited.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s (pid %d) has exited", p.Name, p.Pid())
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.Name, p.Pid(), err)
	}
	return nil
}

// Wait waits for the process to exit, at most until ctx ends.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-ctx.Done():
		return fmt.Errorf("wait for %s (pid %d): %w", p.Name, p.Pid(), ctx.Err())
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL; it returns once the
// process is gone, with its exit error (a process stopped by a signal
// reports it). Calling it again, or on nil, returns at once.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
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
	return p.waitErr
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

// WaitHTTP polls url through tr (nil: http.DefaultTransport) until it
// answers 200, the process exits, or timeout passes; the errors end with
// the last lines of the process's log.
func (p *Proc) WaitHTTP(url string, tr http.RoundTripper, timeout time.Duration) error {
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			body := readSome(resp)
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s: %s", url, resp.Status, body)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before %s answered: %s", p.Name, p.waitErr, url, Tail(p.Log, 30))
		case <-time.After(200 * time.Millisecond): // polling a process, bounded by deadline
		}
	}
	return fmt.Errorf("%s: no answer within %v: %w: %s", url, timeout, last, Tail(p.Log, 30))
}

func readSome(resp *http.Response) string {
	defer resp.Body.Close()
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	return strings.TrimSpace(string(buf[:n]))
}

// Tail returns the last lines of a file (or the error reading it), for
// logs shown when a process fails.
func Tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var ring []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		ring = append(ring, sc.Text())
		if len(ring) > lines {
			ring = ring[1:]
		}
	}
	return strings.Join(ring, "\n")
}
