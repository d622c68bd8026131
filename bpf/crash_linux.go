package bpf

// The Go runtime's crash path, seen by the kernel: a uprobe on
// runtime.startpanic_m in the proxy's own executable marks its listeners'
// owner exiting as soon as the runtime begins to crash (an unrecovered
// panic, a fatal error, a fatal signal), before it prints its report and
// exits (see zlb_go_crash in c/zonelb.c and docs/bpf.md, "Fail-open").

import (
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// crashSymbol is where every fatal path of the Go runtime passes before
// it prints anything: fatalpanic, fatalthrow and the fatal-signal handler
// all call it first.
const crashSymbol = "runtime.startpanic_m"

// crashPinName is where zlb_go_crash is pinned, for a proxy process that
// only opens the pins (Open).
const crashPinName = "prog_" + zonelbProgZlbGoCrash

// keepCrashProg keeps a handle on zlb_go_crash and pins it (replacing an
// older generation's pin).
func (r *Redirector) keepCrashProg(coll *ebpf.Collection) error {
	prog, err := r.keepProg(coll, zonelbProgZlbGoCrash, crashPinName)
	if err != nil {
		return err
	}
	r.crashProg = prog
	return nil
}

// watchCrash attaches zlb_go_crash to this process's own executable, for
// this process only, once per Redirector. The link is not pinned: it
// goes with the process.
func (r *Redirector) watchCrash() error {
	r.crashMu.Lock()
	defer r.crashMu.Unlock()
	if r.crashLink != nil {
		return nil
	}
	if r.crashProg == nil {
		return fmt.Errorf("no program %s pinned in %s: load this zonelb version's agent first", zonelbProgZlbGoCrash, r.cfg.PinDir)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	off, err := goFuncOffset(exe, crashSymbol)
	if err != nil {
		return err
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		return fmt.Errorf("open %s: %w", exe, err)
	}
	l, err := ex.Uprobe(crashSymbol, r.crashProg, &link.UprobeOptions{Address: off, PID: os.Getpid()})
	if err != nil {
		return fmt.Errorf("uprobe %s in %s: %w", crashSymbol, exe, err)
	}
	r.crashLink = l
	return nil
}

// goFuncOffset is the file offset of a Go function's entry in the ELF
// executable at path, from the Go symbol table (.gopclntab), which a
// binary built with -ldflags=-s (no ELF symbols) still has.
func goFuncOffset(path, name string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read executable %s: %w", path, err)
	}
	defer f.Close()
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		return 0, fmt.Errorf("%s has no Go symbol table (.gopclntab)", path)
	}
	data, err := pcln.Data()
	if err != nil {
		return 0, fmt.Errorf("read %s .gopclntab: %w", path, err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return 0, fmt.Errorf("parse %s .gopclntab: %w", path, err)
	}
	fn := tab.LookupFunc(name)
	if fn == nil {
		return 0, fmt.Errorf("no function %s in %s", name, path)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Vaddr <= fn.Entry && fn.Entry < p.Vaddr+p.Memsz {
			return fn.Entry - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("%s at %#x is in no executable segment of %s", name, fn.Entry, path)
}
