//! Billing cycles through a whole decision on a fake clock: the 429's `retry-after`,
//! `ratelimit` `t=` and `w=`, the provider message, threshold crossings once per cycle, a
//! tenant's own anchor, and admission again once the cycle rolls over.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::reply::LlmApi;
use super::*;
use crate::core::tz::days_from_civil;
use crate::core::{Clock, FakeClock};
use crate::store::{init_registry, MemStore};
use std::collections::HashMap;

struct NoHeaders;

impl Headers for NoHeaders {
    fn with<R>(&mut self, _: &str, _: impl FnOnce(&[u8]) -> R) -> Option<R> {
        None
    }
}

const H: u64 = 3_600_000;

fn utc(y: i64, m: u32, d: u32, h: u64) -> u64 {
    days_from_civil(y, m, d) as u64 * 24 * H + h * H
}

fn run(cfg: &Config, s: &MemStore, w: &mut Worker, tenant: &str, now: u64) -> Verdict {
    let facts = RequestFacts::read(cfg, &mut NoHeaders, Some(tenant.as_bytes().to_vec()), Vec::new(), true);
    evaluate(cfg, s, w, &facts, Conditions { now, level: 0, global_degraded: false }, &RuntimePolicies::new())
}

fn headers(v: &Verdict) -> HashMap<String, String> {
    match v {
        Verdict::Reject { reply, .. } => reply.headers.iter().cloned().collect(),
        v => panic!("not rejected: {v:?}"),
    }
}

/// (window start, thresholds crossed) of an admitted request's only budget.
fn admitted(v: &Verdict, c: &Config) -> (u64, Vec<u64>) {
    match v {
        Verdict::Admit(a) => {
            let u = a.usage[0];
            (u.window_start, crate::core::crossed(&u, &c.budgets[u.budget].alerts).collect())
        }
        v => panic!("not admitted: {v:?}"),
    }
}

#[test]
fn a_daily_cycle_refuses_until_local_midnight_and_admits_after() {
    let c = Config::parse(
        br#"{"budgets":{"daily":{"counts":"requests","window":{"cycle":"daily","time_zone":"America/New_York"},"limit":2,"alerts":[50]}},
             "tenants":{"berlin":{"billing":{"time_zone":"Europe/Berlin"}}}}"#,
    )
    .unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    // 2027-03-14, the day New York starts DST: 00:00 EST (05:00Z) to 00:00 EDT (04:00Z), 23 h.
    let clock = FakeClock::new(utc(2027, 3, 14, 16));
    assert_eq!(admitted(&run(&c, &s, &mut w, "ny", clock.now_ms()), &c), (utc(2027, 3, 14, 5), vec![50]));
    assert_eq!(admitted(&run(&c, &s, &mut w, "ny", clock.now_ms()), &c), (utc(2027, 3, 14, 5), vec![]));
    let v = run(&c, &s, &mut w, "ny", clock.now_ms());
    let h = headers(&v);
    assert_eq!(h["retry-after"], "43200", "12 h to 00:00 EDT");
    assert_eq!(h["ratelimit"], "\"daily\";r=0;t=43200");
    assert_eq!(h["ratelimit-policy"], "\"daily\";q=2;w=82800", "a 23-hour cycle");
    let Verdict::Reject { reply, .. } = &v else { unreachable!() };
    let e: serde_json::Value = serde_json::from_str(&reply.provider_body(LlmApi::OpenAi)).unwrap();
    assert_eq!(e["error"]["message"], "Tenant quota daily exceeded: limit 2 requests per daily billing cycle, resets in 43200 s.");
    assert_eq!(e["error"]["code"], "insufficient_quota");
    // The last second of the cycle still refuses; local midnight admits, in a new cycle whose
    // thresholds are crossed again.
    clock.set(utc(2027, 3, 15, 4) - 1);
    assert_eq!(headers(&run(&c, &s, &mut w, "ny", clock.now_ms()))["retry-after"], "1");
    clock.advance(1);
    assert_eq!(admitted(&run(&c, &s, &mut w, "ny", clock.now_ms()), &c), (utc(2027, 3, 15, 4), vec![50]));
    admitted(&run(&c, &s, &mut w, "ny", clock.now_ms()), &c);
    let h = headers(&run(&c, &s, &mut w, "ny", clock.now_ms()));
    assert_eq!((h["retry-after"].as_str(), h["ratelimit-policy"].as_str()), ("86400", "\"daily\";q=2;w=86400"));
    // A tenant with its own zone: Berlin's day (CET) ends at 23:00Z.
    clock.set(utc(2027, 3, 14, 16));
    assert_eq!(admitted(&run(&c, &s, &mut w, "berlin", clock.now_ms()), &c).0, utc(2027, 3, 13, 23));
    admitted(&run(&c, &s, &mut w, "berlin", clock.now_ms()), &c);
    assert_eq!(headers(&run(&c, &s, &mut w, "berlin", clock.now_ms()))["retry-after"], "25200");
}

#[test]
fn a_monthly_cycle_resets_on_the_anchor_day_of_each_subject() {
    let c = Config::parse(
        br#"{"budgets":{"spend":{"counts":"requests","window":{"cycle":"monthly","day":31,"time_zone":"UTC"},"limit":1}},
             "tenants":{"tokyo":{"billing":{"day":15,"time_zone":"Asia/Tokyo"}}}}"#,
    )
    .unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    // 2027-02-10: the cycle on the 31st runs from Jan 31 to Feb 28.
    let now = utc(2027, 2, 10, 0);
    admitted(&run(&c, &s, &mut w, "a", now), &c);
    assert_eq!(headers(&run(&c, &s, &mut w, "a", now))["retry-after"], (18 * 86_400).to_string());
    assert_eq!(headers(&run(&c, &s, &mut w, "a", now))["ratelimit-policy"], format!("\"spend\";q=1;w={}", 28 * 86_400));
    assert!(matches!(run(&c, &s, &mut w, "a", utc(2027, 2, 28, 0)), Verdict::Admit(_)));
    // Tokyo's cycle: from Feb 15 00:00 JST (Feb 14 15:00Z).
    admitted(&run(&c, &s, &mut w, "tokyo", now), &c);
    assert_eq!(headers(&run(&c, &s, &mut w, "tokyo", now))["retry-after"], (4 * 86_400 + 15 * 3600).to_string());
    assert!(matches!(run(&c, &s, &mut w, "tokyo", utc(2027, 2, 14, 15)), Verdict::Admit(_)));
}
