# Observability (docs/dashboard-and-alerts.md): the Grafana dashboard and the Prometheus
# alert rules in deploy/.
#   make observability-test   promtool check + unit tests of the rules, the mutants that
#                             prove those tests can fail, the PrometheusRule wrapper up to
#                             date, and a parse of the dashboard
# tests/e2e_prometheus.rs runs Debian's `prometheus` against a real Envoy: e2e-test needs it.
PROM_RULES := deploy/prometheus/tenant-quota-rules.yaml
PROM_RULES_TEST := deploy/prometheus/tenant-quota-rules.test.yaml
DASHBOARD := deploy/grafana/tenant-quota.json

.PHONY: prometheus-tools observability-test

prometheus-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || (apt-get update && apt-get install -y prometheus)

observability-test: prometheus-tools
	promtool check rules $(PROM_RULES)
	cd $(dir $(PROM_RULES_TEST)) && promtool test rules $(notdir $(PROM_RULES_TEST))
	deploy/prometheus/mutants.sh
	@deploy/prometheus/prometheusrule.sh | diff -u deploy/prometheus/tenant-quota-prometheusrule.yaml - \
	  || (echo "deploy/prometheus/tenant-quota-prometheusrule.yaml is stale: deploy/prometheus/prometheusrule.sh > it" && false)
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1] + ": " + str(len(d["panels"])) + " panels")' $(DASHBOARD)

e2e-test: prometheus-tools

TEST_EXTRA += observability-test
