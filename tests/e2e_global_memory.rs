//! The rate limit service stays bounded (SPEC 8, research note D1): envoyproxy/ratelimit keeps
//! six stats counters for every distinct descriptor it has seen, for the life of its process,
//! so a descriptor that named the window grew its memory every window. 100 tenants on a
//! 1-second global budget for `TQ_MEMORY_WINDOWS` windows (default 300): the service's RSS
//! after the first windows and at the end.

mod common;
use common::global::*;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn the_services_memory_does_not_grow_with_windows() {
    let windows: u64 = std::env::var("TQ_MEMORY_WINDOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = Upstream::start();
    let plugin = r#"{"global":{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":200,"timeout_ms":100,"on_unavailable":"local"},
      "budgets":{"per_second":{"counts":"requests","window_ms":1000,"limit":1000,"global":"sync"}}}"#;
    let es = envoys(1, plugin, up.port, &rls);
    let port = es[0].port;
    let tag = now_ms();
    let t0 = Instant::now();
    // Every tenant once a second: each window, each tenant's descriptor is synced.
    let mut samples = Vec::new();
    let mut c = Conn::open(port);
    let mut i: u64 = 0;
    let warm_at = windows / 10;
    while t0.elapsed() < Duration::from_secs(windows) {
        let due = Duration::from_millis(i * 10);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let tenant = format!("r{tag}-{}", i % 100);
        let r = c.send("GET", "/", &[("x-tenant-id", tenant.as_str())], None);
        assert_eq!(r.status, 200);
        if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            c = Conn::open(port);
        }
        i += 1;
        if i.is_multiple_of(1000) {
            samples.push((t0.elapsed().as_secs(), rls.rss_kb()));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let end = rls.rss_kb();
    let warm = samples.iter().find(|(s, _)| *s >= warm_at).map_or(end, |(_, kb)| *kb);
    let keys = redis.budget_keys("tenant", &format!("r{tag}-*"), "per_second").len();
    eprintln!("{i} requests over {windows} windows; service RSS (s, kB): {samples:?}; after {warm_at} windows {warm} kB, at the end {end} kB; {keys} live keys in Redis");
    assert!(stat(&es[0], "quota_global_syncs_total.result.ok") > windows, "the loop synced every window");
    // Flat: not growing with the windows that pass (Go's heap moves a little between GCs).
    assert!(end <= warm + warm / 4 + 4096, "the service grew from {warm} kB to {end} kB over {windows} windows");
}
