//! `global` (SPEC 8): the rate limit service that global budgets sync with.

use super::error::{err, ConfigError};
use super::raw::RawGlobal;
use super::visible_ascii;

/// What global budgets get while the rate limit service does not answer (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// The full limit on this Envoy's counts plus the `remote` last learned in the window.
    Local,
    /// `floor((limit + burst_credits) / N)` on this Envoy's own counts.
    LocalShare(u64),
    /// 503 `quota_unavailable`.
    Deny,
}

/// The rate limit service of global budgets (SPEC 8).
#[derive(Debug, Clone)]
pub struct Global {
    pub cluster: String,
    pub domain: String,
    pub sync_period_ms: u64,
    pub timeout_ms: u64,
    pub on_unavailable: OnUnavailable,
}

/// Windows the reference service (envoyproxy/ratelimit) can express: its epoch-aligned units.
pub const GLOBAL_WINDOWS_MS: [u64; 4] = [1000, 60_000, 3_600_000, 86_400_000];

pub(super) fn compile(raw: &RawGlobal) -> Result<Global, ConfigError> {
    let c = raw.cluster.trim();
    if c.is_empty() || c.len() > 256 || !visible_ascii(c) {
        return err("global.cluster", "must name the Envoy cluster (HTTP/2) of the rate limit service");
    }
    let domain = raw.domain.clone().unwrap_or_else(|| "tenant-quota".into());
    if domain.is_empty() || domain.len() > 128 || !visible_ascii(&domain) {
        return err("global.domain", "must be 1-128 bytes of visible ASCII");
    }
    let sync_period_ms = ms("sync_period_ms", raw.sync_period_ms, 200, 10, 60_000)?;
    let timeout_ms = ms("timeout_ms", raw.timeout_ms, 100, 1, 60_000)?;
    let on_unavailable = raw.on_unavailable.unwrap_or(OnUnavailable::Local);
    Ok(Global { cluster: c.to_string(), domain, sync_period_ms, timeout_ms, on_unavailable })
}

/// `global.<key>`: milliseconds between `min` and `max`, `default` when absent.
fn ms(key: &str, v: Option<i64>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if v >= min as i64 && v <= max as i64 => Ok(v as u64),
        Some(v) => err(format!("global.{key}"), format!("must be between {min} and {max} ms, got {v}")),
    }
}
