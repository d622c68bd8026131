package kubenode

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zonelb/zonelb/internal/childproc"
	"github.com/zonelb/zonelb/internal/kubetest"
	"github.com/zonelb/zonelb/internal/netnsrun"
	"github.com/zonelb/zonelb/internal/testenv"
)

// Addresses inside the node's network namespace (nowhere else).
const (
	// NodeIP is the node's InternalIP, on a dummy interface; the API
	// server listens there on port 6443.
	NodeIP = "198.19.0.2"
	// PodSubnet is the node's pod range on the cni0 bridge (gateway .1).
	// Pods get .10-.199; .200 and up are for peers (StartPeer).
	PodSubnet = "10.244.0.0/24"
	// BridgeIP is cni0's address: the pods' gateway, and the source
	// address of what the node's own namespace sends to a pod.
	BridgeIP = "10.244.0.1"
	// ClusterCIDR is the cluster's pod range (kube-proxy's masquerade
	// rule).
	ClusterCIDR = "10.244.0.0/16"
	// ServiceCIDR is where ClusterIPs come from.
	ServiceCIDR = "10.96.0.0/16"
	// APIServerServiceIP is the kubernetes Service's ClusterIP.
	APIServerServiceIP = "10.96.0.1"
)

// Timeouts: generous, because the machine is shared.
const (
	readyTimeout = 3 * time.Minute
	stopGrace    = 15 * time.Second
)

// Options configure the node. The zero value is a node "node-a" in zone
// "zone-a" with no images imported.
type Options struct {
	// Name is the node's name. Default node-a.
	Name string
	// Zone is its topology.kubernetes.io/zone label. Default zone-a.
	Zone string
	// Images are image tarballs (docker save / OCI layout tar) imported
	// into containerd's k8s.io namespace before the kubelet starts.
	Images []string
	// PauseImage is the pod sandbox image's reference; it must be among
	// Images (nothing is ever pulled).
	PauseImage string
}

// Node is a running node and its control plane.
type Node struct {
	Name, Zone string
	// Config is an admin (system:masters) configuration whose connections
	// open inside the node's network namespace.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Dir holds the node's files (configs, logs, containerd's root).
	Dir string
	// AdminKubeconfig is the admin kubeconfig file (for kubectl).
	AdminKubeconfig string

	tb        testing.TB
	id        string
	binDir    string
	cgroups   []string // the node's cgroup in each host hierarchy
	holder    *childproc.Proc
	mu        sync.Mutex
	procs     map[string]*childproc.Proc
	netnsFD   netns.NsHandle
	ctrdSock  string
	pathEnv   string
	pki       *pki
	logs      []string
	cniBinDir string
}

// Binaries the node needs from .cache/bin, and from the system.
var (
	cacheBins  = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "containerd", "containerd-shim-runc-v2", "ctr"}
	systemBins = []string{"runc", "iptables", "nsenter", "unshare", "ip", "sleep"}
	cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}
)

// CNIBinDir is where Debian's containernetworking-plugins installs.
const CNIBinDir = "/usr/lib/cni"

// Start runs the node and waits until it is Ready. Everything stops and
// goes when tb ends, even when it fails. It skips (fails under CI) when not
// root or when a binary is missing, with the command that builds it.
func Start(tb testing.TB, opts Options) *Node {
	tb.Helper()
	testenv.RequireRoot(tb)
	if opts.Name == "" {
		opts.Name = "node-a"
	}
	if opts.Zone == "" {
		opts.Zone = "zone-a"
	}
	binDir, err := kubetest.BinDir()
	if err != nil {
		testenv.SkipOrFail(tb, err.Error())
	}
	for _, b := range cacheBins {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			testenv.SkipOrFail(tb, fmt.Sprintf("%s not built (%v): run `make node-bins containerd-bins` (.cache/bin)", b, err))
		}
	}
	pathEnv := binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, b := range systemBins {
		if _, err := lookPath(b, pathEnv); err != nil {
			testenv.SkipOrFail(tb, fmt.Sprintf("%s not installed: run `make node-deps` (runc, iptables, containernetworking-plugins)", b))
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(CNIBinDir, p)); err != nil {
			testenv.SkipOrFail(tb, fmt.Sprintf("CNI plugin %s not in %s: run `make node-deps`", p, CNIBinDir))
		}
	}

	n := &Node{
		Name: opts.Name, Zone: opts.Zone, tb: tb, binDir: binDir, procs: map[string]*childproc.Proc{},
		pathEnv: pathEnv, cniBinDir: CNIBinDir, netnsFD: -1,
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n.id = hex.EncodeToString(b)
	// Short: unix socket paths live under it.
	n.Dir, err = os.MkdirTemp("", "kubenode-")
	if err != nil {
		tb.Fatalf("kubenode: %v", err)
	}
	tb.Cleanup(n.teardown)
	if err := n.start(opts); err != nil {
		tb.Fatalf("kubenode: %v", err)
	}
	return n
}

