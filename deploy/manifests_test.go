package deploy

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// allowedCapabilities are the capabilities the DaemonSet may add back,
// each for a reason the daemon has (see daemonset.yaml's comments). A
// capability outside this list, SYS_ADMIN above all, needs a design
// discussion, not a manifest edit. SYS_RESOURCE is allowed but unused: it
// raised RLIMIT_MEMLOCK for BPF maps before Linux 5.11 accounted their
// memory to the cgroup. The capability test (capabilities_linux_test.go)
// shows that each added capability is needed and that together they
// suffice.
var allowedCapabilities = []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}

// daemonConfig mirrors the daemon's config file as the DaemonSet contract
// defines it. Decoding is strict, so a key the daemon does not know (or a
// misspelt one) fails here.
type daemonConfig struct {
	Source string `json:"source"`
	Proxy  struct {
		Listen       string          `json:"listen"`
		DrainTimeout metav1.Duration `json:"drainTimeout"`
	} `json:"proxy"`
	Redirect struct {
		Enabled    bool   `json:"enabled"`
		PinDir     string `json:"pinDir"`
		CgroupPath string `json:"cgroupPath"`
		Interface  string `json:"interface"`
		SocketMark uint32 `json:"socketMark"`
	} `json:"redirect"`
	Admin struct {
		Address        string `json:"address"`
		MetricsAddress string `json:"metricsAddress"`
	} `json:"admin"`
	Balancer struct {
		Decay metav1.Duration `json:"decay"`
	} `json:"balancer"`
}

func objects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// typed finds the object of kind and name and converts it into out,
// failing on any field the type does not have (a misspelt field would
// otherwise be dropped silently by the API server's non-strict decoding).
func typed(t *testing.T, kind, name string, out any) {
	t.Helper()
	for _, o := range objects(t) {
		if o.GetKind() == kind && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
				t.Fatalf("%s/%s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s/%s in the base", kind, name)
}

func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	typed(t, "DaemonSet", DaemonSetName, &ds)
	return &ds
}

func daemonContainer(t *testing.T) *corev1.Container {
	t.Helper()
	ds := daemonSet(t)
	for i, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == ContainerName {
			return &ds.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("DaemonSet has no container %q", ContainerName)
	return nil
}

func config(t *testing.T) *daemonConfig {
	t.Helper()
	var cm corev1.ConfigMap
	typed(t, "ConfigMap", ConfigMapName, &cm)
	raw, ok := cm.Data[ConfigKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", ConfigMapName, ConfigKey)
	}
	var c daemonConfig
	if err := yaml.UnmarshalStrict([]byte(raw), &c); err != nil {
		t.Fatalf("ConfigMap %s: %s: %v", ConfigMapName, ConfigKey, err)
	}
	return &c
}

func TestBaseListsEveryManifestOnce(t *testing.T) {
	want := map[string]int{"Namespace": 1, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "ConfigMap": 1, "DaemonSet": 1}
	got := map[string]int{}
	for _, o := range objects(t) {
		got[o.GetKind()]++
	}
	for kind, n := range want {
		if got[kind] != n {
			t.Errorf("%d %s objects, want %d", got[kind], kind, n)
		}
	}
	for kind := range got {
		if _, ok := want[kind]; !ok {
			t.Errorf("unexpected %s in the base: add it to this test with the checks it needs", kind)
		}
	}

	// Every manifest beside kustomization.yaml is listed in it: a file
	// that is not would never reach a cluster.
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not listed in kustomization.yaml's resources", f)
		}
	}
}

