package bpf

// Uninstall: everything Load created, even under a running agent.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/zonelb/zonelb/bpf/nodeaddr"
)

// Uninstall removes everything Load created: it detaches the links (even
// those a still running agent holds), unpins maps and links, removes the
// pin directory and the dummy interface. Missing pieces are not errors.
func Uninstall(cfg Config) error {
	cfg = cfg.withDefaults()
	var errs []error
	if isBPFFS(cfg.PinDir) {
		var names []string
		for _, hook := range cgroupHooks {
			names = append(names, hook.prog)
		}
		for _, name := range append(names, exitWatch...) {
			path := filepath.Join(cfg.PinDir, linkPinName(name))
			l, err := link.LoadPinnedLink(path, nil)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("open pinned link %s: %w", path, err))
				continue
			}
			// Tracing links cannot be detached (ErrNotSupported): unpinned
			// and closed here, they go with the last holder's handle.
			if err := l.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
			}
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
			}
			l.Close()
		}
		// Only pins are left; RemoveAll is safe because the directory is on
		// bpffs (checked above), never a real filesystem.
		if err := os.RemoveAll(cfg.PinDir); err != nil {
			errs = append(errs, fmt.Errorf("remove pins in %s: %w", cfg.PinDir, err))
		}
	} else if _, err := os.Stat(cfg.PinDir); err == nil {
		errs = append(errs, fmt.Errorf("pin dir %s is not on bpffs: refusing to remove it", cfg.PinDir))
	}
	if !cfg.SkipInterface {
		if err := nodeaddr.Remove(cfg.Interface, cfg.InterfaceNetns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