func lookPath(name, pathEnv string) (string, error) {
	for dir := range strings.SplitSeq(pathEnv, ":") {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, pathEnv)
}

func (n *Node) start(opts Options) error {
	if err := n.startHolder(); err != nil {
		return err
	}
	var err error
	if n.pki, err = newPKI(filepath.Join(n.Dir, "pki")); err != nil {
		return err
	}
	if err := n.startControlPlane(); err != nil {
		return err
	}
	if err := n.startContainerd(opts); err != nil {
		return err
	}
	if err := n.startKubelet(); err != nil {
		return err
	}
	if err := n.waitNodeReady(); err != nil {
		return err
	}
	if err := n.waitDefaultNamespace(); err != nil {
		return err
	}
	return n.startKubeProxy()
}

// waitDefaultNamespace waits for what kube-controller-manager adds to a
// namespace before a pod can be admitted and started there: the default
// ServiceAccount and the kube-root-ca.crt ConfigMap.
func (n *Node) waitDefaultNamespace() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		_, err := n.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			_, err = n.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace default not ready for pods within %v: %w", readyTimeout, err)
		case <-time.After(200 * time.Millisecond): // polling the API, bounded by ctx
		}
	}
}

// startHolder creates the node's cgroups and a process that makes and
// holds the node's network, mount and cgroup namespaces, with the node's
// own mounts and interfaces set up inside.
func (n *Node) startHolder() error {
	hs, tmpfsRoot, err := hostHierarchies()
	if err != nil {
		return err
	}
	name := "zonelb-kubenode-" + n.id
	n.cgroups, err = createCgroups(hs, name)
	if err != nil {
		return err
	}
	if err := n.startHolderProc(holderSetupScript(hs, tmpfsRoot)); err != nil {
		return err
	}
	n.netnsFD, err = netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", n.holder.Pid()))
	if err != nil {
		return fmt.Errorf("open node netns: %w", err)
	}
	return n.Do(enableBridgeNetfilter)
}

// holderSetupScript is the shell script the holder runs inside its fresh
// namespaces: the node's own mounts (sysfs, the cgroup hierarchies hs as
// the host has them, bpffs, tmpfs state directories) and its network
// interface, then "ready" on stdout and a sleep that holds the namespaces.
func holderSetupScript(hs []hierarchy, tmpfsRoot bool) string {
	var setup strings.Builder
	setup.WriteString("set -e\n")
	// sysfs of the node's network namespace; it hides the host's /sys
	// submounts, which are mounted again below as the node's own.
	setup.WriteString("mount -t sysfs sysfs /sys\n")
	// The cgroup mounts, as the host has them; mounted inside the cgroup
	// namespace, each one's root is the node's cgroup.
	if tmpfsRoot {
		setup.WriteString("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n")
	}
	for _, h := range hs {
		if h.mountpoint != "/sys/fs/cgroup" {
			fmt.Fprintf(&setup, "mkdir -p %s\n", h.mountpoint)
		}
		if h.v2 {
			fmt.Fprintf(&setup, "mount -t cgroup2 cgroup2 %s\n", h.mountpoint)
		} else {
			fmt.Fprintf(&setup, "mount -t cgroup -o %s cgroup %s\n", h.options, h.mountpoint)
		}
	}
	// The node's own bpffs, runtime and state directories.
	setup.WriteString("mount -t bpf -o mode=700 bpf /sys/fs/bpf\n")
	for _, d := range []string{"/run", "/var/lib", "/var/log"} {
		fmt.Fprintf(&setup, "mount -t tmpfs -o mode=755 tmpfs %s\n", d)
	}
	// Shared within the node, as on a systemd host (HostToContainer
	// volumes need it); the namespace began private, so nothing
	// propagates to or from this machine's own mounts.
	setup.WriteString("mount --make-rshared /\n")
	// The node's address on an interface of its own, which is also its
	// default route: a bridge without ports (kernels here may lack the
	// dummy driver, and a portless bridge drops what it is given just the
	// same), so nothing leaves the node.
	fmt.Fprintf(&setup, `ip link set lo up
ip link add node0 type bridge
ip addr add %s/32 dev node0
ip link set node0 up
ip route add default dev node0
echo 1 > /proc/sys/net/ipv4/ip_forward
echo ready
exec sleep infinity
`, NodeIP)
	return setup.String()
}

