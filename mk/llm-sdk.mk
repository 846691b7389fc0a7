# The official LLM SDKs as clients of the e2e tests (tests/e2e_llm_sdk.rs, SPEC 2's
# provider-shaped errors): pinned, into the Envoy venv. A new pin installs anew.
OPENAI_SDK_VERSION := 3.63.0
ANTHROPIC_SDK_VERSION := 2.17.0
SDK_STAMP := $(VENV)/sdk-openai-$(OPENAI_SDK_VERSION)-anthropic-$(ANTHROPIC_SDK_VERSION).stamp

.PHONY: sdk

$(SDK_STAMP):
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check openai==$(OPENAI_SDK_VERSION) anthropic==$(ANTHROPIC_SDK_VERSION)
	@rm -f $(VENV)/sdk-*.stamp
	@touch $@

sdk: $(SDK_STAMP)
