//! Global budgets of every kind and scope (SPEC 8): LLM tokens read from SSE bodies, LLM cost
//! in a calendar month (and a cap over 2^32 - 1, in scaled units), request bytes, and a team
//! budget shared by tenants on different Envoys. 3 Envoys as separate processes, one Redis,
//! the real envoyproxy/ratelimit (tests/common/global.rs).

mod common;
use common::global::*;
use common::llm::LlmUpstream;
use common::*;
use std::time::Duration;

const P_MS: u64 = 200;
const TIMEOUT_MS: u64 = 100;
/// Tokens the `openai-sse` fixture reports (12 in, 30 out), and its cost in micro-USD at the
/// prices below (12 * 2.5 + 30 * 10).
const TOKENS: u64 = 42;
const COST: u64 = 330;
/// Reserve per request: 50 output tokens (no body read), priced 500.
const RESERVE: u64 = 50;
const RESERVE_COST: u64 = 500;
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"

/// The admin report's `global` block of a tenant's budget (SPEC 8: local, remote, its age).
fn global_usage(e: &Envoy, tenant: &str, budget: &str) -> serde_json::Value {
    let r = request(e.port, "GET", &format!("/.quota/tenants/{tenant}"), &[("authorization", "Bearer secret")], None);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["budgets"][budget]["global"].clone()
}

fn plugin(on_unavailable: &str, extra: &str, budgets: &str) -> String {
    format!(
        r#"{{"global":{{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":{P_MS},"timeout_ms":{TIMEOUT_MS},"on_unavailable":{on_unavailable}}},
  "llm":{{"model":{{"header":"x-model"}},"default_reserve_tokens":{RESERVE},
          "prices":{{"gpt-4o":{{"input":2500000,"output":10000000}}}}}},
  "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}},
  {extra}
  "budgets":{{{budgets}}}}}"#
    )
}

/// The README's sync bound: the units the other Envoys admit in `2P + R` (R = 50 ms here).
fn bound(units_per_s: f64) -> u64 {
    (units_per_s * (2.0 * P_MS as f64 + 50.0) / 1000.0).ceil() as u64
}

fn llm(tenant: &str) -> Req {
    // The fixture in two pieces: a quick answer with the usage in the second.
    Req::get("/llm/openai-sse?split=200", &[("x-tenant-id", tenant), ("x-model", "gpt-4o")])
}

fn no_panic(es: &[Envoy]) {
    for e in es {
        let log = e.log_text();
        assert!(!log.contains("panic"), "{log}");
        assert_eq!(stat(e, "quota_global_degraded"), 0);
    }
}