// startHolderProc starts the holder process running setup and waits until
// it says the node's namespaces are ready.
func (n *Node) startHolderProc(setup string) error {
	// The wrapper joins the node's cgroups first, so that the cgroup
	// namespace unshare makes is rooted there.
	cmd := exec.Command("/bin/sh", "-c",
		`for d in $KUBENODE_CGROUPS; do echo $$ > "$d/cgroup.procs"; done
exec unshare --net --mount --cgroup --propagation private /bin/sh -c "$KUBENODE_SETUP"`)
	cmd.Env = []string{"PATH=" + n.pathEnv, "KUBENODE_CGROUPS=" + strings.Join(n.cgroups, " "), "KUBENODE_SETUP=" + setup}
	// The setup script says "ready" on this pipe once the node's
	// namespaces are set up.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout = pw
	n.holder, err = childproc.Start("holder", filepath.Join(n.Dir, "holder.log"), cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	return n.waitHolderReady(pr)
}

// waitHolderReady reads the holder's first line from pr (which it closes)
// and fails unless it is "ready" within 30 seconds.
func (n *Node) waitHolderReady(pr *os.File) error {
	ready := make(chan error, 1)
	go func() {
		defer pr.Close()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			ready <- fmt.Errorf("node namespaces not set up (%q, %v): %s", line, err, childproc.Tail(filepath.Join(n.Dir, "holder.log"), 20))
			return
		}
		ready <- nil
	}()
	select {
	case err := <-ready:
		if err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return errors.New("node namespaces not set up within 30s")
	}
	return nil
}

// enableBridgeNetfilter, run inside the node's network namespace, makes
// bridged pod traffic pass iptables, for ClusterIPs whose endpoints sit on
// the same bridge (br_netfilter, per namespace).
func enableBridgeNetfilter() error {
	const key = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if _, err := os.Stat(key); err != nil {
		if err := exec.Command("modprobe", "br_netfilter").Run(); err != nil {
			return fmt.Errorf("br_netfilter: %s missing and modprobe failed: %w", key, err)
		}
	}
	return os.WriteFile(key, []byte("1"), 0o644)
}

// Do runs fn on an OS thread switched into the node's network namespace:
// sockets that fn opens belong to the node for their whole life.
func (n *Node) Do(fn func() error) error {
	return netnsrun.Do(n.netnsFD, "of node "+n.Name, fn)
}

// DialContext opens a TCP connection from inside the node's network
// namespace (to the API server, a pod, the node's loopback).
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := netnsrun.Dial(ctx, n.Do, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s in node %s: %w", addr, n.Name, err)
	}
	return c, nil
}

// HTTPClient returns a client whose connections open inside the node.
func (n *Node) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}

// Command returns a command that runs inside the node's namespaces and
// cgroups, as the node's own daemons do.
func (n *Node) Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c",
		`for d in $KUBENODE_CGROUPS; do echo $$ > "$d/cgroup.procs"; done
exec nsenter --target "$KUBENODE_HOLDER" --net --mount --cgroup -- "$@"`, "sh", bin}, args...)...)
	cmd.Env = []string{
		"PATH=" + n.pathEnv,
		"HOME=" + n.Dir,
		"KUBENODE_CGROUPS=" + strings.Join(n.cgroups, " "),
		"KUBENODE_HOLDER=" + strconv.Itoa(n.holder.Pid()),
	}
	return cmd
}

