package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/daemon/kubeapi"
	"github.com/zonelb/zonelb/internal/kubetest"
)

// fieldManager names this test's server-side applies.
const fieldManager = "zonelb-deploy-test"

// testNode is the node the daemon is pretended to run on.
const testNode = "node-a"

// TestAgainstAPIServer checks the base against a real kube-apiserver with
// RBAC authorization: a server-side dry-run of every object and of the
// pod the DaemonSet would create, then, with the objects applied, the
// ServiceAccount's permissions: every call the daemon makes succeeds, and
// anything else is forbidden. One API server serves all subtests, because
// starting one costs seconds.
func TestAgainstAPIServer(t *testing.T) {
	s := kubetest.Start(t, kubetest.Options{Authorization: "RBAC"})
	admin := s.Client(t)
	applier := newApplier(t, s)
	ctx := t.Context()

	// Namespaced objects cannot be dry-run into a namespace that does not
	// exist, so the Namespace is applied first, for real; the dry-run
	// below applies it again with the rest.
	objs := objects(t)
	ns := objs[slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Namespace" })]
	if _, err := applier.apply(ctx, ns, false); err != nil {
		t.Fatalf("apply Namespace: %v", err)
	}
	applyAll := func(t *testing.T) {
		t.Helper()
		for _, o := range objs {
			if _, err := applier.apply(ctx, o, false); err != nil {
				t.Fatalf("apply %s/%s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}

	t.Run("dry-run", func(t *testing.T) {
		for _, o := range objs {
			if _, err := applier.apply(ctx, o, true); err != nil {
				t.Errorf("server-side dry-run of %s/%s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})

	t.Run("daemonset-pod", func(t *testing.T) {
		// No controller manager runs, so nothing turns the DaemonSet into
		// pods: dry-run the pod it would create, through pod validation
		// and admission (Pod Security, priority class resolution, the
		// ServiceAccount's existence).
		applyAll(t)
		pod := podFromDaemonSet(t)
		got, err := admin.CoreV1().Pods(Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("dry-run create of the DaemonSet's pod: %v", err)
		}
		if got.Spec.Priority == nil || *got.Spec.Priority < 2000000000 {
			t.Errorf("priority %v: system-node-critical was not resolved", got.Spec.Priority)
		}

		// The same pod with Bidirectional propagation on bpffs is refused
		// (it needs a privileged container): what the manifest's comment
		// says, and proof that the dry-run validates for real.
		bidi := pod.DeepCopy()
		for i := range bidi.Spec.Containers[0].VolumeMounts {
			if bidi.Spec.Containers[0].VolumeMounts[i].Name == "bpffs" {
				bidi.Spec.Containers[0].VolumeMounts[i].MountPropagation = ptr.To(corev1.MountPropagationBidirectional)
			}
		}
		if _, err := admin.CoreV1().Pods(Namespace).Create(ctx, bidi, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsInvalid(err) {
			t.Errorf("pod with a Bidirectional bpffs mount: err %v, want Invalid", err)
		}

		// A namespace at Pod Security's baseline level refuses the pod:
		// the Namespace's privileged label is what admits it.
		baseline := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "zonelb-baseline", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}
		if _, err := admin.CoreV1().Namespaces().Create(ctx, baseline, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		elsewhere := pod.DeepCopy()
		elsewhere.Namespace = baseline.Name
		elsewhere.Spec.ServiceAccountName = "default"
		if _, err := admin.CoreV1().Pods(baseline.Name).Create(ctx, elsewhere, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
			t.Errorf("the pod in a baseline namespace: err %v, want Forbidden by Pod Security", err)
		}
	})

	t.Run("rbac", func(t *testing.T) {
		applyAll(t)
		sa, err := kubernetes.NewForConfig(s.ImpersonateServiceAccount(Namespace, ServiceAccountName))
		if err != nil {
			t.Fatal(err)
		}
		t.Run("daemon-calls-allowed", func(t *testing.T) { checkDaemonCalls(t, sa) })
		t.Run("discovery-runs", func(t *testing.T) { checkDiscoverySyncs(t, s, admin) })
		t.Run("other-calls-forbidden", func(t *testing.T) { checkForbiddenCalls(t, sa) })
		t.Run("access-matrix", func(t *testing.T) { checkAccessMatrix(t, admin) })
	})
}

// applier applies unstructured objects with server-side apply.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T, s *kubetest.Server) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc.Discovery()))
	return &applier{dyn: dyn, mapper: mapper}
}

func (a *applier) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	gvk := o.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
	} else if o.GetNamespace() != "" {
		return nil, fmt.Errorf("%s/%s is cluster-scoped on the server but has a namespace", gvk.Kind, o.GetName())
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return ri.Apply(ctx, o.GetName(), o, opts)
}

// podFromDaemonSet builds the pod the DaemonSet controller would create on
// testNode.
func podFromDaemonSet(t *testing.T) *corev1.Pod {
	t.Helper()
	ds := daemonSet(t)
	tmpl := ds.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: *tmpl.ObjectMeta.DeepCopy(),
		Spec:       tmpl.Spec,
	}
	pod.Name = DaemonSetName + "-test"
	pod.Namespace = Namespace
	pod.Spec.NodeName = testNode
	return pod
}

// kubeCall is one API call, named for failure messages.
type kubeCall struct {
	name string
	do   func(ctx context.Context) error
}

func listAndWatch(name string, list func(ctx context.Context) error, watch func(ctx context.Context) (interface{ Stop() }, error)) []kubeCall {
	return []kubeCall{
		{"list " + name, list},
		{"watch " + name, func(ctx context.Context) error {
			w, err := watch(ctx)
			if err != nil {
				return err
			}
			w.Stop()
			return nil
		}},
	}
}

// daemonCalls are the calls the daemon makes: its discovery's informers
// list and watch Services and Namespaces in every namespace, the
// EndpointSlices that belong to a Service (label selector), and the
// Nodes (their zones); its pod opt-out watches the opted-out pods of its
// own node (field and label selectors).
func daemonCalls(c kubernetes.Interface) []kubeCall {
	all := metav1.NamespaceAll
	slices := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName}
	pods := metav1.ListOptions{FieldSelector: "spec.nodeName=" + testNode, LabelSelector: "zonelb.io/redirect=false"}
	var calls []kubeCall
	calls = append(calls, listAndWatch("own node's opted-out pods",
		func(ctx context.Context) error { _, err := c.CoreV1().Pods(all).List(ctx, pods); return err },
		func(ctx context.Context) (interface{ Stop() }, error) { return c.CoreV1().Pods(all).Watch(ctx, pods) })...)
	calls = append(calls, listAndWatch("services",
		func(ctx context.Context) error {
			_, err := c.CoreV1().Services(all).List(ctx, metav1.ListOptions{})
			return err
		},
		func(ctx context.Context) (interface{ Stop() }, error) {
			return c.CoreV1().Services(all).Watch(ctx, metav1.ListOptions{})
		})...)
	calls = append(calls, listAndWatch("namespaces",
		func(ctx context.Context) error {
			_, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		},
		func(ctx context.Context) (interface{ Stop() }, error) {
			return c.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
		})...)
	calls = append(calls, listAndWatch("endpointslices",
		func(ctx context.Context) error {
			_, err := c.DiscoveryV1().EndpointSlices(all).List(ctx, slices)
			return err
		},
		func(ctx context.Context) (interface{ Stop() }, error) {
			return c.DiscoveryV1().EndpointSlices(all).Watch(ctx, slices)
		})...)
	calls = append(calls, listAndWatch("nodes",
		func(ctx context.Context) error {
			_, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		},
		func(ctx context.Context) (interface{ Stop() }, error) {
			return c.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
		})...)
	return calls
}

func checkDaemonCalls(t *testing.T, sa kubernetes.Interface) {
	for _, call := range daemonCalls(sa) {
		if err := call.do(t.Context()); err != nil {
			t.Errorf("%s as the ServiceAccount: %v", call.name, err)
		}
	}
}

// checkDiscoverySyncs runs the daemon's own discovery as the ServiceAccount
// until it has seen a change to each kind it watches, and checks that the
// API server refused none of its requests. (A forbidden watch alone would
// not stop it: client-go relists after a failed watch, so changes still
// arrive, a second late. Only the refusals tell.)
func checkDiscoverySyncs(t *testing.T, s *kubetest.Server, admin kubernetes.Interface) {
	ctx := t.Context()
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: testNode, Labels: map[string]string{corev1.LabelTopologyZone: "zone-a"}}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Services("apps").Create(ctx, grpcService("greeter"), metav1.CreateOptions{})
		return err
	})
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "greeter-1", Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(int32(9000)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		// Addresses are data only: nothing is sent to them.
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Zone: ptr.To("zone-a"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	mustCreate(t, func() error {
		_, err := admin.DiscoveryV1().EndpointSlices("apps").Create(ctx, slice, metav1.CreateOptions{})
		return err
	})

	refusals := &refusalRecorder{}
	cfg := s.ImpersonateServiceAccount(Namespace, ServiceAccountName)
	cfg.Wrap(refusals.wrap)
	sa, err := kubeapi.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := discovery.NewKubeSource(discovery.KubeConfig{
		Client:   sa,
		NodeName: testNode,
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	snapshots := make(chan *discovery.Snapshot, 64)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(runCtx, func(s *discovery.Snapshot) {
			select {
			case snapshots <- s:
			default: // the test only needs the latest ones; never block discovery
			}
		})
	}()
	greeter := discovery.ServiceName{Namespace: "apps", Name: "greeter"}
	other := discovery.ServiceName{Namespace: "apps", Name: "other"}
	waitFor := func(what string, ok func(*discovery.Snapshot) bool) {
		t.Helper()
		for {
			select {
			case s := <-snapshots:
				if ok(s) {
					return
				}
			case err := <-done:
				t.Fatalf("discovery as the ServiceAccount stopped before %s: %v", what, err)
			}
		}
	}
	waitFor("the first snapshot (zone-a, greeter)", func(s *discovery.Snapshot) bool {
		return s.Zone == "zone-a" && s.Services[greeter] != nil
	})

	// A change to each watched kind: the Node, an EndpointSlice, a new
	// Service, then the Namespace's opt-out label.
	mustUpdate(t, func() error {
		_, err := admin.CoreV1().Nodes().Patch(ctx, testNode, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"topology.kubernetes.io/zone":"zone-b"}}}`), metav1.PatchOptions{})
		return err
	})
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Zone: ptr.To("zone-b"),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	mustUpdate(t, func() error {
		_, err := admin.DiscoveryV1().EndpointSlices("apps").Update(ctx, slice, metav1.UpdateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Services("apps").Create(ctx, grpcService("other"), metav1.CreateOptions{})
		return err
	})
	waitFor("the Node, EndpointSlice and Service changes", func(s *discovery.Snapshot) bool {
		g := s.Services[greeter]
		return s.Zone == "zone-b" && g != nil && len(g.Ports) == 1 && len(g.Ports[0].Endpoints) == 2 && s.Services[other] != nil
	})
	mustUpdate(t, func() error {
		_, err := admin.CoreV1().Namespaces().Patch(ctx, "apps", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"zonelb.io/enabled":"false"}}}`), metav1.PatchOptions{})
		return err
	})
	waitFor("the Namespace's opt-out", func(s *discovery.Snapshot) bool { return len(s.Services) == 0 })
	cancel()
	<-done

	if got := refusals.list(); len(got) > 0 {
		t.Errorf("the API server refused discovery's requests as the ServiceAccount: %v", got)
	}
}

func grpcService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc")}}},
	}
}

// refusalRecorder records the requests an API server answered with 401 or
// 403.
type refusalRecorder struct {
	mu      sync.Mutex
	refused []string
}

func (r *refusalRecorder) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err == nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized) {
			r.mu.Lock()
			r.refused = append(r.refused, fmt.Sprintf("%s %s: %d", req.Method, req.URL.RequestURI(), resp.StatusCode))
			r.mu.Unlock()
		}
		return resp, err
	})
}

