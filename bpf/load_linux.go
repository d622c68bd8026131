package bpf

// Load and pin: read the embedded object, reuse or migrate the pinned maps,
// load the collection, pin what is new, write the proxy configuration.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/zonelb/zonelb/bpf/nodeaddr"
)

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
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if cfg, err = cfg.withCgroupRoot(CgroupV2Root); err != nil {
		return nil, err
	}
	if err := checkKernel(kernelRequirements(cfg.SockMsgShortcut)); err != nil {
		return nil, err
	}
	if cfg.CgroupPath, err = Cgroup2Dir(cfg.CgroupPath); err != nil {
		return nil, err
	}
	if err := ensurePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	coll, err := loadCollection(cfg, opts)
	if err != nil {
		return nil, err
	}
	defer coll.Close() // the Redirector keeps its own clones

	r := &Redirector{cfg: cfg, log: cfg.Logger, links: map[string]link.Link{}, progIDs: map[string]ebpf.ProgramID{}}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := r.pinAndKeepMaps(coll); err != nil {
		return nil, err
	}
	hostCookie, err := NetnsCookieFromPath(cfg.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	if err := r.writeConfig(hostCookie); err != nil {
		return nil, err
	}
	if err := r.keepClaim(coll); err != nil {
		return nil, err
	}
	if err := r.keepCrashProg(coll); err != nil {
		return nil, err
	}
	if err := r.attachHooks(coll); err != nil {
		return nil, err
	}
	if err := r.attachExitWatch(coll); err != nil {
		return nil, err
	}
	if err := r.attachShortcut(coll); err != nil {
		return nil, err
	}
	if !cfg.SkipInterface {
		if err := nodeaddr.Ensure(cfg.interfaceSpec()); err != nil {
			return nil, fmt.Errorf("ensure proxy address: %w", err)
		}
	}
	cfg.Logger.Info("bpf redirection loaded", "pin_dir", cfg.PinDir, "cgroup", cfg.CgroupPath,
		"proxy4", cfg.ProxyAddr4, "proxy6", cfg.ProxyAddr6, "shortcut", cfg.SockMsgShortcut)
	return r, nil
}

// loadCollection reads the embedded object and loads it into the kernel,
// reusing (or migrating) the maps already pinned under cfg.PinDir.
func loadCollection(cfg Config, opts loadOptions) (*ebpf.Collection, error) {
	spec, err := loadZonelb()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF object: %w", err)
	}
	if opts.specHook != nil {
		if err := opts.specHook(spec); err != nil {
			return nil, fmt.Errorf("spec hook: %w", err)
		}
	}
	pinned, err := openPinnedMaps(spec, cfg.PinDir, cfg.Logger)
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
	return coll, nil
}

// pinAndKeepMaps pins every map of coll that has no pin yet and keeps a
// clone of each map the Go side reads or writes.
func (r *Redirector) pinAndKeepMaps(coll *ebpf.Collection) error {
	for name, dst := range r.maps.byName() {
		m := coll.Maps[name]
		if m == nil {
			return fmt.Errorf("BPF object has no map %s", name)
		}
		if err := pinIfAbsent(m, filepath.Join(r.cfg.PinDir, name)); err != nil {
			return err
		}
		var err error
		if *dst, err = m.Clone(); err != nil {
			return fmt.Errorf("keep map %s: %w", name, err)
		}
	}
	// The socket storage map has no Go reader but must be pinned so that a
	// new program generation shares it with sockets redirected by the old.
	for name, m := range coll.Maps {
		if err := pinIfAbsent(m, filepath.Join(r.cfg.PinDir, name)); err != nil {
			return err
		}
	}
	return nil
}

// pinIfAbsent pins m at path unless something is pinned there already
// (the map reused through MapReplacements).
func pinIfAbsent(m *ebpf.Map, path string) error {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := m.Pin(path); err != nil {
		return fmt.Errorf("pin map %s to %s: %w", filepath.Base(path), path, err)
	}
	return nil
}

func (c Config) interfaceSpec() nodeaddr.Spec {
	s := nodeaddr.Spec{Name: c.Interface, Netns: c.InterfaceNetns}
	s.Addrs = append(s.Addrs, netip.PrefixFrom(c.ProxyAddr4.Addr().Unmap(), 32))
	if c.ProxyAddr6.IsValid() {
		s.Addrs = append(s.Addrs, netip.PrefixFrom(c.ProxyAddr6.Addr(), 128))
	}
	return s
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
		c.Flags |= zonelbZlbCfgFlagZLB_CFG_SHORTCUT
	}
	if r.cfg.EnrollAllNetns {
		c.Flags |= zonelbZlbCfgFlagZLB_CFG_ENROLL_ALL
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
