# The real Kubernetes node (internal/kubenode, test/kubenode, make k8s-demo).
# Included from the top-level Makefile, after CACHE, BIN and GO are set.
#
# What the node needs beyond Go, installed when missing: runc, iptables
# (kube-proxy's iptables mode) and the CNI plugins from Debian; kubelet and
# the rest of Kubernetes from tools/kube (node-bins), containerd v2 from
# tools/containerd (containerd-bins); the images from deploy/image.mk.

NODE_DEB_PKGS := runc iptables containernetworking-plugins
NODE_DEB_STAMP := $(CACHE)/node-debs.stamp

.PHONY: node-deps k8s-demo

node-deps: $(NODE_DEB_STAMP) node-bins containerd-bins image

test-deps:: node-deps

$(NODE_DEB_STAMP):
	@mkdir -p $(dir $@)
	@missing=; for p in $(NODE_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $$missing; }; \
	fi
	@touch $@

# The same scenario as test/kubenode, printed for a person. Root.
k8s-demo: build node-deps
	@rm -f $(BIN)/k8s-demo.txt
	ZONELB_BIN=$(BIN)/zonelb ZONELB_KUBENODE_DEMO=$(BIN)/k8s-demo.txt $(GO) test -count=1 -timeout 30m -run '^TestKubeNodeDemo$$' ./test/kubenode
	@cat $(BIN)/k8s-demo.txt
