#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::config::Config;
use crate::core::{decide, Admit, Demand, Policy};

const NOW: u64 = 1_700_000_000_000;

fn ready() -> MemStore {
    let s = MemStore::new();
    init_registry(&s).unwrap();
    s
}

#[test]
fn host_cas_rules_are_modelled() {
    let s = MemStore::new();
    let mut b = Vec::new();
    assert_eq!(s.get("k", &mut b).unwrap(), None);
    s.set("k", b"1", 12345).unwrap(); // missing key: inserted whatever the CAS
    let c1 = s.get("k", &mut b).unwrap().unwrap();
    s.set("k", b"2", c1).unwrap();
    assert_eq!(s.set("k", b"3", c1), Err(StoreError::CasMismatch));
    s.set("k", b"4", 0).unwrap(); // CAS 0 always wins
    s.set("k", b"", 0).unwrap(); // the SDK's "remove"
    assert_eq!(s.get("k", &mut b).unwrap(), None);
}

#[test]
fn init_registry_is_idempotent() {
    let s = ready();
    let mut sc = Scratch::default();
    resolve(&s, "a", TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
    init_registry(&s).unwrap();
    assert_eq!(read_registry(&s).unwrap().tracked, 1);
}

#[test]
fn max_tracked_sends_new_tenants_to_overflow() {
    let s = ready();
    let mut sc = Scratch::default();
    for i in 0..5 {
        resolve(&s, &format!("t{i}"), TenantKind::Dynamic, 3, NOW, 7, &mut sc).unwrap();
    }
    assert_eq!(sc.key, "tq1|overflow");
    assert_eq!(read_registry(&s).unwrap().tracked, 3);
    resolve(&s, "t1", TenantKind::Dynamic, 3, NOW, 7, &mut sc).unwrap();
    assert_eq!(sc.key, "tq1|t|t1");
    resolve(&s, "named", TenantKind::Named, 3, NOW, 7, &mut sc).unwrap();
    assert_eq!(sc.key, "tq1|t|named");
    // registry + 3 tenants + overflow + named
    assert_eq!(s.len(), 6);
}

#[test]
fn a_dead_lock_holder_blocks_only_until_the_deadline() {
    let s = ready();
    let held = Registry { tracked: 0, owner: 99, deadline: NOW + LOCK_MS };
    s.set(REGISTRY_KEY, &held.encode(), 0).unwrap();
    let mut sc = Scratch::default();
    assert_eq!(resolve(&s, "a", TenantKind::Dynamic, 10, NOW, 5, &mut sc), Err(StoreError::Contended));
    resolve(&s, "a", TenantKind::Dynamic, 10, NOW + LOCK_MS, 5, &mut sc).unwrap();
    let r = read_registry(&s).unwrap();
    assert_eq!((r.tracked, r.owner), (1, 0));
}

#[test]
fn missing_registry_is_an_error_not_a_blind_write() {
    let s = MemStore::new();
    let mut sc = Scratch::default();
    assert_eq!(resolve(&s, "a", TenantKind::Dynamic, 10, NOW, 5, &mut sc), Err(StoreError::Unavailable));
    assert!(s.is_empty());
}

#[test]
fn transact_retries_cas_conflicts_then_gives_up() {
    let s = ready();
    let mut sc = Scratch::default();
    resolve(&s, "a", TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
    s.fail_sets.store(3, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    transact(&s, &mut sc, |st| {
        runs += 1;
        st.slot_mut(1).used += 1;
        (true, ())
    })
    .unwrap();
    assert_eq!(runs, 4);
    assert_eq!(sc.state.slot(1).unwrap().used, 1);
    s.fail_sets.store(MAX_CAS_RETRIES, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(transact(&s, &mut sc, |_| (true, ())), Err(StoreError::Contended));
    s.unavailable.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(transact(&s, &mut sc, |_| (true, ())), Err(StoreError::Unavailable));
}

#[test]
fn corrupt_state_is_reported() {
    let s = ready();
    s.set("tq1|t|bad", b"\x09garbage", 0).unwrap();
    let mut sc = Scratch::default();
    tenant_key("bad", &mut sc.key);
    assert_eq!(transact(&s, &mut sc, |_| (true, ())), Err(StoreError::Corrupt));
}

/// One "worker": resolve + decide, as the engine does it.
fn admit_one(s: &MemStore, c: &Config, tenant: &str, token: u64, sc: &mut Scratch) -> bool {
    let p = c.policy(tenant);
    let pol = Policy { budgets: &c.budgets, limits: &p.limits, keep: 1.0, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
    let d = [Demand { budget: 0, units: 1, admit: Admit::Reserve }];
    let mut usage = Vec::new();
    tenant_key(tenant, &mut sc.key);
    let mut run = |sc: &mut Scratch| transact(s, sc, |st| match decide(&pol, st, NOW, &d, &mut usage) {
        Ok(()) => (true, true),
        Err(_) => (false, false),
    });
    match run(sc) {
        Err(StoreError::Missing) => {
            resolve(s, tenant, TenantKind::Dynamic, 1000, NOW, token, sc).unwrap();
            run(sc).unwrap()
        }
        r => r.unwrap(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn interleaved_workers_meeting_a_new_tenant_admit_exactly_the_cap() {
    use std::sync::Arc;
    let c = Arc::new(Config::parse(br#"{"budgets":{"r":{"counts":"requests","window_ms":3600000,"limit":40,"burst_credits":10}}}"#).unwrap());
    for trial in 0..20 {
        let s = Arc::new(ready());
        s.yield_in_get.store(true, std::sync::atomic::Ordering::Relaxed);
        let tenant = format!("fresh-{trial}");
        let handles: Vec<_> = (0..8u64)
            .map(|w| {
                let (s, c, tenant) = (s.clone(), c.clone(), tenant.clone());
                std::thread::spawn(move || {
                    let mut sc = Scratch::default();
                    (0..20).filter(|i| admit_one(&s, &c, &tenant, (w << 32) | (*i as u64 + 1), &mut sc)).count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 50, "trial {trial}");
        assert_eq!(read_registry(&*s).unwrap().tracked, 1);
    }
}

#[test]
fn sequential_workers_admit_exactly_the_cap() {
    let c = Config::parse(br#"{"budgets":{"r":{"counts":"requests","window_ms":3600000,"limit":4,"burst_credits":1}}}"#).unwrap();
    let s = ready();
    let mut a = Scratch::default();
    let mut b = Scratch::default();
    let n = (0..10).filter(|i| admit_one(&s, &c, "t", 1 + i, if i % 2 == 0 { &mut a } else { &mut b })).count();
    assert_eq!(n, 5);
}