func TestObjectsDecodeStrictly(t *testing.T) {
	for _, o := range objects(t) {
		gvk := o.GroupVersionKind()
		obj, err := scheme.Scheme.New(gvk)
		if err != nil {
			t.Errorf("%s/%s: unknown kind: %v", gvk, o.GetName(), err)
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, obj, true); err != nil {
			t.Errorf("%s/%s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetLabels()["app.kubernetes.io/name"] != "zonelb" {
			t.Errorf("%s/%s: no app.kubernetes.io/name=zonelb label", o.GetKind(), o.GetName())
		}
	}
}

func TestObjectsRejectsForeignNamespace(t *testing.T) {
	ok := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x", "namespace": "zonelb"}}}
	if err := checkNamespace(ok, "zonelb"); err != nil {
		t.Errorf("ConfigMap in zonelb: %v", err)
	}
	for _, bad := range []*unstructured.Unstructured{
		{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}}},
		{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x", "namespace": "other"}}},
		{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "x", "namespace": "zonelb"}}},
		{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "x"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "zonelb", "namespace": "default"}}}},
	} {
		if err := checkNamespace(bad, "zonelb"); err == nil {
			t.Errorf("%s %v: accepted", bad.GetKind(), bad.Object["metadata"])
		}
	}
}

func TestConfigFile(t *testing.T) {
	c := config(t)
	if c.Source != "kubernetes" {
		t.Errorf("source %q, want kubernetes", c.Source)
	}
	listen, err := netip.ParseAddrPort(c.Proxy.Listen)
	if err != nil || !listen.Addr().Is4() || !listen.Addr().IsLinkLocalUnicast() {
		t.Errorf("proxy.listen %q: want a link-local IPv4 address with a port (pods route to it, nothing off the node does)", c.Proxy.Listen)
	}
	if c.Proxy.DrainTimeout.Duration <= 0 {
		t.Errorf("proxy.drainTimeout %v: want a positive duration", c.Proxy.DrainTimeout.Duration)
	}
	if !c.Redirect.Enabled {
		t.Error("redirect.enabled is false: the base would balance nothing")
	}
	if c.Redirect.CgroupPath == "" || !filepath.IsAbs(c.Redirect.CgroupPath) {
		t.Errorf("redirect.cgroupPath %q: must be the mounted host cgroup root; empty means the container's own cgroup", c.Redirect.CgroupPath)
	}
	if c.Redirect.Interface == "" || len(c.Redirect.Interface) > 15 {
		t.Errorf("redirect.interface %q: want 1 to 15 characters", c.Redirect.Interface)
	}
	if c.Redirect.SocketMark != 0x5a4c {
		t.Errorf("redirect.socketMark %#x, want 0x5a4c (the YAML must parse as a number)", c.Redirect.SocketMark)
	}
	admin, err := netip.ParseAddrPort(c.Admin.Address)
	if err != nil || !admin.Addr().IsLoopback() {
		t.Errorf("admin.address %q: want a loopback address (pprof and /debug/state must not face the network)", c.Admin.Address)
	}
	if _, err := netip.ParseAddrPort(c.Admin.MetricsAddress); err != nil {
		t.Errorf("admin.metricsAddress %q: %v", c.Admin.MetricsAddress, err)
	}
	if c.Balancer.Decay.Duration <= 0 {
		t.Errorf("balancer.decay %v: want a positive duration", c.Balancer.Decay.Duration)
	}
}

func TestDaemonSetSecurityContext(t *testing.T) {
	ds := daemonSet(t)
	pod := ds.Spec.Template.Spec
	if pod.HostPID || pod.HostIPC {
		t.Errorf("hostPID %v hostIPC %v: the daemon needs neither", pod.HostPID, pod.HostIPC)
	}
	c := daemonContainer(t)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	if len(sc.Capabilities.Add) == 0 {
		t.Error("no capability added: the daemon cannot load BPF programs")
	}
	for _, c := range sc.Capabilities.Add {
		if !slices.Contains(allowedCapabilities, c) {
			t.Errorf("capability %s added: not in the allow-list %v", c, allowedCapabilities)
		}
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser must be 0: the capabilities are granted to root (uid 0) only")
	}

	// Each added capability has a comment right above it saying why.
	lines := manifestLines(t, "daemonset.yaml")
	for _, capName := range sc.Capabilities.Add {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "- "+string(capName) })
		if i < 1 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("capability %s has no comment above it saying why it is needed", capName)
		}
	}
}

