//! In-flight ledgers: `in_flight` slots held by a VM that died come back by themselves.
//!
//! A request holding an `in_flight` slot releases it when its stream ends. If the VM traps
//! first, nothing releases it. So each VM (root context) keeps a ledger in shared data of the
//! slots its live requests hold, with a heartbeat; any VM that finds a ledger whose heartbeat
//! is older than [`STALE_MS`] takes it over by CAS, releases its slots and frees it.
//!
//! The ledger never lists a slot that is not held, so a reclaim never releases a live
//! request's slot:
//! - an admission reserves the slot in the tenant's state first, then writes it to the
//!   ledger (a trap in between, microseconds apart, leaks that slot: the safe side; the admin
//!   reset with `?in_flight=true` remains the remedy);
//! - a release removes the slot from the ledger first (synchronously when the ledger lists
//!   it), then from the tenant's state (a trap in between leaks it, never releases twice).
//! - a VM that finds its own ledger taken over (it was only slow, not dead) forgets what it
//!   held: those slots were given back, and its requests then release nothing.
//!
//! Ledgers live in numbered places (`tq1|vm|<n>` for the owner and heartbeat, and
//! `tq1|vm|<n>|<shard>` for the slots, sharded so one write stays small); a freed place is
//! reused, so the number of keys is bounded by the number of VMs alive at once.

use super::{keys, update, update_once, Absent, SharedStore, Step, StoreError};
use crate::core::Millis;
use std::collections::HashMap;

pub const PLACES_KEY: &str = keys::LEDGER_PLACES;
pub const SHARDS: usize = 16;
/// A ledger whose heartbeat is older than this is reclaimed.
pub const STALE_MS: u64 = 10_000;
pub const HEARTBEAT_MS: u64 = 1_000;
/// How often a VM looks for stale ledgers.
pub const SCAN_MS: u64 = 1_000;
const TAKEN: u64 = u64::MAX;

use keys::{ledger_place as place_key, ledger_shard as shard_key};

fn shard_of(key: &str) -> usize {
    (crate::core::id::fnv1a(key.as_bytes()) as usize) % SHARDS
}

/// `[owner u64][heartbeat u64]`; heartbeat `u64::MAX` while a reclaimer takes it over.
fn encode_place(owner: u64, heartbeat: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&owner.to_le_bytes());
    b[8..].copy_from_slice(&heartbeat.to_le_bytes());
    b
}

fn decode_place(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    let mut o = [0u8; 8];
    let mut h = [0u8; 8];
    o.copy_from_slice(&b[..8]);
    h.copy_from_slice(&b[8..]);
    Some((u64::from_le_bytes(o), u64::from_le_bytes(h)))
}

