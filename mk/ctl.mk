# The operator CLI (ctl/, docs/cli.md): a native binary of the Cargo workspace. Commands at
# the root act on the filter only (the root package is the default member), so this
# fragment builds and tests the CLI explicitly.
CTL := target/release/tenant-quota-ctl
.PHONY: ctl ctl-test

ctl:
	cargo build --release -p tenant-quota-ctl

# The CLI's native unit tests (parsing, formatting, exit codes), and clippy when installed.
ctl-test:
	cargo test -p tenant-quota-ctl
	@if cargo clippy --version >/dev/null 2>&1; then cargo clippy -p tenant-quota-ctl --all-targets -- -D warnings; fi

# tests/e2e_ctl.rs runs this binary against a real Envoy.
e2e-test: ctl
export TQ_CTL := $(CURDIR)/$(CTL)

TEST_EXTRA += ctl-test