func manifestLines(t *testing.T, name string) []string {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(raw), "\n")
}

func TestDaemonSetPodSpec(t *testing.T) {
	ds := daemonSet(t)
	pod := ds.Spec.Template.Spec
	cfg := config(t)

	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: the proxy address and zonelb0 are the node's")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %q, want ClusterFirstWithHostNet", pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if pod.ServiceAccountName != ServiceAccountName {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, ServiceAccountName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	}) {
		t.Errorf("tolerations %v: want one that tolerates every taint (operator Exists, no key, no effect)", pod.Tolerations)
	}
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || float64(*grace) <= cfg.Proxy.DrainTimeout.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v must exceed proxy.drainTimeout %v", ptr.Deref(grace, -1), cfg.Proxy.DrainTimeout.Duration)
	}

	// The rolling update keeps every node served: never two daemons on a
	// node, one node at a time.
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil {
		t.Fatalf("updateStrategy %+v: want RollingUpdate", ds.Spec.UpdateStrategy)
	}
	if ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "1" {
		t.Errorf("maxUnavailable %v, want 1", ru.MaxUnavailable)
	}
	if ru.MaxSurge == nil || ru.MaxSurge.String() != "0" {
		t.Errorf("maxSurge %v, want 0 (two daemons on one node would share the pins)", ru.MaxSurge)
	}
}

func TestDaemonContainer(t *testing.T) {
	c := daemonContainer(t)
	cfg := config(t)
	ds := daemonSet(t)
	volumes := map[string]corev1.Volume{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}

	// Command and config file: the image's binary, reading the mounted
	// ConfigMap.
	var configMount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if v := volumes[m.Name]; v.ConfigMap != nil && v.ConfigMap.Name == ConfigMapName {
			configMount = &c.VolumeMounts[i]
		}
	}
	if configMount == nil {
		t.Fatalf("the ConfigMap %s is not mounted", ConfigMapName)
	}
	if configMount.SubPath != "" {
		t.Error("the ConfigMap is mounted with subPath: the kubelet would never refresh it, and the daemon would never reload")
	}
	wantArgs := []string{"daemon", "--config", filepath.Join(configMount.MountPath, ConfigKey)}
	if !slices.Equal(c.Command, []string{"/zonelb"}) || !slices.Equal(c.Args, wantArgs) {
		t.Errorf("command %q args %q, want [/zonelb] %q", c.Command, c.Args, wantArgs)
	}

	// NODE_NAME from the downward API.
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Error("no NODE_NAME from fieldRef spec.nodeName")
	}

	// Resources: requests and limits for CPU and memory, requests within
	// limits.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		lim, hasLim := c.Resources.Limits[r]
		if !hasReq || !hasLim {
			t.Errorf("%s: request set %v, limit set %v: want both", r, hasReq, hasLim)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s above limit %s", r, req.String(), lim.String())
		}
	}

	// Probes on the loopback admin address.
	adminPort := portOf(t, cfg.Admin.Address)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Host != "127.0.0.1" || g.Port.IntValue() != adminPort || g.Path != p.path {
			t.Errorf("%s: GET http://%s:%s%s, want http://127.0.0.1:%d%s (admin.address)", p.name, g.Host, g.Port.String(), g.Path, adminPort, p.path)
		}
	}

	// Declared ports match the config.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, addr := range map[string]string{"proxy": cfg.Proxy.Listen, "admin": cfg.Admin.Address, "metrics": cfg.Admin.MetricsAddress} {
		if int(ports[name]) != portOf(t, addr) {
			t.Errorf("port %s is %d, want %d from the config's %s", name, ports[name], portOf(t, addr), addr)
		}
	}
	annotations := ds.Spec.Template.Annotations
	if annotations["prometheus.io/port"] != strconv.Itoa(portOf(t, cfg.Admin.MetricsAddress)) {
		t.Errorf("prometheus.io/port annotation %q, want the metrics port", annotations["prometheus.io/port"])
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int(ap.Port())
}

