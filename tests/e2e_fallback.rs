//! Fallback instead of refusal, and providers that push back, in a real Envoy with two
//! upstream clusters (`upstream`, the primary, and `backup`, chosen by a route that matches
//! `x-tenant-quota-route: backup`), each an OpenAI-compatible test server that records the
//! bodies it gets: exhaustion reroutes to another model on the backup (JSON and SSE, the body
//! rewritten, its usage charged to the fallback's budgets); the fallback exhausted too gives
//! the 429; a 429 from the primary cools it for its `retry-after`, then traffic returns; 64
//! concurrent requests keep both budgets exact.

mod common;
use common::llm::LlmUpstream;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"

fn cfg() -> String {
    format!(
        r#"{{"llm":{{"request_body":true,"model":{{"request_body":"model"}},"default_reserve_tokens":0}},
  "providers":{{"by":"cluster","cooldown_s":30,"max_cooldown_s":60,"fallbacks":{{"upstream":{{"upstream":"backup"}}}}}},
  "budgets":{{
    "big_rpd":{{"counts":"requests","window_ms":86400000,"limit":2,"match":{{"models":["gpt-4o"]}},
               "on_exceed":"fallback","fallback":{{"model":"gpt-4o-mini","upstream":"backup"}}}},
    "mini_rpd":{{"counts":"requests","window_ms":86400000,"limit":3,"match":{{"models":["gpt-4o-mini"]}}}},
    "big_tokens":{{"counts":{{"llm_tokens":"total"}},"window_ms":86400000,"limit":1000000,"match":{{"models":["gpt-4o"]}}}},
    "mini_tokens":{{"counts":{{"llm_tokens":"total"}},"window_ms":86400000,"limit":1000000,"match":{{"models":["gpt-4o-mini"]}}}},
    "provider_rpd":{{"counts":"requests","window_ms":86400000,"limit":1000000,"scope":"provider"}}}},
  "scopes":{{"provider":{{"metadata":["xds","cluster_name"]}}}},
  "tenants":{{"conc":{{"budgets":{{"big_rpd":{{"limit":20}},"mini_rpd":{{"limit":25}}}}}}}},
  "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    )
}

fn backup_cluster(port: u16) -> String {
    format!(
        r#"  - name: backup
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: backup
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

const ROUTES: &str = r#"              - match: { prefix: "/", headers: [ { name: x-tenant-quota-route, string_match: { exact: backup } } ] }
                route: { cluster: backup, timeout: 10s }
              - match: { prefix: "/" }
                route: { cluster: upstream, timeout: 10s }
"#;

struct Rig {
    e: Envoy,
    primary: LlmUpstream,
    backup: LlmUpstream,
}

fn rig() -> Rig {
    let (primary, backup) = (LlmUpstream::start(), LlmUpstream::start());
    let opts = EnvoyOpts { allow_stop_iteration: true, extra_clusters: backup_cluster(backup.port), routes: ROUTES.into(), ..EnvoyOpts::default() };
    let e = Envoy::start(&cfg(), primary.port, opts);
    Rig { e, primary, backup }
}

fn chat(port: u16, tenant: &str, model: &str, stream: bool) -> Response {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#);
    request(port, "POST", "/v1/chat/completions", &[("x-tenant-id", tenant), ("content-type", "application/json")], Some(body.as_bytes()))
}

fn models(up: &LlmUpstream) -> Vec<String> {
    up.bodies.lock().unwrap().iter().map(|b| serde_json::from_str::<Value>(b).unwrap()["model"].as_str().unwrap_or("").to_string()).collect()
}

/// A per-provider budget's use: the scope `provider` takes its id from the route's cluster.
fn provider_used(e: &Envoy, cluster: &str) -> u64 {
    let r = request(e.port, "GET", &format!("/.quota/scopes/provider/{cluster}"), &[("authorization", "Bearer secret")], None);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["budgets"]["provider_rpd"]["used"].as_u64().unwrap_or_else(|| panic!("{cluster}: {v}"))
}

fn used(e: &Envoy, tenant: &str, budget: &str) -> u64 {
    let r = request(e.port, "GET", &format!("/.quota/tenants/{tenant}"), &[("authorization", "Bearer secret")], None);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["budgets"][budget]["used"].as_u64().unwrap_or_else(|| panic!("{budget}: {v}"))
}

#[test]
fn exhaustion_reroutes_to_the_fallback_model_on_the_backup_until_it_is_exhausted_too() {
    let r = rig();
    let t = format!("fb{}", now_ms());
    // Two fit the primary's model.
    for _ in 0..2 {
        let resp = chat(r.e.port, &t, "gpt-4o", false);
        assert_eq!((resp.status, resp.header("x-tenant-quota-fallback")), (200, None), "{}", resp.body_str());
    }
    assert_eq!(models(&r.primary), ["gpt-4o", "gpt-4o"]);
    // Then to the backup as gpt-4o-mini: JSON, SSE, JSON.
    for stream in [false, true, false] {
        let resp = chat(r.e.port, &t, "gpt-4o", stream);
        assert_eq!(resp.status, 200, "{}", resp.body_str());
        assert_eq!(resp.header("x-tenant-quota-fallback"), Some("budget=big_rpd; reason=big_rpd_exceeded; model=gpt-4o-mini; upstream=backup"));
        if stream {
            assert!(resp.body_str().contains("\"total_tokens\":13"), "the usage chunk: {}", resp.body_str());
        }
    }
    assert_eq!(models(&r.primary).len(), 2, "nothing more reached the primary");
    assert_eq!(models(&r.backup), ["gpt-4o-mini"; 3], "the body's model was rewritten");
    let streamed: Value = serde_json::from_str(&r.backup.bodies.lock().unwrap()[1]).unwrap();
    assert_eq!((streamed["stream"].as_bool(), streamed["stream_options"]["include_usage"].as_bool()), (Some(true), Some(true)));
    // Usage went to the fallback's budgets: 13 tokens an answer.
    assert_eq!((used(&r.e, &t, "big_tokens"), used(&r.e, &t, "mini_tokens")), (26, 39));
    assert_eq!((used(&r.e, &t, "big_rpd"), used(&r.e, &t, "mini_rpd")), (2, 3), "the rerouting budget did not count them");
    // A per-provider budget (scope id: the route's cluster) follows the reroute.
    assert_eq!((provider_used(&r.e, "upstream"), provider_used(&r.e, "backup")), (2, 3));
    // The fallback exhausted too: its 429, provider-shaped, and nothing reaches either upstream.
    let resp = chat(r.e.port, &t, "gpt-4o", false);
    assert_eq!((resp.status, resp.header("x-tenant-quota-reason")), (429, Some("mini_rpd_exceeded")), "{}", resp.body_str());
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert_eq!((models(&r.primary).len(), models(&r.backup).len()), (2, 3));
    assert_eq!((provider_used(&r.e, "upstream"), provider_used(&r.e, "backup")), (2, 3), "a refused request counts nowhere");
    // Every request sent to the fallback counts, the one its budget then refused too.
    assert_eq!(r.e.series(r#"quota_fallbacks_total{tenant_id="other",resource="big_rpd",reason="big_rpd_exceeded"}"#), Some(4.0));
}

#[test]
fn a_429_from_the_primary_cools_it_for_its_retry_after_then_traffic_returns() {
    let r = rig();
    let t = format!("cool{}", now_ms());
    *r.primary.push_back.lock().unwrap() = Some((429, Some(2)));
    let first = chat(r.e.port, &t, "other-model", false);
    assert_eq!(first.status, 429, "the provider's own 429 reaches the client");
    let cooled_at = Instant::now();
    *r.primary.push_back.lock().unwrap() = None;
    // Every worker follows the shared mark within a tick: a few requests, all to the backup.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..4 {
        let resp = chat(r.e.port, &t, "other-model", false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-tenant-quota-fallback"), Some("provider=upstream; reason=provider_cooling; upstream=backup"));
    }
    assert_eq!((models(&r.primary).len(), models(&r.backup).len()), (1, 4));
    assert_eq!(models(&r.backup), ["other-model"; 4], "a cluster fallback keeps the model");
    assert!(cooled_at.elapsed() < Duration::from_millis(1800), "the checks ran within the cooldown");
    // After its retry-after (2 s), back to the primary.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(cooled_at.elapsed()));
    let resp = chat(r.e.port, &t, "other-model", false);
    assert_eq!((resp.status, resp.header("x-tenant-quota-fallback")), (200, None));
    assert_eq!(models(&r.primary).len(), 2);
    assert_eq!(r.e.series(r#"quota_fallbacks_total{tenant_id="other",resource="upstream",reason="provider_cooling"}"#), Some(4.0));
    // Envoy 1.40 has the `clear_route_cache` foreign function the filter calls after setting
    // the route header (its Wasm host also clears the route cache on a request header change).
    assert!(!r.e.log_text().contains("clear_route_cache is not available"), "{}", r.e.log_text());
    assert!(r.e.log_text().contains("provider `upstream` answered 429: cooling for 2000 ms"));
}

#[test]
fn sixty_four_at_once_keep_both_budgets_exact() {
    let r = rig();
    let port = r.e.port;
    let handles: Vec<_> = (0..64).map(|_| std::thread::spawn(move || chat(port, "conc", "gpt-4o", false))).collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap().status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // conc: 20 on the primary's model, 25 rerouted, the rest refused.
    assert_eq!((ok, refused), (45, 19), "{statuses:?}");
    assert_eq!((models(&r.primary).len(), models(&r.backup).len()), (20, 25));
    assert_eq!((used(&r.e, "conc", "big_rpd"), used(&r.e, "conc", "mini_rpd")), (20, 25));
    assert_eq!((used(&r.e, "conc", "big_tokens"), used(&r.e, "conc", "mini_tokens")), (20 * 13, 25 * 13));
    assert_eq!((provider_used(&r.e, "upstream"), provider_used(&r.e, "backup")), (20, 25));
}

#[test]
fn providers_named_by_model_cool_by_model() {
    let (primary, backup) = (LlmUpstream::start(), LlmUpstream::start());
    let cfg = r#"{"llm":{"request_body":true,"model":{"request_body":"model"}},
  "providers":{"by":"model","cooldown_on":[503],"cooldown_s":1,"fallbacks":{"gpt-4o":{"model":"gpt-4o-mini"}}}}"#;
    let opts = EnvoyOpts { allow_stop_iteration: true, extra_clusters: backup_cluster(backup.port), routes: ROUTES.into(), ..EnvoyOpts::default() };
    let e = Envoy::start(cfg, primary.port, opts);
    // A 429 is not in cooldown_on here; a 503 without retry-after cools for cooldown_s.
    *primary.push_back.lock().unwrap() = Some((429, Some(30)));
    assert_eq!(chat(e.port, "m", "gpt-4o", false).status, 429);
    std::thread::sleep(Duration::from_millis(50));
    let again = chat(e.port, "m", "gpt-4o", false);
    assert_eq!((again.status, again.header("x-tenant-quota-fallback")), (429, None), "a 429 did not cool it");
    *primary.push_back.lock().unwrap() = Some((503, None));
    assert_eq!(chat(e.port, "m", "gpt-4o", false).status, 503);
    let cooled_at = Instant::now();
    *primary.push_back.lock().unwrap() = None;
    std::thread::sleep(Duration::from_millis(50));
    let resp = chat(e.port, "m", "gpt-4o", false);
    assert_eq!((resp.status, resp.header("x-tenant-quota-fallback")), (200, Some("provider=gpt-4o; reason=provider_cooling; model=gpt-4o-mini")));
    assert_eq!(chat(e.port, "m", "claude-x", false).header("x-tenant-quota-fallback"), None, "other models are not cooling");
    assert!(cooled_at.elapsed() < Duration::from_millis(900), "within the cooldown");
    assert_eq!(models(&primary), ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini", "claude-x"], "same cluster, the model rewritten");
    assert!(models(&backup).is_empty());
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(cooled_at.elapsed()));
    assert_eq!(chat(e.port, "m", "gpt-4o", false).header("x-tenant-quota-fallback"), None, "cooled down");
}
