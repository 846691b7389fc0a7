//! A tenant's whole quota state: one value per tenant, so one compare-and-swap commits a
//! decision across every budget.
//!
//! Encoding (version 2): `[2u8][n u8]` then `n` slots of `[budget id u32 LE]` followed by
//! the window start (Unix ms), used, and the previous window's used, each an unsigned LEB128
//! varint. One budget's state is typically 14-16 bytes, which Envoy stores inline in its
//! shared-data entry (no separate heap block): at a million tenants that is ~32 bytes and one
//! cache miss less per tenant and request than version 1 (`[1u8][n u8]` then fixed 28-byte
//! slots: id u32, window start u64, used u64, previous u64), which is still decoded.
//! Version 3 adds, per slot, two varints for global budgets (SPEC 8): `acked` and
//! `remote`. It is written only when some slot carries them, so tenants of configurations
//! without global budgets keep the compact version 2.
//! Slots are matched by budget id, so reordering or adding budgets keeps the others' counts.

/// Units are whatever the budget counts (requests, bytes, cost units, concurrent slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    pub budget: u32,
    /// Start of the window `used` belongs to, in Unix ms (0 for in_flight).
    pub window_start: u64,
    /// Units admitted (or charged) in that window; for in_flight, slots held now.
    pub used: u64,
    /// Units of the window before `window_start` (sliding windows only).
    pub prev: u64,
    /// Global budgets: units of `used` the rate limit service has acknowledged.
    pub acked: u64,
    /// Global budgets: the other Envoys' usage in this window, as of the last answer.
    pub remote: u64,
    /// Global budgets: when `remote` was learned (Unix ms; 0: never in this window). Stored
    /// as an offset from `window_start`, so it costs a few bytes only where it is set.
    pub remote_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantState {
    pub slots: Vec<Slot>,
}

pub const STATE_VERSION: u8 = 2;
/// States of at most this many slots are encoded through a stack buffer.
const SMALL_SLOTS: usize = 8;
/// A slot's most bytes: the budget id and six varints of at most 10 bytes.
const MAX_SLOT_BYTES: usize = 4 + 6 * 10;
const V1_SLOT_BYTES: usize = 28;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A LEB128 varint at `b[*at..]`; rejects truncated, overlong and overflowing encodings.
/// One byte (counts below 128) is the common case, decoded inline.
#[inline]
fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    match b.get(*at) {
        Some(&byte) if byte < 0x80 => {
            *at += 1;
            Ok(u64::from(byte))
        }
        _ => get_varint_long(b, at),
    }
}

