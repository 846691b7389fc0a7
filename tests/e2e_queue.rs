//! Violation actions (SPEC 6) end to end in a real Envoy: `queue` holds requests in the
//! filter until their budget has room (a freed in_flight slot, a new window), bounded by
//! `timeout_ms` and `max_waiting`; `warn` admits past a soft limit and marks the response.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"

fn conc(timeout_ms: u64, max_waiting: u64) -> String {
    format!(
        r#"{{"budgets":{{"conc":{{"counts":"in_flight","limit":2,"on_exceed":"queue","queue":{{"timeout_ms":{timeout_ms},"max_waiting":{max_waiting}}}}}}},
  "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    )
}

/// Watch the upstream's open requests; returns the highest count seen when stopped.
fn watch_open(up: &Upstream) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let open = up.open.clone();
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut max = 0;
        while !s.load(Ordering::SeqCst) {
            max = max.max(open.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(2));
        }
        max
    });
    (stop, h)
}

/// `n` concurrent `/slow/<ms>` requests of `tenant`: (status, elapsed ms, queued-ms header) each.
fn burst(port: u16, n: usize, slow_ms: u64, tenant: &str) -> Vec<(u16, u64, Option<u64>)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, tenant) = (barrier.clone(), tenant.to_string());
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                barrier.wait();
                let t0 = Instant::now();
                let r = c.send("GET", &format!("/slow/{slow_ms}"), &[("x-tenant-id", tenant.as_str())], None);
                (r.status, t0.elapsed().as_millis() as u64, r.header("x-tenant-quota-queued-ms").and_then(|v| v.parse().ok()))
            })
        })
        .collect();
    let mut out: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    out.sort_by_key(|x| x.1);
    out
}

fn series(e: &Envoy, name: &str) -> f64 {
    e.series(name).unwrap_or(0.0)
}