#[test]
fn llm_tokens_from_sse_hold_one_cap_across_three_envoys() {
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = LlmUpstream::start();
    let cap = 40 * TOKENS; // 1680 tokens
    let budgets = format!(
        r#""sync_tokens":{{"counts":{{"llm_tokens":"total"}},"window_ms":3600000,"limit":{cap},"global":"sync","match":{{"path_prefix":"/llm/openai-sse"}}}},
           "exact_tokens":{{"counts":{{"llm_tokens":"total"}},"window_ms":3600000,"limit":{cap},"global":"exact","match":{{"path_prefix":"/llm/openai"}}}}"#
    );
    // Two configs: the paths pick one budget each (`match`), so each run meets one mode.
    let sync_only = budgets.replace("/llm/openai\"", "/none\"");
    let exact_only = budgets.replace("/llm/openai-sse\"", "/none\"");
    let tag = now_ms();
    let rate = 60.0;
    let total = 200;
    let mut report = Vec::new();
    for (mode, cfg) in [("sync", sync_only), ("exact", exact_only)] {
        let es = envoys(3, &plugin("\"local\"", "", &cfg), up.port, &rls);
        let ports: Vec<u16> = es.iter().map(|e| e.port).collect();
        let tenant = format!("l{tag}{mode}");
        let t = tenant.clone();
        let load = drive_with(&ports, total, rate, 8, move |_| llm(&t));
        assert!(load.other.is_empty(), "{mode}: {:?}", load.other);
        let charged = load.admitted * TOKENS;
        let budget = format!("{mode}_tokens");
        // Every admitted request's tokens reach the service (the reserve at least; the
        // service errs high by at most the unspent reserves: RESERVE - TOKENS each).
        let redis_units = redis.wait_units("tenant", &tenant, &budget, charged, Duration::from_secs(5));
        report.push((mode, load.admitted, charged, redis_units, load.max_latency_ms));
        assert!(redis_units >= charged, "{mode}: {redis_units} tokens in Redis < {charged} charged");
        if mode == "sync" {
            let b = bound(rate * TOKENS as f64);
            assert!(charged <= cap + b, "{mode}: {charged} tokens charged > cap {cap} + bound {b}");
            assert!(charged + RESERVE * 3 >= cap * 3 / 4, "{mode}: only {charged} of {cap} charged");
            assert!(redis_units <= charged + (RESERVE - TOKENS) * load.admitted, "{mode}: {redis_units} in Redis");
        } else {
            // Each call carries the request's reserve; the service admits while its count plus
            // the reserve fits the cap, and counts every call (refused ones too).
            assert_eq!(load.admitted, cap / RESERVE, "exact admits floor(cap / reserve) requests");
            assert!(redis_units >= total as u64 * RESERVE, "{redis_units}");
        }
        no_panic(&es);
    }
    eprintln!("(mode, admitted, tokens charged, tokens in redis, max latency ms), cap {cap}: {report:?}");
}

#[test]
fn llm_cost_in_a_calendar_month_and_a_scaled_cap() {
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = LlmUpstream::start();
    // `month`: 10 answers' cost, exact. `big`: USD 10,000 in micro-USD (over 2^32 - 1: scale 3).
    let budgets = format!(
        r#""month":{{"counts":"llm_cost","window":"calendar_month","limit":{},"global":"exact"}},
           "big":{{"counts":"llm_cost","window":"calendar_month","limit":10000000000,"global":"sync"}}"#,
        10 * COST
    );
    let es = envoys(3, &plugin("\"local\"", "", &budgets), up.port, &rls);
    let ports: Vec<u16> = es.iter().map(|e| e.port).collect();
    let tenant = format!("c{}", now_ms());
    let t = tenant.clone();
    let load = drive_with(&ports, 30, 30.0, 3, move |_| llm(&t));
    assert!(load.other.is_empty(), "{:?}", load.other);
    // Each call carries the reserve (500): floor(3300 / 500) = 6 admitted, whichever Envoy.
    assert_eq!(load.admitted, 10 * COST / RESERVE_COST, "{load:?}");
    let keys = redis.budget_keys("tenant", &tenant, "month");
    let month = {
        let days = now_ms() / 86_400_000;
        // Civil date from days since the epoch (H. Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}")
    };
    assert!(keys.len() == 1 && keys[0].0.contains(&format!("_month_{month}_")), "one key of this month: {keys:?}");
    assert_eq!(keys[0].1, 30 * RESERVE_COST, "every call's reserve counted");
    // The scaled cap: the service holds ceil(units / 3) per descriptor and call.
    let charged = load.admitted * COST;
    let scaled = redis.wait_units("tenant", &tenant, "big", charged.div_ceil(3), Duration::from_secs(5));
    let calls: u64 = es.iter().map(rls_calls).sum();
    eprintln!("month: {} admitted, {keys:?}; big: {scaled} scaled units for {charged} charged, {calls} calls", load.admitted);
    assert!(scaled * 3 >= charged, "the service never counts less than was admitted: {scaled} * 3 < {charged}");
    assert!(scaled * 3 <= load.admitted * RESERVE_COST + 3 * calls, "{scaled}");
    no_panic(&es);
}

