//! Counters kept in shared data across workers, beside the tenant states: the places taken
//! in the request queues (SPEC 6) and the all-tenant in-flight count (a saturation signal).
//! Both are CAS loops over any [`SharedStore`], so they are tested natively against
//! [`super::MemStore`]; the filter only calls them with the host's store.

use super::{SharedStore, StoreError, MAX_CAS_RETRIES};

/// The all-tenant in-flight count: `u64` little-endian, created at configure.
pub const IN_FLIGHT_KEY: &str = "tq1|inflight";

/// The shared count of requests waiting on a (subject, budget) in this Envoy.
pub fn places_key(subject_key: &str, budget_id: u32) -> String {
    format!("tq1|qw|{budget_id:08x}|{subject_key}")
}

/// `[count u64][updated ms u64]`
fn decode_places(b: &[u8]) -> (u64, u64) {
    if b.len() != 16 {
        return (0, 0);
    }
    let mut c = [0u8; 8];
    let mut t = [0u8; 8];
    c.copy_from_slice(&b[..8]);
    t.copy_from_slice(&b[8..]);
    (u64::from_le_bytes(c), u64::from_le_bytes(t))
}

fn encode_places(count: u64, at: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&count.to_le_bytes());
    b[8..].copy_from_slice(&at.to_le_bytes());
    b
}

/// Take a place among the Envoy's waiting requests of a (subject, budget) counted under
/// `key`: false when `max` already wait. A count not updated for `stale_ms` (left by a VM
/// that trapped) starts again from 0. The first write to a new key is blind (host rule),
/// which can only lose a place count between two workers meeting a new key at once: a
/// bounded error on a bound, never on a quota.
pub fn take_place<S: SharedStore>(store: &S, key: &str, buf: &mut Vec<u8>, max: u64, now: u64, stale_ms: u64) -> Result<bool, StoreError> {
    for _ in 0..MAX_CAS_RETRIES {
        let cas = store.get(key, buf)?;
        let (mut count, at) = decode_places(buf);
        if cas.is_none() || now.saturating_sub(at) > stale_ms {
            count = 0;
        }
        if count >= max {
            return Ok(false);
        }
        match store.set(key, &encode_places(count + 1, now), cas.unwrap_or(0)) {
            Ok(()) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// Give a place back (nothing when the key is missing or the store fails).
pub fn leave_place<S: SharedStore>(store: &S, key: &str, buf: &mut Vec<u8>, now: u64) {
    for _ in 0..MAX_CAS_RETRIES {
        let Ok(Some(cas)) = store.get(key, buf) else { return };
        let (count, _) = decode_places(buf);
        match store.set(key, &encode_places(count.saturating_sub(1), now), cas) {
            Err(StoreError::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Create the in-flight count if missing (configure time, before traffic, so that every
/// later write is CAS-checked).
pub fn init_in_flight<S: SharedStore>(store: &S) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    if store.get(IN_FLIGHT_KEY, &mut buf)?.is_none() {
        store.set(IN_FLIGHT_KEY, &0u64.to_le_bytes(), 0)?;
    }
    Ok(())
}

/// The in-flight count, if it exists and is well-formed.
pub fn read_in_flight<S: SharedStore>(store: &S, buf: &mut Vec<u8>) -> Option<u64> {
    match store.get(IN_FLIGHT_KEY, buf) {
        Ok(Some(_)) if buf.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(buf);
            Some(u64::from_le_bytes(a))
        }
        _ => None,
    }
}

/// Add `delta` to the in-flight count, with CAS, saturating at 0 and `u64::MAX`. The count
/// must exist ([`init_in_flight`]): a missing one is `Unavailable`, never created blind.
pub fn add_in_flight<S: SharedStore>(store: &S, delta: i64) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    for _ in 0..MAX_CAS_RETRIES {
        let Some(cas) = store.get(IN_FLIGHT_KEY, &mut buf)? else { return Err(StoreError::Unavailable) };
        let cur = read_u64(&buf);
        let next = if delta >= 0 { cur.saturating_add(delta as u64) } else { cur.saturating_sub(delta.unsigned_abs()) };
        match store.set(IN_FLIGHT_KEY, &next.to_le_bytes(), cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// A malformed value reads as 0.
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if b.len() == 8 {
        a.copy_from_slice(b);
    }
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[path = "counter_tests.rs"]
mod tests;
