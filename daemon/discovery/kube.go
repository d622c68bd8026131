package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/zonelb/zonelb/daemon/kubeapi"
)

// DefaultDebounce is how long the Kubernetes source gathers changes after
// the first one before it publishes a snapshot.
const DefaultDebounce = 100 * time.Millisecond

// KubeConfig configures a [KubeSource]. Optional fields mean their default
// when zero.
type KubeConfig struct {
	// Client talks to the API server. Required.
	Client *kubeapi.Client
	// NodeName is the name of the Node this daemon runs on (NODE_NAME
	// from the downward API): its zone label is the local zone. Required.
	NodeName string
	// Logger receives watch errors and warnings about objects zonelb
	// cannot use. Default: discard.
	Logger *slog.Logger
	// Debounce is how long changes are gathered, counted from the first
	// change seen, before a snapshot is built and published: a burst of
	// events costs one snapshot, and no change waits longer than this.
	// Default DefaultDebounce.
	Debounce time.Duration
	// Clock times the debounce. Default: the real clock.
	Clock clock.Clock
}

// KubeSource watches the Kubernetes API with shared informers (Services,
// EndpointSlices, Namespaces, and the own Node by name) and publishes a
// fresh [Snapshot] whenever what zonelb takes over changes.
//
// The informers relist and rewatch by themselves after watch errors, watch
// expiry and API server restarts; meanwhile the last published snapshot
// stays valid, so traffic keeps flowing on what was last known.
type KubeSource struct {
	cfg KubeConfig
	log *slog.Logger
}

// NewKubeSource checks cfg and fills in defaults.
func NewKubeSource(cfg KubeConfig) (*KubeSource, error) {
	if cfg.Client == nil {
		return nil, errors.New("discovery: KubeConfig.Client is required")
	}
	if cfg.NodeName == "" {
		return nil, errors.New("discovery: KubeConfig.NodeName is required (set NODE_NAME from the downward API)")
	}
	if cfg.Debounce < 0 {
		return nil, fmt.Errorf("discovery: KubeConfig.Debounce %v is negative", cfg.Debounce)
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KubeSource{cfg: cfg, log: log.With("source", "kubernetes")}, nil
}

// serviceIndex indexes EndpointSlices by the Service they belong to.
const serviceIndex = "zonelb-service"

// Run starts the informers, waits for their caches to fill, publishes the
// first complete snapshot, then publishes a new one after each change
// (debounced), until ctx ends. publish is called from one goroutine, one
// call at a time; a slow publish delays the next snapshot, and changes that
// arrive meanwhile are folded into it. Run returns ctx's error when ctx
// ends, or an error if the caches could not be filled.
func (s *KubeSource) Run(ctx context.Context, publish func(*Snapshot)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	w := &watchState{signal: make(chan struct{}, 1)}
	infs, b, err := s.newInformers(w)
	if err != nil {
		return err
	}
	wait := kubeapi.Start(ctx, infs...)
	// Cancel first, then wait for the informers' goroutines.
	defer wait()
	defer cancel()
	synced := make([]cache.InformerSynced, len(infs))
	for i, inf := range infs {
		synced[i] = inf.HasSynced
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("discovery: informer caches did not sync")
	}

	// Everything that happened before the sync is in the first snapshot.
	w.take()
	current := b.full()
	s.log.Info("discovery synced", "services", len(current.Services), "frontends", len(current.Frontends), "zone", current.Zone)
	publish(current)

	debounceLoop(ctx, s.cfg.Clock, s.cfg.Debounce, w.signal, func() {
		next := b.apply(current, w.take())
		if sameSnapshot(current, next) {
			return
		}
		current = next
		publish(current)
	})
	return ctx.Err()
}

// newInformers builds the informers, with w's handlers, and the builder
// that reads their caches. Slices that belong to no Service are not worth
// caching, and of the Nodes only our own is.
func (s *KubeSource) newInformers(w *watchState) ([]cache.SharedIndexInformer, *kubeBuilder, error) {
	client := s.cfg.Client
	svcInformer := client.Services(nil)
	nsInformer := client.Namespaces(nil)
	sliceInformer := client.EndpointSlices(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName })
	// Every Node, not only ours: their zones are the clients' spread
	// (Snapshot.ZoneNodes). slimNode keeps a few fields of each.
	nodeInformer := client.Nodes(nil)

	handlers := []struct {
		name     string
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{"services", svcInformer, w.serviceHandler()},
		{"endpointslices", sliceInformer, w.sliceHandler()},
		{"namespaces", nsInformer, w.namespaceHandler()},
		{"nodes", nodeInformer, w.nodeHandler()},
	}
	if err := sliceInformer.AddIndexers(cache.Indexers{serviceIndex: sliceServiceIndex}); err != nil {
		return nil, nil, fmt.Errorf("index endpointslices by service: %w", err)
	}
	infs := make([]cache.SharedIndexInformer, 0, len(handlers))
	for _, h := range handlers {
		transform := stripManagedFields
		if h.informer == nodeInformer {
			transform = slimNode
		}
		if err := h.informer.SetTransform(transform); err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", h.name, err)
		}
		if _, err := h.informer.AddEventHandler(h.handler); err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", h.name, err)
		}
		if err := h.informer.SetWatchErrorHandlerWithContext(s.watchErrorHandler(h.name)); err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", h.name, err)
		}
		infs = append(infs, h.informer)
	}
	b := &kubeBuilder{
		node:     s.cfg.NodeName,
		services: corelisters.NewServiceLister(svcInformer.GetIndexer()),
		ns:       corelisters.NewNamespaceLister(nsInformer.GetIndexer()),
		nodes:    corelisters.NewNodeLister(nodeInformer.GetIndexer()),
		slices:   sliceInformer.GetIndexer(),
		log:      s.log,
	}
	return infs, b, nil
}

