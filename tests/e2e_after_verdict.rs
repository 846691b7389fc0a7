//! Every admission takes the same path after the verdict, whichever callback decided it:
//! the header phase, the end of a body wait that timed out (decided from the tick), or a
//! queue retry (decided from the tick). Each test here failed before that path was one.

mod common;
use common::global::{rls_cluster, stat};
use common::llm::LlmUpstream;
use common::*;
use std::time::{Duration, Instant};

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

/// LLM bodies are read before admission, but the Envoy lacks
/// `allow_on_headers_stop_iteration`, so every such request is decided by the tick after its
/// 1 s body wait. `global` names a requests budget's global mode; the rate limit cluster is a
/// port nobody listens on.
fn body_timeout_cfg(global: &str, on_unavailable: &str) -> String {
    format!(
        r#"{{"llm":{{"request_body":true,"model":{{"request_body":"model"}},"default_reserve_tokens":0}},
  "global":{{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":100,"timeout_ms":100,"on_unavailable":{on_unavailable}}},
  "budgets":{{"tokens":{{"counts":{{"llm_tokens":"total"}},"window_ms":3600000,"limit":100000}},
             "rpm":{{"counts":"requests","window_ms":60000,"limit":100,"global":"{global}"}}}}}}"#
    )
}

fn dead_rls() -> String {
    // A unix socket nobody listens on: every call fails at connect.
    rls_cluster(std::path::Path::new("/nonexistent/tq-dead-rls.sock"))
}