// run starts a node daemon, logging to Dir/<name>.log.
func (n *Node) run(name, bin string, args ...string) (*childproc.Proc, error) {
	p, err := childproc.Start(name, filepath.Join(n.Dir, name+".log"), n.Command(context.Background(), bin, args...))
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.procs[name] = p
	n.logs = append(n.logs, name)
	n.mu.Unlock()
	return p, nil
}

func (n *Node) bin(name string) string { return filepath.Join(n.binDir, name) }

// startControlPlane runs etcd, the API server (and sets n.Config and
// n.Client once it is ready), the controller manager and the scheduler.
func (n *Node) startControlPlane() error {
	etcdURL, err := n.startEtcd()
	if err != nil {
		return err
	}
	saKey, err := n.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	server, err := n.startAPIServer(etcdURL, saKey)
	if err != nil {
		return err
	}
	return n.startControllers(server, saKey)
}

// startEtcd runs etcd on loopback and returns its client URL once healthy.
func (n *Node) startEtcd() (string, error) {
	etcdURL := "http://127.0.0.1:2379"
	etcd, err := n.run("etcd", n.bin("etcd"),
		"--name=kubenode", "--data-dir="+filepath.Join(n.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=kubenode=http://127.0.0.1:2380", "--log-level=warn",
		// Throwaway data: fsync only slows a shared disk down.
		"--unsafe-no-fsync=true")
	if err != nil {
		return "", err
	}
	if err := n.waitHTTP(etcd, etcdURL+"/health", nil); err != nil {
		return "", fmt.Errorf("etcd: %w", err)
	}
	return etcdURL, nil
}

// startAPIServer runs kube-apiserver on NodeIP:6443 against etcdURL, waits
// until it is ready, sets n.AdminKubeconfig, n.Config and n.Client, and
// returns the server's URL.
func (n *Node) startAPIServer(etcdURL, saKey string) (string, error) {
	p := n.pki
	nodeIP := net.ParseIP(NodeIP)
	serving, servingKey, err := p.issue("apiserver", "kube-apiserver", nil,
		[]net.IP{nodeIP, net.IPv4(127, 0, 0, 1), net.ParseIP(APIServerServiceIP)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return "", err
	}
	// The API server's client certificate towards kubelets (logs, exec).
	kcert, kkey, err := p.issue("apiserver-kubelet-client", "kube-apiserver", []string{"system:masters"}, nil, nil)
	if err != nil {
		return "", err
	}
	server := "https://" + net.JoinHostPort(NodeIP, "6443")
	api, err := n.run("kube-apiserver", n.bin("kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=0.0.0.0", "--secure-port=6443", "--advertise-address="+NodeIP,
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+p.CAFile,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--kubelet-client-certificate="+kcert, "--kubelet-client-key="+kkey,
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false")
	if err != nil {
		return "", err
	}
	if n.AdminKubeconfig, err = p.kubeconfig("admin", server, "kubenode-admin", "system:masters"); err != nil {
		return "", err
	}
	acert, akey := filepath.Join(p.dir, "admin.crt"), filepath.Join(p.dir, "admin.key")
	n.Config = &rest.Config{
		Host:            server,
		TLSClientConfig: rest.TLSClientConfig{CAFile: p.CAFile, CertFile: acert, KeyFile: akey},
		Dial:            n.DialContext,
		QPS:             200, Burst: 400,
	}
	tr, err := rest.TransportFor(n.Config)
	if err != nil {
		return "", fmt.Errorf("transport: %w", err)
	}
	if err := n.waitHTTP(api, server+"/readyz", tr); err != nil {
		return "", fmt.Errorf("kube-apiserver: %w", err)
	}
	if n.Client, err = kubernetes.NewForConfig(n.Config); err != nil {
		return "", fmt.Errorf("clientset: %w", err)
	}
	return server, nil
}

// startControllers runs the controller manager and the scheduler against
// the API server at server.
func (n *Node) startControllers(server, saKey string) error {
	p := n.pki
	kcm, err := p.kubeconfig("controller-manager", server, "system:kube-controller-manager")
	if err != nil {
		return err
	}
	if _, err := n.run("kube-controller-manager", n.bin("kube-controller-manager"),
		"--kubeconfig="+kcm, "--authentication-kubeconfig="+kcm, "--authorization-kubeconfig="+kcm,
		"--root-ca-file="+p.CAFile, "--service-account-private-key-file="+saKey,
		"--use-service-account-credentials", "--controllers=*", "--leader-elect=false",
		"--bind-address=127.0.0.1", "--cluster-cidr="+ClusterCIDR, "--service-cluster-ip-range="+ServiceCIDR,
		"--profiling=false"); err != nil {
		return err
	}
	sched, err := p.kubeconfig("scheduler", server, "system:kube-scheduler")
	if err != nil {
		return err
	}
	if _, err := n.run("kube-scheduler", n.bin("kube-scheduler"),
		"--kubeconfig="+sched, "--authentication-kubeconfig="+sched, "--authorization-kubeconfig="+sched,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"); err != nil {
		return err
	}
	return nil
}

func (n *Node) startContainerd(opts Options) error {
	cdir := filepath.Join(n.Dir, "containerd")
	cniConf := filepath.Join(n.Dir, "cni")
	for _, d := range []string{cdir, cniConf} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-kubenode.conflist"),
		[]byte(cniConfig(PodSubnet, "10.244.0.10", "10.244.0.199", filepath.Join(n.Dir, "cni-ipam"))), 0o644); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	runc, err := lookPath("runc", n.pathEnv)
	if err != nil {
		return err
	}
	n.ctrdSock = filepath.Join(n.Dir, "containerd.sock")
	cfg := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(cdir, n.ctrdSock, opts.PauseImage, runc, n.cniBinDir, cniConf)), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	ctrd, err := n.run("containerd", n.bin("containerd"), "--config", cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := exec.Command(n.bin("ctr"), "--address", n.ctrdSock, "version").Run(); err == nil {
			break
		}
		if ctrd.Exited() {
			return fmt.Errorf("containerd exited (%v): %s", ctrd.Err(), childproc.Tail(ctrd.Log, 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not answering within %v: %s", readyTimeout, childproc.Tail(ctrd.Log, 30))
		}
		time.Sleep(200 * time.Millisecond) // polling a process, bounded by deadline
	}
	for _, img := range opts.Images {
		if err := n.ImportImage(img); err != nil {
			return err
		}
	}
	return nil
}

// Cgroup2Dir is the node's cgroup2 root as this machine sees it (the
// root of the node's cgroup namespace in the unified hierarchy), or "" on
// a host without cgroup2.
func (n *Node) Cgroup2Dir() string {
	for _, d := range n.cgroups {
		var st syscall.Statfs_t
		if syscall.Statfs(d, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			return d
		}
	}
	return ""
}

// TaskPid returns the host pid of a running container's main process, by
// its container ID (a pod status's ContainerID without "containerd://").
func (n *Node) TaskPid(containerID string) (int, error) {
	out, err := exec.Command(n.bin("ctr"), "--address", n.ctrdSock, "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ctr tasks ls: %w: %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == containerID && f[2] == "RUNNING" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no running task %s in:\n%s", containerID, out)
}

// ImportImage imports an image tarball into the CRI's image store (the
// k8s.io namespace), so that pods naming it start without a registry.
func (n *Node) ImportImage(path string) error {
	out, err := exec.Command(n.bin("ctr"), "--address", n.ctrdSock, "-n", "k8s.io",
		"images", "import", "--platform", "linux/"+runtime.GOARCH, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import image %s: %w: %s", path, err, out)
	}
	return nil
}

func (n *Node) startKubelet() error {
	kubeconfig, err := n.pki.kubeconfig("kubelet", "https://"+net.JoinHostPort(NodeIP, "6443"), "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	cfg := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(n.pki.CAFile, n.ctrdSock, NodeIP)), 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	_, err = n.run("kubelet", n.bin("kubelet"),
		"--config="+cfg, "--kubeconfig="+kubeconfig,
		"--root-dir="+filepath.Join(n.Dir, "kubelet"),
		"--hostname-override="+n.Name, "--node-ip="+NodeIP,
		"--node-labels=topology.kubernetes.io/zone="+n.Zone)
	return err
}

func (n *Node) waitNodeReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last string
	for {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nil
					}
					last = c.Reason + ": " + c.Message
				}
			}
		} else {
			last = err.Error()
		}
		if p := n.proc("kubelet"); p != nil && p.Exited() {
			return fmt.Errorf("kubelet exited (%v): %s", p.Err(), childproc.Tail(p.Log, 40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready within %v (%s): kubelet log:\n%s", n.Name, readyTimeout, last, childproc.Tail(filepath.Join(n.Dir, "kubelet.log"), 40))
		case <-time.After(500 * time.Millisecond): // polling the API, bounded by ctx
		}
	}
}

func (n *Node) startKubeProxy() error {
	kubeconfig, err := n.pki.kubeconfig("kube-proxy", "https://"+net.JoinHostPort(NodeIP, "6443"), "system:kube-proxy")
	if err != nil {
		return err
	}
	cfg := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(cfg, []byte(kubeProxyConfig(kubeconfig, n.Name, ClusterCIDR)), 0o644); err != nil {
		return fmt.Errorf("write kube-proxy config: %w", err)
	}
	p, err := n.run("kube-proxy", n.bin("kube-proxy"), "--config="+cfg)
	if err != nil {
		return err
	}
	// Healthy once it has programmed the rules once.
	return n.waitHTTP(p, "http://127.0.0.1:10256/healthz", nil)
}

func (n *Node) proc(name string) *childproc.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs[name]
}

