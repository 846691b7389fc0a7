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
pub mod ledger;
mod mem;

pub use mem::MemStore;

use crate::core::{Millis, TenantState};

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

pub const KEY_PREFIX: &str = "tq1|";
pub const REGISTRY_KEY: &str = "tq1|registry";
pub use crate::core::id::OVERFLOW as OVERFLOW_TENANT;
/// CAS retries for one update before giving up (`on_error`).
pub const MAX_CAS_RETRIES: usize = 256;
/// How long a creation lock is honoured if its holder never releases it.
pub const LOCK_MS: u64 = 200;
/// How many times a request re-reads a held lock before giving up (`on_error`).
pub const LOCK_SPINS: usize = 20_000;

/// The key of a tenant's state. The overflow tenant has a key no client id can produce.
pub fn tenant_key(id: &str, out: &mut String) {
    out.clear();
    if id == OVERFLOW_TENANT {
        out.push_str("tq1|overflow");
    } else {
        out.push_str("tq1|t|");
        out.push_str(id);
    }
}

/// Where a subject's counts live: the tenants, or the ids of one scope (SPEC 7). Each space
/// has its own registry (tracked count, creation lock) and its own `overflow` id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space<'a> {
    Tenants,
    Scope(&'a str),
}

impl Space<'_> {
    pub fn registry_key(&self) -> String {
        match self {
            Space::Tenants => REGISTRY_KEY.to_string(),
            Space::Scope(s) => format!("tq1|sreg|{s}"),
        }
    }

    /// The key of an id's state; `overflow` gets a key no id can produce.
    pub fn key(&self, id: &str, out: &mut String) {
        match self {
            Space::Tenants => tenant_key(id, out),
            Space::Scope(s) => {
                out.clear();
                if id == OVERFLOW_TENANT {
                    out.push_str("tq1|so|");
                    out.push_str(s);
                } else {
                    out.push_str("tq1|s|");
                    out.push_str(s);
                    out.push('|');
                    out.push_str(id);
                }
            }
        }
    }
}

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

/// Create the registry if it is missing. Idempotent; run at configure, before traffic.
pub fn init_registry<S: SharedStore>(store: &S) -> Result<(), StoreError> {
    init_registry_in(store, Space::Tenants)
}

/// Create a space's registry if it is missing (idempotent; at configure).
pub fn init_registry_in<S: SharedStore>(store: &S, space: Space) -> Result<(), StoreError> {
    let key = space.registry_key();
    let mut buf = Vec::new();
    match store.get(&key, &mut buf)? {
        Some(_) => Registry::decode(&buf).map(|_| ()),
        None => store.set(&key, &Registry::default().encode(), 0),
    }
}

pub fn read_registry<S: SharedStore>(store: &S) -> Result<Registry, StoreError> {
    let mut buf = Vec::new();
    match store.get(REGISTRY_KEY, &mut buf)? {
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

/// Make sure the tenant `id` has a key, creating it under the registry lock if needed.
/// Leaves the key to use in `scratch.key`: the tenant's own, or the overflow tenant's when
/// `max_tracked` dynamic tenants already exist. `token` identifies the caller (non-zero,
/// unique per worker and call).
pub fn resolve<S: SharedStore>(
    store: &S,
    id: &str,
    kind: TenantKind,
    max_tracked: u64,
    now: Millis,
    token: u64,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    resolve_in(store, Space::Tenants, id, kind, max_tracked, now, token, scratch)
}

/// [`resolve`] in any space (a scope's ids have their own registry and `overflow`).
#[allow(clippy::too_many_arguments)]
pub fn resolve_in<S: SharedStore>(
    store: &S,
    space: Space,
    id: &str,
    kind: TenantKind,
    max_tracked: u64,
    now: Millis,
    token: u64,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    space.key(id, &mut scratch.key);
    if store.get(&scratch.key, &mut scratch.buf)?.is_some() {
        return Ok(());
    }
    let registry = space.registry_key();
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
            return resolve_in(store, space, OVERFLOW_TENANT, TenantKind::Named, max_tracked, now, token, scratch);
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
    for _ in 0..MAX_CAS_RETRIES {
        let Some(cas) = store.get(registry, buf)? else {
            return Err(StoreError::Unavailable);
        };
        let mut reg = Registry::decode(buf)?;
        reg.tracked = reg.tracked.saturating_add(delta);
        if reg.owner == token {
            reg.owner = 0;
            reg.deadline = 0;
        }
        match store.set(registry, &reg.encode(), cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// Read-modify-write the state under `scratch.key` with CAS, retrying on conflict.
/// `f` returns whether to write the modified state, and a result; it is re-run on every
/// retry with a fresh copy of the stored state, so it must be pure.
pub fn transact<S: SharedStore, R>(
    store: &S,
    scratch: &mut Scratch,
    mut f: impl FnMut(&mut TenantState) -> (bool, R),
) -> Result<R, StoreError> {
    for _ in 0..MAX_CAS_RETRIES {
        let Some(cas) = store.get(&scratch.key, &mut scratch.buf)? else {
            return Err(StoreError::Missing);
        };
        if cas == 0 {
            // A zero token would make the write unconditional.
            return Err(StoreError::Unavailable);
        }
        scratch.state.decode_from(&scratch.buf).map_err(|_| StoreError::Corrupt)?;
        let (write, r) = f(&mut scratch.state);
        if !write {
            return Ok(r);
        }
        scratch.state.encode_into(&mut scratch.out);
        match store.set(&scratch.key, &scratch.out, cas) {
            Ok(()) => return Ok(r),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

#[cfg(test)]
mod tests;
