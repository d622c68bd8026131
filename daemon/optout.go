package daemon

// Per-pod opt-out: pods on this node labelled zonelb.io/redirect: "false"
// are never redirected. The agent watches them and puts each one's
// cgroup-v2 directory (pod<uid>, which holds every container of the pod)
// into the BPF opt-out map; the hooks skip callers below it.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon/kubeapi"
)

// OptOutLabel set to "false" on a pod keeps that pod's connections away
// from zonelb: they go to their destination as dialled (kube-proxy).
const OptOutLabel = "zonelb.io/redirect"

// optOutRetry is how often pods whose cgroup is not there yet (the kubelet
// has not created it) are looked for again.
const optOutRetry = 250 * time.Millisecond

// podCgroupDepth bounds the search below the cgroup2 root: kubelet roots,
// slices and QoS classes put a pod's cgroup a few levels down.
const podCgroupDepth = 8

// optOutMap is what podOptOut programs (a *bpf.Redirector).
type optOutMap interface {
	OptOut(cgroupID uint64) error
	OptIn(cgroupID uint64) error
	OptedOut() ([]uint64, error)
}

// podOptOut keeps the opt-out map equal to the cgroups of this node's
// labelled pods.
type podOptOut struct {
	log    *slog.Logger
	client *kubeapi.Client
	node   string
	root   string // the cgroup2 directory the hooks attach to
	red    optOutMap

	resolved map[types.UID]uint64 // pods in the map, by their cgroup id
}

// run watches the labelled pods of the node until ctx ends.
func (o *podOptOut) run(ctx context.Context) {
	inf := o.client.Pods(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "spec.nodeName=" + o.node
		lo.LabelSelector = OptOutLabel + "=false"
	})
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, DeleteFunc: poke, UpdateFunc: func(_, n any) { poke(n) },
	}); err != nil {
		o.log.Error("pod opt-out: watch pods", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	// Cancel first, then wait for the informer's goroutine.
	defer kubeapi.Start(ctx, inf)()
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	o.resolved = map[types.UID]uint64{}
	first := true
	tick := time.NewTicker(optOutRetry)
	defer tick.Stop()
	for {
		pending := o.reconcile(inf.GetStore().List(), first)
		first = false
		var retry <-chan time.Time
		if pending > 0 {
			retry = tick.C
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-retry:
		}
	}
}

// reconcile programs the map from the informer's pods and returns how many
// wanted pods have no cgroup yet. The first pass also drops entries a
// previous agent left for pods that are gone.
func (o *podOptOut) reconcile(objs []any, first bool) (pending int) {
	want := map[types.UID]bool{}
	for _, obj := range objs {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Labels[OptOutLabel] != "false" ||
			pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		want[pod.UID] = true
		if _, done := o.resolved[pod.UID]; done {
			continue
		}
		dir, err := findPodCgroup(o.root, string(pod.UID))
		if err == nil {
			var id uint64
			if id, err = bpf.CgroupID(dir); err == nil {
				err = o.red.OptOut(id)
			}
			if err == nil {
				o.resolved[pod.UID] = id
				o.log.Info("pod opted out of redirection", "pod", pod.Namespace+"/"+pod.Name, "cgroup", dir)
				continue
			}
		}
		if !errors.Is(err, fs.ErrNotExist) {
			o.log.Warn("pod opt-out", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		}
		pending++
	}
	for uid, id := range o.resolved {
		if !want[uid] {
			if err := o.red.OptIn(id); err != nil {
				o.log.Warn("pod opt-out: remove", "uid", uid, "err", err)
				continue
			}
			delete(o.resolved, uid)
			o.log.Info("pod no longer opted out", "uid", uid)
		}
	}
	if first {
		o.dropStale()
	}
	return pending
}

// dropStale removes map entries that belong to no watched pod.
func (o *podOptOut) dropStale() {
	ids, err := o.red.OptedOut()
	if err != nil {
		o.log.Warn("pod opt-out: list", "err", err)
		return
	}
	ours := map[uint64]bool{}
	for _, id := range o.resolved {
		ours[id] = true
	}
	for _, id := range ids {
		if !ours[id] {
			if err := o.red.OptIn(id); err != nil {
				o.log.Warn("pod opt-out: remove stale entry", "cgroup_id", id, "err", err)
			}
		}
	}
}

// findPodCgroup finds the cgroup directory of the pod with this UID below
// root: pod<uid> (the kubelet's cgroupfs driver) or
// kubepods[-<qos>]-pod<uid with _ for ->.slice (the systemd driver). It
// reports fs.ErrNotExist when there is none (yet).
func findPodCgroup(root, uid string) (string, error) {
	cgroupfs := "pod" + uid
	systemd := "-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	root = filepath.Clean(root)
	found := ""
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return fs.SkipDir // a cgroup removed while walking
		}
		if !d.IsDir() || path == root {
			return nil
		}
		name := d.Name()
		if name == cgroupfs || strings.HasSuffix(name, systemd) {
			found = path
			return fs.SkipAll
		}
		// Another pod's cgroup holds only its containers; stop at depth.
		if strings.HasPrefix(name, "pod") || strings.Contains(name, "-pod") ||
			strings.Count(path[len(root):], string(filepath.Separator)) >= podCgroupDepth {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("look for the cgroup of pod %s under %s: %w", uid, root, err)
	}
	if found == "" {
		return "", fmt.Errorf("no cgroup for pod %s under %s: %w", uid, root, fs.ErrNotExist)
	}
	return found, nil
}
