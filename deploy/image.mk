# `make image`: zonelb's image, without a container engine or a registry.
# Included from the top-level Makefile, after CACHE, BIN, GO and VERSION.
#
# The image holds the one static binary that `make build` makes, at /zonelb,
# with ENTRYPOINT ["/zonelb"] and USER 0:0 on an empty base: what
# deploy/Dockerfile builds with Docker. tools/image (go-containerregistry)
# assembles it and writes a tarball that `ctr -n k8s.io images import` and
# `docker load` read. The test images of the real node (test client and
# backend, pod sandbox) are made the same way from internal/kubenode/testpod.

IMAGE_DIR  := $(BIN)/images
IMAGE_REPO ?= ghcr.io/zonelb/zonelb
IMAGE_TAG  ?= $(VERSION)
MKIMAGE    := $(CACHE)/bin/mkimage
IMAGE_TOOL_SRC := tools/image/go.mod tools/image/go.sum tools/image/main.go

.PHONY: image
image: $(IMAGE_DIR)/zonelb.tar $(IMAGE_DIR)/testpod.tar $(IMAGE_DIR)/pause.tar

$(MKIMAGE): $(IMAGE_TOOL_SRC)
	@mkdir -p $(dir $@)
	cd tools/image && $(GO) build -trimpath -buildvcs=false -o $@.tmp . && mv -f $@.tmp $@

# build is phony: the image is remade with the binary each time (seconds).
$(IMAGE_DIR)/zonelb.tar: build $(MKIMAGE)
	@mkdir -p $(IMAGE_DIR)
	$(MKIMAGE) -o $@ -tag $(IMAGE_REPO):$(IMAGE_TAG) -entrypoint /zonelb -user 0:0 $(BIN)/zonelb=/zonelb

$(BIN)/testpod: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./internal/kubenode/testpod

$(IMAGE_DIR)/testpod.tar: $(BIN)/testpod $(MKIMAGE)
	@mkdir -p $(IMAGE_DIR)
	$(MKIMAGE) -o $@ -tag zonelb.test/testpod:v1 -entrypoint /testpod $(BIN)/testpod=/testpod

$(IMAGE_DIR)/pause.tar: $(BIN)/testpod $(MKIMAGE)
	@mkdir -p $(IMAGE_DIR)
	$(MKIMAGE) -o $@ -tag zonelb.test/pause:v1 -entrypoint "/testpod pause" $(BIN)/testpod=/testpod

.PHONY: FORCE
FORCE:
