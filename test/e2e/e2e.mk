# test/e2e/e2e.mk: the mini cluster (docs/e2e.md). Included by the top-level
# Makefile, whose `build` target makes bin/zonelb and whose `demo` target
# should depend on e2e-demo:
#
#   make demo         (-> e2e-demo) the three-zone mini cluster, kube-proxy
#                     and PreferSameZone side by side with zonelb, then a
#                     live overload and kill of zone-a; about 40 s; root;
#                     writes demo-report/report.html (and results.json)
#   make bench-e2e    zonelb against the kube-proxy baselines and HAProxy as
#                     the node proxy, under load, written to
#                     docs/benchmarks-e2e.md; about 6.5 minutes; root
#   make e2e-test     only the e2e test (it also runs in `make test`)
#
# What they need beyond Go is installed when missing (iptables, for the
# kube-proxy baseline); `test-deps` gets it too, so `make test` can run the
# e2e test. Discovery uses the real kube-apiserver when `make kube-bins`
# has built it (make test does), the file source otherwise; the output says
# which.
#
# Knobs: DEMO_ARGS / BENCH_E2E_ARGS pass flags (see `bin/zonelb-demo -h`,
# `bin/zonelb-bench-e2e -h`), e.g. BENCH_E2E_ARGS='-rounds 5'.

E2E_DEMO_BIN  := $(or $(BIN),bin)/zonelb-demo
E2E_BENCH_BIN := $(or $(BIN),bin)/zonelb-bench-e2e
E2E_ZONELB    := $(or $(BIN),bin)/zonelb
E2E_GO        := $(or $(GO),go)

.PHONY: e2e-root e2e-deps report-deps e2e-demo bench-e2e bench-e2e-deps e2e-test

# Checked first, so that a user without root gets this and not a failed
# apt-get or a namespace error.
e2e-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "This needs root: it builds a mini cluster out of network namespaces, veth pairs,"; \
		echo "cgroups and eBPF programs (all removed when it ends). Run it as root: sudo make $(MAKECMDGOALS)"; \
		echo "Without root, 'go run ./cmd/zonelb-demo --loopback' shows per-request balancing on loopback."; \
		exit 1; \
	fi

# iptables (iptables-nft on Debian): only when missing; apt-get update only
# if the first install attempt fails for a stale package list.
e2e-deps:
	@command -v iptables-restore >/dev/null 2>&1 || { \
		echo "e2e: installing iptables (the kube-proxy baseline of the mini cluster)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables; }; }

test-deps:: e2e-deps report-deps bench-e2e-deps

# Headless Chromium (Debian's chromium) loads the demo's HTML report in
# cmd/zonelb-demo's TestDemoReport; only when missing.
report-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "e2e: installing chromium (headless, for the demo report's test)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }; }

e2e-demo: e2e-root e2e-deps build $(DEPLOY_PROMETHEUS)
	$(E2E_GO) build -o $(E2E_DEMO_BIN) ./cmd/zonelb-demo
	$(E2E_DEMO_BIN) --zonelb $(E2E_ZONELB) $(DEMO_ARGS)

# HAProxy, the node proxy of bench-e2e's fourth mode: make bench's installer
# (bench/bench.mk), for this one package.
bench-e2e-deps:
	$(call bench-debian-install,haproxy:haproxy)

bench-e2e: e2e-root e2e-deps bench-e2e-deps build
	$(E2E_GO) build -o $(E2E_BENCH_BIN) ./cmd/zonelb-bench-e2e
	$(E2E_BENCH_BIN) --zonelb $(E2E_ZONELB) --out docs/benchmarks-e2e.md \
		--command 'sudo make bench-e2e$(if $(BENCH_E2E_ARGS), BENCH_E2E_ARGS='"'"'$(BENCH_E2E_ARGS)'"'"')' $(BENCH_E2E_ARGS)

e2e-test: e2e-root e2e-deps build
	ZONELB_BIN=$(E2E_ZONELB) $(E2E_GO) test -count=1 -timeout 15m -v -run TestMiniCluster ./test/e2e
