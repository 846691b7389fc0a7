//! An in-memory [`SharedStore`] with exactly the host's CAS rules, plus fault injection,
//! for tests (native threads stand in for Envoy's workers).

use super::{SharedStore, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Key -> (value, CAS token), and the last token handed out.
type Entries = (HashMap<String, (Vec<u8>, u32)>, u32);

#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<Entries>,
    /// The next this many `set`s with a non-zero CAS fail with `CasMismatch`.
    pub fail_sets: AtomicUsize,
    /// Every call fails with `Unavailable` while set.
    pub unavailable: AtomicBool,
    /// Yield the thread inside `get`, to widen race windows in concurrency tests.
    pub yield_in_get: AtomicBool,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.0.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.map.lock().ok().and_then(|m| m.0.get(key).map(|v| v.0.clone()))
    }
    /// Every key and its value, sorted (tests compare what a step changed).
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.map.lock().map(|m| m.0.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()).unwrap_or_default()
    }
}

impl SharedStore for MemStore {
    fn get(&self, key: &str, buf: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable);
        }
        let r = {
            let m = self.map.lock().map_err(|_| StoreError::Unavailable)?;
            match m.0.get(key) {
                Some((v, cas)) if !v.is_empty() => {
                    buf.clear();
                    buf.extend_from_slice(v);
                    Some(*cas)
                }
                _ => None,
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        if self.yield_in_get.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        Ok(r)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable);
        }
        if cas != 0
            && self.fail_sets.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Err(StoreError::CasMismatch);
        }
        let mut m = self.map.lock().map_err(|_| StoreError::Unavailable)?;
        let (map, next) = &mut *m;
        // Host rule: a missing key is inserted whatever the CAS; CAS 0 always wins.
        if let Some((_, cur)) = map.get(key) {
            if cas != 0 && cas != *cur {
                return Err(StoreError::CasMismatch);
            }
        }
        *next = next.wrapping_add(1).max(1);
        let c = *next;
        map.insert(key.to_string(), (value.to_vec(), c));
        Ok(())
    }
}
