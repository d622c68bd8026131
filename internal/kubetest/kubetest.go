// Package kubetest runs a real etcd and kube-apiserver on loopback for
// integration tests, from the binaries that tools/kube builds into
// .cache/bin (`make kube-bins`).
//
// Start gives a test an API server that answers, an admin rest.Config, and
// cleanup of both processes and their files when the test ends, even when
// it fails. Without the binaries the test skips with the command to build
// them, or fails when CI is set (see internal/testenv).
//
// It must not be imported by product code: it exists for tests only, starts
// processes, and listens on loopback ports only. No controller manager or
// kubelet runs: nothing creates EndpointSlices or Pods by itself, so tests
// write the objects they need.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zonelb/zonelb/internal/childproc"
	"github.com/zonelb/zonelb/internal/testenv"
)

// BinDirEnv names the environment variable that overrides where the etcd
// and kube-apiserver binaries are looked for.
const BinDirEnv = "ZONELB_KUBE_BIN_DIR"

// ServiceCIDRs is the dual-stack range Services get their ClusterIPs from.
// The addresses are data only: no test may send traffic to them (there is
// no kube-proxy, and they are not loopback).
const ServiceCIDRs = "10.96.0.0/16,fd00:10:96::/112"

// Startup and shutdown bounds: generous, because the machine is shared
// with other builds and tests.
const (
	readyTimeout = 90 * time.Second
	stopTimeout  = 15 * time.Second
)

// Options adjusts the API server. The zero value is an API server that
// allows everything to the admin token.
type Options struct {
	// Authorization is kube-apiserver's --authorization-mode. Default
	// "AlwaysAllow"; "RBAC" (or "Node,RBAC") to test permissions, acting
	// as a ServiceAccount with [Server.ImpersonateServiceAccount].
	Authorization string
	// ExtraArgs are appended to kube-apiserver's command line.
	ExtraArgs []string
}

// Server is a running etcd plus kube-apiserver.
type Server struct {
	// Config is an admin (system:masters) configuration for the API
	// server; copy it (rest.CopyConfig) before changing it.
	Config *rest.Config

	dir       string
	bin       string
	apiArgs   []string
	apiPort   int
	apiserver *childproc.Proc
	etcd      *childproc.Proc
}

// BinDir returns the folder that holds etcd and kube-apiserver: $BinDirEnv
// if set, else .cache/bin at the root of the zonelb module, found by
// walking up from the working directory (a test's is its package folder).
func BinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module github.com/zonelb/zonelb\n")) {
			return filepath.Join(dir, ".cache", "bin"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod of github.com/zonelb/zonelb above the working directory")
		}
		dir = parent
	}
}

// Start runs etcd and kube-apiserver on free loopback ports and waits until
// the API server is ready. Both stop, and their files go, when tb ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	binDir, err := BinDir()
	if err != nil {
		testenv.SkipOrFail(tb, err.Error())
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			testenv.SkipOrFail(tb, fmt.Sprintf("%s not built (%v): run `make kube-bins` (builds into .cache/bin, ~7 min cold) or set %s",
				name, err, BinDirEnv))
		}
	}
	if opts.Authorization == "" {
		opts.Authorization = "AlwaysAllow"
	}

	// Registered before the cleanups below, so removed after both
	// processes have stopped.
	dir := tb.TempDir()

	ports := freePorts(tb, 3)
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	s := &Server{dir: dir, bin: filepath.Join(binDir, "kube-apiserver"), apiPort: apiPort}
	// Cleanups run last-in first-out: the API server stops before etcd,
	// and both before the folder goes.
	tb.Cleanup(func() {
		if tb.Failed() {
			s.dumpLogs(tb)
		}
		s.etcd.Stop(stopTimeout)
	})
	tb.Cleanup(func() { s.apiserver.Stop(stopTimeout) })

	clientURL := s.startEtcd(tb, binDir, etcdClient, etcdPeer)

	token, caFile := s.writeAPIServerArgs(tb, clientURL, opts)
	if err := s.StartAPIServer(); err != nil {
		tb.Fatalf("kubetest: %v", err)
	}

	s.Config = &rest.Config{
		Host:            "https://127.0.0.1:" + strconv.Itoa(apiPort),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		// Tests create objects in bursts; client-side throttling would
		// only slow them down.
		QPS:   1000,
		Burst: 2000,
	}
	if err := s.waitReady(); err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	return s
}

