# Builds containerd v2 (containerd, its runc shim, ctr) for the real node of
# internal/kubenode. Included from the top-level Makefile.
#
# kubelet 1.37 needs containerd 2.x and Debian ships 1.6, so it comes from its
# Go module, wrapped in tools/containerd (a module of its own, so neither
# containerd's dependencies nor Kubernetes' meet the product's go.mod).
# cgo stays off (static binaries; the btrfs snapshotter drops out, overlayfs
# is used). The version is stamped in as containerd's own Makefile does.
# runc and the CNI plugins come from Debian (see node-deps).

CONTAINERD_TOOLS_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
CONTAINERD_BIN_DIR ?= $(abspath $(CONTAINERD_TOOLS_DIR)/../../.cache/bin)
CONTAINERD_CMDS := containerd containerd-shim-runc-v2 ctr
CONTAINERD_BINS := $(addprefix $(CONTAINERD_BIN_DIR)/,$(CONTAINERD_CMDS))
CONTAINERD_MOD := $(CONTAINERD_TOOLS_DIR)/go.mod $(CONTAINERD_TOOLS_DIR)/go.sum

.PHONY: containerd-bins
containerd-bins: $(CONTAINERD_BINS)

$(CONTAINERD_BINS): $(CONTAINERD_BIN_DIR)/%: $(CONTAINERD_MOD)
	@mkdir -p $(CONTAINERD_BIN_DIR)
	cd $(CONTAINERD_TOOLS_DIR) && v=$$(go list -m -f '{{.Version}}' github.com/containerd/containerd/v2) && \
		CGO_ENABLED=0 go build -trimpath -buildvcs=false \
			-ldflags "-X github.com/containerd/containerd/v2/version.Version=$$v" \
			-o $@.tmp github.com/containerd/containerd/v2/cmd/$*
	mv -f $@.tmp $@