// Kubectl runs the node's kubectl (same version as the cluster) inside the
// node's namespaces with the admin kubeconfig. Paths must be absolute.
func (n *Node) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := n.Command(ctx, n.bin("kubectl"), append([]string{"--kubeconfig=" + n.AdminKubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.Bytes(), nil
}

// waitHTTP polls url from inside the node until it answers 200.
func (n *Node) waitHTTP(p *childproc.Proc, url string, tr http.RoundTripper) error {
	if tr == nil {
		tr = &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}
	}
	return p.WaitHTTP(url, tr, readyTimeout)
}

// Logf-able diagnostics: the last lines of every daemon's log.
func (n *Node) dumpLogs() {
	n.mu.Lock()
	names := append([]string(nil), n.logs...)
	n.mu.Unlock()
	for _, name := range names {
		n.tb.Logf("kubenode: last lines of %s.log:\n%s", name, childproc.Tail(filepath.Join(n.Dir, name+".log"), 25))
	}
}

// teardown stops the node: the API clients' daemons first, then every
// process left in the node's cgroups (containers, shims, the holder), the
// cgroups, and the files.
func (n *Node) teardown() {
	if n.tb.Failed() {
		n.dumpLogs()
	}
	for _, name := range []string{"kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager", "containerd", "kube-apiserver", "etcd"} {
		n.proc(name).Stop(stopGrace)
	}
	if n.netnsFD >= 0 {
		n.netnsFD.Close()
	}
	if err := killCgroups(n.cgroups, 30*time.Second); err != nil {
		n.tb.Errorf("kubenode: %v", err)
	}
	if n.holder != nil {
		n.holder.Stop(stopGrace)
	}
	if err := removeCgroups(n.cgroups, 30*time.Second); err != nil {
		n.tb.Errorf("kubenode: %v", err)
	}
	// The mounts were in the node's mount namespace, gone with its last
	// process; containerd's snapshots are plain directories now.
	if os.Getenv("KUBENODE_KEEP") == "" {
		if err := os.RemoveAll(n.Dir); err != nil {
			n.tb.Errorf("kubenode: remove %s: %v", n.Dir, err)
		}
	} else {
		n.tb.Logf("kubenode: kept %s", n.Dir)
	}
}