fn get_varint_long(b: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*at).ok_or(DecodeError)?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err(DecodeError);
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError); // overlong
            }
            return Ok(v);
        }
    }
    Err(DecodeError)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl TenantState {
    pub fn slot(&self, budget: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.budget == budget)
    }

    pub fn slot_mut(&mut self, budget: u32) -> &mut Slot {
        if let Some(i) = self.slots.iter().position(|s| s.budget == budget) {
            &mut self.slots[i]
        } else {
            self.slots.push(Slot { budget, ..Slot::default() });
            let last = self.slots.len() - 1;
            &mut self.slots[last]
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        if self.slots.len() <= SMALL_SLOTS {
            // Most states: bytes written into a stack buffer and copied once, instead of a
            // capacity check per byte.
            let mut buf = [0u8; 2 + SMALL_SLOTS * MAX_SLOT_BYTES];
            let n = self.encode_small(&mut buf);
            out.extend_from_slice(&buf[..n]);
            return;
        }
        self.encode_long(out);
    }

    /// [`TenantState::encode_into`] for any number of slots, byte by byte into `out`.
    pub(crate) fn encode_long(&self, out: &mut Vec<u8>) {
        out.clear();
        // v3 adds `acked` and `remote` to every slot, v4 also `remote_at`: a tenant pays for
        // the fields of global budgets only once it has one.
        let aged = self.slots.iter().any(|s| s.remote_at != 0);
        let global = aged || self.slots.iter().any(|s| s.acked != 0 || s.remote != 0);
        out.push(if aged { 4 } else if global { 3 } else { STATE_VERSION });
        out.push(self.slots.len().min(255) as u8);
        for s in self.slots.iter().take(255) {
            out.extend_from_slice(&s.budget.to_le_bytes());
            put_varint(out, s.window_start);
            put_varint(out, s.used);
            put_varint(out, s.prev);
            if global {
                put_varint(out, s.acked);
                put_varint(out, s.remote);
            }
            if aged {
                put_varint(out, if s.remote_at == 0 { 0 } else { s.remote_at.saturating_sub(s.window_start).saturating_add(1) });
            }
        }
    }

    /// [`TenantState::encode_into`] for at most [`SMALL_SLOTS`] slots, into `buf`; returns the
    /// length written.
    fn encode_small(&self, buf: &mut [u8; 2 + SMALL_SLOTS * MAX_SLOT_BYTES]) -> usize {
        fn put(buf: &mut [u8], at: &mut usize, mut v: u64) {
            while v >= 0x80 {
                buf[*at] = (v as u8) | 0x80;
                v >>= 7;
                *at += 1;
            }
            buf[*at] = v as u8;
            *at += 1;
        }
        let aged = self.slots.iter().any(|s| s.remote_at != 0);
        let global = aged || self.slots.iter().any(|s| s.acked != 0 || s.remote != 0);
        buf[0] = if aged { 4 } else if global { 3 } else { STATE_VERSION };
        buf[1] = self.slots.len() as u8;
        let mut at = 2;
        for s in &self.slots {
            buf[at..at + 4].copy_from_slice(&s.budget.to_le_bytes());
            at += 4;
            put(buf, &mut at, s.window_start);
            put(buf, &mut at, s.used);
            put(buf, &mut at, s.prev);
            if global {
                put(buf, &mut at, s.acked);
                put(buf, &mut at, s.remote);
            }
            if aged {
                put(buf, &mut at, if s.remote_at == 0 { 0 } else { s.remote_at.saturating_sub(s.window_start).saturating_add(1) });
            }
        }
        at
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + 16 * self.slots.len());
        self.encode_into(&mut v);
        v
    }

    /// Decode into `self`, reusing its allocation (versions 1 to 4).
    pub fn decode_from(&mut self, b: &[u8]) -> Result<(), DecodeError> {
        self.slots.clear();
        let r = match b {
            [1, n, rest @ ..] => self.decode_v1(*n as usize, rest),
            [2, n, rest @ ..] => self.decode_v2(*n as usize, rest, 2),
            [3, n, rest @ ..] => self.decode_v2(*n as usize, rest, 3),
            [4, n, rest @ ..] => self.decode_v2(*n as usize, rest, 4),
            _ => Err(DecodeError),
        };
        if r.is_err() {
            self.slots.clear();
        }
        r
    }

    /// Versions 2 to 4 (see `encode_into`).
    fn decode_v2(&mut self, n: usize, b: &[u8], version: u8) -> Result<(), DecodeError> {
        let mut at = 0;
        for _ in 0..n {
            let id = b.get(at..at + 4).ok_or(DecodeError)?;
            at += 4;
            let budget = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
            let window_start = get_varint(b, &mut at)?;
            let used = get_varint(b, &mut at)?;
            let prev = get_varint(b, &mut at)?;
            let (acked, remote) = if version >= 3 { (get_varint(b, &mut at)?, get_varint(b, &mut at)?) } else { (0, 0) };
            let remote_at = match version {
                4 => get_varint(b, &mut at)?.checked_sub(1).map_or(0, |d| window_start.saturating_add(d)),
                _ => 0,
            };
            self.slots.push(Slot { budget, window_start, used, prev, acked, remote, remote_at });
        }
        if at != b.len() {
            return Err(DecodeError);
        }
        Ok(())
    }

    fn decode_v1(&mut self, n: usize, b: &[u8]) -> Result<(), DecodeError> {
        if b.len() != n * V1_SLOT_BYTES {
            return Err(DecodeError);
        }
        for c in b.chunks_exact(V1_SLOT_BYTES) {
            let u32_at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
            let u64_at = |o: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&c[o..o + 8]);
                u64::from_le_bytes(a)
            };
            self.slots.push(Slot { budget: u32_at(0), window_start: u64_at(4), used: u64_at(12), prev: u64_at(20), acked: 0, remote: 0, remote_at: 0 });
        }
        Ok(())
    }

    pub fn decode(b: &[u8]) -> Result<TenantState, DecodeError> {
        let mut s = TenantState::default();
        s.decode_from(b)?;
        Ok(s)
    }
}
