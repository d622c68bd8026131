package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/internal/testenv"
)

// findPodCgroup finds a pod's cgroup in the kubelet's layouts: the cgroupfs
// driver (with and without a QoS level, under a cgroup root of its own)
// and the systemd driver (UID dashes become underscores). Another pod's
// cgroup and its containers are not searched, nor anything past the depth.
func TestFindPodCgroup(t *testing.T) {
	const uid = "0b3c3d9e-5a1f-4c2e-9d7b-1f2e3a4b5c6d"
	cases := []struct{ name, dir string }{
		{"cgroupfs burstable", "kubepods/burstable/pod" + uid},
		{"cgroupfs guaranteed", "kubepods/pod" + uid},
		{"cgroupfs under a kubelet root", "kubenode-1/kubepods/besteffort/pod" + uid},
		{"systemd", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b3c3d9e_5a1f_4c2e_9d7b_1f2e3a4b5c6d.slice"},
		{"systemd guaranteed", "kubepods.slice/kubepods-pod0b3c3d9e_5a1f_4c2e_9d7b_1f2e3a4b5c6d.slice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			// Another pod, with a container, sorted before ours.
			mkdirs(t, root, "kubepods/burstable/pod0000/ctr", "system.slice/a.service", c.dir+"/ctr")
			got, err := findPodCgroup(root, uid)
			if want := filepath.Join(root, c.dir); err != nil || got != want {
				t.Errorf("findPodCgroup = %q, %v; want %q", got, err, want)
			}
		})
	}

	root := t.TempDir()
	mkdirs(t, root, "kubepods/burstable/pod0000/pod"+uid, "a/b/c/d/e/f/g/h/i/pod"+uid)
	if got, err := findPodCgroup(root, uid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("inside another pod or too deep: %q, %v; want fs.ErrNotExist", got, err)
	}
	if _, err := findPodCgroup(filepath.Join(root, "missing"), uid); err == nil {
		t.Errorf("missing root: want an error")
	}
}

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// optOutSet is the opt-out map as a set: what reconcile leaves in it is
// what the hooks would read.
type optOutSet map[uint64]bool

func (s optOutSet) OptOut(id uint64) error { s[id] = true; return nil }
func (s optOutSet) OptIn(id uint64) error  { delete(s, id); return nil }
func (s optOutSet) OptedOut() ([]uint64, error) {
	var out []uint64
	for id := range s {
		out = append(out, id)
	}
	return out, nil
}

// reconcile keeps the map equal to the labelled pods' cgroups (real
// cgroup2 directories, whose ids the hooks compare): a pod whose cgroup
// is not there yet stays pending until it is; a pod unlabelled or gone
// leaves the map; the first pass drops what a previous run left.
func TestPodOptOutReconcile(t *testing.T) {
	testenv.RequireRoot(t)
	root, err := bpf.CgroupV2Root()
	if err != nil {
		testenv.SkipOrFail(t, "no cgroup2: "+err.Error())
	}
	base := filepath.Join(root, fmt.Sprintf("zonelb-optout-test-%d", os.Getpid()))
	mkCgroups := func(dirs ...string) {
		for _, d := range dirs {
			if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range []string{"kubepods/poda", "kubepods/podb", "kubepods", ""} {
			_ = os.Remove(filepath.Join(base, d)) // empty cgroups: rmdir, children first
		}
	})
	mkCgroups("kubepods", "kubepods/poda")
	pod := func(uid, label string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "ns", UID: types.UID(uid),
			Labels: map[string]string{OptOutLabel: label}}}
	}
	idOf := func(dir string) uint64 {
		id, err := bpf.CgroupID(filepath.Join(base, dir))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	const stale = 1 // an id a previous run left (cgroup ids are never 1 below the root)
	set := optOutSet{stale: true}
	o := &podOptOut{log: slog.New(slog.DiscardHandler), root: base, red: set, resolved: map[types.UID]uint64{}}

	if pending := o.reconcile([]any{pod("a", "false"), pod("b", "false")}, true); pending != 1 {
		t.Errorf("pending = %d, want 1 (pod b has no cgroup yet)", pending)
	}
	if want := (optOutSet{idOf("kubepods/poda"): true}); !maps.Equal(set, want) {
		t.Errorf("after the first pass: %v, want %v (pod a in, the stale entry gone)", set, want)
	}
	mkCgroups("kubepods/podb")
	if pending := o.reconcile([]any{pod("a", "false"), pod("b", "false")}, false); pending != 0 {
		t.Errorf("pending = %d once pod b's cgroup exists, want 0", pending)
	}
	if want := (optOutSet{idOf("kubepods/poda"): true, idOf("kubepods/podb"): true}); !maps.Equal(set, want) {
		t.Errorf("with both cgroups: %v, want %v", set, want)
	}
	o.reconcile([]any{pod("b", "true")}, false)
	if len(set) != 0 {
		t.Errorf("pod a gone, pod b relabelled: map %v, want empty", set)
	}
}
