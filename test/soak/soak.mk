# test/soak/soak.mk: the soak (test/soak, docs/soak.md) and the stress runs
# of the privileged packages. Included by the top-level Makefile.
#
#   make soak          load and churn in the mini cluster for SOAK_DURATION
#                      (default 10m), seeded (SOAK_SEED); writes the report
#                      and its plot to SOAK_OUT (default docs/soak.md and
#                      docs/soak.svg). `make test` runs its 2-minute form.
#   make stress-test   the privileged packages (STRESS_PKGS, default
#                      PRIV_PKGS), one at a time, STRESS_RUNS times
#                      (default 5) while stress-ng keeps one core busy;
#                      prints each run's time and result.

SOAK_DURATION ?= 10m
SOAK_SEED     ?= 1
SOAK_OUT      ?= docs/soak.md
STRESS_RUNS   ?= 5
STRESS_PKGS   ?= $(PRIV_PKGS)

.PHONY: soak stress-deps stress-test

soak: e2e-root e2e-deps build
	ZONELB_BIN=$(BIN)/zonelb ZONELB_SOAK_DURATION=$(SOAK_DURATION) ZONELB_SOAK_SEED=$(SOAK_SEED) \
		ZONELB_SOAK_OUT=$(CURDIR)/$(SOAK_OUT) $(GO) test -count=1 -timeout 0 -v -run TestSoak ./test/soak

# stress-ng (Debian), only when missing; apt-get update only if the first
# install attempt fails for a stale package list.
stress-deps:
	@command -v stress-ng >/dev/null 2>&1 || { \
		echo "installing stress-ng (loads one core during stress-test)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng; }; }

# stress-ng is started here and stopped by its own pid whatever the result.
stress-test: e2e-root build test-deps stress-deps
	@stress-ng --cpu 1 --cpu-load 100 --timeout 0 --quiet & sp=$$!; \
	trap 'kill $$sp 2>/dev/null; wait $$sp 2>/dev/null' EXIT; \
	fail=0; for i in $$(seq 1 $(STRESS_RUNS)); do \
		start=$$(date +%s); \
		if ZONELB_BIN=$(BIN)/zonelb CI=true $(GO) test $(TEST_FLAGS) -p 1 $(STRESS_PKGS) > stress-run-$$i.log 2>&1; then r=ok; else r=FAIL; fail=1; fi; \
		echo "stress run $$i: $$r in $$(( $$(date +%s) - start ))s (log: stress-run-$$i.log)"; \
	done; exit $$fail
