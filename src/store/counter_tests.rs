#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::store::{MemStore, MAX_CAS_RETRIES};
use std::sync::atomic::Ordering;

const T: u64 = 1_700_000_000_000;

#[test]
fn keys_are_pinned() {
    assert_eq!(places_key("tq1|t|acme", 0xab), "tq1|qw|000000ab|tq1|t|acme");
    assert_eq!(IN_FLIGHT_KEY, "tq1|inflight");
}

#[test]
fn places_are_bounded_and_come_back() {
    let s = MemStore::new();
    let mut buf = Vec::new();
    let k = places_key("tq1|t|acme", 1);
    for _ in 0..3 {
        assert_eq!(take_place(&s, &k, &mut buf, 3, T, 10_000), Ok(true));
    }
    assert_eq!(take_place(&s, &k, &mut buf, 3, T, 10_000), Ok(false));
    leave_place(&s, &k, &mut buf, T + 1);
    assert_eq!(take_place(&s, &k, &mut buf, 3, T + 2, 10_000), Ok(true));
    assert_eq!(take_place(&s, &k, &mut buf, 3, T + 2, 10_000), Ok(false));
    // The stored record: count, then when it was last written.
    let raw = s.raw(&k).unwrap();
    assert_eq!(raw.len(), 16);
    assert_eq!(u64::from_le_bytes(raw[..8].try_into().unwrap()), 3);
    assert_eq!(u64::from_le_bytes(raw[8..].try_into().unwrap()), T + 2);
}

#[test]
fn a_zero_bound_never_gives_a_place() {
    let s = MemStore::new();
    assert_eq!(take_place(&s, "tq1|qw|x", &mut Vec::new(), 0, T, 10), Ok(false));
    assert!(s.is_empty(), "nothing written");
}

#[test]
fn a_stale_count_starts_again() {
    let s = MemStore::new();
    let mut buf = Vec::new();
    let k = places_key("tq1|t|acme", 1);
    assert_eq!(take_place(&s, &k, &mut buf, 1, T, 5_000), Ok(true));
    assert_eq!(take_place(&s, &k, &mut buf, 1, T + 5_000, 5_000), Ok(false), "not stale at the bound");
    assert_eq!(take_place(&s, &k, &mut buf, 1, T + 5_001, 5_000), Ok(true), "stale past it");
    // Time stepping back is not staleness.
    assert_eq!(take_place(&s, &k, &mut buf, 1, T, 5_000), Ok(false));
}

#[test]
fn leaving_never_goes_below_zero_nor_creates_a_key() {
    let s = MemStore::new();
    let mut buf = Vec::new();
    leave_place(&s, "tq1|qw|missing", &mut buf, T);
    assert!(s.is_empty());
    let k = places_key("tq1|t|acme", 1);
    assert_eq!(take_place(&s, &k, &mut buf, 2, T, 10_000), Ok(true));
    leave_place(&s, &k, &mut buf, T);
    leave_place(&s, &k, &mut buf, T);
    assert_eq!(&s.raw(&k).unwrap()[..8], &0u64.to_le_bytes());
}

#[test]
fn places_retry_on_cas_conflicts_and_report_contention() {
    let s = MemStore::new();
    let mut buf = Vec::new();
    let k = places_key("tq1|t|acme", 1);
    assert_eq!(take_place(&s, &k, &mut buf, 5, T, 10_000), Ok(true));
    s.fail_sets.store(3, Ordering::SeqCst);
    assert_eq!(take_place(&s, &k, &mut buf, 5, T, 10_000), Ok(true));
    s.fail_sets.store(MAX_CAS_RETRIES, Ordering::SeqCst);
    assert_eq!(take_place(&s, &k, &mut buf, 5, T, 10_000), Err(StoreError::Contended));
    s.fail_sets.store(0, Ordering::SeqCst);
    s.unavailable.store(true, Ordering::SeqCst);
    assert_eq!(take_place(&s, &k, &mut buf, 5, T, 10_000), Err(StoreError::Unavailable));
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn concurrent_workers_never_take_more_places_than_the_bound() {
    use std::sync::Arc;
    let s = Arc::new(MemStore::new());
    s.yield_in_get.store(true, Ordering::SeqCst);
    let k = places_key("tq1|t|acme", 1);
    // The key exists before the workers meet it, so every write is CAS-checked.
    assert_eq!(take_place(&*s, &k, &mut Vec::new(), 1, T, 10_000), Ok(true));
    leave_place(&*s, &k, &mut Vec::new(), T);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (s, k) = (Arc::clone(&s), k.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                (0..20).filter(|_| take_place(&*s, &k, &mut buf, 50, T, 10_000) == Ok(true)).count()
            })
        })
        .collect();
    let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(taken, 50);
}

#[test]
fn the_in_flight_count_is_created_once_and_never_blind() {
    let s = MemStore::new();
    let mut buf = Vec::new();
    assert_eq!(add_in_flight(&s, 1), Err(StoreError::Unavailable), "a missing count is not created by an update");
    assert_eq!(read_in_flight(&s, &mut buf), None);
    init_in_flight(&s).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(0));
    add_in_flight(&s, 3).unwrap();
    init_in_flight(&s).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(3), "init keeps an existing count");
    add_in_flight(&s, -1).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(2));
    add_in_flight(&s, -5).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(0), "saturates at 0");
    add_in_flight(&s, i64::MAX).unwrap();
    add_in_flight(&s, i64::MAX).unwrap();
    add_in_flight(&s, 2).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(u64::MAX), "saturates at the top");
}

#[test]
fn a_malformed_in_flight_count_reads_as_nothing_and_restarts_from_zero() {
    let s = MemStore::new();
    s.set(IN_FLIGHT_KEY, &[1, 2, 3], 0).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_in_flight(&s, &mut buf), None);
    add_in_flight(&s, 2).unwrap();
    assert_eq!(read_in_flight(&s, &mut buf), Some(2));
}

#[test]
fn in_flight_updates_retry_on_cas_conflicts() {
    let s = MemStore::new();
    init_in_flight(&s).unwrap();
    s.fail_sets.store(5, Ordering::SeqCst);
    add_in_flight(&s, 1).unwrap();
    assert_eq!(read_in_flight(&s, &mut Vec::new()), Some(1));
    s.fail_sets.store(MAX_CAS_RETRIES, Ordering::SeqCst);
    assert_eq!(add_in_flight(&s, 1), Err(StoreError::Contended));
}
