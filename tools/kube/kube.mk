# Builds etcd and kube-apiserver for the integration tests that need a real
# Kubernetes API server (internal/kubetest). Included from the top-level
# Makefile; usable on its own too: make -f tools/kube/kube.mk kube-bins
#
# The binaries come from tools/kube, a module of its own, so k8s.io/kubernetes
# never enters the product's go.mod. They land in .cache/bin (ignored by git)
# and are rebuilt only when missing or when tools/kube/go.mod or go.sum
# changed (a version bump). A cold kube-apiserver build takes about six
# minutes on two cores; etcd about one; later builds reuse Go's build cache.

KUBE_TOOLS_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
KUBE_BIN_DIR ?= $(abspath $(KUBE_TOOLS_DIR)/../../.cache/bin)
KUBE_APISERVER_BIN := $(KUBE_BIN_DIR)/kube-apiserver
KUBE_ETCD_BIN := $(KUBE_BIN_DIR)/etcd
KUBE_TOOLS_MOD := $(KUBE_TOOLS_DIR)/go.mod $(KUBE_TOOLS_DIR)/go.sum

.PHONY: kube-bins kube-bins-clean node-bins
kube-bins: $(KUBE_ETCD_BIN) $(KUBE_APISERVER_BIN)

# The rest of a real node (internal/kubenode): the components that
# hack/local-up-cluster.sh starts, all from the same k8s.io/kubernetes tag as
# kube-apiserver, so versions sit trivially within the skew policy.
KUBE_NODE_CMDS := kubelet kube-controller-manager kube-scheduler kube-proxy kubectl
KUBE_NODE_BINS := $(addprefix $(KUBE_BIN_DIR)/,$(KUBE_NODE_CMDS))
node-bins: kube-bins $(KUBE_NODE_BINS)

# The version is stamped in, as Kubernetes' own build does, so that clients
# see v1.37.2 rather than v0.0.0-master.
# Build to a temporary name and rename, so an interrupted build never leaves a
# truncated binary that a later run would take as up to date.
$(KUBE_APISERVER_BIN): $(KUBE_TOOLS_MOD)
	@mkdir -p $(KUBE_BIN_DIR)
	cd $(KUBE_TOOLS_DIR) && v=$$(go list -m -f '{{.Version}}' k8s.io/kubernetes) && \
		minor=$$(echo $$v | cut -d. -f2) && \
		go build -trimpath -buildvcs=false -ldflags "-X k8s.io/component-base/version.gitVersion=$$v \
			-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$$minor" \
			-o $@.tmp k8s.io/kubernetes/cmd/kube-apiserver
	mv -f $@.tmp $@

# Same flags as kube-apiserver (one Go build cache serves all of them).
$(KUBE_NODE_BINS): $(KUBE_BIN_DIR)/%: $(KUBE_TOOLS_MOD)
	@mkdir -p $(KUBE_BIN_DIR)
	cd $(KUBE_TOOLS_DIR) && v=$$(go list -m -f '{{.Version}}' k8s.io/kubernetes) && \
		minor=$$(echo $$v | cut -d. -f2) && \
		go build -trimpath -buildvcs=false -ldflags "-X k8s.io/component-base/version.gitVersion=$$v \
			-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$$minor \
			-X k8s.io/client-go/pkg/version.gitVersion=$$v \
			-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$$minor" \
			-o $@.tmp k8s.io/kubernetes/cmd/$*
	mv -f $@.tmp $@

$(KUBE_ETCD_BIN): $(KUBE_TOOLS_MOD)
	@mkdir -p $(KUBE_BIN_DIR)
	cd $(KUBE_TOOLS_DIR) && go build -trimpath -buildvcs=false -o $@.tmp go.etcd.io/etcd/server/v3
	mv -f $@.tmp $@

kube-bins-clean:
	rm -f $(KUBE_APISERVER_BIN) $(KUBE_ETCD_BIN) $(KUBE_APISERVER_BIN).tmp $(KUBE_ETCD_BIN).tmp
	rm -f $(KUBE_NODE_BINS) $(addsuffix .tmp,$(KUBE_NODE_BINS))
