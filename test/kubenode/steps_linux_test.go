package kubenode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zonelb/zonelb/internal/kubenode"
	"github.com/zonelb/zonelb/internal/kubenode/testpodapi"
)

// applyDeploy installs deploy/ as the README tells a user: a Kustomize
// overlay that sets the image and nothing else, `kubectl apply -k`.
// The overlay is written to overlay, a directory that outlives the step
// (kubectl delete -k reads it again).
func applyDeploy(t *testing.T, node *kubenode.Node, ref, overlay string) {
	t.Helper()
	repo, tag, ok := strings.Cut(ref, ":")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo, tag, ok = ref[:i], ref[i+1:], true
	}
	if !ok {
		t.Fatalf("image reference %q has no tag", ref)
	}
	deployDir := filepath.Join(moduleRoot(t), "deploy")
	rel, err := filepath.Rel(overlay, deployDir)
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: ghcr.io/zonelb/zonelb
    newName: %s
    newTag: %q
`, rel, repo, tag)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := node.Kubectl(t.Context(), "apply", "-k", overlay)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply -k (deploy/ with image %s):\n%s", ref, out)
}

// waitDaemonSetReady waits until the DaemonSet's pods are all updated,
// available and ready, and returns the pod.
func waitDaemonSetReady(t *testing.T, node *kubenode.Node, minGeneration int64) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var last string
	for {
		ds, err := node.Client.AppsV1().DaemonSets("zonelb").Get(ctx, "zonelb", metav1.GetOptions{})
		if err == nil {
			s := ds.Status
			last = fmt.Sprintf("%+v", s)
			if s.ObservedGeneration >= max(ds.Generation, minGeneration) && s.DesiredNumberScheduled == 1 &&
				s.NumberReady == 1 && s.UpdatedNumberScheduled == 1 && s.NumberAvailable == 1 && s.NumberUnavailable == 0 {
				pods, err := node.Client.CoreV1().Pods("zonelb").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=zonelb"})
				if err == nil {
					var ready []corev1.Pod
					for _, p := range pods.Items {
						if p.DeletionTimestamp == nil && podReady(&p) {
							ready = append(ready, p)
						}
					}
					if len(ready) == 1 && len(pods.Items) == 1 {
						return &ready[0]
					}
					last = fmt.Sprintf("%d pods, %d ready", len(pods.Items), len(ready))
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			pods, _ := node.Kubectl(context.Background(), "-n", "zonelb", "describe", "pods")
			logs, _ := node.Kubectl(context.Background(), "-n", "zonelb", "logs", "daemonset/zonelb", "--tail=40")
			t.Fatalf("DaemonSet zonelb not ready within 3m: %s\n%s\nlogs:\n%s", last, pods, logs)
		case <-time.After(500 * time.Millisecond): // polling the API, bounded by ctx
		}
	}
}

// greeterService is the gRPC Service the clients call: port 80, grpc, to
// the backends' 50051.
func greeterService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "greeter"},
			Ports: []corev1.ServicePort{{
				Name: "grpc", Port: 80, TargetPort: intstr.FromInt32(50051),
				AppProtocol: new("grpc"),
			}},
		},
	}
}

func clientPod(name, target string, labels map[string]string) *corev1.Pod {
	l := map[string]string{"app": "client"}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			EnableServiceLinks:            new(bool),
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           testpodImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"client"},
				Env:             []corev1.EnvVar{{Name: "TARGET", Value: target}},
				Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// What a client pod reports (internal/kubenode/testpod).
type (
	call       = testpodapi.Call
	loadResult = testpodapi.Load
)

// receivedIDs returns the id of every call that any of the Service's
// backends (its pods on the node and the remote peers) has received.
func (s *scenario) receivedIDs(t *testing.T) map[string]bool {
	t.Helper()
	pods, err := s.node.Client.CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{LabelSelector: "app=greeter"})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, p := range pods.Items {
		ips = append(ips, p.Status.PodIP)
	}
	for _, r := range remotes {
		ips = append(ips, r.ip)
	}
	got := map[string]bool{}
	for _, ip := range ips {
		var ids []string
		body := clientHTTP(t, s.node, http.MethodGet, "http://"+net.JoinHostPort(ip, "8080")+"/received")
		if err := json.Unmarshal(body, &ids); err != nil {
			t.Fatalf("backend %s: received: %v: %s", ip, err, body)
		}
		for _, id := range ids {
			got[id] = true
		}
	}
	return got
}

// calls asks a client pod for n sequential calls over its one connection.
func calls(t *testing.T, node *kubenode.Node, podIP string, n int) []call {
	t.Helper()
	body := clientHTTP(t, node, http.MethodGet, fmt.Sprintf("http://%s:8080/calls?n=%d", podIP, n))
	var cs []call
	if err := json.Unmarshal(body, &cs); err != nil {
		t.Fatalf("client %s: %v: %s", podIP, err, body)
	}
	return cs
}

func clientHTTP(t *testing.T, node *kubenode.Node, method, url string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := node.HTTPClient()
	c.Timeout = 2 * time.Minute
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, url, resp.Status, body)
	}
	return body
}

// proxiedRequests is zonelb_requests_total for the service (namespace/name,
// any port), summed over zones and codes, from the daemon's metrics on the node.
func proxiedRequests(t *testing.T, node *kubenode.Node, service string) float64 {
	t.Helper()
	return metricSum(t, node, "zonelb_requests_total", func(name, v string) bool {
		return name == "service" && (v == service || strings.HasPrefix(v, service+":"))
	})
}

// metricSum sums the series of a metric family from the daemon's metrics
// on the node that have a label for which match holds.
func metricSum(t *testing.T, node *kubenode.Node, family string, match func(name, value string) bool) float64 {
	t.Helper()
	resp, err := node.HTTPClient().Get("http://127.0.0.1:15090/metrics")
	if err != nil {
		t.Fatalf("zonelb metrics: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("zonelb metrics: %v", err)
	}
	var sum float64
	if f := fams[family]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if match(l.GetName(), l.GetValue()) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
