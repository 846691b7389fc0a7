//! in_flight slots are released however a stream ends: completion, client abort, upstream
//! reset, route timeout.

mod common;
use common::*;
use std::time::{Duration, Instant};

const CFG: &str = r#"{"budgets":{"conc":{"counts":"in_flight","limit":3}}}"#;

fn wait_received(up: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.received() < n {
        assert!(Instant::now() < deadline, "upstream saw {} requests, expected {n}", up.received());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_received_within(up: &Upstream, n: usize, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while up.received() < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// All `limit` slots can be taken at once and the next request is refused; afterwards they free.
fn assert_slots_free(e: &Envoy, up: &Upstream, tenant: &str, limit: usize, slow_ms: u64) {
    std::thread::sleep(Duration::from_millis(100));
    let base = up.received();
    let mut held: Vec<Conn> = (0..limit).map(|_| Conn::open(e.port)).collect();
    for c in held.iter_mut() {
        c.send_only("GET", &format!("/slow/{slow_ms}"), &[("x-tenant-id", tenant)]);
    }
    wait_received(up, base + limit);
    let r = e.get("/", &[("x-tenant-id", tenant)]);
    assert_eq!(r.status, 429, "all {limit} slots should be in use: {r:?}");
    assert_eq!(r.header("x-tenant-quota-reason"), Some("conc_exceeded"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"conc\";q=3;qu=\"concurrent-requests\""));
    for c in held.iter_mut() {
        let r = read_response(&mut c.reader()).unwrap();
        assert_eq!(r.status, 200);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(e.get("/", &[("x-tenant-id", tenant)]).status, 200, "slots must be free after completion");
}

#[test]
fn slots_return_after_200_client_aborts() {
    let up = Upstream::start();
    let e = Envoy::start(CFG, up.port, EnvoyOpts::default());
    assert_slots_free(&e, &up, "ab", 3, 600);
    let mut aborted = 0;
    let mut waits = 0;
    while aborted < 200 {
        let mut batch = Vec::new();
        while batch.len() < 3 {
            let base = up.received();
            let mut c = Conn::open(e.port);
            c.send_only("GET", "/slow/5000", &[("x-tenant-id", "ab")]);
            // Reaching the upstream means admitted with a slot held. Envoy handles the
            // previous batch's closes asynchronously, so a refusal may need a moment.
            if wait_received_within(&up, base + 1, Duration::from_millis(300)) {
                batch.push(c);
            } else {
                let r = read_response(c.reader()).unwrap();
                assert_eq!(r.status, 429, "{r:?}");
                waits += 1;
                assert!(waits < 100, "slots are not coming back after aborts");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for c in batch {
            c.abort();
        }
        aborted += 3;
    }
    eprintln!("aborted {aborted} streams; waited for a release {waits} times");
    assert_slots_free(&e, &up, "ab", 3, 600);
}

#[test]
fn slots_return_after_upstream_resets_and_timeouts() {
    let up = Upstream::start();
    let e = Envoy::start(CFG, up.port, EnvoyOpts { route_timeout_ms: 300, ..EnvoyOpts::default() });
    for _ in 0..50 {
        let r = e.get("/reset", &[("x-tenant-id", "rs")]);
        assert_eq!(r.status, 503, "upstream reset: {r:?}");
    }
    assert_slots_free(&e, &up, "rs", 3, 200);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let port = e.port;
            std::thread::spawn(move || request(port, "GET", "/slow/1500", &[("x-tenant-id", "to")], None).status)
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 504).count(), 3, "3 admitted and timed out: {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 3, "3 refused while they ran: {statuses:?}");
    assert_slots_free(&e, &up, "to", 3, 200);
}

#[test]
fn match_limits_a_budget_to_some_requests() {
    let up = Upstream::start();
    let e = Envoy::start(
        r#"{"budgets":{"exports":{"counts":"requests","window_ms":3600000,"limit":1,"match":{"path_prefix":"/export","methods":["POST"]}}}}"#,
        up.port,
        EnvoyOpts::default(),
    );
    let h = [("x-tenant-id", "m")];
    for _ in 0..3 {
        let r = e.get("/export/a", &h);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-tenant-quota-limit"), None, "no budget applied");
    }
    assert_eq!(request(e.port, "POST", "/export/a", &h, Some(b"x")).status, 200);
    assert_eq!(request(e.port, "POST", "/export/b", &h, Some(b"x")).status, 429);
    assert_eq!(request(e.port, "POST", "/other", &h, Some(b"x")).status, 200);
}

/// The operator's remedy for slots nobody will release (a trapped VM): a reset with
/// `?in_flight=true` zeroes them; the live requests then release into zero, never below.
#[test]
fn admin_reset_with_in_flight_frees_slots_and_releases_do_not_underflow() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"conc":{"counts":"in_flight","limit":3}},
        "admin":{"path_prefix":"/.quota","token_sha256":"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts::default());
    let auth = [("authorization", "Bearer secret")];
    let used = || {
        let r = request(e.port, "GET", "/.quota/tenants/stuck", &auth, None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["budgets"]["conc"]["used"].as_u64().unwrap()
    };
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::open(e.port)).collect();
    for c in held.iter_mut() {
        c.send_only("GET", "/slow/800", &[("x-tenant-id", "stuck")]);
    }
    wait_received(&up, 3);
    assert_eq!(e.get("/", &[("x-tenant-id", "stuck")]).status, 429);
    // A plain reset keeps in_flight slots (SPEC); the opt-in one clears them.
    let r = request(e.port, "POST", "/.quota/tenants/stuck/reset", &auth, None);
    assert_eq!(r.status, 200);
    assert_eq!(used(), 3);
    let r = request(e.port, "POST", "/.quota/tenants/stuck/reset?in_flight=true", &auth, None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(used(), 0);
    for c in held.iter_mut() {
        assert_eq!(read_response(&mut c.reader()).unwrap().status, 200);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(used(), 0, "releases after the reset stop at zero");
    assert_slots_free(&e, &up, "stuck", 3, 300);
}

/// Slots of a VM that traps come back by themselves: its ledger's heartbeat stops, and
/// another VM (the reloaded worker's, or the main thread's) gives them back once it is stale.
#[test]
fn slots_held_by_a_trapped_vm_come_back_by_themselves() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"conc":{"counts":"in_flight","limit":3}},
        "admin":{"path_prefix":"/.quota","token_sha256":"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"},
        "test_hooks":{"trap_path":"/__trap"}}"#;
    // One worker: the slow requests and the trap meet in the same VM.
    let e = Envoy::start(cfg, up.port, EnvoyOpts { concurrency: 1, ..EnvoyOpts::default() });
    let auth = [("authorization", "Bearer secret")];
    let used = || {
        let r = request(e.port, "GET", "/.quota/tenants/held", &auth, None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["budgets"]["conc"]["used"].as_u64()
    };
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::open(e.port)).collect();
    for c in held.iter_mut() {
        c.send_only("GET", "/slow/60000", &[("x-tenant-id", "held")]);
    }
    wait_received(&up, 3);
    assert_eq!(e.get("/", &[("x-tenant-id", "held")]).status, 429);
    // Let the ledger reach shared data (next tick), then trap the VM holding the 3 slots.
    std::thread::sleep(Duration::from_millis(100));
    let _ = try_request(e.port, "GET", "/__trap", &[], None);
    let t0 = std::time::Instant::now();
    // The next request finds the reloaded VM (FAIL_RELOAD); earlier ones may fail.
    let mut first = None;
    while first.is_none() && t0.elapsed() < Duration::from_secs(5) {
        first = used();
        if first.is_none() {
            let r = request(e.port, "GET", "/.quota/tenants/held", &auth, None);
            eprintln!("after the trap: {} {}", r.status, r.body_str());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(first, Some(3), "the slots outlive the VM that held them");
    let mut back = None;
    while t0.elapsed() < Duration::from_secs(30) {
        if used() == Some(0) {
            back = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slots back after {back:?}");
    assert!(back.is_some(), "slots never came back:\n{}", e.log_text());
    // The log line may reach the file a moment after the counts (flushed every 50 ms).
    let mut log = e.log_text();
    for _ in 0..40 {
        if log.contains("gave back 3 in_flight slots") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        log = e.log_text();
    }
    assert!(log.contains("gave back 3 in_flight slots"), "{log}");
    assert_eq!(e.stat("wasmcustom.quota_in_flight_reclaimed_total"), Some(3));
    drop(held);
    assert_slots_free(&e, &up, "held", 3, 300);
}
