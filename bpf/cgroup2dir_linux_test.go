package bpf

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/internal/testenv"
)

// A hybrid host's /sys/fs/cgroup (a tmpfs of v1 hierarchies with cgroup2 at
// unified/) resolves to its cgroup2 mount, as the DaemonSet's hostPath
// volume presents it; a cgroup2 directory resolves to itself.
func TestCgroup2DirHybridLayout(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=64k"); err != nil {
		testenv.SkipOrFail(t, "mount tmpfs: "+err.Error())
	}
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	unified := filepath.Join(root, "unified")
	for _, dir := range []string{unified, filepath.Join(root, "cpu")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A second mount of the cgroup2 hierarchy: the same tree, no new cgroup.
	if err := unix.Mount("cgroup2", unified, "cgroup2", 0, ""); err != nil {
		testenv.SkipOrFail(t, "mount cgroup2: "+err.Error())
	}
	t.Cleanup(func() { _ = unix.Unmount(unified, unix.MNT_DETACH) })

	for _, in := range []string{root, root + "/", unified} {
		got, err := Cgroup2Dir(in)
		if err != nil || got != unified {
			t.Errorf("Cgroup2Dir(%q) = %q, %v; want %q", in, got, err, unified)
		}
	}
	if got, err := Cgroup2Dir(filepath.Join(root, "cpu")); err == nil {
		t.Errorf("Cgroup2Dir(tmpfs dir without cgroup2 below) = %q, want an error", got)
	}
}
