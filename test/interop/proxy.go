package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Endpoint is one upstream of the proxy and the zone it is in.
type Endpoint struct {
	Zone string
	Addr string
}

// ProxyConfig says how to run `zonelb proxy`.
type ProxyConfig struct {
	// Bin is the zonelb binary.
	Bin string
	// Zone is the proxy's own zone (--zone).
	Zone string
	// Endpoints become one --to ZONE=ADDR each.
	Endpoints []Endpoint
	// Admin turns on the proxy's admin endpoint (--admin) on a loopback
	// port, so that a hang can be explained with a goroutine dump.
	Admin bool
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// Proxy is a running `zonelb proxy` process.
type Proxy struct {
	*Process
	// Addr is the listen address, 127.0.0.1:PORT.
	Addr string
	// AdminAddr is the admin endpoint's address, empty without Admin.
	AdminAddr string
}

// startAttempts bounds retries when the port picked for the proxy was taken
// by someone else between picking and binding.
const startAttempts = 3

// StartProxy runs `zonelb proxy` on a free loopback port and waits until it
// accepts connections. The caller must Stop it.
func StartProxy(ctx context.Context, logger *slog.Logger, cfg ProxyConfig) (*Proxy, error) {
	var errs []error
	for attempt := range startAttempts {
		p, err := startProxyOnce(ctx, logger, cfg, attempt)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start zonelb proxy: %w", errors.Join(errs...))
}

func startProxyOnce(ctx context.Context, logger *slog.Logger, cfg ProxyConfig, attempt int) (*Proxy, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"proxy", "--listen", addr, "--zone", cfg.Zone}
	for _, e := range cfg.Endpoints {
		args = append(args, "--to", e.Zone+"="+e.Addr)
	}
	var admin string
	if cfg.Admin {
		if admin, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--admin", admin)
	}
	args = append(args, cfg.ExtraArgs...)
	p, err := startProcess(logger, fmt.Sprintf("zonelb-proxy#%d", attempt), cfg.Bin, args, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := waitListening(ctx, p, addr); err != nil {
		_ = p.Kill()
		return nil, err
	}
	return &Proxy{Process: p, Addr: addr, AdminAddr: admin}, nil
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1. The port is
// free only until someone else takes it; StartProxy retries if that happens.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free loopback port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("release picked port %s: %w", addr, err)
	}
	return addr, nil
}

// waitListening polls until addr accepts a TCP connection, p exits, or ctx
// ends. Polling is the only way to see a foreign process bind.
func waitListening(ctx context.Context, p *Process, addr string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.Name, addr, p.ExitErr(), p.Output())
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to listen on %s: %w (last dial: %v)\n%s", p.Name, addr, ctx.Err(), err, p.Output())
		case <-tick.C:
		}
	}
}

// Goroutines returns the proxy's goroutine dump from its admin endpoint
// (/debug/pprof/goroutine?debug=2), or why it could not.
func (p *Proxy) Goroutines(ctx context.Context) string {
	if p.AdminAddr == "" {
		return "(proxy started without --admin)"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.AdminAddr+"/debug/pprof/goroutine?debug=2", nil)
	if err != nil {
		return fmt.Sprintf("(goroutine dump: %v)", err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Sprintf("(goroutine dump: %v)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Sprintf("(goroutine dump: %v)", err)
	}
	return string(b)
}
