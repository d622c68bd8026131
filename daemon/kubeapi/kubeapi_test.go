package kubeapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/zonelb/zonelb/daemon/kubeapi"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/testenv"
)

// The informers list and watch a real API server with the selectors they
// are given, decode the typed objects of both API groups, and keep the
// namespace index of client-go's generated informers.
func TestInformersAgainstAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	admin := srv.Client(t)
	ctx := t.Context()
	c, err := kubeapi.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount admission plugin wants the namespace's default
	// account before it admits a pod.
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, node, label string) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"zonelb.io/redirect": label}},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
		}
		if _, err := admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("here-out", "node-a", "false")
	pod("here-in", "node-a", "true")
	pod("there-out", "node-b", "false")

	pods := c.Pods(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "node-a").String()
		o.LabelSelector = "zonelb.io/redirect=false"
	})
	eps := c.EndpointSlices(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName })
	runCtx, cancel := context.WithCancel(ctx)
	wait := kubeapi.Start(runCtx, pods, eps)
	t.Cleanup(func() { cancel(); wait() })
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, eps.HasSynced) {
		t.Fatal("caches did not sync")
	}
	if got := names(pods.GetStore().List()); !equal(got, []string{"here-out"}) {
		t.Errorf("pods listed = %v, want [here-out]", got)
	}

	// A change after the list comes through the watch, typed.
	for _, s := range []struct{ name, service string }{{"owned", "web"}, {"stray", ""}} {
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: s.name}, AddressType: discoveryv1.AddressTypeIPv4}
		if s.service != "" {
			es.Labels = map[string]string{discoveryv1.LabelServiceName: s.service}
		}
		if _, err := admin.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "the slice created after the list", func() bool { return len(eps.GetStore().List()) > 0 })
	got, err := eps.GetIndexer().ByIndex(cache.NamespaceIndex, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("slices in namespace default = %v, want [owned] only", names(got))
	}
	if es, ok := got[0].(*discoveryv1.EndpointSlice); !ok || es.Name != "owned" {
		t.Errorf("slice = %#v, want *EndpointSlice owned", got[0])
	}
}

func names(objs []any) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.(metav1.Object).GetName())
	}
	return out
}

func equal(a, b []string) bool {
	slices.Sort(a)
	return slices.Equal(a, b)
}
