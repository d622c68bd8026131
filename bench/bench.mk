# bench/bench.mk: `make bench`, zonelb side by side with HAProxy, nginx, Caddy
# and no proxy at all, on loopback only. Included by the top-level Makefile,
# whose `build` target makes bin/zonelb. Results: docs/benchmarks.md (generated
# block) and .cache/bench/<time>/ (configs, logs, raw load generator output,
# results.json, zonelb CPU profiles).
#
# Environment knobs (see bench/cmd/benchrun -help for all):
#   BENCH_QUICK=1      smoke run: 1 round, 2 s phases (about 1.5 minutes)
#   BENCH_RUNS=N       rounds over all peers (default 3; about 8 minutes)
#   BENCH_PEERS=a,b    subset of direct,zonelb,haproxy,nginx,caddy
#   BENCH_WORKLOADS=w  grpc, http or both
#   BENCH_PROFILE=0    skip the zonelb CPU profile
#   BENCH_NICE=-10     run proxy, backends and load at that niceness, ahead
#                      of other work on a shared machine (default: 0)
#   BENCH_ARGS=...     extra benchrun flags, e.g. BENCH_ARGS='-doc ""' to only print
#
# Installs what it needs when missing (root: apt-get, cgroup for CPU accounting).

BENCH_GHZ_VERSION ?= v0.120.0
BENCH_BIN_DIR     := .cache/bin
BENCH_CACHE       := .cache/bench
BENCH_GHZ         := $(BENCH_BIN_DIR)/ghz
# command:package pairs installed from Debian when the command is missing.
BENCH_DEBIAN      := haproxy:haproxy nginx:nginx caddy:caddy h2load:nghttp2-client taskset:util-linux

.PHONY: bench bench-quick bench-deps bench-tools

bench: bench-deps bench-tools build
	$(BENCH_CACHE)/benchrun \
		-ghz $(BENCH_GHZ) -ghz-version $(BENCH_GHZ_VERSION) \
		-zonelb $(or $(BIN),bin)/zonelb-proxy -backend $(BENCH_CACHE)/benchbackend \
		-command 'make bench$(if $(BENCH_QUICK), BENCH_QUICK=$(BENCH_QUICK))$(if $(BENCH_RUNS), BENCH_RUNS=$(BENCH_RUNS))$(if $(BENCH_PEERS), BENCH_PEERS=$(BENCH_PEERS))$(if $(BENCH_WORKLOADS), BENCH_WORKLOADS=$(BENCH_WORKLOADS))$(if $(BENCH_NICE), BENCH_NICE=$(BENCH_NICE))' \
		$(BENCH_ARGS)

bench-quick:
	$(MAKE) bench BENCH_QUICK=1

# bench-debian-install is a recipe line that installs the Debian packages of
# the command:package pairs $(1) whose command is missing: apt-get update
# once, and only when something is missing. make bench-e2e uses it too (for
# HAProxy as its node proxy).
bench-debian-install = @missing=""; \
	for pair in $(1); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair\#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "bench: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench-deps:
	$(call bench-debian-install,$(BENCH_DEBIAN))
	@test -x $(BENCH_GHZ) || { \
		echo "bench: installing ghz $(BENCH_GHZ_VERSION) into $(BENCH_BIN_DIR)"; \
		mkdir -p $(BENCH_BIN_DIR) && GOBIN=$(abspath $(BENCH_BIN_DIR)) go install github.com/bojand/ghz/cmd/ghz@$(BENCH_GHZ_VERSION); }

# The runner and the backends are ours: rebuilt every time (go's cache makes
# that quick), so they never lag behind the source.
bench-tools:
	@mkdir -p $(BENCH_CACHE)
	go build -o $(BENCH_CACHE)/benchrun ./bench/cmd/benchrun
	go build -o $(BENCH_CACHE)/benchbackend ./bench/cmd/benchbackend
