package daemon_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/zonelb/zonelb/bpf"
	"github.com/zonelb/zonelb/daemon"
	"github.com/zonelb/zonelb/daemon/discovery"
	"github.com/zonelb/zonelb/daemon/kubeapi"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/testenv"
)

// within is the daemon's promise: an API change shows in its state, its
// balancer and the BPF service map within a second.
const within = time.Second

// The daemon follows Services and EndpointSlices from a real API server
// into its balancers and the real BPF service map.
func TestDaemonFollowsAPIServer(t *testing.T) {
	testenv.RequireRoot(t)
	api := kubetest.Start(t, kubetest.Options{})
	client := api.Client(t)
	ctx := t.Context()

	c, red := startKubeDaemon(t, api)

	// Create: a gRPC service with two endpoints in zone-a, one in zone-b.
	svc, err := client.CoreV1().Services("default").Create(ctx, greeterService("greeter"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 8080)
	slice := grpcSlice("greeter", endpoint("10.1.0.1", "zone-a"), endpoint("10.1.0.2", "zone-a"), endpoint("10.2.0.1", "zone-b"))
	if slice, err = client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "the service and its 3 endpoints", red, vip, map[string]string{"10.1.0.1:9000": "zone-a", "10.1.0.2:9000": "zone-a", "10.2.0.1:9000": "zone-b"})

	// A spill budget set on the Service reaches its running balancer
	// within a second; a bad value is ignored (the default applies).
	for _, tc := range []struct{ annotation, want string }{
		{"300%", "300%"}, {"parity", "parity"}, {"latency", "latency"}, {"lots", "50%"},
	} {
		svc.Annotations = map[string]string{discovery.SpillBudgetKey: tc.annotation}
		if svc, err = client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.expectBudget(t, tc.want)
	}

	// Scale out.
	slice.Endpoints = append(slice.Endpoints, endpoint("10.3.0.1", "zone-c"))
	if slice, err = client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "a fourth endpoint", red, vip, map[string]string{"10.1.0.1:9000": "zone-a", "10.1.0.2:9000": "zone-a", "10.2.0.1:9000": "zone-b", "10.3.0.1:9000": "zone-c"})

	// Move an endpoint to another zone.
	slice.Endpoints[1].Zone = ptr.To("zone-b")
	if slice, err = client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "10.1.0.2 moved to zone-b", red, vip, map[string]string{"10.1.0.1:9000": "zone-a", "10.1.0.2:9000": "zone-b", "10.2.0.1:9000": "zone-b", "10.3.0.1:9000": "zone-c"})

	// Delete the slice, then the service.
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, slice.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "no endpoints", red, vip, map[string]string{})
	if err := client.CoreV1().Services("default").Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expectGone(t, red, vip)

	// The API server restarts. The daemon keeps serving what it knew, its
	// informers reconnect (with backoff: not a change, so not held to the
	// one-second promise), and then changes show as before: a service
	// created after the restart appears, and its deletion takes effect
	// within a second.
	api.RestartAPIServer(t)
	if got := c.state(t); !got.Ready {
		t.Fatalf("daemon not ready after an API server restart: %+v", got)
	}
	svc2 := createWhenServing(t, client, greeterService("greeter2"))
	vip2 := netip.AddrPortFrom(netip.MustParseAddr(svc2.Spec.ClusterIP), 8080)
	slice2 := grpcSlice("greeter2", endpoint("10.1.0.9", "zone-a"))
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expectWithin(t, "a service created after the restart", red, vip2, map[string]string{"10.1.0.9:9000": "zone-a"}, 60*time.Second)
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, slice2.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "its endpoints deleted after the restart", red, vip2, map[string]string{})
}

