package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zonelb/zonelb/bpf"
)

func redirectorCollectors(red *bpf.Redirector) []prometheus.Collector {
	if red == nil {
		return nil
	}
	return []prometheus.Collector{bpf.NewCollector(red)}
}

// startEnroller enrolls pod network namespaces as they appear.
func startEnroller(ctx context.Context, log *slog.Logger, cfg Config, red *bpf.Redirector) error {
	mount, err := bpf.CgroupV2Root()
	if err != nil {
		return err
	}
	path := cfg.Redirect.CgroupPath
	if path == "" {
		path = mount
	}
	e, err := newNetnsEnroller(log.With("component", "enroll"), mount, path, red.EnrollNetns, red.UnenrollNetns, bpf.NetnsCookieFromPath)
	if err != nil {
		return err
	}
	go e.run(ctx, time.Second)
	return nil
}
