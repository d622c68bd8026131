package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A start that fails halfway (here: the admin address is taken) releases
// exactly what it opened: both proxy listeners, IPv6 included, the direct
// frontend listeners and the discovery source.
func TestAgentFailedStartClosesWhatItOpened(t *testing.T) {
	if l6, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l6.Close()
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	frontend := freeLoopback(t)

	dir := t.TempDir()
	svcPath := filepath.Join(dir, "services.yaml")
	svcFile := "node: n\nzone: z\nservices:\n- name: s\n  clusterIPs: [" + frontend.IP.String() + "]\n  ports:\n  - port: " +
		strconv.Itoa(frontend.Port) + "\n    appProtocol: grpc\n    endpoints:\n    - {address: 127.0.0.1:1, zone: z}\n"
	if err := os.WriteFile(svcPath, []byte(svcFile), 0o644); err != nil {
		t.Fatal(err)
	}
	f := false
	cfg := Config{
		Source:   "file:" + svcPath,
		Proxy:    ProxyConfig{Listen: "127.0.0.1:0"},
		Redirect: RedirectConfig{Enabled: &f},
		Admin:    AdminConfig{Address: taken.Addr().String()},
	}.WithDefaults(func(string) string { return "" })
	a, err := newAgent(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	// Validate refuses listen6 without redirection; the agent itself does
	// not care, which lets this test open an IPv6 listener without BPF.
	a.cfg.Proxy.Listen6 = "[::1]:0"

	err = a.start(context.Background())
	if err == nil {
		a.close()
		t.Fatal("start succeeded with the admin address taken")
	}
	if len(a.lns) != 2 {
		t.Fatalf("start opened %d proxy listeners before failing, want 2 (IPv4 and IPv6): %v", len(a.lns), err)
	}
	a.close()

	for _, l := range a.lns {
		relisten(t, l.Addr().Network(), l.Addr().String())
	}
	relisten(t, "tcp", frontend.String())
	select {
	case <-a.srcErr:
	case <-time.After(10 * time.Second):
		t.Error("discovery source still running after close")
	}
}

func freeLoopback(t *testing.T) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr)
}

// relisten fails the test unless addr is free again.
func relisten(t *testing.T, network, addr string) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Errorf("%s still in use after close: %v", addr, err)
		return
	}
	l.Close()
}
