//! Tenant state behind a small key-value trait with the host's compare-and-swap rules.
//!
//! Envoy's shared data (proxy-wasm-cpp-host `shared_data.cc`) inserts a missing key
//! whatever CAS the caller passes, and a CAS of 0 always succeeds. So the first write to a
//! key is blind, and two workers meeting a new tenant at once could overwrite each other's
//! count. Here every counting write is CAS-checked: a tenant's key is created only by the
//! holder of a lock kept in the registry key, which exists before any traffic (written at
//! configure). The lock carries a deadline, so a holder that died frees it after
//! [`LOCK_MS`]. Keys are never removed (the ABI has no remove), so the registry also counts
//! tracked tenants and sends new ones to the shared `overflow` tenant past `max_tracked`.

pub mod counter;
pub mod keys;
pub mod ledger;
mod mem;

pub use mem::MemStore;

use crate::core::{Millis, Subject, TenantState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (retry).
    CasMismatch,
    /// The host refused the call or a key that must exist is missing.
    Unavailable,
    /// A stored value could not be decoded.
    Corrupt,
    /// Retries or lock spins ran out.
    Contended,
    /// The key does not exist yet (see [`resolve`]).
    Missing,
}

/// The host's shared key-value store.
pub trait SharedStore {
    /// Read `key` into `buf`; returns its CAS token, or `None` when the key is missing or
    /// holds an empty value (what the SDK's "remove" leaves behind).
    fn get(&self, key: &str, buf: &mut Vec<u8>) -> Result<Option<u32>, StoreError>;
    /// Write `value` if the key's CAS token is still `cas`. Host rules: `cas == 0` always
    /// succeeds, and a missing key is inserted whatever `cas` is.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

pub use crate::core::id::OVERFLOW as OVERFLOW_TENANT;
/// CAS retries for one update before giving up (`on_error`).
pub const MAX_CAS_RETRIES: usize = 256;
/// How long a creation lock is honoured if its holder never releases it.
pub const LOCK_MS: u64 = 200;
/// How many times a request re-reads a held lock before giving up (`on_error`).
pub const LOCK_SPINS: usize = 20_000;

/// The registry: how many dynamic tenants have keys, and the creation lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registry {
    pub tracked: u64,
    /// Lock holder's token; 0 when free.
    pub owner: u64,
    /// Unix ms after which the lock is free whoever holds it.
    pub deadline: Millis,
}

impl Registry {
    const LEN: usize = 25;
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1;
        b[1..9].copy_from_slice(&self.tracked.to_le_bytes());
        b[9..17].copy_from_slice(&self.owner.to_le_bytes());
        b[17..25].copy_from_slice(&self.deadline.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<Registry, StoreError> {
        if b.len() != Self::LEN || b[0] != 1 {
            return Err(StoreError::Corrupt);
        }
        let u = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Registry { tracked: u(1), owner: u(9), deadline: u(17) })
    }
    fn locked(&self, now: Millis) -> bool {
        self.owner != 0 && now < self.deadline
    }
}

/// Create a space's registry if it is missing: the tenants' (`scope` None) or a scope's.
/// Idempotent; run at configure, before traffic.
pub fn init_registry<S: SharedStore>(store: &S, scope: Option<&str>) -> Result<(), StoreError> {
    let key = keys::registry(scope);
    let mut buf = Vec::new();
    match store.get(&key, &mut buf)? {
        Some(_) => Registry::decode(&buf).map(|_| ()),
        None => store.set(&key, &Registry::default().encode(), 0),
    }
}

/// The tenants' registry.
pub fn read_registry<S: SharedStore>(store: &S) -> Result<Registry, StoreError> {
    let mut buf = Vec::new();
    match store.get(keys::REGISTRY, &mut buf)? {
        Some(_) => Registry::decode(&buf),
        None => Err(StoreError::Unavailable),
    }
}

/// Whether a tenant counts against `max_tracked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKind {
    /// Named in the configuration (or the fallback/overflow tenant): always tracked.
    Named,
    /// Seen in traffic: tracked while fewer than `max_tracked` are.
    Dynamic,
}

/// Reusable buffers, one set per worker, so the hot path does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    pub buf: Vec<u8>,
    pub out: Vec<u8>,
    pub state: TenantState,
    pub key: String,
}