// startKubeDaemon runs the daemon against api with BPF state of its
// own, until the test ends, and opens its redirector. Its node, node-a,
// is in zone-a.
func startKubeDaemon(t *testing.T, api *kubetest.Server) (*cluster, *bpf.Redirector) {
	t.Helper()
	client := api.Client(t)
	kc, err := kubeapi.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"}}}
	if _, err := client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// BPF state of its own: a cgroup, pins and an interface no one else
	// uses, all removed at the end. The link-local proxy address is on
	// an interface with no ports, so nothing leaves the machine.
	suffix := randomSuffix(t)
	cgRoot, err := bpf.CgroupV2Root()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(cgRoot, "zonelb-daemon-test-"+suffix)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	enabled := true
	cfg := daemon.Config{
		NodeName: "node-a",
		Source:   "kubernetes",
		Proxy:    daemon.ProxyConfig{Listen: "169.254.123.7:15001", DrainTimeout: daemon.Duration(2 * time.Second)},
		Redirect: daemon.RedirectConfig{Enabled: &enabled, PinDir: "/sys/fs/bpf/zonelb-dt-" + suffix, CgroupPath: cg, Interface: "zlbdt" + suffix[:4], Enroll: "none"},
		Admin:    daemon.AdminConfig{Address: "127.0.0.1:0"},
	}.WithDefaults(func(string) string { return "" })
	t.Cleanup(func() {
		if err := bpf.Uninstall(cfg.BPFConfig()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})

	runCtx, stop := context.WithCancel(context.Background())
	ready := make(chan daemon.Info, 1)
	exited := make(chan error, 1)
	go func() {
		exited <- daemon.Run(runCtx, daemon.Options{Config: cfg, Logger: testLogger(), KubeClient: kc, OnReady: func(i daemon.Info) { ready <- i }})
	}()
	var info daemon.Info
	select {
	case info = <-ready:
	case err := <-exited:
		t.Fatalf("daemon exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("daemon not ready")
	}
	t.Cleanup(func() {
		stop()
		<-exited
	})
	c := &cluster{info: info}
	red, err := bpf.Open(cfg.BPFConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { red.Close() })
	return c, red
}

// greeterService is a gRPC Service with one port, 8080, named grpc.
func greeterService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "grpc", Port: 8080, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc"), TargetPort: intstr.FromString("grpc"),
		}}},
	}
}

// grpcSlice is the EndpointSlice of service's grpc port (target port
// 9000) holding eps.
func grpcSlice(service string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9000), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// createWhenServing creates svc in default, retrying for up to a minute
// while the API server comes back.
func createWhenServing(t *testing.T, client kubernetes.Interface, svc *corev1.Service) *corev1.Service {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		created, err := client.CoreV1().Services("default").Create(t.Context(), svc, metav1.CreateOptions{})
		if err == nil {
			return created
		}
		if time.Now().After(deadline) {
			t.Fatalf("API server not back after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectGone waits up to `within` for the service at vip to leave the
// daemon's state and the BPF map.
func (c *cluster) expectGone(t *testing.T, red *bpf.Redirector, vip netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := c.state(t)
		svcs, _ := red.Services()
		_, inMap := svcs[vip]
		if len(st.Services) == 0 && !inMap {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service still present %v after deletion: state %d services, BPF map has it: %v", within, len(st.Services), inMap)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expect waits up to `within` for the daemon's balancer to hold exactly
// the endpoints given (address -> zone) and the BPF map to select vip.
func (c *cluster) expect(t *testing.T, what string, red *bpf.Redirector, vip netip.AddrPort, want map[string]string) {
	t.Helper()
	c.expectWithin(t, what, red, vip, want, within)
}

func (c *cluster) expectWithin(t *testing.T, what string, red *bpf.Redirector, vip netip.AddrPort, want map[string]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		st := c.state(t)
		svcs, err := red.Services()
		if err != nil {
			t.Fatal(err)
		}
		_, selected := svcs[vip]
		got := map[string]string{}
		if len(st.Services) == 1 {
			for _, e := range st.Services[0].Balancer.Endpoints {
				got[e.Endpoint.Addr.String()] = e.Endpoint.Zone
			}
		}
		if selected && len(st.Services) == 1 && fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		last = fmt.Sprintf("selected in BPF map: %v; services %d; endpoints %v", selected, len(st.Services), got)
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reflected within %v: %s", what, within, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectBudget waits up to `within` for the one service's balancer to
// report spill budget want.
func (c *cluster) expectBudget(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := c.state(t)
		got := ""
		if len(st.Services) == 1 {
			got = st.Services[0].Balancer.SpillBudgetText
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spill budget %q, want %q within %v", got, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func endpoint(addr, zone string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, Zone: ptr.To(zone), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)}}
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
