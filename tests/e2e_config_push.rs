//! Config pushes (issue 10): listener updates over a file-based LDS source while Envoy runs.
//! Counts live in shared data of the vm_id, keyed per budget, so a new plugin configuration
//! or a new build of the filter keeps the counts of the budgets that stay; new limits apply
//! to the current window; in_flight slots taken by the old filter instances return.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// sha256("secret").
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
const AUTH: (&str, &str) = ("authorization", "Bearer secret");
const HOUR: u64 = 3_600_000;

fn t(id: &str) -> [(&'static str, &str); 1] {
    [("x-tenant-id", id)]
}

/// A plugin configuration: `body` (budgets, tenants) plus the admin API.
fn plugin(body: &str) -> String {
    format!(r#"{{{body},"admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#)
}

fn admin_get(e: &Envoy, path: &str) -> Value {
    let r = request(e.port, "GET", &format!("/.quota{path}"), &[AUTH], None);
    assert_eq!(r.status, 200, "admin GET {path}: {r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

/// The admin view of `tenant`'s budgets: `{name: {"used", "limit", ...}}`.
fn budgets(e: &Envoy, tenant: &str) -> Value {
    admin_get(e, &format!("/tenants/{tenant}"))["budgets"].clone()
}

fn names(b: &Value) -> Vec<String> {
    let mut v: Vec<String> = b.as_object().unwrap().keys().cloned().collect();
    v.sort();
    v
}

fn used(e: &Envoy, tenant: &str, budget: &str) -> u64 {
    let b = budgets(e, tenant);
    b[budget]["used"].as_u64().unwrap_or_else(|| panic!("no budget {budget} in {b}"))
}

/// Poll the admin view until `ok` holds on 6 answers in a row, each on a new connection (so
/// both workers answer): the pushed configuration serves new requests.
fn wait_config(e: &Envoy, tenant: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut streak = 0;
    while streak < 6 {
        let b = budgets(e, tenant);
        if ok(&b) {
            streak += 1;
        } else {
            streak = 0;
            assert!(Instant::now() < deadline, "the pushed configuration is not serving: {b}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_used(e: &Envoy, tenant: &str, budget: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let u = used(e, tenant, budget);
        if u == want {
            return;
        }
        assert!(Instant::now() < deadline, "{tenant}'s {budget} used {u}, expected {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_received(up: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.received() < n {
        assert!(Instant::now() < deadline, "upstream saw {} requests, expected {n}", up.received());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Statuses of `n` sequential GETs of `tenant`.
fn statuses(e: &Envoy, tenant: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| e.get("/", &t(tenant)).status).collect()
}

/// Don't start a test whose counts must stay in one window within `need_ms` of its end.
fn clear_of_window_end(window_ms: u64, need_ms: u64) {
    let left = window_ms - now_ms() % window_ms;
    if left < need_ms {
        std::thread::sleep(Duration::from_millis(left + 100));
    }
}

fn assert_rejected_by(r: &Response, budget: &str, limit: u64) {
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("x-tenant-quota-budget"), Some(budget), "{r:?}");
    assert_eq!(r.header("x-tenant-quota-reason"), Some(format!("{budget}_exceeded").as_str()), "{r:?}");
    assert_eq!(r.num("x-tenant-quota-limit"), limit, "{r:?}");
}

#[test]
fn listener_update_keeps_counts_and_applies_new_limits() {
    clear_of_window_end(HOUR, 60_000);
    let up = Upstream::start();
    let v1 = plugin(
        r#""budgets":{"rpm":{"counts":"requests","window_ms":3600000,"limit":10},
                      "old":{"counts":"requests","window_ms":3600000,"limit":100}}"#,
    );
    let mut e = Envoy::start_lds(&v1, up.port, EnvoyOpts::default());
    let mut remaining = Vec::new();
    for i in 0..6 {
        let r = e.get("/", &t("acme"));
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-tenant-quota-limit"), Some("10"));
        remaining.push(r.num("x-tenant-quota-remaining"));
    }
    assert_eq!(remaining, [9, 8, 7, 6, 5, 4]);
    let b = budgets(&e, "acme");
    assert_eq!((&b["rpm"]["used"], &b["old"]["used"]), (&Value::from(6), &Value::from(6)), "{b}");

    // v2: rpm lowered, old removed, new added, an override for beta.
    let v2 = plugin(
        r#""budgets":{"rpm":{"counts":"requests","window_ms":3600000,"limit":8},
                      "new":{"counts":"requests","window_ms":3600000,"limit":3}},
           "tenants":{"beta":{"budgets":{"rpm":{"limit":2}}}}"#,
    );
    let port_before = e.port;
    let took = e.push_lds("v2", &v2, &wasm_path());
    wait_config(&e, "acme", |b| names(b) == ["new", "rpm"] && b["rpm"]["limit"] == 8);
    eprintln!("push active after {took:?}; main listener port {port_before} -> {}", e.port);

    // acme: rpm keeps its 6 and the new limit 8 applies to this window; new starts at 0;
    // old is gone.
    let b = budgets(&e, "acme");
    assert_eq!(names(&b), ["new", "rpm"], "{b}");
    assert_eq!((b["rpm"]["used"].as_u64(), b["rpm"]["limit"].as_u64(), b["rpm"]["remaining"].as_u64()), (Some(6), Some(8), Some(2)), "{b}");
    assert_eq!((b["new"]["used"].as_u64(), b["new"]["limit"].as_u64()), (Some(0), Some(3)), "{b}");
    let mut remaining = Vec::new();
    for i in 0..2 {
        let r = e.get("/", &t("acme"));
        assert_eq!(r.status, 200, "acme after the push, request {i}: {r:?}");
        assert_eq!(r.header("x-tenant-quota-limit"), Some("8"), "{r:?}");
        remaining.push(r.num("x-tenant-quota-remaining"));
    }
    assert_eq!(remaining, [1, 0]);
    for _ in 0..2 {
        let r = e.get("/", &t("acme"));
        assert_rejected_by(&r, "rpm", 8);
        assert_eq!(r.header("ratelimit-policy"), Some("\"rpm\";q=8;w=3600"));
    }
    let b = budgets(&e, "acme");
    assert_eq!(names(&b), ["new", "rpm"], "{b}");
    assert_eq!((b["rpm"]["used"].as_u64(), b["new"]["used"].as_u64()), (Some(8), Some(2)), "rejected requests consume nothing: {b}");

    // beta's override applies.
    let r = e.get("/", &t("beta"));
    assert_eq!((r.status, r.header("x-tenant-quota-limit"), r.header("x-tenant-quota-remaining")), (200, Some("2"), Some("1")), "{r:?}");
    assert_eq!(e.get("/", &t("beta")).status, 200);
    assert_rejected_by(&e.get("/", &t("beta")), "rpm", 2);
    assert_eq!(used(&e, "beta", "rpm"), 2);

    // A tenant without history meets new's limit 3 first (rpm 8): new counts from 0.
    let mut remaining = Vec::new();
    for i in 0..3 {
        let r = e.get("/", &t("gamma"));
        assert_eq!((r.status, r.header("x-tenant-quota-limit")), (200, Some("3")), "gamma request {i}: {r:?}");
        remaining.push(r.num("x-tenant-quota-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    assert_rejected_by(&e.get("/", &t("gamma")), "new", 3);

    let status = admin_get(&e, "/status");
    assert_eq!(status["budgets"].as_array().map(|a| a.len()), Some(2), "{status}");
    assert!(!status["budgets"].to_string().contains("old"), "{status}");
    assert_eq!(up.received(), 6 + 2 + 2 + 3, "rejected requests never reach the upstream");
    let log = e.log_text();
    assert!(!log.contains("tenant-quota: could not"), "filter errors in the log:\n{log}");
}

#[test]
fn requests_in_flight_during_a_push_return_their_slots() {
    let up = Upstream::start();
    let cfg = |limit: u32| plugin(&format!(r#""budgets":{{"conc":{{"counts":"in_flight","limit":{limit}}}}}"#));
    let mut e = Envoy::start_lds(&cfg(3), up.port, EnvoyOpts::default());
    let h = t("fl");

    // Three slow requests hold the three slots of v1.
    let mut old: Vec<Conn> = (0..3).map(|_| Conn::open(e.port)).collect();
    for c in old.iter_mut() {
        c.send_only("GET", "/slow/1500", &h);
    }
    wait_received(&up, 3);
    assert_rejected_by(&e.get("/", &h), "conc", 3);
    assert_eq!(used(&e, "fl", "conc"), 3);

    let took = e.push_lds("v2", &cfg(4), &wasm_path());
    wait_config(&e, "fl", |b| b["conc"]["limit"] == 4);
    eprintln!("push active after {took:?}");
    assert_eq!(used(&e, "fl", "conc"), 3, "the slots held by the old filter instances still count");

    // The new limit 4 admits exactly one more while the three run.
    let mut fourth = Conn::open(e.port);
    fourth.send_only("GET", "/slow/3000", &h);
    wait_received(&up, 4);
    let r = e.get("/", &h);
    assert_rejected_by(&r, "conc", 4);
    assert_eq!(r.header("ratelimit-policy"), Some("\"conc\";q=4;qu=\"concurrent-requests\""));
    assert_eq!(up.open(), 4, "the three requests from before the push must still be in flight (the push took {took:?})");

    // The old filter instances give back exactly their three slots.
    for c in old.iter_mut() {
        let r = read_response(c.reader()).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.open(), 1, "the fourth request must still be in flight");
    assert_eq!(used(&e, "fl", "conc"), 1, "only the fourth request holds a slot");
    let r = read_response(fourth.reader()).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_used(&e, "fl", "conc", 0);

    // All four slots are free again: four at once are admitted, a fifth is not.
    let base = up.received();
    let mut held: Vec<Conn> = (0..4).map(|_| Conn::open(e.port)).collect();
    for c in held.iter_mut() {
        c.send_only("GET", "/slow/500", &h);
    }
    wait_received(&up, base + 4);
    assert_rejected_by(&e.get("/", &h), "conc", 4);
    for c in held.iter_mut() {
        let r = read_response(c.reader()).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    wait_used(&e, "fl", "conc", 0);
    let log = e.log_text();
    assert!(!log.contains("tenant-quota: could not"), "filter errors in the log:\n{log}");
}

#[test]
fn in_place_wasm_upgrade_keeps_counts() {
    clear_of_window_end(HOUR, 60_000);
    let up = Upstream::start();
    let cfg = plugin(r#""budgets":{"rpm":{"counts":"requests","window_ms":3600000,"limit":10}}"#);
    let mut e = Envoy::start_lds(&cfg, up.port, EnvoyOpts::default());
    for i in 0..6 {
        let r = e.get("/", &t("acme"));
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(used(&e, "acme", "rpm"), 6);

    // A new build: the same filter with a custom section appended, at a new path.
    let upgraded = e.dir.join("tenant_quota-next.wasm");
    wasm_with_custom_section(&wasm_path(), &upgraded, "tq-test-build", format!("build {}", now_ms()).as_bytes());
    let vms_before = e.stat("wasm.envoy.wasm.runtime.v8.created").unwrap_or(0);
    let took = e.push_lds("v2", &cfg, &upgraded);
    let vms_after = e.stat("wasm.envoy.wasm.runtime.v8.created").unwrap_or(0);
    eprintln!("upgrade active after {took:?}; v8 VMs created {vms_before} -> {vms_after}");
    assert!(vms_after > vms_before, "the new build must run in new VMs (v8 VMs created: {vms_before} -> {vms_after})");
    let dump = String::from_utf8_lossy(&request(e.admin, "GET", "/config_dump?resource=dynamic_listeners", &[], None).body).into_owned();
    assert!(dump.contains("tenant_quota-next.wasm"), "the active listener must load the new build");
    wait_config(&e, "acme", |b| b["rpm"]["limit"] == 10);

    assert_eq!(used(&e, "acme", "rpm"), 6, "the upgrade keeps acme's count");
    let mut remaining = Vec::new();
    for i in 0..4 {
        let r = e.get("/", &t("acme"));
        assert_eq!((r.status, r.header("x-tenant-quota-limit")), (200, Some("10")), "request {i} after the upgrade: {r:?}");
        remaining.push(r.num("x-tenant-quota-remaining"));
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    assert_rejected_by(&e.get("/", &t("acme")), "rpm", 10);
    assert_eq!(statuses(&e, "other", 2), [200, 200]);
    assert_eq!(used(&e, "acme", "rpm"), 10);
    assert_eq!(up.received(), 12);
}
