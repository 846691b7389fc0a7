# The real envoyproxy/ratelimit (RLS v3 over Redis): the rate limit service of global budgets'
# tests (tests/e2e_global.rs), `make run-global` and the bench's global variants (h), (i), (j).
# Pinned: main of 2026-01-22 (commit 3fb702589d36), after PR #802 (per-descriptor hits_addend,
# commit 38500fe) and before PR #1144 (startup retries Redis): this build exits at startup if
# Redis does not answer, so start Redis first. It is the only recent version this machine's Go
# proxy serves (f2fb157 of 2026-07-05 gets 403). `go install` names the binary after its
# package directory: service_cmd. About 45 s and 35 MB on a cold cache; no cgo.
RATELIMIT_VERSION := v1.4.1-0.20260122083618-3fb702589d36
RATELIMIT_BIN := $(TOOLS)/go/bin/service_cmd
RATELIMIT_STAMP := $(TOOLS)/go/ratelimit-$(RATELIMIT_VERSION).stamp

.PHONY: ratelimit

# The stamp names the version: a new pin installs anew, an installed one is never rebuilt.
$(RATELIMIT_STAMP):
	@command -v go >/dev/null || { echo "go not found: install Go >= 1.26 (https://go.dev/dl)" >&2; exit 1; }
	GOBIN=$(CURDIR)/$(TOOLS)/go/bin CGO_ENABLED=0 go install github.com/envoyproxy/ratelimit/src/service_cmd@$(RATELIMIT_VERSION)
	@rm -f $(TOOLS)/go/ratelimit-*.stamp
	@touch $@

# Redis too: the tests, run-global and the bench start one before the service.
ratelimit: redis
	@test -x $(RATELIMIT_BIN) || rm -f $(RATELIMIT_STAMP)
	@$(MAKE) -s --no-print-directory $(RATELIMIT_STAMP)
