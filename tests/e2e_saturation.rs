//! Saturation throttling from real load signals: ORCA reports, a plain response header,
//! the filter's own in-flight count, and an operator value through the admin API.

mod common;
use common::*;
use std::time::Duration;

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn cfg(stale_ms: u64) -> String {
    format!(
        r#"{{"budgets":{{"rph":{{"counts":"requests","window_ms":3600000,"limit":10}}}},
            "tenants":{{"vip":{{"priority":"vip"}},"low":{{"priority":"low"}},"probe":{{"priority":"vip","unlimited":true}}}},
            "saturation":{{
              "signals":{{
                "cpu_load":{{"from":"orca:cpu_utilization","elevated":0.75,"critical":0.9}},
                "db_latency_ms":{{"from":"response_header:x-db-latency-ms","elevated":250,"critical":1000}},
                "queue_depth":{{"from":"in_flight","elevated":4,"critical":6}}
              }},
              "stale_after_ms":{stale_ms},
              "keep":{{"elevated":{{"vip":1.0,"normal":0.8,"low":0.5}},"critical":{{"vip":1.0,"normal":0.5,"low":0.0}}}},
              "retry_after_s":7
            }},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    )
}

fn get(e: &Envoy, tenant: &str) -> Response {
    e.get("/", &[("x-tenant-id", tenant)])
}

/// Let a few responses carry the upstream's current report (each worker samples the load
/// headers at most every 10 ms).
fn probe(e: &Envoy) {
    for _ in 0..4 {
        assert_eq!(get(e, "probe").status, 200);
        std::thread::sleep(Duration::from_millis(15));
    }
}

fn admitted(e: &Envoy, tenant: &str, n: usize) -> usize {
    (0..n).filter(|_| get(e, tenant).status == 200).count()
}

fn level(e: &Envoy) -> String {
    let r = request(e.port, "GET", "/.quota/status", &[("authorization", "Bearer secret")], None);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["saturation"]["level"].as_str().unwrap_or("?").to_string()
}

#[test]
fn critical_cpu_sheds_low_reduces_normal_spares_vip_then_recovers() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(60_000), up.port, EnvoyOpts::default());
    up.report(&[("endpoint-load-metrics", "TEXT cpu_utilization=0.95, mem_utilization=0.4")]);
    let r = get(&e, "probe");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("endpoint-load-metrics"), None, "load reports are stripped from client responses");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(level(&e), "critical");
    // Low priority: rejected outright.
    let r = get(&e, "low");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tenant-quota-reason"), Some("saturation_throttle"));
    assert_eq!(r.header("retry-after"), Some("7"));
    // Normal: half of the limit.
    let r = (0..6).map(|_| get(&e, "norm")).collect::<Vec<_>>();
    assert_eq!(r.iter().filter(|r| r.status == 200).count(), 5);
    let last = r.last().unwrap();
    assert_eq!((last.header("x-tenant-quota-reason"), last.header("x-tenant-quota-limit")), (Some("saturation_throttle"), Some("5")));
    // VIP: the full limit, and its own reason after.
    assert_eq!(admitted(&e, "vip", 10), 10);
    assert_eq!(get(&e, "vip").header("x-tenant-quota-reason"), Some("rph_exceeded"));
    // A request lowering its own priority is shed first; raising is ignored.
    let r = e.get("/", &[("x-tenant-id", "norm2"), ("x-tenant-quota-priority", "low")]);
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (429, Some("saturation_throttle")));
    assert_eq!(e.get("/", &[("x-tenant-id", "low"), ("x-tenant-quota-priority", "vip")]).status, 429);
    assert_eq!(e.get("/", &[("x-tenant-id", "norm2")]).status, 200);
    // Gauges.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(e.series("saturation_level{}"), Some(2.0));
    assert_eq!(e.series("saturation_cpu_load{}"), Some(95.0));
    assert_eq!(e.series(r#"quota_throttles_total{tenant_id="low",resource="rph",reason="saturation_throttle"}"#), Some(2.0));
    // The upstream reports normal load again: after the hold time, limits return.
    up.report(&[("endpoint-load-metrics", "TEXT cpu_utilization=0.2")]);
    probe(&e);
    std::thread::sleep(Duration::from_millis(1300));
    probe(&e);
    assert_eq!(level(&e), "normal");
    assert_eq!(admitted(&e, "low", 12), 10);
    assert_eq!(admitted(&e, "norm", 10), 5);
}

#[test]
fn stale_reports_stop_counting_and_db_latency_header_is_a_signal() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(800), up.port, EnvoyOpts::default());
    up.report(&[("x-db-latency-ms", "1500")]);
    let r = get(&e, "probe");
    assert_eq!(r.header("x-db-latency-ms"), None, "signal headers are stripped");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(level(&e), "critical");
    assert_eq!(get(&e, "low").header("x-tenant-quota-reason"), Some("saturation_throttle"));
    // The upstream stops reporting: the last report goes stale, and throttling ends.
    up.report(&[]);
    std::thread::sleep(Duration::from_millis(800 + 1200));
    assert_eq!(level(&e), "normal");
    assert_eq!(get(&e, "low").status, 200);
    // Elevated: low keeps half its limit.
    up.report(&[("x-db-latency-ms", "300")]);
    probe(&e);
    assert_eq!(level(&e), "elevated");
    // Elevated keeps 0.8 for normal priority (8 of 10) and 0.5 for low (5, of which 1 is used).
    assert_eq!(admitted(&e, "norm3", 10), 8);
    assert_eq!(admitted(&e, "low", 10), 4);
}

