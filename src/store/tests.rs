#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::core::Subject;

const NOW: u64 = 1_700_000_000_000;

fn ready() -> MemStore {
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
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
    resolve(&s, Subject::Tenant("a"), TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
    init_registry(&s, None).unwrap();
    assert_eq!(read_registry(&s).unwrap().tracked, 1);
}

#[test]
fn max_tracked_sends_new_tenants_to_overflow() {
    let s = ready();
    let mut sc = Scratch::default();
    for i in 0..5 {
        resolve(&s, Subject::Tenant(&format!("t{i}")), TenantKind::Dynamic, 3, NOW, 7, &mut sc).unwrap();
    }
    assert_eq!(sc.key, "tq1|overflow");
    assert_eq!(read_registry(&s).unwrap().tracked, 3);
    resolve(&s, Subject::Tenant("t1"), TenantKind::Dynamic, 3, NOW, 7, &mut sc).unwrap();
    assert_eq!(sc.key, "tq1|t|t1");
    resolve(&s, Subject::Tenant("named"), TenantKind::Named, 3, NOW, 7, &mut sc).unwrap();
    assert_eq!(sc.key, "tq1|t|named");
    // registry + 3 tenants + overflow + named
    assert_eq!(s.len(), 6);
}

#[test]
fn a_dead_lock_holder_blocks_only_until_the_deadline() {
    let s = ready();
    let held = Registry { tracked: 0, owner: 99, deadline: NOW + LOCK_MS };
    s.set(keys::REGISTRY, &held.encode(), 0).unwrap();
    let mut sc = Scratch::default();
    assert_eq!(resolve(&s, Subject::Tenant("a"), TenantKind::Dynamic, 10, NOW, 5, &mut sc), Err(StoreError::Contended));
    resolve(&s, Subject::Tenant("a"), TenantKind::Dynamic, 10, NOW + LOCK_MS, 5, &mut sc).unwrap();
    let r = read_registry(&s).unwrap();
    assert_eq!((r.tracked, r.owner), (1, 0));
}

#[test]
fn missing_registry_is_an_error_not_a_blind_write() {
    let s = MemStore::new();
    let mut sc = Scratch::default();
    assert_eq!(resolve(&s, Subject::Tenant("a"), TenantKind::Dynamic, 10, NOW, 5, &mut sc), Err(StoreError::Unavailable));
    assert!(s.is_empty());
}

#[test]
fn transact_retries_cas_conflicts_then_gives_up() {
    let s = ready();
    let mut sc = Scratch::default();
    resolve(&s, Subject::Tenant("a"), TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
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
    keys::state(crate::core::Subject::Tenant("bad"), &mut sc.key);
    assert_eq!(transact(&s, &mut sc, |_| (true, ())), Err(StoreError::Corrupt));
}

// The interleaved-worker tests of the commit run the engine's commit step itself:
// `engine/commit_tests.rs`.

mod ledgers {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::store::ledger::{self, Ledger, HEARTBEAT_MS, STALE_MS};
    use crate::store::{MemStore, SharedStore, StoreError};
    use std::collections::HashMap;

    const T: u64 = 1_800_000_000_000;

    /// The tenant side of the test: slots held per (key, budget).
    #[derive(Default)]
    struct Slots(HashMap<(String, u32), u64>);

    impl Slots {
        fn take(&mut self, l: &mut Ledger, s: &MemStore, key: &str, b: u32) {
            *self.0.entry((key.into(), b)).or_default() += 1;
            l.acquired(s, key, b);
        }
        fn give(&mut self, l: &mut Ledger, s: &MemStore, key: &str, b: u32) {
            if l.release(s, key, b).unwrap() {
                let e = self.0.get_mut(&(key.to_string(), b)).unwrap();
                *e = e.saturating_sub(1);
            }
        }
        fn used(&self, key: &str, b: u32) -> u64 {
            self.0.get(&(key.to_string(), b)).copied().unwrap_or(0)
        }
    }

    fn tick(l: &mut Ledger, s: &MemStore, slots: &mut Slots, now: u64) -> ledger::TickReport {
        l.tick(s, now, |k, b, n| {
            let e = slots.0.entry((k.to_string(), b)).or_default();
            *e = e.saturating_sub(u64::from(n));
            Ok::<(), StoreError>(())
        })
        .unwrap()
    }

    #[test]
    fn a_dead_vms_slots_come_back_and_a_live_ones_stay() {
        let s = MemStore::new();
        ledger::init(&s).unwrap();
        let mut slots = Slots::default();
        let (mut a, mut b) = (Ledger::new(10), Ledger::new(20));
        tick(&mut a, &s, &mut slots, T);
        tick(&mut b, &s, &mut slots, T);
        for _ in 0..3 {
            slots.take(&mut a, &s, "tq1|t|acme", 7);
        }
        slots.take(&mut a, &s, "tq1|t|beta", 7);
        slots.take(&mut b, &s, "tq1|t|acme", 7);
        // Admissions reach the ledger at once; a release rewrites the shard first.
        slots.give(&mut a, &s, "tq1|t|beta", 7);
        tick(&mut a, &s, &mut slots, T + 1);
        tick(&mut b, &s, &mut slots, T + 1);
        // A release of a ledgered slot rewrites the shard first.
        slots.give(&mut a, &s, "tq1|t|acme", 7);
        assert_eq!(slots.used("tq1|t|acme", 7), 3);
        // `a` dies (no more ticks); `b` keeps beating and reclaims a's 2 slots once stale.
        let mut now = T + 1;
        let mut reclaimed = 0;
        while now < T + STALE_MS + 3 * HEARTBEAT_MS {
            now += 500;
            reclaimed += tick(&mut b, &s, &mut slots, now).reclaimed_slots;
        }
        assert_eq!(reclaimed, 2);
        assert_eq!(slots.used("tq1|t|acme", 7), 1, "b's live slot stays");
        assert_eq!(slots.used("tq1|t|beta", 7), 0);
        // b's own release still works, and a's place is free for the next VM.
        slots.give(&mut b, &s, "tq1|t|acme", 7);
        assert_eq!(slots.used("tq1|t|acme", 7), 0);
        let mut c = Ledger::new(30);
        tick(&mut c, &s, &mut slots, now);
        let mut buf = Vec::new();
        s.get(ledger::PLACES_KEY, &mut buf).unwrap();
        assert_eq!(buf.len(), 1 + 16, "two places: b's and the reused one");
    }

    #[test]
    fn a_stalled_vm_that_was_reclaimed_never_releases_twice() {
        let s = MemStore::new();
        ledger::init(&s).unwrap();
        let mut slots = Slots::default();
        let (mut a, mut b) = (Ledger::new(1), Ledger::new(2));
        tick(&mut a, &s, &mut slots, T);
        tick(&mut b, &s, &mut slots, T);
        slots.take(&mut a, &s, "tq1|t|x", 3);
        slots.take(&mut a, &s, "tq1|t|x", 3);
        tick(&mut a, &s, &mut slots, T + 1);
        // a stalls past STALE_MS; b gives its 2 slots back.
        let now = T + STALE_MS + HEARTBEAT_MS + 1;
        assert_eq!(tick(&mut b, &s, &mut slots, now).reclaimed_slots, 2);
        assert_eq!(slots.used("tq1|t|x", 3), 0);
        // Another request takes one of the freed slots (held by b).
        slots.take(&mut b, &s, "tq1|t|x", 3);
        // a wakes up: it learns it was reclaimed, and its requests release nothing.
        assert!(tick(&mut a, &s, &mut slots, now + 1).lost_own);
        slots.give(&mut a, &s, "tq1|t|x", 3);
        slots.give(&mut a, &s, "tq1|t|x", 3);
        assert_eq!(slots.used("tq1|t|x", 3), 1, "b's request keeps its slot");
    }

    #[test]
    fn shard_encoding_round_trips_and_rejects_garbage() {
        let mut out = Vec::new();
        ledger::encode_entries([("tq1|t|a", 1u32, 2u32), ("tq1|overflow", 9, 1)].into_iter(), &mut out);
        assert_eq!(ledger::decode_entries(&out).unwrap(), vec![("tq1|t|a".to_string(), 1, 2), ("tq1|overflow".to_string(), 9, 1)]);
        assert!(ledger::decode_entries(&out[..out.len() - 1]).is_err());
        assert!(ledger::decode_entries(&[2]).is_err());
        assert_eq!(ledger::decode_entries(&[]).unwrap(), vec![]);
    }
}

mod update {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::*;
    use std::sync::atomic::Ordering;

    fn add(store: &MemStore, key: &str, absent: Absent, n: u8) -> Result<u8, StoreError> {
        update(store, key, absent, &mut Vec::new(), &mut Vec::new(), |b, out| {
            let v = b.first().copied().unwrap_or(0).saturating_add(n);
            out.push(v);
            Ok(Step::Write(v))
        })
    }

    #[test]
    fn a_missing_key_fails_unless_the_caller_inserts_blind() {
        let s = MemStore::new();
        assert_eq!(add(&s, "k", Absent::Fail(StoreError::Unavailable), 1), Err(StoreError::Unavailable));
        assert!(s.is_empty(), "nothing written");
        assert_eq!(add(&s, "k", Absent::InsertBlind, 2), Ok(2));
        assert_eq!(add(&s, "k", Absent::Fail(StoreError::Unavailable), 3), Ok(5));
        assert_eq!(s.raw("k"), Some(vec![5]));
    }

    #[test]
    fn conflicts_re_run_the_closure_on_what_is_stored_until_the_retries_run_out() {
        let s = MemStore::new();
        s.set("k", &[1], 0).unwrap();
        s.fail_sets.store(MAX_CAS_RETRIES - 1, Ordering::SeqCst);
        let mut runs = 0;
        let r = update(&s, "k", Absent::Fail(StoreError::Missing), &mut Vec::new(), &mut Vec::new(), |b, out| {
            runs += 1;
            out.push(b[0] + 1);
            Ok(Step::Write(()))
        });
        assert_eq!((r, runs), (Ok(()), MAX_CAS_RETRIES));
        assert_eq!(s.raw("k"), Some(vec![2]));
        s.fail_sets.store(MAX_CAS_RETRIES, Ordering::SeqCst);
        assert_eq!(add(&s, "k", Absent::Fail(StoreError::Missing), 1), Err(StoreError::Contended));
        assert_eq!(s.raw("k"), Some(vec![2]), "a write that never held its CAS changed nothing");
    }

    #[test]
    fn keep_writes_nothing_and_errors_of_the_closure_end_the_update() {
        let s = MemStore::new();
        s.set("k", &[7], 0).unwrap();
        s.fail_sets.store(1, Ordering::SeqCst);
        let kept = update(&s, "k", Absent::Fail(StoreError::Missing), &mut Vec::new(), &mut Vec::new(), |b, _| Ok(Step::Keep(b[0])));
        assert_eq!(kept, Ok(7));
        assert_eq!(s.fail_sets.load(Ordering::SeqCst), 1, "no set was tried");
        let failed: Result<(), _> = update(&s, "k", Absent::Fail(StoreError::Missing), &mut Vec::new(), &mut Vec::new(), |_, _| Err(StoreError::Corrupt));
        assert_eq!(failed, Err(StoreError::Corrupt));
    }

    #[test]
    fn update_once_reports_a_lost_race_as_a_mismatch() {
        let s = MemStore::new();
        s.set("k", &[1], 0).unwrap();
        s.fail_sets.store(1, Ordering::SeqCst);
        let r = update_once(&s, "k", Absent::Fail(StoreError::Missing), &mut Vec::new(), &mut Vec::new(), |_, out| {
            out.push(9);
            Ok(Step::Write(()))
        });
        assert_eq!(r, Err(StoreError::CasMismatch));
        assert_eq!(s.raw("k"), Some(vec![1]));
    }
}