func (s *KubeSource) watchErrorHandler(resource string) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		switch {
		case errors.Is(err, io.EOF):
			// The server closed the watch normally; the reflector rewatches.
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			s.log.Debug("watch expired; relisting", "resource", resource, "err", err)
		default:
			s.log.Warn("watch failed; retrying", "resource", resource, "err", err)
		}
	}
}

// debounceLoop calls rebuild once per burst of signals: Debounce after the
// first signal of the burst (not the last, so that a steady stream of
// changes cannot postpone a snapshot forever). Signals arriving while
// rebuild runs start the next burst. rebuild must take every change
// signalled before it is called.
func debounceLoop(ctx context.Context, clk clock.Clock, debounce time.Duration, signal <-chan struct{}, rebuild func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-signal:
		}
		t := clk.NewTimer(debounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		// Signals sent during the window are for changes that rebuild
		// takes in now; a change after this drain signals anew.
		select {
		case <-signal:
		default:
		}
		rebuild()
	}
}

// stripManagedFields drops managedFields from cached objects: zonelb never
// reads them, and on large clusters they are much of an object's size.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// slimNode keeps of a Node what discovery reads: its name, its zone
// labels, whether it is cordoned and whether it is Ready. Every Node of
// the cluster is cached (Snapshot.ZoneNodes), and most of a Node's size is
// status discovery never reads (images, addresses, capacity).
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return stripManagedFields(obj)
	}
	out := &corev1.Node{}
	out.Name, out.UID, out.ResourceVersion = n.Name, n.UID, n.ResourceVersion
	for _, key := range zoneLabels {
		if z, ok := n.Labels[key]; ok {
			if out.Labels == nil {
				out.Labels = make(map[string]string, len(zoneLabels))
			}
			out.Labels[key] = z
		}
	}
	out.Spec.Unschedulable = n.Spec.Unschedulable
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

// sliceServiceIndex keys an EndpointSlice by namespace/service.
func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	svc := es.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + svc}, nil
}