#[test]
fn in_flight_queue_depth_throttles_while_many_slow_requests_are_open() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(60_000), up.port, EnvoyOpts::default());
    let port = e.port;
    let slow: Vec<_> = (0..7)
        .map(|_| std::thread::spawn(move || request(port, "GET", "/slow/1500", &[("x-tenant-id", "probe")], None).status))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(level(&e), "critical");
    let r = get(&e, "low");
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (429, Some("saturation_throttle")));
    assert_eq!(get(&e, "vip").status, 200);
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(level(&e), "normal");
    assert_eq!(get(&e, "low").status, 200);
}

#[test]
fn operator_value_forces_a_brownout_until_it_expires() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(60_000), up.port, EnvoyOpts { concurrency: 4, ..EnvoyOpts::default() });
    let r = request(e.port, "PUT", "/.quota/saturation", &[("authorization", "Bearer secret")], Some(br#"{"cpu_load":0.95,"ttl_ms":1500}"#));
    assert_eq!(r.status, 200, "{}", r.body_str());
    std::thread::sleep(Duration::from_millis(50));
    // Every worker sees it: fresh connections all refuse the low tenant.
    for _ in 0..12 {
        assert_eq!(get(&e, "low").header("x-tenant-quota-reason"), Some("saturation_throttle"));
    }
    std::thread::sleep(Duration::from_millis(1500 + 1200));
    assert_eq!(get(&e, "low").status, 200);
}

#[test]
fn measured_upstream_latency_is_a_signal() {
    let up = Upstream::start();
    let cfg = r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":100}},
        "tenants":{"low":{"priority":"low"},"probe":{"priority":"vip","unlimited":true}},
        "saturation":{"signals":{"latency":{"from":"upstream_latency_ms","elevated":150,"critical":300}},
                      "keep":{"critical":{"low":0.0}},"retry_after_s":3}}"#;
    let e = Envoy::start(cfg, up.port, EnvoyOpts { concurrency: 1, ..EnvoyOpts::default() });
    assert_eq!(get(&e, "low").status, 200);
    for _ in 0..3 {
        assert_eq!(e.get("/slow/1000", &[("x-tenant-id", "probe")]).status, 200);
    }
    let r = get(&e, "low");
    assert_eq!((r.status, r.header("x-tenant-quota-reason"), r.header("retry-after")), (429, Some("saturation_throttle"), Some("3")));
    // A moving average (weight 0.2 per response): 1 ms, then 1000 ms three times -> 489.
    // Fast responses pull the moving average down; after the hold time the low tenant is back.
    for _ in 0..40 {
        get(&e, "probe");
        std::thread::sleep(Duration::from_millis(15));
    }
    std::thread::sleep(Duration::from_millis(1100));
    get(&e, "probe");
    assert_eq!(get(&e, "low").status, 200);
}
