package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/bpf/nodeaddr"
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

// Config flags shared with the C side (struct config.flags).
const (
	cfgFlagShortcut  = 1
	cfgFlagEnrollAll = 2
)

// Slots of zlb_listeners.
const (
	listenerSlot4 uint32 = 0
	listenerSlot6 uint32 = 1
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
	tuples    *ebpf.Map
	listeners *ebpf.Map
	counters  *ebpf.Map
	shortcut  *ebpf.Map
}

func (m *mapSet) byName() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		zonelbMapZlbConfig:    &m.config,
		zonelbMapZlbServices:  &m.services,
		zonelbMapZlbNetns:     &m.netns,
		zonelbMapZlbTuples:    &m.tuples,
		zonelbMapZlbListeners: &m.listeners,
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

// loadOptions are knobs for tests (a changed program for the upgrade
// test). Production passes the zero value.
type loadOptions struct {
	specHook func(*ebpf.CollectionSpec) error
}

// Load loads the programs, reuses or creates the pinned maps, attaches the
// hooks (or atomically replaces the programs behind already pinned links),
// writes the proxy configuration and makes sure the proxy address exists.
func Load(cfg Config) (*Redirector, error) {
	return load(cfg, loadOptions{})
}

func load(cfg Config, opts loadOptions) (_ *Redirector, err error) {
	cfg, err = cfg.withDefaults(CgroupV2Root)
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	log := cfg.Logger

	if err := ensurePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	spec, err := loadZonelb()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF object: %w", err)
	}
	if opts.specHook != nil {
		if err := opts.specHook(spec); err != nil {
			return nil, fmt.Errorf("spec hook: %w", err)
		}
	}

	pinned, err := openPinnedMaps(spec, cfg.PinDir, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range pinned {
			m.Close()
		}
	}()

	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: pinned})
	if err != nil {
		return nil, fmt.Errorf("load BPF collection: %w", verifierDetail(err))
	}
	defer coll.Close() // the Redirector keeps its own clones

	r := &Redirector{cfg: cfg, log: log, links: map[string]link.Link{}, progIDs: map[string]ebpf.ProgramID{}}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()

	for name, dst := range r.maps.byName() {
		m := coll.Maps[name]
		if m == nil {
			return nil, fmt.Errorf("BPF object has no map %s", name)
		}
		path := filepath.Join(cfg.PinDir, name)
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			if err := m.Pin(path); err != nil {
				return nil, fmt.Errorf("pin map %s to %s: %w", name, path, err)
			}
		}
		if *dst, err = m.Clone(); err != nil {
			return nil, fmt.Errorf("keep map %s: %w", name, err)
		}
	}
	// The socket storage map has no Go reader but must be pinned so that a
	// new program generation shares it with sockets redirected by the old.
	for name, m := range coll.Maps {
		path := filepath.Join(cfg.PinDir, name)
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			if err := m.Pin(path); err != nil {
				return nil, fmt.Errorf("pin map %s to %s: %w", name, path, err)
			}
		}
	}

	hostCookie, err := NetnsCookieFromPath(cfg.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	if err := r.writeConfig(hostCookie); err != nil {
		return nil, err
	}

	cgroupID, err := cgroupInode(cfg.CgroupPath)
	if err != nil {
		return nil, err
	}
	for _, hook := range cgroupHooks {
		prog := coll.Programs[hook.prog]
		l, err := attachOrUpdate(cfg, hook.prog, hook.attach, prog, cgroupID, log)
		if err != nil {
			return nil, err
		}
		r.links[hook.prog] = l
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				r.progIDs[hook.prog] = id
			}
		}
	}

	// The sk_msg program is attached to the shortcut map itself; attaching
	// again replaces the previous program. When the shortcut is off the
	// sockops program adds no socket to the map, so the program is inert.
	if cfg.SockMsgShortcut {
		if err := link.RawAttachProgram(link.RawAttachProgramOptions{
			Target:  r.maps.shortcut.FD(),
			Program: coll.Programs[zonelbProgZlbShortcutMsg],
			Attach:  ebpf.AttachSkMsgVerdict,
		}); err != nil {
			return nil, fmt.Errorf("attach sk_msg to %s: %w", zonelbMapZlbShortcut, err)
		}
	}

	if !cfg.SkipInterface {
		if err := nodeaddr.Ensure(cfg.interfaceSpec()); err != nil {
			return nil, fmt.Errorf("ensure proxy address: %w", err)
		}
	}
	log.Info("bpf redirection loaded", "pin_dir", cfg.PinDir, "cgroup", cfg.CgroupPath,
		"proxy4", cfg.ProxyAddr4, "proxy6", cfg.ProxyAddr6, "shortcut", cfg.SockMsgShortcut)
	return r, nil
}