// TestHostMounts checks that the config's pin dir and cgroup path are the
// host's bpffs and cgroup-v2 root, mounted as the daemon needs them.
func TestHostMounts(t *testing.T) {
	c := daemonContainer(t)
	cfg := config(t)
	ds := daemonSet(t)
	hostPath := map[string]*corev1.HostPathVolumeSource{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		hostPath[v.Name] = v.HostPath
	}
	mountOf := func(dir string) (corev1.VolumeMount, *corev1.HostPathVolumeSource) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == dir {
				return m, hostPath[m.Name]
			}
		}
		t.Fatalf("nothing is mounted at %s", dir)
		return corev1.VolumeMount{}, nil
	}

	bpffs, bpfHost := mountOf(filepath.Dir(cfg.Redirect.PinDir))
	if bpfHost == nil || bpfHost.Path != "/sys/fs/bpf" {
		t.Errorf("the pin dir's parent %s is not the host's /sys/fs/bpf", bpffs.MountPath)
	}
	if bpffs.ReadOnly {
		t.Error("bpffs is mounted read-only: maps and links cannot be pinned")
	}
	// The daemon does not mount bpffs (no SYS_ADMIN), so it needs no
	// Bidirectional propagation, which the API server allows only in
	// privileged containers anyway.
	if bpffs.MountPropagation != nil && *bpffs.MountPropagation == corev1.MountPropagationBidirectional {
		t.Error("bpffs mount is Bidirectional")
	}
	// The runtimes' default AppArmor profile denies writes below /sys/fs
	// (except cgroup): pinning there would fail.
	if strings.HasPrefix(bpffs.MountPath, "/sys/") {
		t.Errorf("bpffs mounted at %s, below /sys: AppArmor's default profile would deny pinning", bpffs.MountPath)
	}

	cg, cgHost := mountOf(cfg.Redirect.CgroupPath)
	if cgHost == nil || cgHost.Path != "/sys/fs/cgroup" {
		t.Errorf("redirect.cgroupPath %s is not the host's /sys/fs/cgroup", cg.MountPath)
	}
	if !cg.ReadOnly {
		t.Error("the cgroup root is mounted writable: attaching BPF needs only a read-only descriptor")
	}
	for _, m := range c.VolumeMounts {
		if hp := hostPath[m.Name]; hp != nil && m.MountPath != bpffs.MountPath && m.MountPath != cg.MountPath {
			t.Errorf("unexpected host path %s mounted at %s", hp.Path, m.MountPath)
		}
	}
}

func TestClusterRoleReadsOnly(t *testing.T) {
	var role rbacv1.ClusterRole
	typed(t, "ClusterRole", ClusterRoleName, &role)
	for _, r := range role.Rules {
		for _, v := range r.Verbs {
			if v != "list" && v != "watch" {
				t.Errorf("rule %v grants %q: the daemon's informers only list and watch", r, v)
			}
		}
		if slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") || slices.Contains(r.Verbs, "*") {
			t.Errorf("rule %v uses a wildcard", r)
		}
	}
	var binding rbacv1.ClusterRoleBinding
	typed(t, "ClusterRoleBinding", ClusterRoleName, &binding)
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != ClusterRoleName {
		t.Errorf("binding refers to %v", binding.RoleRef)
	}
	want := rbacv1.Subject{Kind: "ServiceAccount", Name: ServiceAccountName, Namespace: Namespace}
	if !slices.Equal(binding.Subjects, []rbacv1.Subject{want}) {
		t.Errorf("binding subjects %v, want only %v", binding.Subjects, want)
	}
}
