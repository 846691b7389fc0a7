//! `on_error` in a real Envoy: a tenant whose shared state cannot be decoded (written by
//! another plugin in the same `vm_id`, here the bench's no-op filter as a test aid) is passed
//! with `allow` and answered 503 `quota_unavailable` with `deny`; either way the error is
//! counted in `quota_errors_total` and other tenants are unaffected; an admin reset repairs it.

mod common;
use common::*;

fn noop_wasm() -> std::path::PathBuf {
    let p = std::env::var("TQ_NOOP_WASM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join("bench/noop/target/wasm32-wasip1/release/noop_filter.wasm"));
    assert!(p.exists(), "{} missing: run `make e2e-test` (it builds bench/noop)", p.display());
    p
}

/// The no-op filter, in tenant-quota's vm_id, corrupting tenant `victim` at configure.
fn poisoner() -> String {
    wasm_filter("poisoner", "tenant_quota", &noop_wasm(), r#"{"poison_key":"tq1|t|victim"}"#)
}

fn start(on_error: &str) -> (Upstream, Envoy) {
    let up = Upstream::start();
    // Admin token "secret".
    let cfg = format!(
        r#"{{"on_error":"{on_error}","budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":100}}}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}}}}"#
    );
    let e = Envoy::start(&cfg, up.port, EnvoyOpts { pre_filters: poisoner(), ..EnvoyOpts::default() });
    (up, e)
}

fn errors(e: &Envoy) -> f64 {
    e.series("quota_errors_total{}").unwrap_or(0.0)
}

#[test]
fn corrupt_state_with_allow_passes_and_counts_an_error() {
    let (up, e) = start("allow");
    for _ in 0..3 {
        let r = e.get("/", &[("x-tenant-id", "victim")]);
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert!(r.header("x-tenant-quota-limit").is_none(), "no standing to report for an undecided request");
    }
    assert_eq!(up.received(), 3);
    let ok = e.get("/", &[("x-tenant-id", "healthy")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-tenant-quota-remaining"), Some("99"));
    let mut n = 0.0;
    for _ in 0..50 {
        n = errors(&e);
        if n >= 3.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(n, 3.0, "quota_errors_total");
    // Envoy flushes its log file every 50 ms.
    let mut log = String::new();
    for _ in 0..50 {
        log = e.log_text();
        if log.contains("could not decide") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(log.contains("could not decide, allowing: Corrupt"), "the log names the failure:\n{log}");
}

#[test]
fn corrupt_state_with_deny_answers_503_quota_unavailable() {
    let (up, e) = start("deny");
    let r = e.get("/", &[("x-tenant-id", "victim")]);
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(r.header("x-tenant-quota-reason"), Some("quota_unavailable"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["reason"], "quota_unavailable");
    assert_eq!(body["tenant"], "victim");
    assert_eq!(up.received(), 0, "a denied request never reaches the upstream");
    assert_eq!(e.get("/", &[("x-tenant-id", "healthy")]).status, 200);
    assert_eq!(up.received(), 1);
    // The operator repairs the tenant with a reset; it is counted again from zero.
    let auth = [("authorization", "Bearer secret")];
    let r = request(e.port, "POST", "/.quota/tenants/victim/reset", &auth, None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["repaired"], true);
    let r = e.get("/", &[("x-tenant-id", "victim")]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("99"));
    assert_eq!(up.received(), 2);
}
