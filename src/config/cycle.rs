//! Billing cycles: a budget's `"window": {"cycle": ...}`, and the `billing` anchor of a
//! `tenants` entry, a scope id's entry or a runtime override, which moves every cycle budget
//! of that subject to its own day and time zone.

use super::error::{err, ConfigError};
use super::raw::{CycleKind, RawBilling, RawCycle};
use crate::core::budget::{Budget, Limits};
use crate::core::tz::Zone;
use crate::core::{Cycle, Window};

/// `<p>.window` of a budget: a daily or monthly cycle (day 1 and UTC by default).
pub(super) fn window(p: &str, c: &RawCycle) -> Result<Window, ConfigError> {
    let zone = c.time_zone.as_deref().map(|z| zone(&format!("{p}.window.time_zone"), z)).transpose()?.unwrap_or(Zone::UTC);
    let cycle = match (c.cycle, &c.day) {
        (CycleKind::Daily, Some(_)) => return err(format!("{p}.window.day"), "a daily cycle has no `day` (it starts every day at 00:00 in its time zone)"),
        (CycleKind::Daily, None) => Cycle::daily(zone),
        (CycleKind::Monthly, day) => {
            let d = day.map_or(1, |d| d.0);
            Cycle::monthly(d, zone).map_or_else(|| err(format!("{p}.window.day"), "day out of range"), Ok)?
        }
    };
    Ok(Window::Cycle(cycle))
}

/// A subject's anchor: `None` keys fall back to each budget's own.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Billing {
    day: Option<u8>,
    zone: Option<Zone>,
}

/// `<p>` is the `billing` object's path.
pub(super) fn billing(p: &str, raw: &RawBilling) -> Result<Billing, ConfigError> {
    Ok(Billing {
        day: raw.day.map(|d| d.0),
        zone: raw.time_zone.as_deref().map(|z| zone(&format!("{p}.time_zone"), z)).transpose()?,
    })
}

/// Anchor the cycle budgets counted per the subject's space (`scope`: None for a tenant) on
/// the subject's day and zone; other windows stay as they are (a `window_ms` override of a
/// cycle budget replaces the cycle).
pub(super) fn anchor(budgets: &[Budget], limits: &mut [Limits], scope: Option<usize>, b: Billing) {
    for (budget, l) in budgets.iter().zip(limits.iter_mut()) {
        if budget.scope != scope {
            continue;
        }
        if let Window::Cycle(c) = l.window {
            l.window = Window::Cycle(c.anchored(b.day, b.zone));
        }
    }
}

fn zone(path: &str, name: &str) -> Result<Zone, ConfigError> {
    Zone::resolve(name).map_err(|message| ConfigError { path: path.to_string(), message })
}

#[cfg(test)]
#[path = "cycle_tests.rs"]
mod tests;
