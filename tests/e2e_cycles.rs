//! Billing cycles in a real Envoy: a daily cycle in a time zone chosen at test time (a POSIX
//! TZ string with seconds) so that its local midnight falls ~16 s after the test starts. The
//! budget fills, the 429 counts down to that midnight (`retry-after`, `ratelimit`, the
//! provider message), the admin usage shows the cycle ending there, and once it has passed
//! the tenant is admitted again in a new cycle. A tenant with its own `billing` zone (UTC)
//! is on another cycle meanwhile. And a global (`exact`) monthly cycle across two Envoys,
//! counted by the real envoyproxy/ratelimit under its `("cycle", local start date)` entry.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

// sha256("secret")
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
const AUTH: (&str, &str) = ("authorization", "Bearer secret");

/// A POSIX TZ string whose local midnight is at Unix second `midnight_s`, e.g.
/// `<CYC>-7:12:05` (UTC+07:12:05), and the offset in seconds east of UTC.
fn zone_with_midnight_at(midnight_s: u64) -> (String, i64) {
    let mut east = -((midnight_s % 86_400) as i64); // local = utc + east is a multiple of a day
    if east <= -43_200 {
        east += 86_400;
    }
    let west = -east;
    let a = west.unsigned_abs();
    let sign = if west < 0 { "-" } else { "" };
    (format!("<CYC>{sign}{}:{:02}:{:02}", a / 3600, a / 60 % 60, a % 60), east)
}

fn admin(e: &Envoy, path: &str) -> Value {
    let r = request(e.port, "GET", &format!("/.quota{path}"), &[AUTH], None);
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).unwrap()
}

fn sleep_until_ms(t: u64) {
    let now = now_ms();
    if t > now {
        std::thread::sleep(Duration::from_millis(t - now));
    }
}

