# zonelb's build, test, demo and benchmark entry points.
#
# Every target installs what it needs on a fresh machine (Debian packages,
# Go tools), idempotently: a package is installed only when missing.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
CACHE    := $(CURDIR)/.cache
BIN      := $(CURDIR)/bin

# Tests run with the race detector and without the test cache. The e2e,
# BPF and API-server tests need root; they skip off-CI and fail under CI=true.
TEST_FLAGS ?= -race -count=1 -timeout 30m

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test test-deps fuzz demo interop bench-go lint generate clean help

all: build

help:
	@echo "make build     build bin/zonelb and bin/zonelb-proxy (the standalone proxy alone)"
	@echo "make demo      the demo: a three-zone mini cluster, kube-proxy vs zonelb side by side (root)"
	@echo "make k8s-demo  the DaemonSet on a real kubelet node, steering real pods (root)"
	@echo "make image     zonelb's image (and the test images) as tarballs in bin/images"
	@echo "make test      run the whole test suite (as root for the privileged tests), then make fuzz"
	@echo "make fuzz      fuzz the proxy's two HTTP/2 read loops, FUZZTIME (20000x) inputs each"
	@echo "make soak      10 minutes of load and churn in the mini cluster (SOAK_DURATION=...; root)"
	@echo "make stress-test  the privileged packages STRESS_RUNS times with stress-ng loading one core (root)"
	@echo "make interop   run 100 rounds of the gRPC interop suite through zonelb"
	@echo "make bench     benchmark zonelb against direct, HAProxy, nginx and Caddy"
	@echo "make bench-e2e zonelb against kube-proxy and HAProxy as node proxy in the mini cluster (root)"
	@echo "make bench-go  Go benchmarks of the hot paths (pick, forwarding) with -benchmem"
	@echo "make lint      go vet and staticcheck"
	@echo "make generate  regenerate the BPF objects (installs clang and libbpf-dev)"
	@echo "make alerts    regenerate the alerting rules in deploy/ from deploy/alerts"

# Static (cgo off): the same binary runs on a host and in the image.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/zonelb ./cmd/zonelb
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/zonelb-proxy ./cmd/zonelb-proxy

# Packages that build namespaces, load BPF, run a mini cluster or the real
# node (test/kubenode, the heaviest): they run one package at a time (-p 1),
# never two side by side on a small machine, after the others (which run in
# parallel).
PRIV_PKGS := ./bpf/... ./daemon/... ./deploy/... ./internal/... ./test/...

test: build test-deps
	$(GO) vet ./...
	ZONELB_BIN=$(BIN)/zonelb $(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -vxF "$$($(GO) list $(PRIV_PKGS))")
	ZONELB_BIN=$(BIN)/zonelb $(GO) test $(TEST_FLAGS) -p 1 $(PRIV_PKGS)
	$(MAKE) --no-print-directory fuzz

# The proxy's two read loops (client side, endpoint side) fed arbitrary
# bytes for a bounded time each: a crash, a hang or a goroutine of the
# proxy that outlives it fails. The seed corpus is in proxy/testdata/fuzz.
#
# Counts, not durations: Go 1.26's fuzzing coordinator can fail a run with a
# bare "context deadline exceeded" when -fuzztime's wall-clock deadline meets
# a busy worker (golang/go#75804, fixed in Go 1.27; seen in a clean-clone CI
# run here), and a count has no deadline to race. Minimising each new input
# is bounded too: at the default 60 s a worker spent most of a 20 s run
# minimising (execs 0/sec for seconds; 1,675 execs and 2 new inputs in 10 s,
# against 10,000 execs and 21 new inputs in 9 s with 100x).
FUZZTIME ?= 20000x
FUZZMINIMIZETIME ?= 100x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzServerReadLoop$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzClientReadLoop$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./proxy

# What the tests need beyond Go; fragments below add to it. Tools go to
# .cache/bin, which the tests find on PATH.
export PATH := $(CACHE)/bin:$(PATH)

test-deps:: $(CACHE)/bin/h2spec kube-bins

# h2spec v2.2.1 (the module has no go.mod, hence +incompatible).
$(CACHE)/bin/h2spec:
	GOBIN=$(CACHE)/bin $(GO) install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible

# The main job: the three-zone mini cluster (test/e2e/e2e.mk). Root.
demo: e2e-demo

interop: build
	ZONELB_BIN=$(BIN)/zonelb ZONELB_INTEROP_ROUNDS=100 $(GO) test -count=1 -timeout 60m -run TestInterop -v ./test/interop

# Go benchmarks of the hot paths (pick, EWMA update, forwarding), with
# allocations; compare runs with benchstat.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./zone ./proxy

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The BPF objects and their Go bindings are generated and committed, so
# builds need no clang; `generate` installs the toolchain and regenerates.
generate: bpf-generate

clean:
	rm -rf $(BIN)

# Component fragments: BPF code generation, the Kubernetes API server used
# by integration tests, the benchmark peers.
include bpf/bpf.mk
include tools/kube/kube.mk
include bench/bench.mk
include deploy/deploy.mk
include deploy/image.mk
include tools/containerd/containerd.mk
include test/kubenode/kubenode.mk
include test/e2e/e2e.mk
include test/soak/soak.mk
