# Istio manifests checked by Istio's own rules, offline (docs/istio.md):
# 1. deploy/istio/*.yaml against the CRD schemas of the istio.io/api Go module (strict:
#    unknown fields, types, enums, bounds, required fields, and the CRDs' CEL rules), and the
#    bootstrap ConfigMaps' stats tags against envoy/envoy.yaml's;
# 2. tests/istio/broken/*.yaml must each be refused, for the reason their `# expect:` names;
# 3. each WasmPlugin's pluginConfig through the filter's configure: put into the `make run`
#    Envoy config and run `make check-config` on it; tests/istio/broken-plugin/ must fail it.
# (istioctl itself is not used: the Go module proxy serves no release of istio.io/istio.)
ISTIO_API_VERSION := v1.32.0
ISTIO_GOMODCACHE := $(CURDIR)/$(TOOLS)/go/mod
ISTIO_CRDS := $(ISTIO_GOMODCACHE)/istio.io/api@$(ISTIO_API_VERSION)/kubernetes/customresourcedefinitions.gen.yaml
ISTIO_VENV := $(TOOLS)/istio-venv
ISTIO_PY := $(ISTIO_VENV)/bin/python
ISTIO_CHECK := $(ISTIO_PY) tests/istio/validate.py
ISTIO_OUT := target/istio
.PHONY: istio-validate istio-tools

$(ISTIO_CRDS):
	GOMODCACHE=$(ISTIO_GOMODCACHE) GOFLAGS=-modcacherw go mod download -json istio.io/api@$(ISTIO_API_VERSION) >/dev/null
	@test -f $@

$(ISTIO_PY):
	python3 -m venv $(ISTIO_VENV)
	$(ISTIO_VENV)/bin/pip install --quiet --disable-pip-version-check jsonschema==4.26.0 PyYAML==6.0.3 cel-python==0.5.0

istio-tools: $(ISTIO_CRDS) $(ISTIO_PY)

istio-validate: istio-tools build envoy
	$(ISTIO_CHECK) check --crds $(ISTIO_CRDS) --stats-base envoy/envoy.yaml deploy/istio/*.yaml
	$(ISTIO_CHECK) refuse --crds $(ISTIO_CRDS) tests/istio/broken/*.yaml
	@mkdir -p $(ISTIO_OUT)
	@set -e; for f in deploy/istio/*.yaml; do \
	  grep -q '^kind: WasmPlugin' $$f || continue; \
	  out=$(ISTIO_OUT)/$$(basename $$f .yaml).envoy.yaml; \
	  $(ISTIO_CHECK) envoy-config --base envoy/envoy.yaml --out $$out $$f; \
	  $(MAKE) --no-print-directory check-config CONFIG=$$out; \
	done
	@set -e; for f in tests/istio/broken-plugin/*.yaml; do \
	  $(ISTIO_CHECK) check --crds $(ISTIO_CRDS) $$f; \
	  out=$(ISTIO_OUT)/$$(basename $$f .yaml).envoy.yaml; log=$$out.log; \
	  $(ISTIO_CHECK) envoy-config --base envoy/envoy.yaml --out $$out $$f; \
	  if $(MAKE) --no-print-directory check-config CONFIG=$$out >$$log 2>&1; then \
	    echo "FAIL $$f: check-config accepted a pluginConfig the filter must refuse"; exit 1; fi; \
	  want=$$(sed -n 's/^# expect: //p' $$f); \
	  grep -qF "$$want" $$log || { echo "FAIL $$f: refused, but not for: $$want"; cat $$log; exit 1; }; \
	  echo "ok   $$f: check-config refused it: $$want"; \
	done

TEST_EXTRA += istio-validate
