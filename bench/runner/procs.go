package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// procSpec describes one process the benchmark starts.
type procSpec struct {
	Name string
	Path string
	Args []string
	// Env is added to the runner's own environment.
	Env []string
	// CPUs is a taskset CPU list ("0", "1"); empty means no pinning.
	CPUs string
	// Nice, when not zero, runs the process under `nice -n Nice` (every
	// thread inherits it, unlike a setpriority on the pid afterwards).
	Nice int
	// Cgroup, when set, is where the process starts (so its CPU time,
	// threads included, is accounted from its first instruction).
	Cgroup *cgroup
	// Stdout receives standard output; nil sends it to the log file.
	Stdout io.Writer
	// LogPath receives standard error (and standard output when Stdout is
	// nil).
	LogPath string
}

// proc is a started process.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logFile *os.File
}

// Pid is the process id: with taskset the command execs the real program,
// so this is the pid of the proxy or load generator itself.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// supervisor starts processes and guarantees they are stopped: each is
// tracked by pid until it has been waited for, and stopAll ends whatever is
// left when the benchmark fails or is interrupted.
type supervisor struct {
	logger  *slog.Logger
	taskset string
	nice    string

	mu   sync.Mutex
	live map[int]*proc
}

func newSupervisor(logger *slog.Logger, taskset, nice string) *supervisor {
	return &supervisor{logger: logger, taskset: taskset, nice: nice, live: map[int]*proc{}}
}

func (s *supervisor) start(spec procSpec) (*proc, error) {
	path, args := spec.Path, spec.Args
	if spec.CPUs != "" {
		path, args = s.taskset, append([]string{"--cpu-list", spec.CPUs, path}, args...)
	}
	if spec.Nice != 0 {
		path, args = s.nice, append([]string{"-n", strconv.Itoa(spec.Nice), path}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches only the runner,
		// which then stops everything in order.
		Setpgid: true,
		// If the runner dies without cleaning up, the kernel ends the child.
		Pdeathsig: syscall.SIGKILL,
	}
	if spec.Cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(spec.Cgroup.dir.Fd())
	}
	var logFile *os.File
	if spec.LogPath != "" {
		f, err := os.Create(spec.LogPath)
		if err != nil {
			return nil, fmt.Errorf("create log for %s: %w", spec.Name, err)
		}
		logFile = f
		cmd.Stderr = f
		cmd.Stdout = f
	}
	if spec.Stdout != nil {
		cmd.Stdout = spec.Stdout
	}
	p := &proc{name: spec.Name, logPath: spec.LogPath, cmd: cmd, done: make(chan struct{}), logFile: logFile}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			_ = logFile.Close()
		}
		return nil, fmt.Errorf("start %s (%s): %w", spec.Name, spec.Path, err)
	}
	s.live[p.Pid()] = p
	go func() {
		p.waitErr = cmd.Wait()
		if p.logFile != nil {
			_ = p.logFile.Close()
		}
		s.mu.Lock()
		delete(s.live, p.Pid())
		s.mu.Unlock()
		close(p.done)
	}()
	s.logger.Debug("started", "name", spec.Name, "pid", p.Pid(), "args", args)
	return p, nil
}

// stop sends SIGTERM to the process's pid, waits up to grace, then SIGKILL.
func (s *supervisor) stop(p *proc, grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	s.logger.Warn("process ignored SIGTERM, killing", "name", p.name, "pid", p.Pid())
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stopAll stops every process still running.
func (s *supervisor) stopAll(grace time.Duration) {
	s.mu.Lock()
	procs := make([]*proc, 0, len(s.live))
	for _, p := range s.live {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { s.stop(p, grace) })
	}
	wg.Wait()
}

// run starts a process and waits for it, stopping it when ctx ends first.
func (s *supervisor) run(ctx context.Context, spec procSpec) error {
	p, err := s.start(spec)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		s.stop(p, 2*time.Second)
		return fmt.Errorf("%s: %w", spec.Name, ctx.Err())
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s exited: %w (log: %s)", spec.Name, p.waitErr, spec.LogPath)
	}
	return nil
}

// waitListening polls until addr accepts a TCP connection, the process
// exits, or the deadline passes. Polling is the only way to learn when
// another program has bound its port.
func waitListening(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before listening on %s: %v (log: %s)", p.name, addr, p.waitErr, p.logPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s after %v: %w", p.name, addr, timeout, errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeLoopbackPort asks the kernel for an unused loopback port. Another
// program could take it before the proxy binds it; startup then fails loudly
// and that peer's run is reported as failed.
func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("release probe port %s: %w", addr, err)
	}
	return addr, nil
}
