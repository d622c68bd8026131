// Package kubeapi is the daemon's Kubernetes client: REST clients for the
// two API groups the daemon reads (core/v1 and discovery/v1) and shared
// informers over them, built from client-go's rest and tools/cache.
//
// It exists for the binary's memory. client-go's clientset and informer
// factory (k8s.io/client-go/kubernetes, .../informers) register every API
// group of Kubernetes at start-up and link every group's typed client,
// informer and lister: about 10 MB of resident code and data in every
// zonelb process, the node proxy included, for five resources. This
// package's scheme holds the two groups it serves, nothing else.
//
// It knows the resources the daemon watches and how to list and watch
// them; it knows nothing of what the daemon does with them.
package kubeapi

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// Client lists and watches the resources the daemon reads. Build it with
// [NewForConfig]; it is safe for concurrent use.
type Client struct {
	core      rest.Interface // /api/v1
	discovery rest.Interface // /apis/discovery.k8s.io/v1
}

// NewForConfig builds a Client from c (a kubeconfig's or the in-cluster
// account's), sharing one HTTP transport between the API groups, as
// client-go's clientset does. c is not modified.
func NewForConfig(c *rest.Config) (*Client, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("kubeapi: register API types: %w", err)
		}
	}
	codecs := rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	base := rest.CopyConfig(c)
	if base.UserAgent == "" {
		base.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	// One rate limit for both groups, as the clientset has.
	if base.RateLimiter == nil && base.QPS > 0 {
		if base.Burst <= 0 {
			return nil, fmt.Errorf("kubeapi: QPS %v set without a burst", base.QPS)
		}
		base.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(base.QPS, base.Burst)
	}
	httpClient, err := rest.HTTPClientFor(base)
	if err != nil {
		return nil, fmt.Errorf("kubeapi: HTTP client: %w", err)
	}
	groupClient := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		gc := rest.CopyConfig(base)
		gc.GroupVersion = &gv
		gc.APIPath = apiPath
		gc.NegotiatedSerializer = codecs
		rc, err := rest.RESTClientForConfigAndClient(gc, httpClient)
		if err != nil {
			return nil, fmt.Errorf("kubeapi: REST client for %v: %w", gv, err)
		}
		return rc, nil
	}
	core, err := groupClient(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	disc, err := groupClient(discoveryv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &Client{core: core, discovery: disc}, nil
}

// TweakListOptions narrows what an informer lists and watches (label and
// field selectors); nil for everything.
type TweakListOptions func(*metav1.ListOptions)

// Services is an informer of the cluster's Services.
func (c *Client) Services(tweak TweakListOptions) cache.SharedIndexInformer {
	return newInformer(c.core, "services", &corev1.Service{}, tweak)
}

// Namespaces is an informer of the cluster's Namespaces.
func (c *Client) Namespaces(tweak TweakListOptions) cache.SharedIndexInformer {
	return newInformer(c.core, "namespaces", &corev1.Namespace{}, tweak)
}

// Nodes is an informer of the cluster's Nodes.
func (c *Client) Nodes(tweak TweakListOptions) cache.SharedIndexInformer {
	return newInformer(c.core, "nodes", &corev1.Node{}, tweak)
}

// Pods is an informer of the cluster's Pods.
func (c *Client) Pods(tweak TweakListOptions) cache.SharedIndexInformer {
	return newInformer(c.core, "pods", &corev1.Pod{}, tweak)
}

// EndpointSlices is an informer of the cluster's EndpointSlices.
func (c *Client) EndpointSlices(tweak TweakListOptions) cache.SharedIndexInformer {
	return newInformer(c.discovery, "endpointslices", &discoveryv1.EndpointSlice{}, tweak)
}

// newInformer is what client-go's informer factory builds for a resource,
// with no resync and the namespace index every generated informer has: a
// list-watch over all namespaces, narrowed by tweak.
func newInformer(rc rest.Interface, resource string, obj runtime.Object, tweak TweakListOptions) cache.SharedIndexInformer {
	if tweak == nil {
		tweak = func(*metav1.ListOptions) {}
	}
	lw := cache.NewFilteredListWatchFromClient(rc, resource, metav1.NamespaceAll, tweak)
	return cache.NewSharedIndexInformerWithOptions(lw, obj, cache.SharedIndexInformerOptions{
		ResyncPeriod: 0,
		Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
	})
}

// Start runs the informers until ctx ends. The returned wait blocks until
// all of them have stopped (call it after ctx ends).
func Start(ctx context.Context, informers ...cache.SharedIndexInformer) (wait func()) {
	var wg sync.WaitGroup
	for _, inf := range informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	return wg.Wait
}
