package daemon

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
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
