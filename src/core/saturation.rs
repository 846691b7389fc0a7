//! Saturation levels from load signals: pure, time passed in.

use super::budget::{Priority, Saturation, Signal};
use super::Millis;

pub const NORMAL: u8 = 0;
pub const ELEVATED: u8 = 1;
pub const CRITICAL: u8 = 2;

/// A signal's last value and when it was observed (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    pub at_ms: Millis,
}

/// The level one reading reaches; a reading older than `stale_after_ms` counts as absent.
pub fn signal_level(sig: &Signal, reading: Option<Reading>, now: Millis, stale_after_ms: u64) -> u8 {
    match reading {
        Some(r) if now.saturating_sub(r.at_ms) <= stale_after_ms && r.value.is_finite() => {
            if r.value >= sig.critical {
                CRITICAL
            } else if r.value >= sig.elevated {
                ELEVATED
            } else {
                NORMAL
            }
        }
        _ => NORMAL,
    }
}

/// The highest level any fresh signal reaches.
pub fn raw_level(cfg: &Saturation, readings: &[Option<Reading>], now: Millis) -> u8 {
    cfg.signals
        .iter()
        .zip(readings.iter())
        .map(|(s, r)| signal_level(s, *r, now, cfg.stale_after_ms))
        .max()
        .unwrap_or(NORMAL)
}

/// Raises at once, lowers only after the higher level was held `hold_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hysteresis {
    pub level: u8,
    pub since_ms: Millis,
}

impl Hysteresis {
    pub fn next(&mut self, raw: u8, now: Millis, hold_ms: u64) -> u8 {
        if raw > self.level || (raw < self.level && now.saturating_sub(self.since_ms) >= hold_ms) {
            self.level = raw;
            self.since_ms = now;
        } else if raw == self.level {
            // Still at this level: the hold restarts from the last time it was reached.
            self.since_ms = now.max(self.since_ms);
        }
        self.level
    }
}

/// The keep factor for a priority at a level.
pub fn keep(cfg: Option<&Saturation>, level: u8, priority: Priority) -> f64 {
    match cfg {
        Some(c) => c.keep[(level.min(CRITICAL)) as usize][priority as usize],
        None => 1.0,
    }
}

/// A metric from an ORCA `endpoint-load-metrics` header in TEXT form, e.g.
/// `TEXT cpu_utilization=0.3, mem_utilization=0.8, named_metrics.queue=12`.
/// `metric` is `cpu_utilization`, `named_metrics.queue`, etc.
pub fn parse_orca(header: &[u8], metric: &str) -> Option<f64> {
    let s = std::str::from_utf8(header).ok()?.trim();
    let body = s.strip_prefix("TEXT").map(str::trim_start)?;
    body.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == metric).then(|| v.trim().parse::<f64>().ok()).flatten().filter(|v| v.is_finite())
    })
}

/// A plain numeric header value.
pub fn parse_number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok()?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Encoding of a shared signal reading: value (f64) and time (Unix ms), little-endian.
pub fn encode_reading(r: Reading) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&r.value.to_le_bytes());
    b[8..].copy_from_slice(&r.at_ms.to_le_bytes());
    b
}

pub fn decode_reading(b: &[u8]) -> Option<Reading> {
    if b.len() != 16 {
        return None;
    }
    let mut v = [0u8; 8];
    let mut t = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    t.copy_from_slice(&b[8..]);
    Some(Reading { value: f64::from_le_bytes(v), at_ms: u64::from_le_bytes(t) })
}

/// The fresher-or-higher of two readings: both count if fresh, the level takes the max.
pub fn combine(a: Option<Reading>, b: Option<Reading>, now: Millis, stale_after_ms: u64) -> Option<Reading> {
    let fresh = |r: Option<Reading>| r.filter(|r| now.saturating_sub(r.at_ms) <= stale_after_ms);
    match (fresh(a), fresh(b)) {
        (Some(x), Some(y)) => Some(if x.value >= y.value { x } else { y }),
        (x, y) => x.or(y),
    }
}

pub fn level_name(level: u8) -> &'static str {
    match level {
        CRITICAL => "critical",
        ELEVATED => "elevated",
        _ => "normal",
    }
}
