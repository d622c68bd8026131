package bpf

// Migrate: pinned maps of another zonelb version are reused, migrated or
// replaced.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
)

// openPinnedMaps loads the pins that match the spec. A pin whose layout
// differs from the spec (another zonelb version) is migrated when only its
// size or flags changed and key and value kept their layout, and replaced
// (with a warning) otherwise; the new map is pinned in its place.
func openPinnedMaps(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) (_ map[string]*ebpf.Map, err error) {
	out := map[string]*ebpf.Map{}
	defer func() {
		if err != nil {
			for _, m := range out {
				m.Close()
			}
		}
	}()
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // data sections belong to one program generation
		}
		path := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		incompat := ms.Compatible(old)
		if incompat == nil {
			out[name] = old
			continue
		}
		replacement, err := replaceMap(ms, old, path, log, incompat)
		old.Close()
		if err != nil {
			return nil, err
		}
		out[name] = replacement
	}
	return out, nil
}

// replaceMap creates a map from ms, copies old's entries into it when the
// layouts allow, and swaps the pin.
func replaceMap(ms *ebpf.MapSpec, old *ebpf.Map, path string, log *slog.Logger, why error) (*ebpf.Map, error) {
	fresh, err := ebpf.NewMap(ms)
	if err != nil {
		return nil, fmt.Errorf("create map %s to replace an incompatible pin: %w", ms.Name, err)
	}
	copied, migrateErr := migrateEntries(ms, old, fresh)
	if err := old.Unpin(); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("unpin incompatible map %s: %w", path, err)
	}
	if err := fresh.Pin(path); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("pin replacement map %s: %w", path, err)
	}
	log.Warn("pinned BPF map had another layout: replaced", "map", ms.Name, "reason", why.Error(),
		"entries_migrated", copied, "migration_error", migrateErr)
	return fresh, nil
}

// migrateEntries copies entries when key and value sizes and the map type
// are unchanged (max_entries or flags grew or shrank). Sockets cannot be
// copied from user space: socket maps and storage are left empty and fill
// again (the proxy re-registers; new connections get new storage).
func migrateEntries(ms *ebpf.MapSpec, old, fresh *ebpf.Map) (int, error) {
	switch ms.Type {
	case ebpf.Hash, ebpf.LRUHash, ebpf.Array:
	default:
		return 0, nil
	}
	if old.Type() != ms.Type || old.KeySize() != ms.KeySize || old.ValueSize() != ms.ValueSize {
		return 0, nil
	}
	key := make([]byte, ms.KeySize)
	val := make([]byte, ms.ValueSize)
	n := 0
	it := old.Iterate()
	for it.Next(&key, &val) {
		if err := fresh.Update(key, val, ebpf.UpdateAny); err != nil {
			return n, fmt.Errorf("copy entry %d of %s: %w", n, ms.Name, err)
		}
		n++
	}
	return n, it.Err()
}