#[test]
fn request_bytes_hold_one_cap_across_three_envoys() {
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = Upstream::start();
    let budgets = r#""sync_bytes":{"counts":"request_bytes","window_ms":60000,"limit":40000,"global":"sync","match":{"path_prefix":"/sync"}},
       "exact_bytes":{"counts":"request_bytes","window_ms":60000,"limit":40000,"global":"exact","match":{"path_prefix":"/exact"}}"#;
    let es = envoys(3, &plugin("\"local\"", "", budgets), up.port, &rls);
    let ports: Vec<u16> = es.iter().map(|e| e.port).collect();
    let tag = now_ms();
    let mut report = Vec::new();
    for path in ["/sync", "/exact"] {
        minute_with(Duration::from_secs(10));
        let tenant = format!("b{tag}{}", &path[1..]);
        let (t, p) = (tenant.clone(), path.to_string());
        let load = drive_with(&ports, 240, 80.0, 6, move |_| Req {
            method: "POST",
            path: p.clone(),
            headers: vec![("x-tenant-id".into(), t.clone())],
            body: Some(vec![b'x'; 1000]),
        });
        assert!(load.other.is_empty(), "{path}: {:?}", load.other);
        let budget = format!("{}_bytes", &path[1..]);
        let bytes = load.admitted * 1000;
        let in_redis = redis.wait_units("tenant", &tenant, &budget, bytes, Duration::from_secs(5));
        report.push((path, load.admitted, in_redis));
        if path == "/sync" {
            let b = bound(80.0 * 1000.0);
            assert!(bytes >= 40_000 && bytes <= 40_000 + b, "sync: {bytes} bytes admitted, cap 40000 + bound {b}");
            assert_eq!(in_redis, bytes, "every admitted byte reaches Redis once");
            // Each Envoy's report: its own bytes and the others' as last learned, recently.
            // Each Envoy's report: its own bytes and the others' as last learned, with the age
            // of that figure. Over the cap the service says only "over" (limit_remaining 0), so
            // `remote` is then known to be at least cap + 1 - acknowledged. A tenant stays
            // watched (re-read every period) for 2 s after it last changed on this Envoy.
            let first: Vec<_> = es.iter().map(|e| global_usage(e, &tenant, &budget)).collect();
            std::thread::sleep(Duration::from_millis(300));
            for (k, e) in es.iter().enumerate() {
                let g = global_usage(e, &tenant, &budget);
                let local = load.per_envoy[k] * 1000;
                let remote = g["remote"].as_u64().unwrap_or(0);
                assert_eq!(g["mode"], "sync");
                assert_eq!(g["local"].as_u64(), Some(local), "{g}");
                assert!(local + remote > 40_000 && local + remote <= in_redis, "{g}");
                let (a0, a1) = (first[k]["remote_age_ms"].as_u64().unwrap_or(0), g["remote_age_ms"].as_u64().unwrap_or(0));
                assert!(a1 >= a0 + 250 || a1 < a0, "the age moves with time, or a new answer came: {a0} then {a1}");
            }
        } else {
            assert_eq!(bytes, 40_000, "exact admits exactly the cap");
            assert_eq!(in_redis, 240 * 1000, "every call counted by the service");
        }
    }
    eprintln!("(path, admitted, bytes in redis), cap 40000 bytes: {report:?}");
    no_panic(&es);
}

