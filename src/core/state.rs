//! A tenant's whole quota state: one value per tenant, so one compare-and-swap commits a
//! decision across every budget.
//!
//! Encoding (version 1, little-endian): `[1u8][n u8]` then `n` slots of
//! `[budget id u32][window start ms u64][used u64][previous window's used u64]` (28 bytes).
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
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantState {
    pub slots: Vec<Slot>,
}

pub const STATE_VERSION: u8 = 1;
const SLOT_BYTES: usize = 28;

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
        out.push(STATE_VERSION);
        out.push(self.slots.len().min(255) as u8);
        for s in self.slots.iter().take(255) {
            out.extend_from_slice(&s.budget.to_le_bytes());
            out.extend_from_slice(&s.window_start.to_le_bytes());
            out.extend_from_slice(&s.used.to_le_bytes());
            out.extend_from_slice(&s.prev.to_le_bytes());
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + SLOT_BYTES * self.slots.len());
        self.encode_into(&mut v);
        v
    }

    /// Decode into `self`, reusing its allocation.
    pub fn decode_from(&mut self, b: &[u8]) -> Result<(), DecodeError> {
        self.slots.clear();
        if b.len() < 2 || b[0] != STATE_VERSION {
            return Err(DecodeError);
        }
        let n = b[1] as usize;
        if b.len() != 2 + n * SLOT_BYTES {
            return Err(DecodeError);
        }
        for c in b[2..].chunks_exact(SLOT_BYTES) {
            let u32_at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
            let u64_at = |o: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&c[o..o + 8]);
                u64::from_le_bytes(a)
            };
            self.slots.push(Slot { budget: u32_at(0), window_start: u64_at(4), used: u64_at(12), prev: u64_at(20) });
        }
        Ok(())
    }

    pub fn decode(b: &[u8]) -> Result<TenantState, DecodeError> {
        let mut s = TenantState::default();
        s.decode_from(b)?;
        Ok(s)
    }
}
