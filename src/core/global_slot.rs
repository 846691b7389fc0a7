//! Per-slot bookkeeping of global budgets (SPEC 8), pure like the rest of `core`.
//!
//! A global budget's slot keeps, besides this Envoy's exact count `used`:
//! - `acked`: units of `used` the rate limit service has acknowledged (`acked <= used`);
//! - `remote`: the other Envoys' usage in the slot's window as of the last answer, i.e. the
//!   service's count minus `acked`.
//!
//! Decisions count `used + remote` against the cap. `used - acked` is what the sync loop
//! sends next. Both fields belong to the slot's window: a new window starts them at 0, and an
//! answer for another window than the slot's is never applied to it, so units and counts
//! never cross a window boundary.
//!
//! A calendar month or a billing cycle ([`Window::is_calendar`]) is counted by the service in
//! its YEAR unit (365 days from the epoch) under an entry naming the month or the cycle, so
//! once a year such a window's key changes in the middle of the window. Such a slot keeps in
//! `prev` (unused by fixed windows) [`YEAR_MARK`] with the service year its `acked` units
//! went to; in another year every unit of the window is unacknowledged again and sent in full
//! to the new key, which then holds the whole window's count of every Envoy that sends again
//! (an Envoy idle since the change does not: see docs/global-budgets.md).

use super::{rolled, Admit, Demand, Millis, Slot, TenantState, Window};
use super::budget::{Budget, Limits};

/// Tags `prev` of a calendar-month or billing-cycle global slot: the service year of its
/// acknowledged units.
pub const YEAR_MARK: u64 = 1 << 63;
const SERVICE_YEAR_MS: u64 = 365 * 86_400_000;

/// The service's epoch-aligned YEAR (envoyproxy/ratelimit: 365-day units from the epoch).
pub fn service_year(now: Millis) -> u64 {
    now / SERVICE_YEAR_MS
}

/// Whether a calendar window's acknowledged units went to the service key of `year` (always
/// for fixed windows, whose key never changes within a window).
fn acked_in(slot: &Slot, window: Window, year: u64) -> bool {
    !window.is_calendar() || slot.prev == YEAR_MARK | year
}

/// Make a calendar window's acknowledged units those of `year`'s key (none when it changed).
fn enter_year(slot: &mut Slot, window: Window, year: u64) {
    if !acked_in(slot, window, year) {
        slot.acked = 0;
        slot.prev = YEAR_MARK | year;
    }
}

/// The service's verdict on one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `OK`: the count after the increment (`requests_per_unit - limit_remaining`).
    Total(u64),
    /// `OVER_LIMIT`: the count after the increment exceeds the cap sent.
    Over { cap: u64 },
}

/// Take the service's count, as of `at`, into the slot's `remote`.
fn learn(slot: &mut Slot, answer: Answer, at: Millis) {
    slot.remote_at = at.max(slot.window_start).max(1);
    match answer {
        Answer::Total(t) => slot.remote = t.saturating_sub(slot.acked),
        // The count is at least cap + 1; an earlier, larger figure still holds in the window.
        Answer::Over { cap } => slot.remote = slot.remote.max(cap.saturating_add(1).saturating_sub(slot.acked)),
    }
}

/// What the sync loop sends for a budget at `now`: `(window start, units)`. Units of the
/// slot's window not yet acknowledged; 0 (a read) when the slot belongs to an older window,
/// whose units can no longer matter. `None` when the tenant never used the budget.
pub fn unsent(state: &TenantState, budget_id: u32, window: Window, now: Millis) -> Option<(Millis, u64)> {
    let slot = state.slot(budget_id)?;
    let ws = window.start(now);
    if slot.window_start >= ws {
        let acked = if acked_in(slot, window, service_year(now)) { slot.acked } else { 0 };
        Some((slot.window_start, slot.used.saturating_sub(acked)))
    } else {
        Some((ws, 0))
    }
}

/// Apply the service's answer to `sent` units of window `ws`, sent at `sent_at`. An answer
/// for a window older than the slot's is dropped; one for a newer window starts the slot's
/// new window. Returns whether the state changed.
pub fn apply_answer(state: &mut TenantState, budget_id: u32, window: Window, ws: Millis, sent_at: Millis, sent: u64, answer: Answer) -> bool {
    let slot = state.slot_mut(budget_id);
    if slot.window_start > ws {
        return false;
    }
    if slot.window_start < ws {
        *slot = Slot { budget: budget_id, window_start: ws, ..Slot::default() };
    }
    enter_year(slot, window, service_year(sent_at));
    // Units sent are at most `used - acked` at sending time, and `used` only grows within a
    // window (admin reset aside), so this keeps `acked <= used`.
    slot.acked = slot.acked.saturating_add(sent).min(slot.used);
    // The count is as of some moment between sending and answering: the older one is stated.
    learn(slot, answer, sent_at);
    true
}

/// An `exact` budget's units, admitted by the service: counted and acknowledged at once.
pub fn record_exact(state: &mut TenantState, budget_id: u32, window: Window, now: Millis, units: u64, answer: Answer) {
    let slot = state.slot_mut(budget_id);
    let (mut cur, _) = rolled(slot, now, window, false);
    enter_year(&mut cur, window, service_year(now));
    cur.used = cur.used.saturating_add(units);
    cur.acked = cur.acked.saturating_add(units).min(cur.used);
    learn(&mut cur, answer, now);
    *slot = cur;
}

/// Undo what `decide` reserved at `at` for `demands` (the service then refused the request,
/// or it could not be asked and `on_unavailable` refused it). A window that has rolled over
/// since holds nothing of this request, so it is left alone.
pub fn unreserve(state: &mut TenantState, budgets: &[Budget], limits: &[Limits], at: Millis, demands: &[Demand]) {
    for d in demands {
        let l = &limits[d.budget];
        if l.unlimited || d.admit != Admit::Reserve || d.units == 0 {
            continue;
        }
        let Some(slot) = state.slots.iter_mut().find(|s| s.budget == budgets[d.budget].id) else { continue };
        if l.window.is_none() || slot.window_start == l.window.start(at) {
            slot.used = slot.used.saturating_sub(d.units);
            slot.acked = slot.acked.min(slot.used);
        }
    }
}
