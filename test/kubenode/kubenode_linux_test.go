package kubenode

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/zonelb/zonelb/internal/kubenode"
)

// TestKubeNode runs one real node for every step, in order: starting it
// is the expensive part (about a minute).
func TestKubeNode(t *testing.T) {
	imgs := findImages(t)
	node := kubenode.Start(t, kubenode.Options{Images: imgs.tarballs(), PauseImage: pauseImage})
	ctx := t.Context()

	// A plain pod on the real kubelet: image from the node's store, the
	// bridge CNI, the pause sandbox. It is one of the greeter backends.
	if !t.Run("PlainPod", func(t *testing.T) {
		if _, err := node.Client.CoreV1().Pods("default").Create(ctx, backendPod("greeter-a-0", "zone-a"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := waitPodRunning(t, node.Client, "default", "greeter-a-0")
		t.Logf("pod %s Running on %s at %s", p.Name, p.Spec.NodeName, p.Status.PodIP)
		// The pod's cgroup is in the node's cgroup2 tree (on a hybrid
		// host too: runc creates it there beside the v1 ones), below where
		// the DaemonSet's hooks attach.
		root := node.Cgroup2Dir()
		var found []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && strings.Contains(d.Name(), string(p.UID)) {
				found = append(found, path)
			}
			return nil
		})
		if len(found) == 0 {
			t.Errorf("no cgroup of pod %s (uid %s) under the node's cgroup2 root %s", p.Name, p.UID, root)
		}
		t.Logf("pod cgroup in the unified tree: %v", found)
	}) {
		return
	}
	s := &scenario{node: node, imgs: imgs, overlay: t.TempDir()}
	if !t.Run("Baseline", s.baseline) {
		return
	}
	if !t.Run("DaemonSet", s.daemonSet) {
		return
	}
	if !t.Run("Steered", s.steered) {
		return
	}
	t.Run("OptOut", s.optOut)
	if !t.Run("RolloutRestartUnderLoad", s.rolloutRestart) {
		return
	}
	t.Run("DaemonPodDeleted", s.daemonPodDeleted)
	t.Run("DaemonKilled", s.daemonKilled)
	t.Run("Uninstall", s.uninstall)
}

func backendPod(name, zone string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "greeter"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			EnableServiceLinks:            new(bool),
			Containers: []corev1.Container{{
				Name:            "backend",
				Image:           testpodImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"backend"},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "ZONE", Value: zone},
				},
				Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 50051}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstrPort(50051)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// waitPodRunning waits until the pod is Running and Ready.
func waitPodRunning(t *testing.T, c kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var last string
	for {
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = fmt.Sprintf("phase %s, conditions %+v, statuses %+v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
			if p.Status.Phase == corev1.PodRunning && podReady(p) {
				return p
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not Running and Ready within 2m: %s", ns, name, last)
		case <-time.After(300 * time.Millisecond): // polling the API, bounded by ctx
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func intstrPort(p int32) intstr.IntOrString { return intstr.FromInt32(p) }