/// Make sure the subject `who` has a key, creating it under its space's registry lock if
/// needed. Leaves the key to use in `scratch.key`: the subject's own, or its space's
/// `overflow` when `max_tracked` dynamic ids already exist. `token` identifies the caller
/// (non-zero, unique per worker and call).
pub fn resolve<S: SharedStore>(
    store: &S,
    who: Subject<'_>,
    kind: TenantKind,
    max_tracked: u64,
    now: Millis,
    token: u64,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    keys::state(who, &mut scratch.key);
    if store.get(&scratch.key, &mut scratch.buf)?.is_some() {
        return Ok(());
    }
    let registry = keys::registry(who.scope_name());
    let mut spins = 0;
    loop {
        spins += 1;
        if spins > LOCK_SPINS {
            return Err(StoreError::Contended);
        }
        let Some(rcas) = store.get(&registry, &mut scratch.buf)? else {
            return Err(StoreError::Unavailable);
        };
        let reg = Registry::decode(&scratch.buf)?;
        if store.get(&scratch.key, &mut scratch.buf)?.is_some() {
            return Ok(());
        }
        if kind == TenantKind::Dynamic && reg.tracked >= max_tracked {
            return resolve(store, who.overflow(), TenantKind::Named, max_tracked, now, token, scratch);
        }
        if reg.locked(now) {
            continue;
        }
        let mine = Registry { owner: token, deadline: now.saturating_add(LOCK_MS), ..reg };
        match store.set(&registry, &mine.encode(), rcas) {
            Ok(()) => {}
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
        // We hold the lock. Someone may have created the key before we took it.
        let created = if store.get(&scratch.key, &mut scratch.buf)?.is_none() {
            TenantState::default().encode_into(&mut scratch.out);
            store.set(&scratch.key, &scratch.out, 0)?;
            true
        } else {
            false
        };
        let delta = u64::from(created && kind == TenantKind::Dynamic);
        unlock(store, &registry, token, delta, &mut scratch.buf)?;
        return Ok(());
    }
}

fn unlock<S: SharedStore>(store: &S, registry: &str, token: u64, delta: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    update(store, registry, Absent::Fail(StoreError::Unavailable), buf, &mut Vec::new(), |b, out| {
        let mut reg = Registry::decode(b)?;
        reg.tracked = reg.tracked.saturating_add(delta);
        if reg.owner == token {
            reg.owner = 0;
            reg.deadline = 0;
        }
        out.extend_from_slice(&reg.encode());
        Ok(Step::Write(()))
    })
}

/// What an [`update`]'s closure decided about the value it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<R> {
    /// Write the value the closure put in `out` (under the CAS token read), then return `R`.
    Write(R),
    /// Leave the stored value as it is and return `R`.
    Keep(R),
}

/// What an [`update`] does when the key is missing (or holds an empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// Fail with this error: keys created before traffic, and state keys (see [`resolve`]).
    Fail(StoreError),
    /// Run the closure on an empty value and insert what it writes with CAS 0, which the host
    /// never refuses: two workers meeting the key at once can lose one write. Only for counts
    /// that bound memory, never for a quota.
    InsertBlind,
}

/// Read-modify-write `key` under CAS, retrying on conflict up to [`MAX_CAS_RETRIES`] times
/// (then [`StoreError::Contended`]). `f` gets the stored bytes and an empty `out` for the
/// new value; it is re-run on every retry with what is stored by then, so it must be pure.
/// An error from `f` ends the update and is returned as it is.
///
/// Every counting write is CAS-checked: a stored value with CAS token 0 (which would make
/// the write unconditional under the host's rules) fails with [`StoreError::Unavailable`].
pub fn update<S: SharedStore, R>(
    store: &S,
    key: &str,
    absent: Absent,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    f: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Step<R>, StoreError>,
) -> Result<R, StoreError> {
    attempt(store, key, absent, MAX_CAS_RETRIES, buf, out, f)
}

/// [`update`] tried once: a conflict returns [`StoreError::CasMismatch`]. For writes where
/// losing the race is itself the answer (another worker took the lease or reclaimed the
/// ledger first), so a retry would only re-read that.
pub fn update_once<S: SharedStore, R>(
    store: &S,
    key: &str,
    absent: Absent,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    f: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Step<R>, StoreError>,
) -> Result<R, StoreError> {
    attempt(store, key, absent, 1, buf, out, f)
}

fn attempt<S: SharedStore, R>(
    store: &S,
    key: &str,
    absent: Absent,
    tries: usize,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    mut f: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Step<R>, StoreError>,
) -> Result<R, StoreError> {
    for _ in 0..tries {
        let cas = match (store.get(key, buf)?, absent) {
            (Some(0), _) => return Err(StoreError::Unavailable),
            (Some(cas), _) => cas,
            (None, Absent::Fail(e)) => return Err(e),
            (None, Absent::InsertBlind) => {
                buf.clear();
                0
            }
        };
        out.clear();
        let r = match f(buf, out)? {
            Step::Keep(r) => return Ok(r),
            Step::Write(r) => r,
        };
        match store.set(key, out, cas) {
            Ok(()) => return Ok(r),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(if tries == 1 { StoreError::CasMismatch } else { StoreError::Contended })
}

/// Read-modify-write the state under `scratch.key` ([`update`] of a [`TenantState`]).
/// `f` returns whether to write the modified state, and a result; it is re-run on every
/// retry with a fresh copy of the stored state, so it must be pure. A missing key is
/// [`StoreError::Missing`] (the caller resolves it first).
pub fn transact<S: SharedStore, R>(
    store: &S,
    scratch: &mut Scratch,
    mut f: impl FnMut(&mut TenantState) -> (bool, R),
) -> Result<R, StoreError> {
    let Scratch { buf, out, state, key } = scratch;
    update(store, key, Absent::Fail(StoreError::Missing), buf, out, |b, out| {
        state.decode_from(b).map_err(|_| StoreError::Corrupt)?;
        match f(state) {
            (true, r) => {
                state.encode_into(out);
                Ok(Step::Write(r))
            }
            (false, r) => Ok(Step::Keep(r)),
        }
    })
}

#[cfg(test)]
mod tests;
