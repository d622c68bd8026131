package bpf

import (
	"github.com/prometheus/client_golang/prometheus"
)

// CounterReader is what the collector reads at scrape time; *Redirector
// implements it.
type CounterReader interface {
	Counters() (Counters, error)
}

var _ CounterReader = (*Redirector)(nil)

// AttachmentReader is what the collector reads for
// zonelb_bpf_program_attached, when its source has it (*Redirector on
// Linux, for a handle that loaded and attached the programs).
type AttachmentReader interface {
	Attached() (map[string]bool, error)
}

type collector struct {
	src        CounterReader
	connects   *prometheus.Desc
	tuples     *prometheus.Desc
	tupleFails *prometheus.Desc
	peer       *prometheus.Desc
	shortcut   *prometheus.Desc
	exits      *prometheus.Desc
	listening  *prometheus.Desc
	attached   *prometheus.Desc
}

// NewCollector returns a Prometheus collector that reads the BPF counters
// on every scrape (nothing is cached). Register it on the daemon's own
// registry.
func NewCollector(src CounterReader) prometheus.Collector {
	return &collector{
		src: src,
		connects: prometheus.NewDesc("zonelb_bpf_connects_total",
			"TCP connects seen by the cgroup connect hooks, by outcome.", []string{"outcome"}, nil),
		tuples: prometheus.NewDesc("zonelb_bpf_original_dst_recorded_total",
			"Redirected connections whose original destination was recorded for the proxy.", nil, nil),
		tupleFails: prometheus.NewDesc("zonelb_bpf_original_dst_record_failures_total",
			"Redirected connections whose original destination could not be recorded.", nil, nil),
		peer: prometheus.NewDesc("zonelb_bpf_getpeername_rewritten_total",
			"getpeername calls answered with the original destination.", nil, nil),
		shortcut: prometheus.NewDesc("zonelb_bpf_shortcut_sockets_total",
			"Sockets added to the sk_msg shortcut map.", nil, nil),
		exits: prometheus.NewDesc("zonelb_bpf_proxy_exits_total",
			"Registered proxy processes seen beginning to exit (SIGKILL, panic, exit) while their listener was registered.", nil, nil),
		listening: prometheus.NewDesc("zonelb_bpf_proxy_listener_up",
			"1 while the proxy's listener is registered for the family by a process that is not exiting (redirection active), 0 while failing open.", []string{"family"}, nil),
		attached: prometheus.NewDesc("zonelb_bpf_program_attached",
			"1 while the daemon's program for the cgroup hook is attached to the pods' cgroup, as the kernel reports it at scrape time; 0 once it was detached or replaced.", []string{"program"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connects
	ch <- c.tuples
	ch <- c.tupleFails
	ch <- c.peer
	ch <- c.shortcut
	ch <- c.exits
	ch <- c.listening
	ch <- c.attached
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.src.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.connects, err)
		return
	}
	outcomes := []struct {
		name string
		v    uint64
	}{
		{"redirected", s.Redirected},
		{"host_netns", s.SkipHostNetns},
		{"not_enrolled", s.SkipNotEnroll},
		{"not_selected", s.SkipNotSelect},
		{"marked", s.SkipMarked},
		{"proxy_down", s.SkipProxyDown},
		{"proxy_exiting", s.SkipProxyExiting},
		{"opted_out", s.SkipOptedOut},
		{"not_tcp", s.SkipNotTCP},
		{"no_ipv6_proxy", s.SkipNoV6Proxy},
		{"storage_failed", s.StorageFailed},
	}
	for _, o := range outcomes {
		ch <- prometheus.MustNewConstMetric(c.connects, prometheus.CounterValue, float64(o.v), o.name)
	}
	ch <- prometheus.MustNewConstMetric(c.tuples, prometheus.CounterValue, float64(s.TupleRecorded))
	ch <- prometheus.MustNewConstMetric(c.tupleFails, prometheus.CounterValue, float64(s.TupleFailed))
	ch <- prometheus.MustNewConstMetric(c.peer, prometheus.CounterValue, float64(s.PeerRewritten))
	ch <- prometheus.MustNewConstMetric(c.shortcut, prometheus.CounterValue, float64(s.ShortcutSocket))
	ch <- prometheus.MustNewConstMetric(c.exits, prometheus.CounterValue, float64(s.ProxyExits))
	ch <- prometheus.MustNewConstMetric(c.listening, prometheus.GaugeValue, boolFloat(s.ProxyListening4), "ipv4")
	ch <- prometheus.MustNewConstMetric(c.listening, prometheus.GaugeValue, boolFloat(s.ProxyListening6), "ipv6")
	if ar, ok := c.src.(AttachmentReader); ok {
		progs, err := ar.Attached()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.attached, err)
			return
		}
		for name, up := range progs {
			ch <- prometheus.MustNewConstMetric(c.attached, prometheus.GaugeValue, boolFloat(up), name)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