fn llm_post(e: &Envoy, tenant: &str) -> Response {
    request(e.port, "POST", "/v1/chat/completions", &[("x-tenant-id", tenant), ("content-type", "application/json")], Some(br#"{"model":"gpt-4o"}"#))
}

#[test]
fn a_request_decided_after_its_body_wait_still_asks_the_service_for_exact_budgets() {
    let up = LlmUpstream::start();
    let e = Envoy::start(&body_timeout_cfg("exact", r#""deny""#), up.port, EnvoyOpts { extra_clusters: dead_rls(), ..EnvoyOpts::default() });
    let t0 = Instant::now();
    let r = llm_post(&e, "bt-exact");
    // The exact check cannot reach the service: `on_unavailable: deny` answers 503. Skipping
    // the check (the bug) admitted it with 200.
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (503, Some("quota_unavailable")), "{}", r.body_str());
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert!(stat(&e, "quota_global_checks_total.result.error") >= 1);
    assert_eq!(up.bodies.lock().unwrap().len(), 0, "refused before the upstream");
}

#[test]
fn a_request_decided_after_its_body_wait_is_marked_for_the_next_sync() {
    let up = LlmUpstream::start();
    let e = Envoy::start(&body_timeout_cfg("sync", r#""local""#), up.port, EnvoyOpts { extra_clusters: dead_rls(), ..EnvoyOpts::default() });
    let r = llm_post(&e, "bt-sync");
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Its unit must be sent: the sync loop tries the (dead) service. Never marked (the bug):
    // no tenant to sync, no call at all.
    let deadline = Instant::now() + Duration::from_secs(3);
    while stat(&e, "quota_global_syncs_total.result.error") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stat(&e, "quota_global_syncs_total.result.error") >= 1, "no sync was attempted for the admitted unit");
}

fn saturation_level(e: &Envoy) -> String {
    let r = request(e.port, "GET", "/.quota/status", &[("authorization", "Bearer secret")], None);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["saturation"]["level"].as_str().unwrap_or("?").to_string()
}

#[test]
fn requests_admitted_from_the_queue_count_in_the_in_flight_signal() {
    let up = Upstream::start();
    // Two slots; the rest wait. The in_flight signal is critical at 2 open requests.
    let cfg = format!(
        r#"{{"budgets":{{"slots":{{"counts":"in_flight","limit":2,"on_exceed":"queue","queue":{{"timeout_ms":8000,"max_waiting":10}}}}}},
            "tenants":{{"probe":{{"priority":"vip","unlimited":true}}}},
            "saturation":{{"signals":{{"open":{{"from":"in_flight","elevated":1,"critical":2}}}},"stale_after_ms":60000}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    );
    let e = Envoy::start(&cfg, up.port, EnvoyOpts { concurrency: 1, ..EnvoyOpts::default() });
    let port = e.port;
    // Two hold the slots for 1.5 s; two more wait in the queue and are admitted from it
    // when those end, then hold the slots for 3.5 s (the level is held 1 s after its cause ends).
    let first: Vec<_> = (0..2).map(|_| std::thread::spawn(move || request(port, "GET", "/slow/1500", &[("x-tenant-id", "q")], None))).collect();
    std::thread::sleep(Duration::from_millis(200));
    let queued: Vec<_> = (0..2).map(|_| std::thread::spawn(move || request(port, "GET", "/slow/3500", &[("x-tenant-id", "q")], None))).collect();
    for h in first {
        assert_eq!(h.join().unwrap().status, 200);
    }
    // The first two are done; the two from the queue are open upstream.
    std::thread::sleep(Duration::from_millis(1700));
    assert_eq!(up.open.load(std::sync::atomic::Ordering::SeqCst), 2, "the queued two are at the upstream");
    assert_eq!(saturation_level(&e), "critical", "the two requests admitted from the queue are in flight");
    for h in queued {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("x-tenant-quota-queued-ms").is_some());
    }
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(saturation_level(&e), "normal");
}

/// A request refused on its `exact` check (asked from the header phase) gives its place in the
/// in-flight saturation signal back: the signal returns to normal (it stayed counted before).
#[test]
fn a_request_refused_on_its_exact_check_leaves_the_in_flight_signal() {
    let up = Upstream::start();
    let cfg = format!(
        r#"{{"global":{{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":100,"timeout_ms":100,"on_unavailable":"deny"}},
            "budgets":{{"daily":{{"counts":"requests","window_ms":86400000,"limit":100,"global":"exact"}}}},
            "saturation":{{"signals":{{"open":{{"from":"in_flight","elevated":1,"critical":2}}}},"stale_after_ms":60000}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    );
    let e = Envoy::start(&cfg, up.port, EnvoyOpts { concurrency: 1, extra_clusters: dead_rls(), ..EnvoyOpts::default() });
    for _ in 0..3 {
        let r = request(e.port, "GET", "/", &[("x-tenant-id", "x")], None);
        assert_eq!(r.status, 503, "the service cannot be asked and on_unavailable is deny");
    }
    // The level is held 1 s after its cause ends.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(saturation_level(&e), "normal", "refused requests are not in flight");
}

/// Without `allow_on_headers_stop_iteration` (Istio's WasmPlugin) the first LLM request waits
/// 1 s for its body, then every worker decides LLM requests on their headers. A request queued
/// for a budget, resumed by the tick, then gets its body: that must not switch body reading
/// back on (it did: the next LLM request waited 1 s again).
#[test]
fn a_queued_request_getting_its_body_leaves_body_reading_off() {
    let up = Upstream::start();
    let cfg = r#"{"llm":{"request_body":true,"model":{"request_body":"model"},"default_reserve_tokens":0},
      "budgets":{"tokens":{"counts":{"llm_tokens":"total"},"window_ms":3600000,"limit":100000},
                 "slots":{"counts":"in_flight","limit":1,"on_exceed":"queue","queue":{"timeout_ms":5000,"max_waiting":10}}}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts { concurrency: 1, ..EnvoyOpts::default() });
    let post = |path: &str| {
        let t0 = Instant::now();
        let r = request(e.port, "POST", path, &[("x-tenant-id", "b"), ("content-type", "application/json")], Some(b"{\"model\":\"m\"}"));
        (r.status, t0.elapsed().as_millis())
    };
    // The first waits for its body 1 s; the next is decided on its headers at once.
    assert_eq!(post("/").0, 200);
    std::thread::sleep(Duration::from_millis(100));
    let (s, ms) = post("/");
    assert!(s == 200 && ms < 700, "decided on headers: {s} after {ms} ms");
    // One holds the slot; one waits in the queue, is resumed by the tick and gets its body.
    let port = e.port;
    let holder = std::thread::spawn(move || request(port, "POST", "/slow/1000", &[("x-tenant-id", "b")], Some(b"{}")).status);
    std::thread::sleep(Duration::from_millis(200));
    let (s, _) = post("/slow/10");
    assert_eq!(s, 200);
    assert_eq!(holder.join().unwrap(), 200);
    std::thread::sleep(Duration::from_millis(100));
    let (s, ms) = post("/");
    assert!(s == 200 && ms < 700, "still decided on headers after a queued request got its body: {s} after {ms} ms");
}
