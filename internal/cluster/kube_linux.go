package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/netlab"
)

// RelayAddr is where a node's namespace reaches the API server.
const RelayAddr = "127.0.0.1:6443"

// kubeEnv is the API server and what the cluster wrote to it.
type kubeEnv struct {
	server  *kubetest.Server
	client  kubernetes.Interface
	version string
	log     *slog.Logger
	// kubeconfig is the daemon's kubeconfig (server: the relay).
	kubeconfig string

	mu     sync.Mutex
	relays map[string]*relay // by node
}

// startKube starts etcd and kube-apiserver (package kubetest), and writes
// the Nodes, the Service and its EndpointSlice.
func startKube(ctx context.Context, c *Cluster, binDir string) (*kubeEnv, error) {
	shim := newTBShim(c.log, c.workDir)
	c.addCloser(shim.close)
	server, err := shim.run(func(tb testing.TB) *kubetest.Server {
		return kubetest.Start(tb, kubetest.Options{})
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: start kube-apiserver from %s: %w", binDir, err)
	}
	client, err := kubernetes.NewForConfig(server.Config)
	if err != nil {
		return nil, fmt.Errorf("cluster: kubernetes client: %w", err)
	}
	k := &kubeEnv{server: server, client: client, log: c.log, relays: map[string]*relay{}}
	if v, err := client.Discovery().ServerVersion(); err == nil {
		k.version = v.GitVersion
	}
	c.Lab.Defer(k.closeRelays)

	for i, n := range c.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   n.Name,
			Labels: map[string]string{corev1.LabelTopologyZone: Zones[i], corev1.LabelHostname: n.Name},
		}}
		if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("cluster: create Node %s: %w", n.Name, err)
		}
	}
	appProto := "grpc"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ServiceNamespace, Name: ServiceName},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ServiceVIP.Addr().String(),
			ClusterIPs: []string{ServiceVIP.Addr().String()},
			Ports: []corev1.ServicePort{{
				Name: ServicePortName, Protocol: corev1.ProtocolTCP, AppProtocol: &appProto,
				Port: int32(ServiceVIP.Port()), TargetPort: intstr.FromInt32(BackendPort),
			}},
		},
	}
	if _, err := client.CoreV1().Services(ServiceNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("cluster: create Service %s: %w", ServiceName, err)
	}
	if err := k.applyEndpoints(ctx, c); err != nil {
		return nil, err
	}
	if k.kubeconfig, err = writeKubeconfig(c.workDir, server, RelayAddr); err != nil {
		return nil, err
	}
	return k, nil
}

const sliceName = ServiceName + "-e2e"

// applyEndpoints writes the EndpointSlice for the backends' current
// readiness, as the endpoint slice controller would.
func (k *kubeEnv) applyEndpoints(ctx context.Context, c *Cluster) error {
	port, proto, appProto := int32(BackendPort), corev1.ProtocolTCP, "grpc"
	name := ServicePortName
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ServiceNamespace, Name: sliceName,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: ServiceName,
				discoveryv1.LabelManagedBy:   "zonelb-e2e",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto, AppProtocol: &appProto}},
	}
	for _, b := range c.Backends {
		ready := b.isReady()
		terminating := !ready
		zone, node := b.Zone, b.Pod.Node.Name
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{b.Addr.Addr().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: &terminating},
			NodeName:   &node,
			Zone:       &zone,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ServiceNamespace, Name: b.Pod.Name},
		})
	}
	slices := k.client.DiscoveryV1().EndpointSlices(ServiceNamespace)
	cur, err := slices.Get(ctx, sliceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
	case err == nil:
		slice.ResourceVersion = cur.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("cluster: write EndpointSlice %s: %w", sliceName, err)
	}
	return nil
}

// relayInto makes the API server reachable at RelayAddr inside node's
// namespace (see the package documentation).
func (k *kubeEnv) relayInto(node *netlab.Node) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.relays[node.Name] != nil {
		return nil
	}
	u, err := url.Parse(k.server.Config.Host)
	if err != nil {
		return fmt.Errorf("cluster: API server address %q: %w", k.server.Config.Host, err)
	}
	l, err := node.Listen("tcp4", RelayAddr)
	if err != nil {
		return fmt.Errorf("cluster: API server relay: %w", err)
	}
	r := &relay{l: l, target: u.Host, log: k.log.With("relay", node.Name), conns: map[net.Conn]bool{}}
	k.relays[node.Name] = r
	go r.serve()
	return nil
}

