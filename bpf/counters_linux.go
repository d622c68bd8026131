package bpf

// Reading the per-CPU counters.

import "fmt"

// Counters reads the per-CPU counters and the listener state.
func (r *Redirector) Counters() (Counters, error) {
	var c Counters
	for k := range zonelbZlbCounterZLB_C_MAX {
		f := c.field(k)
		if f == nil {
			return Counters{}, fmt.Errorf("read counter %d: no Counters field for it", k)
		}
		var perCPU []uint64
		if err := r.use(func(m *mapSet) error { return m.counters.Lookup(k, &perCPU) }); err != nil {
			return Counters{}, fmt.Errorf("read counter %d: %w", k, err)
		}
		for _, v := range perCPU {
			*f += v
		}
	}
	var err error
	c.ProxyListening4, c.ProxyListening6, err = r.ListenersUp()
	if err != nil {
		return Counters{}, err
	}
	return c, nil
}
