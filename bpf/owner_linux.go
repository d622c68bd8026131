package bpf

// The listener's owner: which process registered each listener slot, and
// whether it has begun to exit. The hooks stop steering connects to a
// listener whose process is exiting, before the kernel closes it (see
// docs/bpf.md, "Fail-open").

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// claimPinName is where zlb_claim is pinned, so that a proxy process that
// only opens the pins (Open) can run it.
const claimPinName = "prog_" + zonelbProgZlbClaim

// exitWatch are the tracing programs that mark an owner exiting. Their
// links cannot be updated in place (BPF_LINK_UPDATE does not apply to
// tracing links): each load attaches new ones, then swaps the pins.
var exitWatch = []string{zonelbProgZlbSignalGenerate, zonelbProgZlbProcessExit}

// keepClaim keeps a handle on zlb_claim and pins it (replacing an older
// generation's pin).
func (r *Redirector) keepClaim(coll *ebpf.Collection) error {
	prog, err := r.keepProg(coll, zonelbProgZlbClaim, claimPinName)
	if err != nil {
		return err
	}
	r.claim = prog
	return nil
}

// keepProg pins coll's program name as pinName in the pin directory
// (replacing an older generation's pin) and returns a handle of its own
// on it, which outlives coll.
func (r *Redirector) keepProg(coll *ebpf.Collection, name, pinName string) (*ebpf.Program, error) {
	prog := coll.Programs[name]
	if prog == nil {
		return nil, fmt.Errorf("BPF object has no program %s", name)
	}
	path := filepath.Join(r.cfg.PinDir, pinName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("unpin old %s: %w", path, err)
	}
	if err := prog.Pin(path); err != nil {
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	kept, err := prog.Clone()
	if err != nil {
		return nil, fmt.Errorf("keep program %s: %w", name, err)
	}
	return kept, nil
}

// attachExitWatch attaches the tracing programs and pins their links in
// place of the previous generation's, which are then detached. Both
// generations may mark an owner for an instant; marking is idempotent.
func (r *Redirector) attachExitWatch(coll *ebpf.Collection) error {
	for _, name := range exitWatch {
		prog := coll.Programs[name]
		if prog == nil {
			return fmt.Errorf("BPF object has no program %s", name)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, err)
		}
		path := filepath.Join(r.cfg.PinDir, linkPinName(name))
		if err := detachPinnedLink(path); err != nil {
			l.Close()
			return err
		}
		if err := l.Pin(path); err != nil {
			l.Close()
			return fmt.Errorf("pin link %s: %w", path, err)
		}
		r.links[name] = l
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				r.progIDs[name] = id
			}
		}
	}
	return nil
}

// detachPinnedLink detaches and unpins the link pinned at path, if any.
func detachPinnedLink(path string) error {
	old, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned link %s: %w", path, err)
	}
	defer old.Close()
	if err := old.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	if err := old.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detach %s: %w", path, err)
	}
	return nil
}

// claimSlot runs zlb_claim in this process: the slot's owner becomes this
// process, not exiting.
func (r *Redirector) claimSlot(slot zonelbZlbListenerSlot) error {
	return r.use(func(*mapSet) error {
		if r.claim == nil {
			return fmt.Errorf("no program %s pinned in %s: load this zonelb version's agent first", zonelbProgZlbClaim, r.cfg.PinDir)
		}
		ret, err := r.claim.Run(&ebpf.RunOptions{Context: zonelbClaimArgs{Slot: uint32(slot)}})
		if err != nil {
			return fmt.Errorf("run %s: %w", zonelbProgZlbClaim, err)
		}
		if ret != 0 {
			return fmt.Errorf("%s for slot %d returned %d", zonelbProgZlbClaim, slot, ret)
		}
		return nil
	})
}

// ownerExiting reports whether the process that registered slot has begun
// to exit.
func (r *Redirector) ownerExiting(slot zonelbZlbListenerSlot) (bool, error) {
	var o zonelbListenerOwner
	if err := r.use(func(m *mapSet) error { return m.owners.Lookup(slot, &o) }); err != nil {
		return false, fmt.Errorf("look up owner of slot %d: %w", slot, err)
	}
	return o.Exiting != 0, nil
}