func (k *kubeEnv) closeRelays() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, r := range k.relays {
		r.close()
		delete(k.relays, name)
	}
	return nil
}

// relay joins connections accepted inside a node's namespace to the API
// server on the host's loopback.
type relay struct {
	l      net.Listener
	target string // host:port on the host's loopback
	log    *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (r *relay) serve() {
	for {
		in, err := r.l.Accept()
		if err != nil {
			return
		}
		go r.pipe(in)
	}
}

// track registers the two legs of a relayed connection, so that close
// can cut them; false when the relay is closing.
func (r *relay) track(in, out net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[in], r.conns[out] = true, true
	return true
}

func (r *relay) untrack(in, out net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, in)
	delete(r.conns, out)
}

func (r *relay) pipe(in net.Conn) {
	defer in.Close()
	// The target is checked to be loopback: the relay must never become
	// a way out of the lab.
	host, _, _ := net.SplitHostPort(r.target)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		r.log.Error("refusing to relay to a non-loopback address", "target", r.target)
		return
	}
	out, err := net.Dial("tcp", r.target)
	if err != nil {
		r.log.Warn("API server relay: dial", "err", err)
		return
	}
	defer out.Close()
	if !r.track(in, out) {
		return
	}
	defer r.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(in, out); in.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.l.Close()
}

// writeKubeconfig writes a kubeconfig for the API server as reached at
// addr, with the admin token and the serving CA.
func writeKubeconfig(dir string, s *kubetest.Server, addr string) (string, error) {
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://%s
    certificate-authority: %s
users:
- name: e2e-admin
  user:
    token: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e-admin
current-context: e2e
`, addr, s.Config.TLSClientConfig.CAFile, s.Config.BearerToken)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		return "", fmt.Errorf("cluster: write kubeconfig: %w", err)
	}
	return path, nil
}

// tbShim lets code that takes a testing.TB (package kubetest) run outside
// a test, in the demo and the benchmark: Fatalf and Skip end the calling
// goroutine as they do in a test (run reports them as an error), Cleanup
// functions run at close. Only the methods kubetest and testenv call are
// implemented; the embedded nil TB makes any other call panic loudly.
type tbShim struct {
	testing.TB
	log *slog.Logger
	dir string

	mu       sync.Mutex
	failed   bool
	fatal    string
	cleanups []func()
}

func newTBShim(log *slog.Logger, dir string) *tbShim { return &tbShim{log: log, dir: dir} }

// run calls fn on a goroutine of its own (Fatalf ends it) and returns its
// result, or the fatal message as an error.
func (s *tbShim) run(fn func(testing.TB) *kubetest.Server) (*kubetest.Server, error) {
	done := make(chan *kubetest.Server, 1)
	go func() {
		defer close(done)
		done <- fn(s)
	}()
	if r, ok := <-done; ok && r != nil {
		return r, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return nil, errors.New(s.fatal)
}

func (s *tbShim) Helper()      {}
func (s *tbShim) Name() string { return "zonelb-e2e" }

func (s *tbShim) Logf(format string, args ...any) {
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		s.log.Info(line, "from", "kubetest")
	}
}

func (s *tbShim) Errorf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.log.Error(fmt.Sprintf(format, args...), "from", "kubetest")
}

func (s *tbShim) Fatalf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.fatal = fmt.Sprintf(format, args...)
	s.mu.Unlock()
	runtime.Goexit()
}

func (s *tbShim) Skip(args ...any) {
	s.mu.Lock()
	s.fatal = fmt.Sprint(args...)
	s.mu.Unlock()
	runtime.Goexit()
}

func (s *tbShim) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *tbShim) Cleanup(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, fn)
}

func (s *tbShim) TempDir() string {
	d, err := os.MkdirTemp(s.dir, "kubetest-")
	if err != nil {
		s.Fatalf("temp dir: %v", err)
	}
	s.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// close runs the cleanups, last registered first.
func (s *tbShim) close() error {
	s.mu.Lock()
	fns := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	return nil
}
