package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// logTail is how much of a child's output a Process keeps for failure
// reports: enough for the last few hundred log lines, bounded so that 100
// rounds of a chatty proxy cannot grow the test's memory.
const logTail = 256 << 10

// Process is a child process started by this package. Stop ends it by its
// own pid only.
type Process struct {
	Name   string
	logger *slog.Logger
	cmd    *exec.Cmd
	output *tailBuffer

	done    chan struct{} // closed when Wait returned
	waitErr error         // set before done is closed
	// killed is set by Kill: an exit by SIGKILL was then asked for and is
	// no failure.
	killed atomic.Bool
}

// startProcess starts bin with args. Its stdout and stderr go to a bounded
// tail buffer; the first stdout line is also sent to firstLine (if not nil,
// buffered), so a caller can read a ready line.
func startProcess(logger *slog.Logger, name, bin string, args []string, firstLine chan<- string) (*Process, error) {
	p := &Process{
		Name:   name,
		logger: logger.With("process", name),
		output: newTailBuffer(logTail),
		done:   make(chan struct{}),
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stderr = p.output
	cmd.Stdout = &lineSplitter{dst: p.output, first: firstLine}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p.cmd = cmd
	p.logger.Debug("started", "pid", cmd.Process.Pid, "args", args)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr is the child's exit error (nil for exit status 0). Only valid
// after Exited is closed.
func (p *Process) ExitErr() error { return p.waitErr }

// Output returns the last part of what the process wrote to stdout and stderr.
func (p *Process) Output() string { return p.output.String() }

// ErrKilled reports that a process did not exit within its grace period
// after SIGTERM and had to be killed.
var ErrKilled = errors.New("did not exit after SIGTERM, killed")

// Stop sends SIGTERM to the process, waits up to grace for it to exit, then
// sends SIGKILL. It returns ErrKilled (wrapped) if SIGKILL was needed, the
// exit error if the process exited unsuccessfully, or nil. It is safe to call
// more than once and after the process died on its own.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitResult()
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid(), err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.exitResult()
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.Pid(), err)
	}
	<-p.done
	return fmt.Errorf("%s (pid %d) %w within %v", p.Name, p.Pid(), ErrKilled, grace)
}

// Kill ends the process with SIGKILL at once and waits for it. A later
// Stop then reports no error: the death was intended.
func (p *Process) Kill() error {
	p.killed.Store(true)
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.Pid(), err)
	}
	<-p.done
	return nil
}

func (p *Process) exitResult() error {
	if p.waitErr != nil && !p.killed.Load() {
		return fmt.Errorf("%s (pid %d) exited: %w", p.Name, p.Pid(), p.waitErr)
	}
	return nil
}

// childEnv is the environment for children: ours, less HTTP proxy settings,
// so that no child is tempted to send loopback traffic to a proxy elsewhere.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(name) {
		case "http_proxy", "https_proxy", "all_proxy", "grpc_proxy":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("[%d earlier bytes dropped]\n%s", b.dropped, b.buf)
	}
	return string(b.buf)
}

// lineSplitter copies everything to dst and hands the first complete line
// to first, without ever blocking the child: a ready line nobody waits for
// is dropped.
type lineSplitter struct {
	dst     *tailBuffer
	first   chan<- string
	partial []byte
}

// maxReadyLine bounds how much stdout is held while looking for the first line.
const maxReadyLine = 64 << 10

func (s *lineSplitter) Write(p []byte) (int, error) {
	if _, err := s.dst.Write(p); err != nil {
		return 0, err
	}
	if s.first == nil {
		return len(p), nil
	}
	s.partial = append(s.partial, p...)
	if i := bytes.IndexByte(s.partial, '\n'); i >= 0 {
		select {
		case s.first <- string(s.partial[:i]):
		default:
		}
		s.first, s.partial = nil, nil
	} else if len(s.partial) > maxReadyLine {
		s.first, s.partial = nil, nil
	}
	return len(p), nil
}

// waitLine waits for the first line from a starting process, its exit, or
// ctx.
func waitLine(ctx context.Context, p *Process, lines <-chan string) (string, error) {
	select {
	case l := <-lines:
		return l, nil
	case <-p.Exited():
		return "", fmt.Errorf("%s exited before it was ready: %v\n%s", p.Name, p.ExitErr(), p.Output())
	case <-ctx.Done():
		return "", fmt.Errorf("wait for %s to be ready: %w\n%s", p.Name, ctx.Err(), p.Output())
	}
}