// startEtcd runs etcd on the given loopback ports and waits until it is
// healthy; it returns the client URL.
func (s *Server) startEtcd(tb testing.TB, binDir string, clientPort, peerPort int) string {
	tb.Helper()
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	var err error
	s.etcd, err = childproc.Start("etcd", filepath.Join(s.dir, "etcd.log"), exec.Command(filepath.Join(binDir, "etcd"),
		"--name=kubetest",
		"--data-dir="+filepath.Join(s.dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL,
		"--log-level=warn",
		// A test's data is thrown away: skip fsync, which is slow on a
		// shared disk and would only make the tests flaky.
		"--unsafe-no-fsync=true",
	))
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	if err := s.etcd.WaitHTTP(clientURL+"/health", nil, readyTimeout); err != nil {
		tb.Fatalf("kubetest: etcd not healthy: %v", err)
	}
	return clientURL
}

// writeAPIServerArgs writes the API server's token file, service account
// key and serving certificate, and sets its arguments; it returns the
// admin token and the CA file.
func (s *Server) writeAPIServerArgs(tb testing.TB, etcdURL string, opts Options) (token, caFile string) {
	tb.Helper()
	token = randomHex(tb, 16)
	tokens := filepath.Join(s.dir, "tokens.csv")
	// token,user,uid,"group1,group2"
	if err := os.WriteFile(tokens, []byte(token+",kubetest-admin,kubetest-admin,\"system:masters\"\n"), 0o600); err != nil {
		tb.Fatalf("kubetest: write token file: %v", err)
	}
	saKey := filepath.Join(s.dir, "sa.key")
	writeServiceAccountKey(tb, saKey)
	caFile, certFile, keyFile := writeServingCert(tb, s.dir)

	s.apiArgs = append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.apiPort),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--token-auth-file=" + tokens,
		"--authorization-mode=" + opts.Authorization,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + ServiceCIDRs,
		// No controller manager runs, so nothing would reconcile the
		// kubernetes Service's endpoints to anything useful.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}, opts.ExtraArgs...)
	return token, caFile
}

// Client returns a clientset for the admin configuration.
func (s *Server) Client(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	c, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		tb.Fatalf("kubetest: clientset: %v", err)
	}
	return c
}

// ImpersonateServiceAccount returns a configuration that acts as the
// ServiceAccount namespace/name (and its groups), so that with RBAC on, a
// test sees exactly what that account may do.
func (s *Server) ImpersonateServiceAccount(namespace, name string) *rest.Config {
	c := rest.CopyConfig(s.Config)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	return c
}

// StopAPIServer stops kube-apiserver (etcd keeps running, with the data).
func (s *Server) StopAPIServer() { s.apiserver.Stop(stopTimeout) }

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same port, and waits until it is ready. Start calls it the first time.
func (s *Server) StartAPIServer() error {
	var err error
	s.apiserver, err = childproc.Start("kube-apiserver", filepath.Join(s.dir, "kube-apiserver.log"), exec.Command(s.bin, s.apiArgs...))
	if err != nil {
		return err
	}
	if s.Config != nil {
		return s.waitReady()
	}
	return nil
}

// RestartAPIServer stops kube-apiserver and starts a new one on the same
// port and etcd, as a rolling control-plane upgrade would.
func (s *Server) RestartAPIServer(tb testing.TB) {
	tb.Helper()
	s.StopAPIServer()
	if err := s.StartAPIServer(); err != nil {
		tb.Fatalf("kubetest: restart kube-apiserver: %v", err)
	}
}

// waitReady waits for /readyz and for the default namespace, which the
// API server creates shortly after it starts.
func (s *Server) waitReady() error {
	tr, err := rest.TransportFor(s.Config)
	if err != nil {
		return fmt.Errorf("transport for %s: %w", s.Config.Host, err)
	}
	if err := s.apiserver.WaitHTTP(s.Config.Host+"/readyz", tr, readyTimeout); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	client, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		_, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			return fmt.Errorf("get namespace default: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace default did not appear: %w", err)
		case <-s.apiserver.Done():
			return fmt.Errorf("kube-apiserver exited: %v", s.apiserver.Err())
		case <-time.After(100 * time.Millisecond): // polling a process, bounded by ctx
		}
	}
}

func (s *Server) dumpLogs(tb testing.TB) {
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		tb.Logf("kubetest: last lines of %s:\n%s", name, childproc.Tail(filepath.Join(s.dir, name), 40))
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("kubetest: find a free port: %v", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("kubetest: random token: %v", err)
	}
	return hex.EncodeToString(b)
}

// writeServiceAccountKey writes a fresh RSA key that signs (and verifies)
// ServiceAccount tokens.
func writeServiceAccountKey(tb testing.TB, path string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("kubetest: service account key: %v", err)
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		tb.Fatalf("kubetest: write service account key: %v", err)
	}
}

// NewCA makes a throwaway self-signed P-256 certificate authority named
// cn, valid from an hour ago for a day: the certificate, its key and its
// DER encoding.
func NewCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return cert, key, der, nil
}

// writeServingCert makes a throwaway CA and a serving certificate for
// 127.0.0.1 and localhost signed by it, so that clients verify the API
// server for real. It returns the CA, certificate and key file paths.
func writeServingCert(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	tb.Helper()
	ca, caKey, caDER, err := NewCA("kubetest-ca")
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("kubetest: serving key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("kubetest: serving certificate: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatalf("kubetest: marshal serving key: %v", err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	for path, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			tb.Fatalf("kubetest: write %s: %v", path, err)
		}
	}
	return caFile, certFile, keyFile
}