/// A shard: repeated `[key len u16][key][budget id u32][count u32]`.
pub fn encode_entries<'a>(entries: impl Iterator<Item = (&'a str, u32, u32)>, out: &mut Vec<u8>) {
    out.clear();
    out.push(1);
    for (k, b, n) in entries {
        let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
}

pub fn decode_entries(b: &[u8]) -> Result<Vec<(String, u32, u32)>, StoreError> {
    let mut out = Vec::new();
    let Some((&1, mut rest)) = b.split_first() else {
        return if b.is_empty() { Ok(out) } else { Err(StoreError::Corrupt) };
    };
    while !rest.is_empty() {
        let len = rest.get(..2).map(|l| u16::from_le_bytes([l[0], l[1]]) as usize).ok_or(StoreError::Corrupt)?;
        let e = rest.get(2..2 + len + 8).ok_or(StoreError::Corrupt)?;
        let key = std::str::from_utf8(&e[..len]).map_err(|_| StoreError::Corrupt)?.to_string();
        let b = u32::from_le_bytes([e[len], e[len + 1], e[len + 2], e[len + 3]]);
        let n = u32::from_le_bytes([e[len + 4], e[len + 5], e[len + 6], e[len + 7]]);
        out.push((key, b, n));
        rest = &rest[2 + len + 8..];
    }
    Ok(out)
}

/// The places list: one owner id (u64) per place; 0 is a free place.
fn decode_places(b: &[u8]) -> Result<Vec<u64>, StoreError> {
    if b.len() % 8 != 1 || b[0] != 1 {
        return Err(StoreError::Corrupt);
    }
    Ok(b[1..].chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

fn encode_places(ids: &[u64], out: &mut Vec<u8>) {
    out.push(1);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

fn read_places<S: SharedStore>(store: &S, buf: &mut Vec<u8>) -> Result<Vec<u64>, StoreError> {
    store.get(PLACES_KEY, buf)?.ok_or(StoreError::Unavailable)?;
    decode_places(buf)
}

/// Read-modify-write the places list.
fn update_places<S: SharedStore, R>(store: &S, buf: &mut Vec<u8>, out: &mut Vec<u8>, mut f: impl FnMut(&mut Vec<u64>) -> Step<R>) -> Result<R, StoreError> {
    update(store, PLACES_KEY, Absent::Fail(StoreError::Unavailable), buf, out, |b, out| {
        let mut ids = decode_places(b)?;
        let step = f(&mut ids);
        encode_places(&ids, out);
        Ok(step)
    })
}

/// Create the places list if missing. Idempotent; run at configure, before traffic.
pub fn init<S: SharedStore>(store: &S) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    if store.get(PLACES_KEY, &mut buf)?.is_none() {
        store.set(PLACES_KEY, &[1], 0)?;
    }
    Ok(())
}

/// What a tick did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Slots given back from dead VMs' ledgers.
    pub reclaimed_slots: u64,
    pub reclaimed_ledgers: u64,
    /// This VM found its own ledger taken over (it had stalled past [`STALE_MS`]).
    pub lost_own: bool,
}

/// One VM's ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    id: u64,
    place: Option<usize>,
    /// Slots held by this VM's live requests, by (tenant key, budget id).
    held: HashMap<(String, u32), u32>,
    /// What the shards in shared data say.
    written: HashMap<(String, u32), u32>,
    dirty: u32,
    next_heartbeat: Millis,
    next_scan: Millis,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Ledger {
    pub fn new(id: u64) -> Ledger {
        Ledger { id: id | 1, ..Ledger::default() }
    }

    pub fn held(&self) -> u64 {
        self.held.values().map(|&n| u64::from(n)).sum()
    }

    /// A request of this VM took a slot (already reserved in the tenant's state). The shard is
    /// written at once, so a trap right after leaks nothing that a reclaim would not find
    /// (only one between the reservation and this write, microseconds apart); if the write
    /// fails, the next tick retries it.
    pub fn acquired<S: SharedStore>(&mut self, store: &S, key: &str, budget: u32) {
        *self.held.entry((key.to_string(), budget)).or_default() += 1;
        let s = shard_of(key);
        self.dirty |= 1 << s;
        let _ = self.write_shard(store, s);
    }

    /// A request of this VM ends: take its slot off the ledger. Returns whether the caller
    /// should release the slot in the tenant's state (false when the slot was already given
    /// back by a reclaim of this VM's ledger).
    pub fn release<S: SharedStore>(&mut self, store: &S, key: &str, budget: u32) -> Result<bool, StoreError> {
        let k = (key.to_string(), budget);
        let Some(n) = self.held.get_mut(&k) else { return Ok(false) };
        *n -= 1;
        let left = *n;
        if left == 0 {
            self.held.remove(&k);
        }
        if self.written.get(&k).copied().unwrap_or(0) > left {
            // The ledger lists this slot: it must not when the slot is released.
            self.write_shard(store, shard_of(key))?;
        }
        Ok(true)
    }

    fn write_shard<S: SharedStore>(&mut self, store: &S, s: usize) -> Result<(), StoreError> {
        let Some(place) = self.place else { return Ok(()) };
        let entries: Vec<(&str, u32, u32)> = self.held.iter().filter(|((k, _), _)| shard_of(k) == s).map(|((k, b), n)| (k.as_str(), *b, *n)).collect();
        encode_entries(entries.iter().copied(), &mut self.out);
        store.set(&shard_key(place, s), &self.out, 0)?;
        self.written.retain(|(k, _), _| shard_of(k) != s);
        for (k, b, n) in entries {
            self.written.insert((k.to_string(), b), n);
        }
        self.dirty &= !(1 << s);
        Ok(())
    }

    /// Take a free place (or a new one) for this VM's ledger.
    fn register<S: SharedStore>(&mut self, store: &S, now: Millis) -> Result<(), StoreError> {
        let id = self.id;
        let place = update_places(store, &mut self.buf, &mut self.out, |ids| {
            let place = match ids.iter().position(|&o| o == 0) {
                Some(p) => p,
                None => {
                    ids.push(0);
                    ids.len() - 1
                }
            };
            ids[place] = id;
            Step::Write(place)
        })?;
        // The place is this VM's alone from here: its keys are written without CAS.
        store.set(&place_key(place), &encode_place(self.id, now), 0)?;
        self.place = Some(place);
        self.written.clear();
        self.dirty = u32::MAX;
        Ok(())
    }

    /// Every tick: register, write changed shards, beat, and reclaim dead VMs' ledgers.
    pub fn tick<S: SharedStore, R: FnMut(&str, u32, u32) -> Result<(), StoreError>>(
        &mut self,
        store: &S,
        now: Millis,
        mut release: R,
    ) -> Result<TickReport, StoreError> {
        let mut report = TickReport::default();
        if self.place.is_none() {
            self.register(store, now)?;
        }
        let Some(place) = self.place else { return Ok(report) };
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.saturating_add(HEARTBEAT_MS);
            let id = self.id;
            let beat = update_once(store, &place_key(place), Absent::Fail(StoreError::Missing), &mut self.buf, &mut self.out, |b, out| match decode_place(b) {
                Some((owner, hb)) if owner == id && hb != TAKEN => {
                    out.extend_from_slice(&encode_place(id, now));
                    Ok(Step::Write(true))
                }
                _ => Ok(Step::Keep(false)),
            });
            match beat {
                Ok(true) => {}
                Err(StoreError::Missing) | Ok(false) => {
                    // Taken over while this VM stalled: its slots were given back.
                    report.lost_own = true;
                    self.held.clear();
                    self.written.clear();
                    self.place = None;
                    self.id = self.id.wrapping_add(0x9e37_79b9_7f4a_7c15) | 1;
                    return Ok(report);
                }
                Err(e) => return Err(e),
            }
        }
        for s in 0..SHARDS {
            if self.dirty & (1 << s) != 0 {
                self.write_shard(store, s)?;
            }
        }
        if now >= self.next_scan {
            self.next_scan = now.saturating_add(SCAN_MS);
            let ids = read_places(store, &mut self.buf)?;
            for (p, owner) in ids.into_iter().enumerate() {
                if p == place || owner == 0 {
                    continue;
                }
                if let Some(n) = self.reclaim(store, p, owner, now, &mut release)? {
                    report.reclaimed_ledgers += 1;
                    report.reclaimed_slots += n;
                }
            }
        }
        Ok(report)
    }

    /// Reclaim place `p` if its heartbeat is stale: take it by CAS, release its slots, free it.
    fn reclaim<S: SharedStore, R: FnMut(&str, u32, u32) -> Result<(), StoreError>>(
        &mut self,
        store: &S,
        p: usize,
        owner: u64,
        now: Millis,
        release: &mut R,
    ) -> Result<Option<u64>, StoreError> {
        // Take the place by CAS from its stale owner: one attempt, as losing the race means
        // another VM took it (or the owner beat).
        let take = update_once(store, &place_key(p), Absent::Fail(StoreError::Missing), &mut self.buf, &mut self.out, |b, out| {
            let Some((o, hb)) = decode_place(b) else { return Ok(Step::Keep(false)) };
            let stale = hb != TAKEN && now.saturating_sub(hb) > STALE_MS;
            // A place left TAKEN by a reclaimer that died half-way is finished by the next one.
            let abandoned = hb == TAKEN;
            if o != owner || !(stale || abandoned) {
                return Ok(Step::Keep(false));
            }
            if abandoned {
                return Ok(Step::Keep(true));
            }
            out.extend_from_slice(&encode_place(owner, TAKEN));
            Ok(Step::Write(true))
        });
        match take {
            Ok(true) => {}
            Ok(false) | Err(StoreError::Missing | StoreError::CasMismatch) => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut slots = 0;
        for s in 0..SHARDS {
            // Clear the shard first: a reclaimer that dies after this leaks, never repeats.
            let cleared = update_once(store, &shard_key(p, s), Absent::Fail(StoreError::Missing), &mut self.buf, &mut self.out, |b, out| {
                out.push(1);
                Ok(Step::Write(decode_entries(b).unwrap_or_default()))
            });
            let entries = match cleared {
                Ok(entries) => entries,
                Err(StoreError::Missing | StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            };
            for (k, b, n) in entries {
                release(&k, b, n)?;
                slots += u64::from(n);
            }
        }
        // Free the place, unless someone else already did; a list too contended to update
        // keeps it listed (the next reclaimer frees it).
        let freed = update_places(store, &mut self.buf, &mut self.out, |ids| {
            if ids.get(p) != Some(&owner) {
                return Step::Keep(());
            }
            ids[p] = 0;
            Step::Write(())
        });
        match freed {
            Ok(()) | Err(StoreError::Contended) => {}
            Err(e) => return Err(e),
        }
        Ok(Some(slots))
    }
}
