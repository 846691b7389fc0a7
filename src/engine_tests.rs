#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::store::{init_registry, MemStore};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

struct Map(HashMap<&'static str, &'static str>);

impl RequestHeaders for Map {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0.get(name).map(|v| v.as_bytes().to_vec())
    }
}

const NOW: u64 = 1_700_000_000_000;

fn run(cfg: &Config, s: &MemStore, w: &mut Worker, tenant: Option<&str>, h: &[(&'static str, &'static str)]) -> Verdict {
    let mut headers = Map(h.iter().copied().collect());
    let input = RequestInput { headers: &mut headers, tenant: tenant.map(|t| t.as_bytes().to_vec()), end_of_stream: true, level: 0, global_degraded: false, now: NOW };
    evaluate(cfg, s, w, input, &|_| None)
}

fn cfg(extra: &str) -> Config {
    Config::parse(format!(r#"{{"budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":2}}}}{extra}}}"#).as_bytes()).unwrap()
}

#[test]
fn on_error_allow_passes_and_deny_answers_503() {
    let s = MemStore::new();
    init_registry(&s).unwrap();
    s.unavailable.store(true, Ordering::SeqCst);
    let mut w = Worker::new(1);
    match run(&cfg(""), &s, &mut w, Some("a"), &[]) {
        Verdict::Pass { error: Some(StoreError::Unavailable) } => {}
        v => panic!("{v:?}"),
    }
    match run(&cfg(r#","on_error":"deny""#), &s, &mut w, Some("a"), &[]) {
        Verdict::Reject { reply, error: Some(_), .. } => {
            assert_eq!(reply.status, 503);
            assert_eq!(reply.reason, "quota_unavailable");
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn contention_past_the_retry_bound_is_an_error_not_a_lost_count() {
    let s = MemStore::new();
    init_registry(&s).unwrap();
    let c = cfg(r#","on_error":"deny""#);
    let mut w = Worker::new(1);
    assert!(matches!(run(&c, &s, &mut w, Some("a"), &[]), Verdict::Admit(_)));
    s.fail_sets.store(crate::store::MAX_CAS_RETRIES, Ordering::SeqCst);
    assert!(matches!(run(&c, &s, &mut w, Some("a"), &[]), Verdict::Reject { error: Some(StoreError::Contended), .. }));
    s.fail_sets.store(0, Ordering::SeqCst);
    // The failed attempt consumed nothing: one more fits.
    assert!(matches!(run(&c, &s, &mut w, Some("a"), &[]), Verdict::Admit(_)));
    assert!(matches!(run(&c, &s, &mut w, Some("a"), &[]), Verdict::Reject { rejection: Some(_), .. }));
}

#[test]
fn replies_for_bad_input() {
    let s = MemStore::new();
    init_registry(&s).unwrap();
    let mut w = Worker::new(1);
    let c = cfg(r#","tenant":{"fallback":null}"#);
    match run(&c, &s, &mut w, None, &[]) {
        Verdict::Reject { reply, .. } => assert_eq!((reply.status, reply.reason.as_str()), (401, "missing_tenant")),
        v => panic!("{v:?}"),
    }
    match run(&c, &s, &mut w, Some("a\u{7f}"), &[]) {
        Verdict::Reject { reply, .. } => assert_eq!((reply.status, reply.reason.as_str()), (400, "invalid_tenant")),
        v => panic!("{v:?}"),
    }
    let body: serde_json::Value = match run(&c, &s, &mut w, Some("x\"y"), &[]) {
        Verdict::Admit(_) => serde_json::Value::Null,
        Verdict::Reject { reply, .. } => serde_json::from_str(&reply.body).unwrap(),
        v => panic!("{v:?}"),
    };
    assert!(body.is_null(), "quotes are visible ASCII and allowed");
}

#[test]
fn reject_reply_has_every_spec_field() {
    let s = MemStore::new();
    init_registry(&s).unwrap();
    let mut w = Worker::new(1);
    let c = cfg("");
    for _ in 0..2 {
        assert!(matches!(run(&c, &s, &mut w, Some("q\"uote"), &[]), Verdict::Admit(_)));
    }
    let Verdict::Reject { reply, .. } = run(&c, &s, &mut w, Some("q\"uote"), &[]) else { panic!() };
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["tenant"], "q\"uote", "tenant ids are JSON-escaped");
    for k in ["type", "title", "status", "violated-policies", "error", "reason", "budget", "tenant", "retry_after_s"] {
        assert!(!v[k].is_null(), "{k} missing in {v}");
    }
    let h: HashMap<_, _> = reply.headers.iter().cloned().collect();
    assert_eq!(h["retry-after"], "40");
    assert_eq!(h["ratelimit"], "\"rpm\";r=0;t=40");
}

#[test]
fn admitted_headers_are_the_three_spec_numbers_and_the_shadow_reason() {
    let collect = |a: &Admitted| {
        let mut h = Vec::new();
        admitted_headers(a, |k, v| h.push((k, v.to_string())));
        h
    };
    let u = Usage { budget: 0, limit: 100, burst_credits: 20, used: 105, burst_taken: 5, used_before: 104, resets_in_ms: 1000 };
    let mut a = Admitted { headline: Some(u), ..Admitted::default() };
    let want = vec![
        ("x-tenant-quota-limit", "100".to_string()),
        ("x-tenant-quota-remaining", u.remaining().to_string()),
        ("x-tenant-quota-burst-remaining", u.burst_remaining().to_string()),
    ];
    assert_eq!(collect(&a), want);
    a.shadow = Some("burst_exhausted".into());
    let mut with_shadow = want.clone();
    with_shadow.push(("x-tenant-quota-shadow", "burst_exhausted".into()));
    assert_eq!(collect(&a), with_shadow);
    assert!(collect(&Admitted::default()).is_empty());
}
