// Package proxycmd runs the `zonelb proxy` command (the binary built from
// cmd/zonelb) on a free loopback port for demos, benchmarks and tests, and
// reads the address it reports listening on from its log.
//
// It knows the command's --listen, --zone, --service and --to flags and its
// "proxy listening" log line, nothing of the proxy's insides.
package proxycmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"time"

	"github.com/zonelb/zonelb/internal/childproc"
)

// startTimeout bounds how long the proxy may take to report its address.
const startTimeout = 10 * time.Second

// listening matches the proxy's log line once it listens (log/slog's text
// format), with its address.
var listening = regexp.MustCompile(`msg="proxy listening" addr=(\S+)`)

// Proxy is a running `zonelb proxy`: Stop, Pid and the rest are its
// process's.
type Proxy struct {
	*childproc.Proc
	// Addr is where the proxy listens.
	Addr string
}

// Start runs `bin proxy --listen 127.0.0.1:0 args...` and returns once the
// proxy reports its address; it gives up (stopping the process) when ctx
// ends or after 10 s.
func Start(ctx context.Context, bin string, args ...string) (*Proxy, error) {
	cmd := exec.Command(bin, append([]string{"proxy", "--listen", "127.0.0.1:0"}, args...)...)
	// A pipe of ours, not StderrPipe: the reader may outlive Wait.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("zonelb proxy: %w", err)
	}
	defer w.Close()
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	w.Close()
	p := &Proxy{Proc: childproc.Adopt("zonelb proxy", cmd)}
	found := make(chan string, 1)
	go func() {
		defer r.Close()
		addr, _ := ListenAddr(r)
		found <- addr
		io.Copy(io.Discard, r)
	}()
	t := time.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case p.Addr = <-found:
		if p.Addr != "" {
			return p, nil
		}
		err = errors.New("zonelb proxy exited before it listened")
	case <-t.C:
		err = fmt.Errorf("zonelb proxy did not report listening within %v", startTimeout)
	case <-ctx.Done():
		err = fmt.Errorf("zonelb proxy: %w", ctx.Err())
	}
	p.Stop(time.Second)
	return nil, err
}

// Endpoint is one of the proxy's upstreams and the zone it is in.
type Endpoint struct {
	Zone, Addr string
}

// StartInFront runs the proxy of service in zone in front of a fixed set of
// endpoints (one --to ZONE=ADDR each), with args after those, as Start
// does.
func StartInFront(ctx context.Context, bin, zone, service string, eps []Endpoint, args ...string) (*Proxy, error) {
	all := []string{"--zone", zone, "--service", service}
	for _, e := range eps {
		all = append(all, "--to", e.Zone+"="+e.Addr)
	}
	return Start(ctx, bin, append(all, args...)...)
}

// ListenAddr reads a proxy's log (its standard error) up to the line that
// reports its address, and returns the address.
func ListenAddr(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			return m[1], nil
		}
	}
	return "", errors.New("zonelb proxy did not start")
}