#[test]
fn a_team_budget_holds_across_tenants_on_different_envoys() {
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = Upstream::start();
    let scopes = r#""scopes":{"team":{"header":"x-team-id"}},"#;
    let budgets = r#""team_sync":{"counts":"requests","window_ms":60000,"limit":60,"scope":"team","global":"sync","match":{"path_prefix":"/sync"}},
       "team_exact":{"counts":"requests","window_ms":60000,"limit":60,"scope":"team","global":"exact","match":{"path_prefix":"/exact"}},
       "own":{"counts":"requests","window_ms":60000,"limit":1000}"#;
    let es = envoys(3, &plugin("\"local\"", scopes, budgets), up.port, &rls);
    let ports: Vec<u16> = es.iter().map(|e| e.port).collect();
    let tag = now_ms();
    let mut report = Vec::new();
    for path in ["/sync", "/exact"] {
        minute_with(Duration::from_secs(10));
        let team = format!("blue{tag}{}", &path[1..]);
        let (tm, p) = (team.clone(), path.to_string());
        // Request i goes to Envoy i % 3 as tenant i % 3: each tenant meets one Envoy only.
        let load = drive_with(&ports, 240, 80.0, 6, move |i| Req::get(&p, &[("x-tenant-id", &format!("t{}", i % 3)), ("x-team-id", &tm)]));
        assert!(load.other.is_empty(), "{path}: {:?}", load.other);
        let budget = format!("team_{}", &path[1..]);
        let in_redis = redis.wait_units("team", &team, &budget, load.admitted, Duration::from_secs(5));
        report.push((path, load.admitted, load.per_envoy.clone(), in_redis));
        assert!(load.per_envoy.iter().all(|n| *n > 0), "{path}: every tenant had some: {:?}", load.per_envoy);
        if path == "/sync" {
            let b = bound(80.0);
            assert!(load.admitted >= 60 && load.admitted <= 60 + b, "sync: {} admitted, cap 60 + bound {b}", load.admitted);
            assert_eq!(in_redis, load.admitted, "every admitted unit reaches Redis once");
        } else {
            assert_eq!(load.admitted, 60, "exact admits exactly the team's cap");
            assert_eq!(in_redis, 240, "every call counted by the service");
        }
    }
    eprintln!("(path, admitted, per Envoy, team units in redis), team cap 60: {report:?}");
    no_panic(&es);
}

#[test]
fn an_llm_budget_through_a_service_outage() {
    let redis = Redis::start();
    let rls = Rls::start(&redis);
    let up = LlmUpstream::start();
    let budgets = r#""tokens":{"counts":{"llm_tokens":"total"},"window_ms":86400000,"limit":1000000,"global":"exact"}"#;
    let es = envoys(3, &plugin("\"local\"", "", budgets), up.port, &rls);
    let ports: Vec<u16> = es.iter().map(|e| e.port).collect();
    let tenant = format!("o{}", now_ms());
    let t = tenant.clone();
    assert_eq!(drive_with(&ports, 6, 30.0, 3, move |_| llm(&t)).admitted, 6);
    assert_eq!(redis.wait_units("tenant", &tenant, "tokens", 6 * RESERVE, Duration::from_secs(3)), 6 * RESERVE);
    rls.signal("-STOP");
    let t = tenant.clone();
    let during = drive_with(&ports, 30, 30.0, 3, move |_| llm(&t));
    // Nothing waits longer than timeout_ms (plus scheduling slack); `local` admits.
    assert_eq!(during.admitted, 30, "{during:?}");
    assert!(during.max_latency_ms <= TIMEOUT_MS + 400, "an LLM request waited {} ms", during.max_latency_ms);
    assert!(wait_degraded(&es, 1, Duration::from_secs(5)).is_some(), "not degraded");
    rls.signal("-CONT");
    assert!(wait_degraded(&es, 0, Duration::from_secs(10)).is_some(), "still degraded");
    // The units admitted while degraded (their actual tokens: admitted on local counts, then
    // settled) reach Redis (at least once: a call that timed out may have been applied).
    let want = 6 * RESERVE + 30 * TOKENS;
    let got = redis.wait_units("tenant", &tenant, "tokens", want, Duration::from_secs(5));
    eprintln!("outage: 30 admitted in at most {} ms; {got} tokens in Redis (>= {want})", during.max_latency_ms);
    assert!(got >= want, "{got} < {want}");
    for e in &es {
        assert!(stat(e, "quota_global_checks_total.result.error") > 0);
    }
}
