# deploy/deploy.mk: what deploy's tests need beyond Go, included by the
# top-level Makefile (`include deploy/deploy.mk`, after CACHE is set).
#
# promtool evaluates the Grafana dashboard's PromQL and unit-tests the
# alerting rules (deploy/dashboard_test.go, deploy/alerts_test.go); the
# prometheus server scrapes the daemon in the mini-cluster test and the
# demo (internal/cluster/prometheus_linux.go). Both are taken out of
# Debian's prometheus package without installing it, which would also
# install and enable a Prometheus service on this machine.
# setpriv (util-linux, essential on Debian) runs the capability test.

DEPLOY_PROMTOOL    := $(CACHE)/bin/promtool
DEPLOY_PROMETHEUS  := $(CACHE)/bin/prometheus

test-deps:: $(DEPLOY_PROMTOOL) $(DEPLOY_PROMETHEUS)

$(DEPLOY_PROMTOOL): BINARY := promtool
$(DEPLOY_PROMETHEUS): BINARY := prometheus
$(DEPLOY_PROMTOOL) $(DEPLOY_PROMETHEUS):
	@mkdir -p $(dir $@)
	@echo "deploy: extracting $(BINARY) from Debian's prometheus package into $(dir $@)"
	@tmp=$$(mktemp -d) && cd $$tmp && \
	{ apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } && \
	dpkg-deb -x prometheus_*.deb root && install -m 0755 root/usr/bin/$(BINARY) $@.tmp && mv -f $@.tmp $@; \
	status=$$?; rm -rf $$tmp; exit $$status

# The alerting rules are generated from one source (deploy/alerts):
# prometheus/zonelb-alerts.yaml and the PrometheusRule of
# components/prometheus-operator. deploy's TestAlertFilesGenerated fails
# when they are stale.
.PHONY: alerts
alerts:
	$(GO) generate ./deploy/alerts
