//! Counters kept in shared data across workers, beside the tenant states: the places taken
//! in the request queues (SPEC 6) and the all-tenant in-flight count (a saturation signal).
//! Both are [`super::update`]s over any [`SharedStore`], so they are tested natively against
//! [`super::MemStore`]; the filter only calls them with the host's store.

use super::{keys, update, Absent, SharedStore, Step, StoreError};

/// The all-tenant in-flight count: `u64` little-endian, created at configure.
pub const IN_FLIGHT_KEY: &str = keys::IN_FLIGHT;

/// The shared count of requests waiting on a (subject, budget) in this Envoy.
pub fn places_key(subject_key: &str, budget_id: u32) -> String {
    keys::queue_places(subject_key, budget_id)
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
    update(store, key, Absent::InsertBlind, buf, &mut Vec::new(), |b, out| {
        let (mut count, at) = decode_places(b);
        if b.is_empty() || now.saturating_sub(at) > stale_ms {
            count = 0;
        }
        if count >= max {
            return Ok(Step::Keep(false));
        }
        out.extend_from_slice(&encode_places(count + 1, now));
        Ok(Step::Write(true))
    })
}

/// Give a place back (nothing when the key is missing or the store fails).
pub fn leave_place<S: SharedStore>(store: &S, key: &str, buf: &mut Vec<u8>, now: u64) {
    let _ = update(store, key, Absent::Fail(StoreError::Missing), buf, &mut Vec::new(), |b, out| {
        out.extend_from_slice(&encode_places(decode_places(b).0.saturating_sub(1), now));
        Ok(Step::Write(()))
    });
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
    update(store, IN_FLIGHT_KEY, Absent::Fail(StoreError::Unavailable), &mut Vec::new(), &mut Vec::new(), |b, out| {
        let cur = read_u64(b);
        let next = if delta >= 0 { cur.saturating_add(delta as u64) } else { cur.saturating_sub(delta.unsigned_abs()) };
        out.extend_from_slice(&next.to_le_bytes());
        Ok(Step::Write(()))
    })
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