#[test]
fn a_daily_cycle_resets_at_local_midnight_of_its_time_zone() {
    // Local midnight 16 s from now: room for Envoy to start and the budget to fill.
    let midnight_s = now_ms() / 1000 + 16;
    let (tz, east) = zone_with_midnight_at(midnight_s);
    assert_eq!((midnight_s as i64 + east).rem_euclid(86_400), 0, "{tz}");
    let cfg = format!(
        r#"{{"budgets":{{"daily":{{"counts":"requests","window":{{"cycle":"daily","time_zone":"{tz}"}},"limit":3}}}},
            "tenants":{{"utc":{{"billing":{{"time_zone":"UTC"}}}}}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    );
    let up = Upstream::start();
    let e = Envoy::start(&cfg, up.port, EnvoyOpts::default());
    let h = [("x-tenant-id", "cyc")];
    for i in 0..3 {
        let r = e.get("/", &h);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let before = now_ms();
    assert!(before < midnight_s * 1000 - 3000, "Envoy took too long to start: {} ms left", (midnight_s * 1000).saturating_sub(before));
    let r = e.get("/", &h);
    assert_eq!(r.status, 429, "{r:?}");
    let retry = r.num("retry-after");
    let expected = (midnight_s * 1000 - before).div_ceil(1000);
    assert!(retry == expected || retry + 1 == expected, "retry-after {retry}, expected {expected} (to local midnight)");
    assert_eq!(r.header("ratelimit"), Some(format!("\"daily\";r=0;t={retry}").as_str()));
    assert_eq!(r.header("ratelimit-policy"), Some("\"daily\";q=3;w=86400"));
    assert_eq!(r.header("x-tenant-quota-reason"), Some("daily_exceeded"));
    // On an LLM path the provider-shaped message says when the cycle resets.
    let r = e.get("/v1/chat/completions", &h);
    assert_eq!(r.status, 429);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let msg = body["error"]["message"].as_str().unwrap_or_default().to_string();
    let reset = r.num("retry-after");
    assert_eq!(msg, format!("Tenant quota daily exceeded: limit 3 requests per daily billing cycle, resets in {reset} s."), "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");

    // The admin usage: the cycle ends at that midnight, in the configured zone.
    let v = admin(&e, "/tenants/cyc");
    let d = &v["budgets"]["daily"];
    assert_eq!(d["window_end_ms"], json!(midnight_s * 1000), "{v}");
    assert_eq!(d["window_start_ms"], json!((midnight_s - 86_400) * 1000), "{v}");
    assert_eq!((d["used"].as_u64(), d["remaining"].as_u64()), (Some(3), Some(0)), "{v}");
    assert_eq!(d["window"]["cycle"], "daily", "{v}");
    let resets = d["resets_in_ms"].as_u64().unwrap();
    assert!(resets <= midnight_s * 1000 - before && resets + 2000 > midnight_s * 1000 - before, "{v}");
    // A tenant billed in UTC is on the UTC day.
    let u = admin(&e, "/tenants/utc");
    let utc_end = (now_ms() / 86_400_000 + 1) * 86_400_000;
    assert_eq!(u["budgets"]["daily"]["window_end_ms"], json!(utc_end), "{u}");
    assert_eq!(u["budgets"]["daily"]["window"], json!({"cycle": "daily", "time_zone": "UTC"}), "{u}");

    // Past midnight: a new cycle, admitted again.
    sleep_until_ms(midnight_s * 1000 + 300);
    let r = e.get("/", &h);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("2"));
    let v = admin(&e, "/tenants/cyc");
    let d = &v["budgets"]["daily"];
    assert_eq!((d["window_start_ms"].as_u64(), d["window_end_ms"].as_u64()), (Some(midnight_s * 1000), Some((midnight_s + 86_400) * 1000)), "{v}");
    assert_eq!(d["used"], 1, "{v}");
    assert_eq!(up.received(), 4, "rejected requests never reached the upstream");
}

/// A global monthly cycle: the rate limit service counts it in its YEAR unit under a
/// `("cycle", "YYYY-MM-DD")` entry, the local date the cycle started on in its zone.
#[test]
fn a_global_cycle_is_counted_under_its_local_start_date() {
    use common::global::*;
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = Upstream::start();
    // UTC+14: the local date is often a day ahead of UTC's, so a UTC date would not match.
    let plugin = r#"{"global":{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":200,"timeout_ms":500},
        "budgets":{"monthly":{"counts":"requests","window":{"cycle":"monthly","day":"last","time_zone":"Pacific/Kiritimati"},"limit":3,"global":"exact"}}}"#;
    let es = envoys(2, plugin, up.port, &rls);
    let tenant = format!("g{}", now_ms());
    let h = [("x-tenant-id", tenant.as_str())];
    let statuses: Vec<u16> = (0..5).map(|i| es[i % 2].get("/", &h).status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429], "3 admitted across both Envoys");
    // The cycle's local start date in UTC+14, on the month's last day.
    let start = {
        let local_days = (now_ms() / 1000 + 14 * 3600) / 86_400;
        let civil = |days: i64| {
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            (yoe + era * 400 + i64::from(m <= 2), m, d)
        };
        // The last local day before or on today that is a month's last day.
        let mut day = local_days as i64;
        while civil(day + 1).2 != 1 {
            day -= 1;
        }
        let (y, m, d) = civil(day);
        format!("{y:04}-{m:02}-{d:02}")
    };
    let keys = redis.budget_keys("tenant", &tenant, "monthly");
    assert!(keys.len() == 1 && keys[0].0.contains(&format!("_cycle_{start}_")), "one key of this cycle ({start}): {keys:?}");
    assert_eq!(keys[0].1, 5, "every call's unit, the refused ones too (the service counts before it refuses)");
    for e in &es {
        assert!(!e.log_text().contains("panic"), "{}", e.log_text());
        assert_eq!(e.stat("quota_global_degraded").unwrap_or(0), 0);
    }
}