func (r *refusalRecorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.refused)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func mustUpdate(t *testing.T, update func() error) {
	t.Helper()
	if err := update(); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// checkForbiddenCalls tries what a compromised daemon would want, and what
// a sloppy ClusterRole would allow: each must be Forbidden.
func checkForbiddenCalls(t *testing.T, sa kubernetes.Interface) {
	ctx := t.Context()
	all := metav1.NamespaceAll
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "evil", Namespace: "apps"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	calls := []kubeCall{
		{"list secrets", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(all).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a secret", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(Namespace).Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"list configmaps", func(ctx context.Context) error {
			_, err := sa.CoreV1().ConfigMaps(all).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a pod (informers never get)", func(ctx context.Context) error {
			_, err := sa.CoreV1().Pods("apps").Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"get a service (informers never get)", func(ctx context.Context) error {
			_, err := sa.CoreV1().Services("apps").Get(ctx, "greeter", metav1.GetOptions{})
			return err
		}},
		{"create a service", func(ctx context.Context) error {
			_, err := sa.CoreV1().Services("apps").Create(ctx, svc, metav1.CreateOptions{})
			return err
		}},
		{"delete a service", func(ctx context.Context) error {
			return sa.CoreV1().Services("apps").Delete(ctx, "greeter", metav1.DeleteOptions{})
		}},
		{"patch a node", func(ctx context.Context) error {
			_, err := sa.CoreV1().Nodes().Patch(ctx, testNode, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"delete endpointslices", func(ctx context.Context) error {
			return sa.DiscoveryV1().EndpointSlices("apps").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		}},
		{"create events", func(ctx context.Context) error {
			_, err := sa.CoreV1().Events(Namespace).Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e"},
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: Namespace}}, metav1.CreateOptions{})
			return err
		}},
		{"list daemonsets", func(ctx context.Context) error {
			_, err := sa.AppsV1().DaemonSets(all).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create a service account token", func(ctx context.Context) error {
			_, err := sa.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, ServiceAccountName, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}},
	}
	for _, call := range calls {
		if err := call.do(ctx); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the ServiceAccount: err %v, want Forbidden", call.name, err)
		}
	}
}

