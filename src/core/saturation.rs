//! Saturation levels from load signals: pure, time passed in.

use crate::config::{Priority, Saturation, Signal};
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
