//! `on_exceed: fallback`: the first decision of a request over such a budget reroutes it
//! without charging anything; the second, without that budget, decides it for the fallback.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::core::Reason;
use crate::store::{init_registry, MemStore};

const NOW: u64 = 1_700_000_000_000;

fn cfg(mode: &str) -> Config {
    Config::parse(
        format!(
            r#"{{"mode":"{mode}","llm":{{"model":{{"header":"x-model"}}}},
  "budgets":{{
    "big_rpm":{{"counts":"requests","window_ms":60000,"limit":2,"match":{{"models":["big"]}},
               "on_exceed":"fallback","fallback":{{"model":"small","upstream":"backup"}}}},
    "small_rpm":{{"counts":"requests","window_ms":60000,"limit":3,"match":{{"models":["small"]}}}},
    "all_rpm":{{"counts":"requests","window_ms":60000,"limit":100}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn facts(model: &str, rerouted: Option<usize>) -> RequestFacts {
    RequestFacts {
        tenant: Some(b"t".to_vec()),
        model: Some(model.to_string()),
        rerouted: rerouted.map(|b| Rerouted { budget: Some(b), header: String::new() }),
        ..RequestFacts::default()
    }
}

fn run(c: &Config, s: &MemStore, w: &mut Worker, f: &RequestFacts) -> Verdict {
    evaluate(c, s, w, f, Conditions { now: NOW, level: 0, global_degraded: false }, &RuntimePolicies::new())
}

fn used(v: &Verdict, c: &Config, budget: &str) -> Option<u64> {
    let Verdict::Admit(a) = v else { panic!("{v:?}") };
    a.usage.iter().find(|u| c.budgets[u.budget].name == budget).map(|u| u.used)
}

#[test]
fn an_exhausted_fallback_budget_reroutes_then_the_fallback_decides() {
    let c = cfg("enforce");
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    let big = c.budgets.iter().position(|b| b.name == "big_rpm").unwrap();
    for i in 1..=2 {
        assert_eq!(used(&run(&c, &s, &mut w, &facts("big", None)), &c, "big_rpm"), Some(i));
    }
    // Over: rerouted, nothing charged (all_rpm stays at 2).
    match run(&c, &s, &mut w, &facts("big", None)) {
        Verdict::Reroute(r) => {
            assert_eq!((r.budget, r.reason, r.tenant.as_str()), (big, Reason::Exceeded, "t"));
            assert_eq!((r.reply.status, r.reply.reason.as_str()), (429, "big_rpm_exceeded"));
        }
        v => panic!("{v:?}"),
    }
    // Decided again for the fallback model, without big_rpm: small_rpm and all_rpm count it.
    for i in 1..=3 {
        let v = run(&c, &s, &mut w, &facts("small", Some(big)));
        assert_eq!((used(&v, &c, "small_rpm"), used(&v, &c, "big_rpm"), used(&v, &c, "all_rpm")), (Some(i), None, Some(2 + i)));
    }
    // The fallback exhausted too: its own rejection, and nothing charged.
    match run(&c, &s, &mut w, &facts("small", Some(big))) {
        Verdict::Reject { reply, .. } => assert_eq!((reply.status, reply.reason.as_str()), (429, "small_rpm_exceeded")),
        v => panic!("{v:?}"),
    }
    assert_eq!(used(&run(&c, &s, &mut w, &facts("other", None)), &c, "all_rpm"), Some(6));
}

#[test]
fn one_hop_only_and_reject_wins() {
    // A fallback budget met again after a reroute refuses like any other.
    let c = cfg("enforce");
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    let small = c.budgets.iter().position(|b| b.name == "small_rpm").unwrap();
    for _ in 0..2 {
        assert!(matches!(run(&c, &s, &mut w, &facts("big", None)), Verdict::Admit(_)));
    }
    match run(&c, &s, &mut w, &facts("big", Some(small))) {
        Verdict::Reject { reply, rejection: Some(r), .. } => {
            assert_eq!(reply.reason, "big_rpm_exceeded");
            assert!(!r.fallback);
        }
        v => panic!("{v:?}"),
    }
    // A reject budget over as well: the rejection wins over the fallback.
    let c2 = Config::parse(
        br#"{"budgets":{
      "a_soft":{"counts":"requests","window_ms":60000,"limit":1,"on_exceed":"fallback","fallback":{"upstream":"backup"}},
      "b_hard":{"counts":"requests","window_ms":60000,"limit":1}}}"#,
    )
    .unwrap();
    let t = RequestFacts { tenant: Some(b"u".to_vec()), ..RequestFacts::default() };
    assert!(matches!(run(&c2, &s, &mut w, &t), Verdict::Admit(_)));
    match run(&c2, &s, &mut w, &t) {
        Verdict::Reject { reply, .. } => assert_eq!(reply.reason, "b_hard_exceeded"),
        v => panic!("{v:?}"),
    }
}

#[test]
fn soft_downgrade_the_soft_budget_does_not_count_the_rerouted_request() {
    // 80 % of a spend as a fallback budget over a hard one: past the soft limit every request
    // goes to the cheaper model until the hard limit refuses.
    let c = Config::parse(
        br#"{"budgets":{
      "hard":{"counts":"requests","window_ms":60000,"limit":5},
      "soft":{"counts":"requests","window_ms":60000,"limit":4,"on_exceed":"fallback","fallback":{"upstream":"cheap"}}}}"#,
    )
    .unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    let soft = c.budgets.iter().position(|b| b.name == "soft").unwrap();
    let t = RequestFacts { tenant: Some(b"t".to_vec()), ..RequestFacts::default() };
    let rerouted = RequestFacts { rerouted: Some(Rerouted { budget: Some(soft), header: String::new() }), ..t.clone() };
    for _ in 0..4 {
        assert!(matches!(run(&c, &s, &mut w, &t), Verdict::Admit(_)));
    }
    assert!(matches!(run(&c, &s, &mut w, &t), Verdict::Reroute(_)));
    let v = run(&c, &s, &mut w, &rerouted);
    assert_eq!((used(&v, &c, "hard"), used(&v, &c, "soft")), (Some(5), None));
    assert!(matches!(run(&c, &s, &mut w, &t), Verdict::Reject { .. }), "hard is full: no reroute helps");
}

#[test]
fn shadow_mode_reports_a_fallback_like_a_rejection() {
    let c = cfg("shadow");
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    for _ in 0..2 {
        run(&c, &s, &mut w, &facts("big", None));
    }
    match run(&c, &s, &mut w, &facts("big", None)) {
        Verdict::Admit(a) => assert_eq!(a.shadow.as_deref(), Some("big_rpm_exceeded")),
        v => panic!("{v:?}"),
    }
}
