package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zonelb/zonelb/bpf"
)

func redirectorCollectors(red *bpf.Redirector) []prometheus.Collector {
	if red == nil {
		return nil
	}
	return []prometheus.Collector{bpf.NewCollector(red)}
}
