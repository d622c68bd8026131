package bpf

// Opt-out: cgroups whose processes are never redirected (a pod's cgroup,
// so every container of the pod). The hooks look up the caller's cgroup
// and each of its ancestors in zlb_optout.

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// CgroupID returns the cgroup-v2 id of the cgroup directory at path (its
// inode number): the value OptOut takes and the hooks compare.
func CgroupID(path string) (uint64, error) {
	return cgroupInode(path)
}

// OptOut stops redirecting connects made by processes in the cgroup with
// this id or in any cgroup below it.
func (r *Redirector) OptOut(cgroupID uint64) error {
	return r.use(func(m *mapSet) error {
		if err := m.optout.Update(cgroupID, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("opt out cgroup %d: %w", cgroupID, err)
		}
		return nil
	})
}

// OptIn undoes OptOut. Absent is not an error.
func (r *Redirector) OptIn(cgroupID uint64) error {
	return r.use(func(m *mapSet) error {
		if err := m.optout.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("opt in cgroup %d: %w", cgroupID, err)
		}
		return nil
	})
}

// OptedOut lists the ids of the opted-out cgroups.
func (r *Redirector) OptedOut() ([]uint64, error) {
	var out []uint64
	err := r.use(func(m *mapSet) error {
		var id uint64
		var v uint8
		it := m.optout.Iterate()
		for it.Next(&id, &v) {
			out = append(out, id)
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list opted-out cgroups: %w", err)
	}
	return out, nil
}