#[test]
fn six_slow_requests_share_two_slots_through_the_queue() {
    let up = Upstream::start();
    let e = Envoy::start(&conc(3000, 100), up.port, EnvoyOpts::default());
    let (stop, max) = watch_open(&up);
    let t0 = Instant::now();
    let rs = burst(e.port, 6, 1000, "q");
    let total = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let max = max.join().unwrap();
    eprintln!("6 requests, 2 slots, 1 s each: {rs:?} in {} ms, at most {max} at the upstream", total.as_millis());
    assert!(rs.iter().all(|r| r.0 == 200), "{rs:?}");
    assert_eq!(max, 2, "never more than 2 at the upstream at once");
    assert!(total >= Duration::from_millis(2900) && total < Duration::from_millis(4500), "{total:?}");
    // 2 admitted at once, 4 after waiting (about 1 s and 2 s), and those say how long.
    let queued: Vec<u64> = rs.iter().filter_map(|r| r.2).collect();
    assert_eq!(queued.len(), 4, "{rs:?}");
    assert!(queued.iter().all(|&q| (900..=2600).contains(&q)), "{queued:?}");
    assert_eq!(series(&e, r#"quota_queued_total{tenant_id="other",resource="conc",result="admitted"}"#), 4.0);
    assert_eq!(series(&e, r#"quota_queue_waiting{tenant_id="other",resource="conc"}"#), 0.0);
}

#[test]
fn timeout_and_max_waiting_bound_the_wait() {
    let up = Upstream::start();
    let e = Envoy::start(&conc(500, 100), up.port, EnvoyOpts::default());
    let rs = burst(e.port, 6, 1500, "t");
    eprintln!("timeout 500 ms: {rs:?}");
    let ok: Vec<_> = rs.iter().filter(|r| r.0 == 200).collect();
    let late: Vec<_> = rs.iter().filter(|r| r.0 != 200).collect();
    assert_eq!(ok.len(), 2, "{rs:?}");
    assert!(late.iter().all(|r| r.0 == 429 && (450..1400).contains(&r.1)), "the rest get the 429 after about 500 ms: {rs:?}");
    assert_eq!(series(&e, r#"quota_queued_total{tenant_id="other",resource="conc",result="timeout"}"#), 4.0);
    // max_waiting 1: one waits, the surplus is refused at once.
    let up2 = Upstream::start();
    let e2 = Envoy::start(&conc(3000, 1), up2.port, EnvoyOpts::default());
    let rs = burst(e2.port, 5, 1000, "m");
    eprintln!("max_waiting 1: {rs:?}");
    let ok = rs.iter().filter(|r| r.0 == 200).count();
    // Refused at once: well before the 1 s the admitted ones take (generous for busy machines).
    let fast_429 = rs.iter().filter(|r| r.0 == 429 && r.1 < 900).count();
    assert_eq!((ok, fast_429), (3, 2), "{rs:?}");
    assert_eq!(series(&e2, r#"quota_queued_total{tenant_id="other",resource="conc",result="full"}"#), 2.0);
}

#[test]
fn clients_that_give_up_while_waiting_leave_nothing_behind() {
    let up = Upstream::start();
    let e = Envoy::start(&conc(5000, 100), up.port, EnvoyOpts::default());
    // Two slow requests hold both slots; three more wait, then their clients leave.
    let mut held: Vec<Conn> = (0..2).map(|_| Conn::open(e.port)).collect();
    for c in held.iter_mut() {
        c.send_only("GET", "/slow/1500", &[("x-tenant-id", "a")]);
    }
    let mut waiting: Vec<Conn> = (0..3).map(|_| Conn::open(e.port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    for c in waiting.iter_mut() {
        c.send_only("GET", "/", &[("x-tenant-id", "a")]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(series(&e, r#"quota_queue_waiting{tenant_id="other",resource="conc"}"#), 3.0);
    for c in waiting {
        c.abort();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(series(&e, r#"quota_queue_waiting{tenant_id="other",resource="conc"}"#), 0.0);
    assert_eq!(series(&e, r#"quota_queued_total{tenant_id="other",resource="conc",result="cancelled"}"#), 3.0);
    for c in held.iter_mut() {
        assert_eq!(read_response(c.reader()).unwrap().status, 200);
    }
    std::thread::sleep(Duration::from_millis(100));
    let r = request(e.port, "GET", "/.quota/tenants/a", &[("authorization", "Bearer secret")], None);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["budgets"]["conc"]["used"], 0, "{v}");
    assert_eq!(up.received(), 2, "nothing that waited reached the upstream");
    // Both slots work again.
    let rs = burst(e.port, 2, 10, "a");
    assert!(rs.iter().all(|r| r.0 == 200 && r.2.is_none()), "{rs:?}");
}

#[test]
fn a_one_second_window_admits_five_per_second_from_the_queue_none_early() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"rps":{"counts":"requests","window_ms":1000,"limit":5,"on_exceed":"queue","queue":{"timeout_ms":4000}}}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts::default());
    // Start just after a second boundary.
    std::thread::sleep(Duration::from_millis(1000 - now_ms() % 1000 + 20));
    let start = now_ms();
    let barrier = Arc::new(Barrier::new(15));
    let port = e.port;
    let handles: Vec<_> = (0..15)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                barrier.wait();
                let r = c.send("GET", "/stamp", &[("x-tenant-id", "w")], None);
                (r.status, now_ms())
            })
        })
        .collect();
    let rs: Vec<(u16, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(rs.iter().all(|r| r.0 == 200), "{rs:?}");
    // When the upstream received each request: never before its admission, so by the end of
    // window k (epoch-aligned, as the budget's) at most 5·(k+1) can have arrived: none early.
    let mut got = up.received_at();
    got.sort_unstable();
    let mut per_window = [0usize; 6];
    for t in &got {
        per_window[(t / 1000 - start / 1000).min(5) as usize] += 1;
    }
    eprintln!("received per window: {per_window:?}");
    let mut cumulative = 0;
    for (k, n) in per_window.iter().enumerate() {
        cumulative += n;
        assert!(cumulative <= 5 * (k + 1), "more than 5 per second by window {k}: {per_window:?}");
    }
    assert_eq!(got.len(), 15);
    assert!(per_window[0] == 5 && per_window[1] >= 4, "5 at once, then the next 5 a second later: {per_window:?}");
}

#[test]
fn warn_marks_the_soft_limit_and_the_hard_limit_rejects() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"soft_rpm":{"counts":"requests","window_ms":3600000,"limit":2,"on_exceed":"warn"},
                             "hard_rpm":{"counts":"requests","window_ms":3600000,"limit":4}}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts::default());
    let mut got = Vec::new();
    for _ in 0..5 {
        let r = e.get("/", &[("x-tenant-id", "s")]);
        got.push((r.status, r.header("x-tenant-quota-warning").map(str::to_string)));
    }
    let warn = Some("soft_rpm_exceeded".to_string());
    assert_eq!(got, vec![(200, None), (200, None), (200, warn.clone()), (200, warn), (429, None)]);
    assert_eq!(series(&e, r#"quota_checks_total{tenant_id="other",resource="soft_rpm",result="warned"}"#), 2.0);
    assert_eq!(series(&e, r#"quota_checks_total{tenant_id="other",resource="hard_rpm",result="rejected"}"#), 1.0);
    // Shadow: nothing waits or is rejected, would-be rejections are reported; off: nothing.
    let shadow = r#"{"mode":"shadow","budgets":{"q":{"counts":"in_flight","limit":1,"on_exceed":"queue"}}}"#;
    let es = Envoy::start(shadow, up.port, EnvoyOpts::default());
    let rs = burst(es.port, 3, 300, "z");
    assert!(rs.iter().all(|r| r.0 == 200 && r.1 < 1000 && r.2.is_none()), "{rs:?}");
    let off = r#"{"mode":"off","budgets":{"q":{"counts":"in_flight","limit":1,"on_exceed":"queue"}}}"#;
    let eo = Envoy::start(off, up.port, EnvoyOpts::default());
    let r = eo.get("/", &[("x-tenant-id", "z")]);
    assert_eq!((r.status, r.header("x-tenant-quota-limit")), (200, None));
}

#[test]
fn queueing_keeps_exactness_under_64_clients_on_4_workers() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"total":{"counts":"requests","window_ms":1000000000000,"limit":50,"burst_credits":10,
        "on_exceed":"queue","queue":{"timeout_ms":300,"max_waiting":1000}}}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts { concurrency: 4, ..EnvoyOpts::default() });
    let port = e.port;
    let barrier = Arc::new(Barrier::new(64));
    let admitted = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (barrier, admitted) = (barrier.clone(), admitted.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                barrier.wait();
                for _ in 0..4 {
                    let r = c.send("GET", "/", &[("x-tenant-id", "crowd")], None);
                    match r.status {
                        200 => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        429 => {}
                        s => panic!("unexpected {s}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 60, "exactly limit + burst_credits, queueing or not");
    assert_eq!(up.received(), 60);
}

/// A queued request refused from the tick (its wait timed out) on an LLM API path gets the
/// provider-shaped error body too (SPEC 2), like one refused in its header phase.
#[test]
fn a_queue_timeout_on_an_llm_path_answers_as_the_provider() {
    let up = Upstream::start();
    let e = Envoy::start(&conc(300, 100), up.port, EnvoyOpts::default());
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let port = e.port;
            std::thread::spawn(move || request(port, "GET", "/slow/1500", &[("x-tenant-id", "llm")], None).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let r = request(e.port, "POST", "/slow/10/v1/chat/completions", &[("x-tenant-id", "llm")], Some(b"{}"));
    let waited = t0.elapsed().as_millis();
    assert_eq!(r.status, 429, "{}", r.body_str());
    assert!(waited >= 250, "refused from the queue, after its wait: {waited} ms");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert_eq!(v["error"]["type"], "requests", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Tenant quota conc exceeded: limit 2 concurrent requests"), "{v}");
    assert_eq!(v["budget"], "conc", "the problem body's other members stay: {v}");
    for h in holders {
        assert_eq!(h.join().unwrap(), 200);
    }
}
