#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::core::TenantState;
use crate::store::{self, init_registry, MemStore};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

struct Map(HashMap<&'static str, &'static str>);

impl Headers for Map {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.0.get(name).map(|v| f(v.as_bytes()))
    }
}

const NOW: u64 = 1_700_000_000_000;

fn run(cfg: &Config, s: &MemStore, w: &mut Worker, tenant: Option<&str>, h: &[(&'static str, &'static str)]) -> Verdict {
    let mut headers = Map(h.iter().copied().collect());
    let facts = RequestFacts::read(cfg, &mut headers, tenant.map(|t| t.as_bytes().to_vec()), Vec::new(), true);
    let at = Conditions { now: NOW, level: 0, global_degraded: false };
    evaluate(cfg, s, w, &facts, at, &RuntimePolicies::new())
}

fn cfg(extra: &str) -> Config {
    Config::parse(format!(r#"{{"budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":2}}}}{extra}}}"#).as_bytes()).unwrap()
}

#[test]
fn on_error_allow_passes_and_deny_answers_503() {
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
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
    init_registry(&s, None).unwrap();
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
    init_registry(&s, None).unwrap();
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
    init_registry(&s, None).unwrap();
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
    let u = Usage { budget: 0, limit: 100, burst_credits: 20, used: 105, burst_taken: 5, used_before: 104, resets_in_ms: 1000, window_start: 0, warned: None };
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

mod scopes {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const TEAM: &str = r#"{"scopes":{"team":{"header":"x-team-id","max_tracked":2,"ids":{"gold":{"budgets":{"team_rpm":{"limit":1}}}}}},
        "budgets":{"rpm":{"counts":"requests","window_ms":60000,"limit":10},
                   "team_rpm":{"counts":"requests","window_ms":60000,"limit":5,"scope":"team"}}}"#;

    fn setup() -> (Config, MemStore, Worker) {
        let c = Config::parse(TEAM.as_bytes()).unwrap();
        let s = MemStore::new();
        init_registry(&s, None).unwrap();
        store::init_registry(&s, Some("team")).unwrap();
        (c, s, Worker::new(3))
    }

    fn ask(c: &Config, s: &MemStore, w: &mut Worker, tenant: &str, team: Option<&str>) -> Verdict {
        let mut headers = Map(HashMap::new());
        let facts = RequestFacts::read(c, &mut headers, Some(tenant.as_bytes().to_vec()), vec![team.map(|t| t.as_bytes().to_vec())], true);
        evaluate(c, s, w, &facts, Conditions { now: NOW, level: 0, global_degraded: false }, &RuntimePolicies::new())
    }

    fn used(c: &Config, s: &MemStore, key: &str, budget: &str) -> u64 {
        let mut b = Vec::new();
        if s.get(key, &mut b).unwrap().is_none() {
            return 0;
        }
        let st = TenantState::decode(&b).unwrap();
        st.slot(c.budgets[c.budget_index(budget).unwrap()].id).map_or(0, |x| x.used)
    }

    #[test]
    fn two_tenants_of_one_team_share_its_budget_and_the_refusal_names_the_scope() {
        let (c, s, mut w) = setup();
        let mut admitted = 0;
        let mut refusal = None;
        for t in ["a", "a", "a", "b", "b", "b"] {
            match ask(&c, &s, &mut w, t, Some("blue")) {
                Verdict::Admit(_) => admitted += 1,
                Verdict::Reject { reply, scope, .. } => refusal = Some((reply, scope)),
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(admitted, 5);
        let (reply, scope) = refusal.unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(scope, Some((0, "blue".to_string())));
        let h = |n: &str| reply.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(h("x-tenant-quota-scope").as_deref(), Some("team"));
        assert_eq!(h("x-tenant-quota-scope-id").as_deref(), Some("blue"));
        assert_eq!(h("x-tenant-quota-budget").as_deref(), Some("team_rpm"));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!((body["scope"].as_str(), body["scope_id"].as_str(), body["tenant"].as_str()), (Some("team"), Some("blue"), Some("b")));
        // The refused request consumed nothing: b's tenant count has its 2 admitted only.
        assert_eq!(used(&c, &s, "tq1|t|b", "rpm"), 2);
        assert_eq!(used(&c, &s, "tq1|s|team|blue", "team_rpm"), 5);
        // Another team is unaffected; a configured id has its own limit.
        assert!(matches!(ask(&c, &s, &mut w, "b", Some("red")), Verdict::Admit(_)));
        assert!(matches!(ask(&c, &s, &mut w, "c", Some("gold")), Verdict::Admit(_)));
        assert!(matches!(ask(&c, &s, &mut w, "c", Some("gold")), Verdict::Reject { .. }));
    }

    #[test]
    fn missing_ids_are_not_counted_invalid_ones_refused_and_ids_past_max_tracked_share_overflow() {
        let (c, s, mut w) = setup();
        for _ in 0..7 {
            assert!(matches!(ask(&c, &s, &mut w, "solo", None), Verdict::Admit(_)));
        }
        assert_eq!(used(&c, &s, "tq1|t|solo", "rpm"), 7);
        match ask(&c, &s, &mut w, "solo", Some("bad id")) {
            Verdict::Reject { reply, .. } => assert_eq!((reply.status, reply.reason.as_str()), (400, "invalid_scope")),
            v => panic!("{v:?}"),
        }
        // max_tracked 2: the third new id shares `overflow` (configured ids do not count).
        for (i, id) in ["t1", "t2", "t3", "t4", "gold"].iter().enumerate() {
            let Verdict::Admit(a) = ask(&c, &s, &mut w, &format!("u{i}"), Some(id)) else { panic!() };
            let expect = if i >= 2 && *id != "gold" { "overflow" } else { id };
            assert_eq!(a.scopes[0].id, expect, "{id}");
        }
        assert_eq!(used(&c, &s, "tq1|so|team", "team_rpm"), 2);
    }

    #[test]
    fn tenant_refusal_comes_first_and_scope_charges_are_undone() {
        let (c, s, mut w) = setup();
        // `t` exhausts its own limit in team red (limit 5 per team: use two teams).
        for i in 0..10 {
            let team = if i < 5 { "red" } else { "green" };
            assert!(matches!(ask(&c, &s, &mut w, "t", Some(team)), Verdict::Admit(_)), "{i}");
        }
        match ask(&c, &s, &mut w, "t", Some("blue")) {
            Verdict::Reject { reply, scope, .. } => {
                assert_eq!(scope, None, "the tenant budget refuses first");
                assert!(reply.headers.iter().all(|(k, _)| k != "x-tenant-quota-scope"));
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(used(&c, &s, "tq1|s|team|blue", "team_rpm"), 0);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn concurrent_tenants_of_one_team_never_over_admit_and_counts_add_up() {
        let json = r#"{"scopes":{"team":{"header":"x-team-id"}},
            "budgets":{"rpm":{"counts":"requests","window_ms":60000,"limit":10},
                       "team_rpm":{"counts":"requests","window_ms":60000,"limit":50,"scope":"team"}}}"#;
        let c = std::sync::Arc::new(Config::parse(json.as_bytes()).unwrap());
        let s = std::sync::Arc::new(MemStore::new());
        init_registry(&*s, None).unwrap();
        store::init_registry(&*s, Some("team")).unwrap();
        s.yield_in_get.store(true, Ordering::Relaxed);
        let handles: Vec<_> = (0..64)
            .map(|k| {
                let (c, s) = (c.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut w = Worker::new(k as u64 + 1);
                    let mut ok = 0;
                    for _ in 0..4 {
                        let tenant = format!("t{}", k % 8);
                        if let Verdict::Admit(_) = ask(&c, &s, &mut w, &tenant, Some("blue")) {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let team = used(&c, &s, "tq1|s|team|blue", "team_rpm");
        let tenants: Vec<u64> = (0..8).map(|i| used(&c, &s, &format!("tq1|t|t{i}"), "rpm")).collect();
        assert!(admitted <= 50, "{admitted}");
        assert!(tenants.iter().all(|&u| u <= 10), "{tenants:?}");
        assert_eq!(tenants.iter().sum::<u64>(), team, "nothing charged for refusals: {tenants:?} vs team {team}");
        assert_eq!(team, admitted);
    }
}

/// SPEC 8: a scope id's `exact` budget asks the service under `(<scope>, id)` and records
/// its units in the scope id's state, next to the tenant's own exact budget.
#[test]
fn scoped_exact_budgets_ask_and_record_under_their_scope_id() {
    let c = Config::parse(
        br#"{"global":{"cluster":"rls"},"scopes":{"team":{"header":"x-team"}},
             "budgets":{"t_day":{"counts":"requests","window_ms":86400000,"limit":5,"global":"exact"},
                        "team_day":{"counts":"requests","window_ms":86400000,"limit":3,"scope":"team","global":"exact"}}}"#,
    )
    .unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    init_registry(&s, Some("team")).unwrap();
    let mut w = Worker::new(7);
    let mut headers = Map(HashMap::new());
    let facts = RequestFacts::read(&c, &mut headers, Some(b"acme".to_vec()), vec![Some(b"blue".to_vec())], true);
    let at = Conditions { now: NOW, level: 0, global_degraded: false };
    let Verdict::Admit(mut a) = evaluate(&c, &s, &mut w, &facts, at, &RuntimePolicies::new()) else { panic!("not admitted") };
    assert_eq!(a.exact.len(), 2);
    let p = c.policy("acme").clone();
    let body = exact_request(&c, &p, &a);
    let req: crate::global::rls::RateLimitRequest = prost::Message::decode(body.as_slice()).unwrap();
    let firsts: Vec<(String, String)> = req.descriptors.iter().map(|d| (d.entries[0].key.clone(), d.entries[0].value.clone())).collect();
    assert_eq!(firsts, vec![("tenant".to_string(), "acme".to_string()), ("team".to_string(), "blue".to_string())]);
    let ans = [crate::global::Answer::Total(2), crate::global::Answer::Total(3)];
    assert!(matches!(exact_finish(&c, &s, &mut w, &mut a, &p, Some(&ans), NOW).unwrap(), ExactOutcome::Admit));
    let keys: Vec<&str> = a.global_keys(&c).collect();
    assert_eq!(keys, vec!["tq1|t|acme", "tq1|s|team|blue"]);
    let team = c.budget_index("team_day").unwrap();
    let mut b = Vec::new();
    s.get("tq1|s|team|blue", &mut b).unwrap().unwrap();
    let slot = *TenantState::decode(&b).unwrap().slot(c.budgets[team].id).unwrap();
    // 1 used here and acknowledged; the service counted 3: the others used 2.
    assert_eq!((slot.used, slot.acked, slot.remote), (1, 1, 2));
    // The team's cap is reached: the service refuses the next one, and the refusal names the
    // scope id and undoes the tenant's reservation.
    let mut headers = Map(HashMap::new());
    let facts = RequestFacts::read(&c, &mut headers, Some(b"acme".to_vec()), vec![Some(b"blue".to_vec())], true);
    let at = Conditions { now: NOW, level: 0, global_degraded: false };
    let Verdict::Admit(mut a) = evaluate(&c, &s, &mut w, &facts, at, &RuntimePolicies::new()) else { panic!("not admitted") };
    let ans = [crate::global::Answer::Total(3), crate::global::Answer::Over { cap: 3 }];
    let ExactOutcome::Reject(reply, _) = exact_finish(&c, &s, &mut w, &mut a, &p, Some(&ans), NOW).unwrap() else { panic!("admitted") };
    assert_eq!(reply.status, 429);
    assert!(reply.headers.contains(&("x-tenant-quota-scope-id".to_string(), "blue".to_string())), "{:?}", reply.headers);
}

fn fields_of(f: impl FnOnce(&mut dyn FnMut(&str, &str))) -> Vec<(String, String)> {
    let mut out = Vec::new();
    f(&mut |k: &str, v: &str| out.push((k.to_string(), v.to_string())));
    out
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn log_fields_of_an_admitted_a_rejected_and_a_scoped_request() {
    use log_fields::*;
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(1);
    let c = cfg(r#","filter_state":true"#);
    assert!(c.filter_state);
    let Verdict::Admit(a) = run(&c, &s, &mut w, Some("acme"), &[]) else { panic!() };
    let f = fields_of(|put| admitted_fields(&c, &a, put));
    assert_eq!(field(&f, TENANT), Some("acme"));
    assert_eq!(field(&f, RESULT), Some("allowed"));
    assert_eq!((field(&f, BUDGET), field(&f, REMAINING)), (Some("rpm"), Some("1")));
    assert_eq!(field(&f, REASON), None);
    assert_eq!(field(&f, MODEL), None, "no model, no field");
    run(&c, &s, &mut w, Some("acme"), &[]);
    let Verdict::Reject { reply, .. } = run(&c, &s, &mut w, Some("acme"), &[]) else { panic!() };
    let f = fields_of(|put| reply_fields(&reply, put));
    assert_eq!(f.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), [
        "tenant_quota.tenant=acme",
        "tenant_quota.result=rejected",
        "tenant_quota.reason=rpm_exceeded",
        "tenant_quota.budget=rpm",
        "tenant_quota.remaining=0"
    ]);
    // A scoped budget's refusal names its scope id.
    let sc = Config::parse(br#"{"scopes":{"team":{"header":"x-team-id"}},"budgets":{"team_rpm":{"counts":"requests","window_ms":60000,"limit":1,"scope":"team"}}}"#).unwrap();
    crate::store::init_registry(&s, Some("team")).unwrap();
    let mut headers = Map(HashMap::new());
    let mut go = |w: &mut Worker| {
        let facts = RequestFacts::read(&sc, &mut headers, Some(b"t".to_vec()), vec![Some(b"blue".to_vec())], true);
        let at = Conditions { now: NOW, level: 0, global_degraded: false };
        evaluate(&sc, &s, w, &facts, at, &RuntimePolicies::new())
    };
    let v = go(&mut w);
    let Verdict::Admit(a) = v else { panic!("{v:?}") };
    assert_eq!(field(&fields_of(|put| admitted_fields(&sc, &a, put)), "tenant_quota.scope.team"), Some("blue"));
    let Verdict::Reject { reply, .. } = go(&mut w) else { panic!() };
    let f = fields_of(|put| reply_fields(&reply, put));
    assert_eq!((field(&f, "tenant_quota.scope.team"), field(&f, BUDGET)), (Some("blue"), Some("team_rpm")));
}

#[test]
fn log_field_outcomes_and_tokens() {
    use log_fields::*;
    let mut a = Admitted { tenant: "t".into(), model: Some("gpt-4o".into()), ..Admitted::default() };
    assert_eq!(Outcome::of_admitted(&a), Outcome::Allowed);
    a.queued_ms = Some(3);
    assert_eq!(Outcome::of_admitted(&a), Outcome::Queued);
    a.warnings = vec!["soft_exceeded".into(), "burst_exhausted".into()];
    assert_eq!(Outcome::of_admitted(&a), Outcome::Warned);
    let f = fields_of(|put| admitted_fields(&cfg(""), &a, put));
    assert_eq!((field(&f, RESULT), field(&f, REASON)), (Some("warned"), Some("soft_exceeded,burst_exhausted")));
    assert_eq!(field(&f, MODEL), Some("gpt-4o"));
    a.shadow = Some("rpm_exceeded".into());
    let f = fields_of(|put| admitted_fields(&cfg(""), &a, put));
    assert_eq!((field(&f, RESULT), field(&f, REASON)), (Some("shadow"), Some("rpm_exceeded")));
    let f = fields_of(|put| usage_fields(crate::llm::Usage { input: 12, output: 30 }, put));
    assert_eq!((field(&f, INPUT_TOKENS), field(&f, OUTPUT_TOKENS)), (Some("12"), Some("30")));
}
