//! Prometheus metrics with bounded tenant labels, threshold crossings, and the admin API,
//! in a real Envoy with the stats rules of envoy/envoy.yaml.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

// sha256("secret")
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn cfg(extra: &str) -> String {
    format!(
        r#"{{"budgets":{{"rph":{{"counts":"requests","window_ms":3600000,"limit":10,"burst_credits":2}},
                       "cost":{{"counts":{{"request_header":"x-cost"}},"window_ms":3600000,"limit":100}}}},
            "tenants":{{"acme":{{"priority":"vip"}},"beta.corp":{{"budgets":{{"rph":{{"limit":3}}}}}}}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}{extra}}}"#
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer secret");

fn admin(e: &Envoy, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let r = request(e.port, method, &format!("/.quota{path}"), &[AUTH, ("content-type", "application/json")], body.map(str::as_bytes));
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn series(e: &Envoy, name: &str) -> f64 {
    e.series(name).unwrap_or(0.0)
}

#[test]
fn prometheus_counters_per_label_set() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(""), up.port, EnvoyOpts::default());
    let get = |id: &str, cost: &str| e.get("/", &[("x-tenant-id", id), ("x-cost", cost)]).status;
    // acme: 12 admitted (10 + 2 burst), 3 rejected burst_exhausted.
    let acme: Vec<u16> = (0..15).map(|_| get("acme", "1")).collect();
    assert_eq!(acme.iter().filter(|&&s| s == 200).count(), 12);
    // beta.corp: limit 3 + 2 burst = 5 admitted, 1 rejected.
    let beta: Vec<u16> = (0..6).map(|_| get("beta.corp", "0")).collect();
    assert_eq!(beta.iter().filter(|&&s| s == 200).count(), 5);
    // Unnamed tenants: counted under `other`. x: cost 60 then 50 (rejected by cost).
    assert_eq!(get("x", "60"), 200);
    assert_eq!(get("x", "50"), 429);
    assert_eq!(get("y", "1"), 200);
    let want = [
        (r#"quota_checks_total{tenant_id="acme",resource="rph",result="allowed"}"#, 12.0),
        (r#"quota_checks_total{tenant_id="acme",resource="rph",result="rejected"}"#, 3.0),
        (r#"quota_checks_total{tenant_id="acme",resource="cost",result="allowed"}"#, 12.0),
        (r#"quota_throttles_total{tenant_id="acme",resource="rph",reason="burst_exhausted"}"#, 3.0),
        (r#"burst_credits_used_total{tenant_id="acme",resource="rph"}"#, 2.0),
        (r#"quota_remaining{tenant_id="acme",resource="rph"}"#, 0.0),
        (r#"quota_remaining{tenant_id="acme",resource="cost"}"#, 88.0),
        (r#"quota_checks_total{tenant_id="beta_corp",resource="rph",result="allowed"}"#, 5.0),
        (r#"quota_checks_total{tenant_id="beta_corp",resource="rph",result="rejected"}"#, 1.0),
        (r#"quota_checks_total{tenant_id="other",resource="rph",result="allowed"}"#, 2.0),
        (r#"quota_checks_total{tenant_id="other",resource="cost",result="allowed"}"#, 2.0),
        (r#"quota_checks_total{tenant_id="other",resource="cost",result="rejected"}"#, 1.0),
        (r#"quota_throttles_total{tenant_id="other",resource="cost",reason="cost_exceeded"}"#, 1.0),
        (r#"quota_threshold_crossings_total{tenant_id="acme",resource="rph",threshold="80"}"#, 1.0),
        (r#"quota_threshold_crossings_total{tenant_id="acme",resource="rph",threshold="90"}"#, 1.0),
        (r#"quota_threshold_crossings_total{tenant_id="acme",resource="rph",threshold="95"}"#, 1.0),
        ("quota_errors_total{}", 0.0),
    ];
    let all = e.prometheus();
    for (name, v) in want {
        let got = all.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        assert_eq!(got, Some(v), "{name}\n{}", all.iter().filter(|(k, _)| k.contains("quota")).map(|(k, v)| format!("{k} {v}\n")).collect::<String>());
    }
    // Threshold crossings are logged once each per window, not per request.
    std::thread::sleep(Duration::from_millis(300));
    let log = e.log_text();
    let n80 = log.matches("tenant `acme` crossed 80% of budget `rph`").count();
    assert_eq!(n80, 1, "{}", log.lines().filter(|l| l.contains("crossed")).collect::<Vec<_>>().join("\n"));
    assert_eq!(log.matches("tenant `acme` crossed 95% of budget `rph`").count(), 1);
    // The gauge moves: more cost for acme is not possible (rph exhausted); y spends 30.
    assert_eq!(get("y", "30"), 200);
    assert_eq!(series(&e, r#"quota_remaining{tenant_id="other",resource="cost"}"#), 69.0);
}

#[test]
fn ten_thousand_tenant_ids_do_not_add_series() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(""), up.port, EnvoyOpts::default());
    let mut c = Conn::open(e.port);
    // Warm up: the first requests create Envoy's own per-cluster and per-listener series.
    for i in 0..10 {
        let id = format!("warm-{i}");
        c.send("GET", "/", &[("x-tenant-id", id.as_str())], None);
    }
    let before = e.prometheus().len();
    for i in 0..10_000 {
        let id = format!("tenant-{i}");
        assert_eq!(c.send("GET", "/", &[("x-tenant-id", id.as_str())], None).status, 200);
    }
    let after = e.prometheus();
    let quota_series = after.iter().filter(|(k, _)| k.contains("tenant_id=")).count();
    assert!(quota_series < 50, "{quota_series} tenant series");
    assert!(after.len() <= before + 5, "series {before} -> {}", after.len());
    assert_eq!(series(&e, r#"quota_checks_total{tenant_id="other",resource="rph",result="allowed"}"#), 10_010.0);
}

#[test]
fn admin_requires_the_token() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(""), up.port, EnvoyOpts::default());
    let put = br#"{"budgets":{"rph":{"limit":1}}}"#;
    for auth in [None, Some("Bearer wrong"), Some("Bearer secreu"), Some("secret"), Some(HASH)] {
        let mut h = vec![];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let r = request(e.port, "PUT", "/.quota/tenants/acme/overrides", &h, Some(put));
        assert_eq!(r.status, 401, "auth {auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(request(e.port, "GET", "/.quota/status", &h, None).status, 401);
    }
    assert_eq!(up.received(), 0, "admin requests never reach the upstream");
    // Each refusal counted (10 calls) and logged without the token.
    assert_eq!(e.stat("wasmcustom.quota_admin_auth_failures_total"), Some(10));
    std::thread::sleep(Duration::from_millis(150));
    let log = e.log_text();
    assert!(log.contains("admin call refused (wrong bearer token) from 127.0.0.1:"), "{log}");
    assert!(log.contains("admin call refused (no bearer token)"), "{log}");
    assert!(!log.contains("secreu") && !log.contains("Bearer wrong"), "the token must not be logged");
    // No state change: acme still has its configured limit.
    let (s, v) = admin(&e, "GET", "/tenants/acme", None);
    assert_eq!(s, 200);
    assert_eq!(v["budgets"]["rph"]["limit"], 10);
    assert_eq!(v["override"], Value::Null);
}

#[test]
fn override_applies_on_every_worker_then_delete_restores() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(""), up.port, EnvoyOpts { concurrency: 4, ..EnvoyOpts::default() });
    let (s, _) = admin(&e, "PUT", "/tenants/ovr/overrides", Some(r#"{"budgets":{"rph":{"limit":3,"burst_credits":0}}}"#));
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_millis(1100));
    // 40 fresh connections spread over the 4 workers: every one enforces limit 3.
    let admitted = (0..40).filter(|_| e.get("/", &[("x-tenant-id", "ovr")]).status == 200).count();
    assert_eq!(admitted, 3);
    let r = e.get("/", &[("x-tenant-id", "ovr")]);
    assert_eq!((r.status, r.header("x-tenant-quota-limit")), (429, Some("3")));
    let (_, v) = admin(&e, "GET", "/tenants/ovr", None);
    assert_eq!(v["override"]["budgets"]["rph"]["limit"], 3);
    assert_eq!(v["budgets"]["rph"]["limit"], 3);
    assert_eq!(admin(&e, "DELETE", "/tenants/ovr/overrides", None).0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    // Configured limits again: 10 + 2, of which 3 are used.
    let admitted = (0..40).filter(|_| e.get("/", &[("x-tenant-id", "ovr")]).status == 200).count();
    assert_eq!(admitted, 9);
    // A bad override is refused with the key named, and changes nothing.
    let (s, v) = admin(&e, "PUT", "/tenants/ovr/overrides", Some(r#"{"budgets":{"rpx":{"limit":3}}}"#));
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("rpx"), "{v}");
}

#[test]
fn usage_report_reset_and_status() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(""), up.port, EnvoyOpts::default());
    for _ in 0..4 {
        assert_eq!(e.get("/", &[("x-tenant-id", "rep"), ("x-cost", "7")]).status, 200);
    }
    let (s, v) = admin(&e, "GET", "/tenants/rep", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["budgets"]["rph"]["used"], 4);
    assert_eq!(v["budgets"]["rph"]["remaining"], 6);
    assert_eq!(v["budgets"]["rph"]["burst_used"], 0);
    assert_eq!(v["budgets"]["cost"]["used"], 28);
    assert_eq!(v["budgets"]["cost"]["remaining"], 72);
    let resets = v["budgets"]["rph"]["resets_in_ms"].as_u64().unwrap();
    let expect = 3_600_000 - now_ms() % 3_600_000;
    assert!(resets.abs_diff(expect) < 2000, "{resets} vs {expect}");
    assert_eq!(v["priority"], "normal");
    assert_eq!(v["tracked"], true);
    assert_eq!(admin(&e, "POST", "/tenants/rep/reset", None).0, 200);
    let (_, v) = admin(&e, "GET", "/tenants/rep", None);
    assert_eq!(v["budgets"]["rph"]["used"], 0);
    assert_eq!(v["budgets"]["cost"]["used"], 0);
    for _ in 0..12 {
        assert_eq!(e.get("/", &[("x-tenant-id", "rep")]).status, 200);
    }
    // Metric updates are batched per worker and flushed on a 100 ms tick.
    std::thread::sleep(Duration::from_millis(300));
    let (s, v) = admin(&e, "GET", "/status", None);
    assert_eq!(s, 200);
    assert_eq!(v["tracked_tenants"], 1);
    assert_eq!(v["mode"], "enforce");
    assert_eq!(v["totals"]["allowed"], 2 * 4 + 2 * 12);
    assert!(v["saturation"]["level"].is_string(), "{v}");
    assert_eq!(admin(&e, "GET", "/nothing", None).0, 404);
}

#[test]
fn admin_allowed_sources_refuse_other_addresses_even_with_the_token() {
    let up = Upstream::start();
    // The test client connects from 127.0.0.1.
    let outside = Envoy::start(&cfg(r#","admin":{"path_prefix":"/.quota","token_sha256":"HASH","allowed_sources":["10.0.0.0/8","::1/128"]}"#.replace("HASH", HASH).as_str()).replace(
        &format!(r#""admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}},"#), ""), up.port, EnvoyOpts::default());
    let r = request(outside.port, "GET", "/.quota/status", &[AUTH], None);
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(outside.stat("wasmcustom.quota_admin_auth_failures_total"), Some(1));
    let inside = Envoy::start(&cfg(r#","admin":{"path_prefix":"/.quota","token_sha256":"HASH","allowed_sources":["127.0.0.0/8"]}"#.replace("HASH", HASH).as_str()).replace(
        &format!(r#""admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}},"#), ""), up.port, EnvoyOpts::default());
    assert_eq!(request(inside.port, "GET", "/.quota/status", &[AUTH], None).status, 200);
    assert_eq!(request(inside.port, "GET", "/.quota/status", &[], None).status, 401);
    assert_eq!(up.received(), 0);
}

#[test]
fn alert_thresholds_are_per_budget_and_posted_to_the_webhook() {
    let up = Upstream::start();
    let hook = Upstream::start();
    let cluster = format!(
        "  - name: alerts\n    connect_timeout: 1s\n    type: STATIC\n    load_assignment:\n      cluster_name: alerts\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        hook.port
    );
    let cfg = r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":10,"burst_credits":5,"alerts":[50,100,120]}},
        "alerts_webhook":{"cluster":"alerts","path":"/hooks/quota"}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts { extra_clusters: cluster, ..EnvoyOpts::default() });
    let hour = |ms: u64| ms - ms % 3_600_000;
    let (before, after);
    before = hour(now_ms());
    for _ in 0..13 {
        assert_eq!(e.get("/", &[("x-tenant-id", "alerted")]).status, 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hook.received() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    after = hour(now_ms());
    std::thread::sleep(Duration::from_millis(200));
    let posts = hook.bodies.lock().unwrap().clone();
    assert_eq!(posts.len(), 3, "one POST per crossing: {posts:?}");
    let thresholds: Vec<u64> = posts
        .iter()
        .map(|(p, b)| {
            assert_eq!(p, "/hooks/quota");
            let v: Value = serde_json::from_str(b).unwrap();
            assert_eq!((v["tenant"].as_str(), v["budget"].as_str(), v["limit"].as_u64()), (Some("alerted"), Some("rph"), Some(10)), "{v}");
            // The window the crossing happened in, never the one after it (a webhook sent a
            // tick after the crossing once reported the next window).
            let start = v["window_start_ms"].as_u64().unwrap();
            assert!(start == before || start == after, "window_start_ms {start}: the requests were sent in the window of {before}: {v}");
            v["threshold"].as_u64().unwrap()
        })
        .collect();
    let mut sorted = thresholds.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![50, 100, 120]);
    assert_eq!(series(&e, r#"quota_threshold_crossings_total{tenant_id="other",resource="rph",threshold="120"}"#), 1.0);
    assert_eq!(series(&e, r#"quota_threshold_crossings_total{tenant_id="other",resource="rph",threshold="80"}"#), 0.0);
    // A webhook that cannot be reached: counted, never retried, no request delayed.
    let dead = "  - name: alerts\n    connect_timeout: 0.2s\n    type: STATIC\n    load_assignment:\n      cluster_name: alerts\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } }\n";
    let e2 = Envoy::start(cfg, up.port, EnvoyOpts { extra_clusters: dead.to_string(), ..EnvoyOpts::default() });
    for _ in 0..6 {
        assert_eq!(e2.get("/", &[("x-tenant-id", "alerted")]).status, 200);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(e2.stat("wasmcustom.quota_alert_webhook_errors_total"), Some(1));
}
