//! The commit step under interleaved workers: native threads stand in for Envoy's workers,
//! the MemStore has the host's CAS rules and yields inside `get` to widen every race window.
//! Each request runs the engine's own steps (identify, demands, [`commit`]), nothing copied.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::engine::demands::demands;
use crate::engine::subject::{identify, RuntimePolicies};
use crate::engine::{Conditions, RequestFacts};
use crate::store::{init_registry, MemStore};

const NOW: u64 = 1_700_000_000_000;
const TERMS: Terms = Terms { keep: 1.0, saturation_retry_after_s: 1, global: GlobalView::Remote };

/// One request of `tenant` (in scope id `team`, if any) through the commit step: whether it
/// was admitted. A store failure fails the test: the CAS retries must absorb contention.
fn commit_one(cfg: &Config, s: &MemStore, w: &mut Worker, tenant: &str, team: Option<&str>) -> bool {
    let facts = RequestFacts { tenant: Some(tenant.into()), scope_ids: vec![team.map(Into::into)], end_of_stream: true, ..RequestFacts::default() };
    let at = Conditions { now: NOW, level: 0, global_degraded: false };
    let none = RuntimePolicies::new();
    let mut subjects = identify(cfg, &facts, &none).unwrap();
    let mut d = demands(cfg, &facts, at, &subjects, &mut w.demands).unwrap();
    let mut done = Committed::default();
    match commit(cfg, s, w, &mut subjects, &mut d, TERMS, NOW, &mut done) {
        Ok(()) => true,
        Err(Refusal::Rejected { .. }) => false,
        Err(Refusal::Store(e)) => panic!("store error {e:?}"),
    }
}

/// A subject's count of a budget as stored.
fn used(cfg: &Config, s: &MemStore, key: &str, budget: &str) -> u64 {
    let Some(b) = s.raw(key) else { return 0 };
    let st = TenantState::decode(&b).unwrap();
    st.slot(cfg.budgets[cfg.budget_index(budget).unwrap()].id).map_or(0, |x| x.used)
}

fn store(scoped: bool) -> MemStore {
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    if scoped {
        init_registry(&s, Some("team")).unwrap();
    }
    s
}

#[test]
fn sequential_workers_admit_exactly_the_cap() {
    let c = Config::parse(br#"{"budgets":{"r":{"counts":"requests","window_ms":3600000,"limit":4,"burst_credits":1}}}"#).unwrap();
    let s = store(false);
    let (mut a, mut b) = (Worker::new(1), Worker::new(2));
    let n = (0..10).filter(|i| commit_one(&c, &s, if i % 2 == 0 { &mut a } else { &mut b }, "t", None)).count();
    assert_eq!(n, 5);
    assert_eq!(used(&c, &s, "tq1|t|t", "r"), 5);
}

/// Eight workers meet a tenant nobody has seen: its key is created once (under the
/// registry lock), and every count after that is a CAS, so exactly limit + burst are admitted.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn interleaved_workers_meeting_a_new_tenant_admit_exactly_the_cap() {
    use std::sync::Arc;
    let c = Arc::new(Config::parse(br#"{"budgets":{"r":{"counts":"requests","window_ms":3600000,"limit":40,"burst_credits":10}}}"#).unwrap());
    for trial in 0..20 {
        let s = Arc::new(store(false));
        s.yield_in_get.store(true, std::sync::atomic::Ordering::Relaxed);
        let tenant = format!("fresh-{trial}");
        let handles: Vec<_> = (0..8u64)
            .map(|k| {
                let (s, c, tenant) = (s.clone(), c.clone(), tenant.clone());
                std::thread::spawn(move || {
                    let mut w = Worker::new((trial << 8) | k);
                    (0..20).filter(|_| commit_one(&c, &s, &mut w, &tenant, None)).count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 50, "trial {trial}");
        assert_eq!(used(&c, &s, &format!("tq1|t|{tenant}"), "r"), 50, "trial {trial}");
        assert_eq!(crate::store::read_registry(&*s).unwrap().tracked, 1);
    }
}

/// Two new tenants of one new team: a request reserves in its tenant, then in the team; a
/// team refusal undoes the tenant's reservation. No subject ever holds more than its cap,
/// and what the subjects hold is exactly what was admitted: a refused request consumed
/// nothing, in any subject.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn interleaved_workers_across_tenant_and_scope_never_over_admit_and_refusals_consume_nothing() {
    use std::sync::Arc;
    let json = r#"{"scopes":{"team":{"header":"x-team"}},
        "budgets":{"r":{"counts":"requests","window_ms":3600000,"limit":30,"burst_credits":5},
                   "team_r":{"counts":"requests","window_ms":3600000,"limit":40,"burst_credits":10,"scope":"team"}}}"#;
    let c = Arc::new(Config::parse(json.as_bytes()).unwrap());
    for trial in 0..10u64 {
        let s = Arc::new(store(true));
        s.yield_in_get.store(true, std::sync::atomic::Ordering::Relaxed);
        let handles: Vec<_> = (0..8u64)
            .map(|k| {
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || {
                    let mut w = Worker::new((trial << 8) | k);
                    let tenant = format!("t{trial}-{}", k % 2);
                    (0..20).filter(|_| commit_one(&c, &s, &mut w, &tenant, Some("blue"))).count() as u64
                })
            })
            .collect();
        let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let team = used(&c, &s, "tq1|s|team|blue", "team_r");
        let tenants: Vec<u64> = (0..2).map(|i| used(&c, &s, &format!("tq1|t|t{trial}-{i}"), "r")).collect();
        assert!(team <= 50 && tenants.iter().all(|&u| u <= 35), "trial {trial}: team {team}, tenants {tenants:?}");
        assert_eq!(team, admitted, "trial {trial}: the team holds what was admitted");
        assert_eq!(tenants.iter().sum::<u64>(), admitted, "trial {trial}: refusals left units in a tenant: {tenants:?}");
    }
}
