package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zonelb/zonelb/internal/childproc"
)

// ZonelbBin is the zonelb binary for a test: $ZONELB_BIN (the Makefile
// builds it), or cmd/zonelb built into tb's temporary directory.
func ZonelbBin(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("ZONELB_BIN"); p != "" {
		return p
	}
	out := filepath.Join(tb.TempDir(), "zonelb")
	if b, err := exec.Command("go", "build", "-o", out, "github.com/zonelb/zonelb/cmd/zonelb").CombinedOutput(); err != nil {
		tb.Fatalf("build zonelb: %v\n%s", err, b)
	}
	return out
}

// DaemonLogPath is the log file of the zonelb daemon on the client node.
func (c *Cluster) DaemonLogPath() string {
	return filepath.Join(c.workDir, "zonelb-"+c.ClientNode().Name+".log")
}

// UpForTest brings the lab up for a test, failing it if that fails, and
// tears the lab down when the test ends, after logging the last lines of
// the zonelb daemon's log if the test failed.
func UpForTest(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	c, err := Up(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("daemon log:\n%s", childproc.Tail(c.DaemonLogPath(), 60))
		}
		if err := c.Close(); err != nil {
			tb.Errorf("tear down: %v", err)
		}
	})
	return c
}

// StartClientsForTest starts w in every client pod, failing tb if that
// fails. stop stops the clients and returns their last window; clients
// the test has not stopped by its end are stopped then.
func (c *Cluster) StartClientsForTest(tb testing.TB, ctx context.Context, w Workload) (cs Clients, stop func() (Window, error)) {
	tb.Helper()
	cs, err := c.StartClients(ctx, w)
	if err != nil {
		tb.Fatal(err)
	}
	stopped := false
	tb.Cleanup(func() {
		if !stopped {
			cs.Stop(context.WithoutCancel(ctx))
		}
	})
	return cs, func() (Window, error) {
		stopped = true
		return cs.Stop(ctx)
	}
}

// BackendsIn lists the backend pods of zone.
func (c *Cluster) BackendsIn(zone string) []*Backend {
	var out []*Backend
	for _, b := range c.Backends {
		if b.Zone == zone {
			out = append(out, b)
		}
	}
	return out
}

// SetLoads gives every backend of bs the load l, failing tb on an error.
func SetLoads(tb testing.TB, ctx context.Context, bs []*Backend, l BackendLoad) {
	tb.Helper()
	for _, b := range bs {
		if err := b.SetLoad(ctx, l); err != nil {
			tb.Fatal(err)
		}
	}
}