// dirtySet is what changed since the last snapshot.
type dirtySet struct {
	services   map[ServiceName]struct{}
	namespaces map[string]struct{}
	node       bool
}

// watchState gathers changes from the informers' handlers (which run on
// the informers' goroutines) for the snapshot loop.
type watchState struct {
	signal chan struct{} // capacity 1: "something is dirty"

	mu    sync.Mutex
	dirty dirtySet
}

func (w *watchState) mark(f func(d *dirtySet)) {
	w.mu.Lock()
	if w.dirty.services == nil {
		w.dirty.services = make(map[ServiceName]struct{})
		w.dirty.namespaces = make(map[string]struct{})
	}
	f(&w.dirty)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default: // already signalled
	}
}

// take returns the changes gathered so far and starts a new set.
func (w *watchState) take() dirtySet {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.dirty
	w.dirty = dirtySet{}
	return d
}

// unwrap returns the object of a delete event, whose final state may be
// unknown when the watch missed the delete and a relist found it gone.
func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// unchanged reports whether an update event carries no change (as after a
// relist): the same resourceVersion.
func unchanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	return ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion()
}

func (w *watchState) serviceHandler() cache.ResourceEventHandler {
	markObj := func(obj any) {
		if svc, ok := unwrap(obj).(*corev1.Service); ok {
			w.mark(func(d *dirtySet) { d.services[ServiceName{svc.Namespace, svc.Name}] = struct{}{} })
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { markObj(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			if !unchanged(oldObj, newObj) {
				markObj(newObj)
			}
		},
		DeleteFunc: markObj,
	}
}

func (w *watchState) sliceHandler() cache.ResourceEventHandler {
	markObj := func(obj any) {
		es, ok := unwrap(obj).(*discoveryv1.EndpointSlice)
		if !ok || es.Labels[discoveryv1.LabelServiceName] == "" {
			return
		}
		w.mark(func(d *dirtySet) {
			d.services[ServiceName{es.Namespace, es.Labels[discoveryv1.LabelServiceName]}] = struct{}{}
		})
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { markObj(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			if unchanged(oldObj, newObj) {
				return
			}
			markObj(oldObj) // the slice may have moved to another Service
			markObj(newObj)
		},
		DeleteFunc: markObj,
	}
}

func (w *watchState) namespaceHandler() cache.ResourceEventHandler {
	markObj := func(obj any) {
		if ns, ok := unwrap(obj).(*corev1.Namespace); ok {
			w.mark(func(d *dirtySet) { d.namespaces[ns.Name] = struct{}{} })
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { markObj(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Namespace)
			n, ok2 := newObj.(*corev1.Namespace)
			// Only the opt switch matters, and namespaces change often
			// (status, other labels).
			if ok1 && ok2 && o.Labels[EnabledKey] == n.Labels[EnabledKey] {
				return
			}
			markObj(newObj)
		},
		DeleteFunc: markObj,
	}
}

func (w *watchState) nodeHandler() cache.ResourceEventHandler {
	// Node objects change often (status); only the zone, and whether the
	// node counts in ZoneNodes, matter.
	markNode := func() { w.mark(func(d *dirtySet) { d.node = true }) }
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { markNode() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 && nodeZone(o) == nodeZone(n) && nodeCounts(o) == nodeCounts(n) {
				return
			}
			markNode()
		},
		DeleteFunc: func(any) { markNode() },
	}
}

// kubeBuilder turns the informers' caches into snapshots.
type kubeBuilder struct {
	node     string
	services corelisters.ServiceLister
	ns       corelisters.NamespaceLister
	nodes    corelisters.NodeLister
	slices   cache.Indexer
	log      *slog.Logger
}

// full builds a snapshot from scratch.
func (b *kubeBuilder) full() *Snapshot {
	all, err := b.services.List(labels.Everything())
	if err != nil { // listers read a local cache and do not fail
		b.log.Error("list services from cache", "err", err)
	}
	services := make(map[ServiceName]*Service)
	for _, svc := range all {
		if m := b.convert(svc); m != nil {
			services[m.Name] = m
		}
	}
	return &Snapshot{Node: b.node, Zone: b.zone(), ZoneNodes: b.zoneNodes(), Services: services, Frontends: frontendsOf(services)}
}

// apply builds the snapshot that follows prev after the changes in d,
// reconverting only the Services that d touches.
func (b *kubeBuilder) apply(prev *Snapshot, d dirtySet) *Snapshot {
	next := &Snapshot{Node: b.node, Zone: prev.Zone, ZoneNodes: prev.ZoneNodes, Services: maps.Clone(prev.Services)}
	if d.node {
		next.Zone = b.zone()
		next.ZoneNodes = b.zoneNodes()
	}
	names := maps.Clone(d.services)
	if names == nil {
		names = make(map[ServiceName]struct{})
	}
	for ns := range d.namespaces {
		// Every Service of the namespace: those in the cache now, and
		// those published before (they may be gone since).
		for name := range prev.Services {
			if name.Namespace == ns {
				names[name] = struct{}{}
			}
		}
		list, err := b.services.Services(ns).List(labels.Everything())
		if err != nil {
			b.log.Error("list services from cache", "namespace", ns, "err", err)
		}
		for _, svc := range list {
			names[ServiceName{svc.Namespace, svc.Name}] = struct{}{}
		}
	}
	for name := range names {
		svc, err := b.getService(name)
		if err != nil {
			b.log.Error("get service from cache", "service", name, "err", err)
			continue
		}
		var m *Service
		if svc != nil {
			m = b.convert(svc)
		}
		if m == nil {
			delete(next.Services, name)
			continue
		}
		if old := prev.Services[name]; equalService(old, m) {
			m = old
		}
		next.Services[name] = m
	}
	next.Frontends = frontendsOf(next.Services)
	return next
}

func (b *kubeBuilder) zone() string {
	node, err := b.nodes.Get(b.node)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			b.log.Error("get node from cache", "node", b.node, "err", err)
		}
		return ""
	}
	return nodeZone(node)
}

// zoneNodes counts the Nodes in the cache by zone (Snapshot.ZoneNodes).
func (b *kubeBuilder) zoneNodes() map[string]int {
	nodes, err := b.nodes.List(labels.Everything())
	if err != nil { // listers read a local cache and do not fail
		b.log.Error("list nodes from cache", "err", err)
	}
	counts := make(map[string]int)
	for _, n := range nodes {
		if z := nodeZone(n); z != "" && nodeCounts(n) {
			counts[z]++
		}
	}
	return counts
}

func (b *kubeBuilder) convert(svc *corev1.Service) *Service {
	ns, err := b.ns.Get(svc.Namespace)
	if err != nil {
		ns = nil // not in the cache (yet): no namespace switch
	}
	objs, err := b.slices.ByIndex(serviceIndex, svc.Namespace+"/"+svc.Name)
	if err != nil {
		b.log.Error("endpointslices from cache", "service", svc.Namespace+"/"+svc.Name, "err", err)
	}
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, es)
		}
	}
	m, warnings := convertService(svc, ns, slices)
	for _, w := range warnings {
		b.log.Warn(w)
	}
	return m
}

func (b *kubeBuilder) getService(name ServiceName) (*corev1.Service, error) {
	svc, err := b.services.Services(name.Namespace).Get(name.Name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return svc, err
}

// sameSnapshot reports whether next says nothing new after prev, so that
// it need not be published.
func sameSnapshot(prev, next *Snapshot) bool {
	if prev.Zone != next.Zone || !maps.Equal(prev.ZoneNodes, next.ZoneNodes) || len(prev.Services) != len(next.Services) {
		return false
	}
	for name, svc := range next.Services {
		if prev.Services[name] != svc {
			return false
		}
	}
	return true
}
