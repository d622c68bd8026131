package bpf

// The Redirector handle: the maps it holds, Open and Close.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Redirector is a handle on the loaded (or opened) redirection state. Its
// methods are safe for concurrent use. Close releases the handle; the
// pinned programs keep redirecting.
type Redirector struct {
	cfg   Config
	log   *slog.Logger
	maps  mapSet
	links map[string]link.Link // by program name; empty for Open
	// progIDs are the ids of the programs this handle attached (tests and
	// logs use them to see an upgrade happen).
	progIDs map[string]ebpf.ProgramID
	// claim is zlb_claim, which RegisterListener runs (see owner.go).
	claim *ebpf.Program
	// crashProg is zlb_go_crash; crashLink its uprobe on this process,
	// attached by RegisterListener (crash_linux.go).
	crashProg *ebpf.Program
	crashMu   sync.Mutex
	crashLink link.Link

	// mu guards maps and links against Close: methods hold it for reading
	// so that a concurrent Close cannot pull a map from under a lookup.
	mu     sync.RWMutex
	closed bool
}

// mapSet holds the maps the Go side reads and writes.
type mapSet struct {
	config    *ebpf.Map
	services  *ebpf.Map
	netns     *ebpf.Map
	optout    *ebpf.Map
	tuples    *ebpf.Map
	listeners *ebpf.Map
	owners    *ebpf.Map
	counters  *ebpf.Map
	shortcut  *ebpf.Map
}

func (m *mapSet) byName() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		zonelbMapZlbConfig:    &m.config,
		zonelbMapZlbServices:  &m.services,
		zonelbMapZlbNetns:     &m.netns,
		zonelbMapZlbOptout:    &m.optout,
		zonelbMapZlbTuples:    &m.tuples,
		zonelbMapZlbListeners: &m.listeners,
		zonelbMapZlbOwners:    &m.owners,
		zonelbMapZlbCounters:  &m.counters,
		zonelbMapZlbShortcut:  &m.shortcut,
	}
}

func (m *mapSet) close() error {
	var errs []error
	for _, mp := range m.byName() {
		if *mp != nil {
			errs = append(errs, (*mp).Close())
			*mp = nil
		}
	}
	return errors.Join(errs...)
}

// Open opens the pinned maps of an installed redirector without loading
// or attaching anything: for a proxy process that is not the agent.
func Open(cfg Config) (_ *Redirector, err error) {
	cfg = cfg.withDefaults()
	r := &Redirector{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	for name, dst := range r.maps.byName() {
		path := filepath.Join(cfg.PinDir, name)
		if *dst, err = ebpf.LoadPinnedMap(path, nil); err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
	}
	// Pins of a zonelb from before the listener's owner existed have no
	// claim program: reading works, RegisterListener then says why not.
	for _, p := range []struct {
		pin  string
		prog **ebpf.Program
	}{{claimPinName, &r.claim}, {crashPinName, &r.crashProg}} {
		path := filepath.Join(cfg.PinDir, p.pin)
		*p.prog, err = ebpf.LoadPinnedProgram(path, nil)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open pinned program %s: %w", path, err)
		}
	}
	return r, nil
}

// Close releases this handle's file descriptors. Pinned maps and links
// stay, so redirection continues without the agent.
func (r *Redirector) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	for name, l := range r.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
	}
	if r.claim != nil {
		errs = append(errs, r.claim.Close())
	}
	r.crashMu.Lock()
	if r.crashLink != nil {
		errs = append(errs, r.crashLink.Close())
	}
	r.crashMu.Unlock()
	if r.crashProg != nil {
		errs = append(errs, r.crashProg.Close())
	}
	errs = append(errs, r.maps.close())
	return errors.Join(errs...)
}

// CgroupPath is the cgroup-v2 directory the hooks are attached to (as
// Load resolved it; as configured for Open).
func (r *Redirector) CgroupPath() string { return r.cfg.CgroupPath }

// ErrClosed is returned by methods of a closed Redirector.
var ErrClosed = errors.New("bpf redirector is closed")

// use runs fn with the maps held open, or reports ErrClosed.
func (r *Redirector) use(fn func(m *mapSet) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	return fn(&r.maps)
}