// accessCheck is one (verb, resource) pair and whether the ServiceAccount
// must be allowed it.
type accessCheck struct {
	verb, group, resource, subresource, namespace string
	allowed                                       bool
}

// checkAccessMatrix asks the API server (SubjectAccessReview) about every
// verb on the resources the daemon reads and on the sensitive ones it must
// not touch. This is the "no more" half of least privilege, exhaustively
// for these resources: a verb added to the ClusterRole by mistake fails
// here even if no call above exercises it.
func checkAccessMatrix(t *testing.T, admin kubernetes.Interface) {
	ctx := t.Context()
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	granted := map[[2]string][]string{
		{"", "services"}:                       {"list", "watch"},
		{"", "namespaces"}:                     {"list", "watch"},
		{"", "nodes"}:                          {"list", "watch"},
		{"discovery.k8s.io", "endpointslices"}: {"list", "watch"},
		{"", "pods"}:                           {"list", "watch"},
	}
	resources := [][2]string{
		{"", "services"}, {"", "namespaces"}, {"", "nodes"}, {"discovery.k8s.io", "endpointslices"},
		{"", "pods"}, {"", "secrets"}, {"", "configmaps"}, {"", "endpoints"}, {"", "events"},
		{"", "serviceaccounts"}, {"", "persistentvolumes"}, {"apps", "daemonsets"}, {"apps", "deployments"},
		{"coordination.k8s.io", "leases"}, {"rbac.authorization.k8s.io", "clusterroles"},
		{"rbac.authorization.k8s.io", "clusterrolebindings"}, {"admissionregistration.k8s.io", "validatingwebhookconfigurations"},
	}
	var checks []accessCheck
	for _, r := range resources {
		for _, v := range verbs {
			for _, ns := range []string{"", "apps"} {
				checks = append(checks, accessCheck{verb: v, group: r[0], resource: r[1], namespace: ns, allowed: slices.Contains(granted[r], v)})
			}
		}
	}
	for _, sub := range []struct{ resource, subresource string }{
		{"services", "status"}, {"nodes", "status"}, {"nodes", "proxy"}, {"pods", "exec"}, {"serviceaccounts", "token"},
	} {
		for _, v := range []string{"get", "create", "update", "patch"} {
			checks = append(checks, accessCheck{verb: v, resource: sub.resource, subresource: sub.subresource, namespace: "apps"})
		}
	}
	// Escalation paths: impersonation and binding roles.
	checks = append(checks,
		accessCheck{verb: "impersonate", resource: "serviceaccounts", namespace: "apps"},
		accessCheck{verb: "impersonate", resource: "users"},
		accessCheck{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
		accessCheck{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
	)

	user := "system:serviceaccount:" + Namespace + ":" + ServiceAccountName
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"}
	for _, c := range checks {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.subresource, Namespace: c.namespace,
			},
		}}
		got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %+v: %v", c, err)
		}
		if got.Status.Allowed != c.allowed {
			t.Errorf("%s %s/%s%s in %q: allowed %v, want %v (%s)", c.verb, c.group, c.resource, slashed(c.subresource), c.namespace,
				got.Status.Allowed, c.allowed, got.Status.Reason)
		}
	}
}

func slashed(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}