func (c Config) interfaceSpec() nodeaddr.Spec {
	s := nodeaddr.Spec{Name: c.Interface, Netns: c.InterfaceNetns}
	s.Addrs = append(s.Addrs, netip.PrefixFrom(c.ProxyAddr4.Addr().Unmap(), 32))
	if c.ProxyAddr6.IsValid() {
		s.Addrs = append(s.Addrs, netip.PrefixFrom(c.ProxyAddr6.Addr(), 128))
	}
	return s
}

// Open opens the pinned maps of an installed redirector without loading
// or attaching anything: for a proxy process that is not the agent.
func Open(cfg Config) (_ *Redirector, err error) {
	cfg, err = cfg.withDefaults(nil)
	if err != nil {
		return nil, err
	}
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
	errs = append(errs, r.maps.close())
	return errors.Join(errs...)
}

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

// writeConfig stores the proxy addresses, mark and flags for the programs.
func (r *Redirector) writeConfig(hostNetns uint64) error {
	var c zonelbConfig
	c.HostNetns = hostNetns
	c.Proxy4 = addrWords(r.cfg.ProxyAddr4.Addr().Unmap())[0]
	c.Port4 = portNet(r.cfg.ProxyAddr4.Port())
	if r.cfg.ProxyAddr6.IsValid() {
		c.Proxy6 = addrWords(r.cfg.ProxyAddr6.Addr())
		c.Port6 = portNet(r.cfg.ProxyAddr6.Port())
	}
	c.Mark = r.cfg.SocketMark
	if r.cfg.SockMsgShortcut {
		c.Flags |= cfgFlagShortcut
	}
	if r.cfg.EnrollAllNetns {
		c.Flags |= cfgFlagEnrollAll
	}
	if err := r.maps.config.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write %s: %w", zonelbMapZlbConfig, err)
	}
	return nil
}

// verifierDetail makes sure a verifier rejection carries the whole log.
func verifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w\nverifier log:\n%s", err, strings.Join(ve.Log, "\n"))
	}
	return err
}

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

// Uninstall removes everything Load created: it detaches the links (even
// those a still running agent holds), unpins maps and links, removes the
// pin directory and the dummy interface. Missing pieces are not errors.
func Uninstall(cfg Config) error {
	cfg, err := cfg.withDefaults(nil)
	if err != nil {
		return err
	}
	var errs []error
	if isBPFFS(cfg.PinDir) {
		for _, hook := range cgroupHooks {
			path := filepath.Join(cfg.PinDir, linkPinName(hook.prog))
			l, err := link.LoadPinnedLink(path, nil)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("open pinned link %s: %w", path, err))
				continue
			}
			if err := l.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) {
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

// CgroupV2Root returns the first cgroup2 mount point in /proc/mounts.
func CgroupV2Root() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return unescapeMount(fields[1]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/mounts: %w", ErrUnsupported)
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces etc.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func cgroupInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup-v2 directory", path)
	}
	return st.Ino, nil
}

func isBPFFS(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.BPF_FS_MAGIC
}

// ensurePinDir mounts bpffs at the parent of dir when it is not bpffs yet
// (only at /sys/fs/bpf, the conventional place) and creates dir.
func ensurePinDir(dir string) error {
	parent := filepath.Dir(dir)
	if !isBPFFS(parent) {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("%s is not on bpffs; mount bpffs there or use a pin dir under /sys/fs/bpf", parent)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", parent, err)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", parent, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	return nil
}
