package kubenode

import "fmt"

// containerdConfig is containerd 2.x's config (version 3) for the node:
// its own root, state and socket, the CRI with runc (cgroupfs), overlayfs,
// the pinned sandbox image, and the CNI config and plugins.
func containerdConfig(dir, sock, pauseImage, runc, cniBin, cniConf string) string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
# The node does not use these; NRI would open a socket of its own.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[debug]
  level = "info"

[plugins.'io.containerd.internal.v1.opt']
  path = %[4]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Lowering an OOM score needs CAP_SYS_RESOURCE, which sandboxes such as
  # this machine's may withhold: keep containers' scores at or above
  # containerd's own instead of failing to start them (the kubelet asks
  # -998 for every pod sandbox).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %[6]q
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
`, dir+"/root", dir+"/state", sock, dir+"/opt", pauseImage, runc, cniBin, cniConf)
}

// cniConfig is a bridge network with a static pod subnet: enough for one
// node. The gateway (cni0) is the pods' default route; host-local keeps its
// leases under dataDir.
func cniConfig(podSubnet, rangeStart, rangeEnd, dataDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "kubenode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, dataDir, podSubnet, rangeStart, rangeEnd)
}

// kubeletConfig is the KubeletConfiguration: cgroupfs under the node's
// cgroup namespace root, v1 allowed (hybrid hosts), webhook authn/z with
// the CA, and image GC and disk eviction off (as kind sets them: a shared
// test machine's disk must not evict the node's pods).
func kubeletConfig(ca, runtimeSock, nodeIP string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
address: %q
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
  imagefs.inodesFree: "0%%"
  memory.available: "0%%"
clusterDomain: cluster.local
resolvConf: ""
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 4s
`, ca, nodeIP, runtimeSock)
}

// kubeProxyConfig is kube-proxy in iptables mode; conntrack limits are left
// alone (they are global, not per namespace).
func kubeProxyConfig(kubeconfig, node, clusterCIDR string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
hostnameOverride: %q
clusterCIDR: %q
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, node, clusterCIDR)
}
