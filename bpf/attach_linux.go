package bpf

// Attach: the cgroup hooks (pinned links, replaced atomically on upgrade)
// and the optional sk_msg shortcut.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Names of the pinned objects under Config.PinDir. Maps keep their ELF
// names; links are "link_<program>".
var cgroupHooks = []struct {
	prog   string
	attach ebpf.AttachType
}{
	{zonelbProgZlbConnect4, ebpf.AttachCGroupInet4Connect},
	{zonelbProgZlbConnect6, ebpf.AttachCGroupInet6Connect},
	{zonelbProgZlbGetpeername4, ebpf.AttachCgroupInet4GetPeername},
	{zonelbProgZlbGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	{zonelbProgZlbSockops, ebpf.AttachCGroupSockOps},
}

func linkPinName(prog string) string { return "link_" + prog }

// attachOrUpdate reuses the pinned link of prog if it is attached to the
// same cgroup (atomic program replacement with BPF_LINK_UPDATE), and
// creates and pins a new link otherwise.
func attachOrUpdate(cfg Config, name string, attach ebpf.AttachType, prog *ebpf.Program, cgroupID uint64, log *slog.Logger) (link.Link, error) {
	path := filepath.Join(cfg.PinDir, linkPinName(name))
	l, err := link.LoadPinnedLink(path, nil)
	switch {
	case err == nil:
		info, infoErr := l.Info()
		if infoErr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgroupID {
			if err := l.Update(prog); err != nil {
				l.Close()
				return nil, fmt.Errorf("replace program of pinned link %s: %w", path, err)
			}
			log.Debug("replaced program behind pinned link", "link", path)
			return l, nil
		}
		// Attached elsewhere (cgroup path changed) or unreadable: detach it
		// and attach afresh.
		log.Warn("pinned link attached to another cgroup: re-attaching", "link", path, "cgroup", cfg.CgroupPath)
		_ = l.Unpin()
		_ = l.Detach()
		l.Close()
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open pinned link %s: %w", path, err)
	}

	l, err = link.AttachCgroup(link.CgroupOptions{Path: cfg.CgroupPath, Attach: attach, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", name, cfg.CgroupPath, err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin link %s: %w", path, err)
	}
	return l, nil
}

// attachHooks attaches (or re-targets) the cgroup programs to
// Config.CgroupPath and remembers their links and program ids.
func (r *Redirector) attachHooks(coll *ebpf.Collection) error {
	cgroupID, err := cgroupInode(r.cfg.CgroupPath)
	if err != nil {
		return err
	}
	for _, hook := range cgroupHooks {
		prog := coll.Programs[hook.prog]
		l, err := attachOrUpdate(r.cfg, hook.prog, hook.attach, prog, cgroupID, r.log)
		if err != nil {
			return err
		}
		r.links[hook.prog] = l
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				r.progIDs[hook.prog] = id
			}
		}
	}
	return nil
}

// attachShortcut attaches the sk_msg program to the shortcut map itself;
// attaching again replaces the previous program. When the shortcut is off
// the sockops program adds no socket to the map, so the program is inert
// and is not attached.
func (r *Redirector) attachShortcut(coll *ebpf.Collection) error {
	if !r.cfg.SockMsgShortcut {
		return nil
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  r.maps.shortcut.FD(),
		Program: coll.Programs[zonelbProgZlbShortcutMsg],
		Attach:  ebpf.AttachSkMsgVerdict,
	}); err != nil {
		return fmt.Errorf("attach sk_msg to %s: %w", zonelbMapZlbShortcut, err)
	}
	return nil
}
