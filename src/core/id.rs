//! Subject ids (tenants and scope ids) and budget identities: the rules every layer shares.

/// The longest tenant or scope id.
pub const MAX_TENANT_ID_LEN: usize = 256;
/// A tenant's state holds at most 255 slots (one byte counts them), shared by the budgets of
/// the configurations that ran before; 64 leaves room for budgets renamed over many pushes.
pub const MAX_BUDGETS: usize = 64;
pub const DEFAULT_MAX_TRACKED: u64 = 100_000;

/// A tenant id is 1..=256 bytes of visible ASCII (0x21-0x7E).
pub fn valid_tenant_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_TENANT_ID_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// FNV-1a, 32 bit: stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The subject that stands for every id past `max_tracked` (tenants and scope ids alike): no
/// configured tenant or scope id may take this name.
pub const OVERFLOW: &str = "overflow";
