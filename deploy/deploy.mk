# deploy/deploy.mk: what deploy's tests need beyond Go, included by the
# top-level Makefile (`include deploy/deploy.mk`, after CACHE is set).
#
# promtool evaluates the Grafana dashboard's PromQL (TestDashboardQueries).
# It is taken out of Debian's prometheus package without installing the
# package, which would also install and enable a Prometheus server.
# setpriv (util-linux, essential on Debian) runs the capability test.

DEPLOY_PROMTOOL := $(CACHE)/bin/promtool

test-deps:: $(DEPLOY_PROMTOOL)

$(DEPLOY_PROMTOOL):
	@mkdir -p $(dir $@)
	@tmp=$$(mktemp -d) && cd $$tmp && \
	{ apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } && \
	dpkg-deb -x prometheus_*.deb root && install -m 0755 root/usr/bin/promtool $@.tmp && mv -f $@.tmp $@; \
	status=$$?; rm -rf $$tmp; exit $$status
