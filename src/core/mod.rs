//! The host-independent quota logic: pure functions of (policy, previous state, now, units).
//!
//! Time is Unix milliseconds passed in by the caller ([`Clock`]); nothing here reads a clock,
//! touches shared data or allocates per call beyond the caller's buffers. Every subtraction
//! of times saturates, because host time is wall clock and may step back.

pub mod budget;
pub mod cycle;
pub mod id;
pub mod month;
pub mod saturation;
pub mod state;
pub mod subject;
pub mod tz;
pub mod window;

use budget::{Algorithm, Budget, Counts, Limits, OnExceed};
pub use global_slot::{apply_answer, record_exact, service_year, unsent, unreserve, Answer};

mod global_slot;
pub use state::{Slot, TenantState};
pub use cycle::Cycle;
pub use subject::Subject;
pub use window::Window;

/// Unix time in milliseconds.
pub type Millis = u64;

/// A source of wall-clock time. The filter uses the host's clock; tests use [`FakeClock`].
pub trait Clock {
    fn now_ms(&self) -> Millis;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct FakeClock(pub std::cell::Cell<Millis>);

impl FakeClock {
    pub fn new(ms: Millis) -> Self {
        FakeClock(std::cell::Cell::new(ms))
    }
    pub fn advance(&self, ms: Millis) {
        self.0.set(self.0.get().saturating_add(ms));
    }
    pub fn set(&self, ms: Millis) {
        self.0.set(ms);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> Millis {
        self.0.get()
    }
}

/// How a demand is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// `used + units <= cap`, and the units are taken now.
    Reserve,
    /// `used < cap`; the real units are charged later with [`charge`] (response-header
    /// cost, request bodies without content-length).
    Probe,
}

/// What one request asks of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Index into the config's budgets.
    pub budget: usize,
    pub units: u64,
    pub admit: Admit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The budget has no burst credits and its limit is used up.
    Exceeded,
    /// The budget's limit and burst credits are used up.
    BurstExhausted,
    /// Only the saturation keep factor made the request not fit.
    SaturationThrottle,
}

impl Reason {
    /// The `x-tenant-quota-reason` value.
    pub fn header_value(&self, budget: &str) -> String {
        match self {
            Reason::Exceeded => format!("{budget}_exceeded"),
            Reason::BurstExhausted => "burst_exhausted".to_string(),
            Reason::SaturationThrottle => "saturation_throttle".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub budget: usize,
    pub reason: Reason,
    /// Whole seconds, at least 1.
    pub retry_after_s: u64,
    /// Effective limit (after overrides and saturation).
    pub limit: u64,
    /// Seconds until the window resets (0 for in_flight).
    pub reset_s: u64,
    /// Only `on_exceed: queue` budgets refused: the request may wait for room (SPEC 6).
    pub queue: bool,
    /// Only `on_exceed: fallback` (and `queue`) budgets refused, a fallback one first in
    /// config order: the request may go to its fallback.
    pub fallback: bool,
    /// The window's length in seconds (0 for in_flight): the RateLimit `w`.
    pub window_s: u64,
}

/// One budget's standing after a decision, for response headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub budget: usize,
    /// Effective limit.
    pub limit: u64,
    /// Effective burst credits.
    pub burst_credits: u64,
    /// Units used in the current window after this request (sliding: the estimate).
    pub used: u64,
    /// Burst units this request took.
    pub burst_taken: u64,
    /// Units used before this request (for threshold crossings).
    pub used_before: u64,
    pub resets_in_ms: u64,
    /// Start of the window `used` counts in (0 for in_flight): a threshold crossing reports
    /// it as it was at the decision, however late it is sent.
    pub window_start: Millis,
    /// An `on_exceed: warn` budget admitted the request past its cap, for this reason.
    pub warned: Option<Reason>,
}

impl Usage {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
    pub fn burst_remaining(&self) -> u64 {
        self.burst_credits.saturating_sub(self.used.saturating_sub(self.limit))
    }
    pub fn cap(&self) -> u64 {
        self.limit.saturating_add(self.burst_credits)
    }
}

/// Effective limit and burst at a saturation keep factor in [0, 1] (floor).
pub fn scaled(l: &Limits, keep: f64) -> (u64, u64) {
    if keep >= 1.0 {
        return (l.limit, l.burst_credits);
    }
    let k = keep.max(0.0);
    ((l.limit as f64 * k).floor() as u64, (l.burst_credits as f64 * k).floor() as u64)
}

/// `(used in the current window, weighted count carried from the previous one)`.
fn rolled(slot: &Slot, now: Millis, window: Window, sliding: bool) -> (Slot, u64) {
    if window.is_none() {
        return (*slot, 0);
    }
    let start = window.start(now);
    let cur = if slot.window_start >= start {
        // Same window, or the clock stepped back: keep counting in the stored window.
        *slot
    } else if window.end(slot.window_start) == start {
        Slot { budget: slot.budget, window_start: start, prev: slot.used, ..Slot::default() }
    } else {
        Slot { budget: slot.budget, window_start: start, ..Slot::default() }
    };
    if !sliding || cur.prev == 0 {
        return (cur, 0);
    }
    let len = window.len_ms(cur.window_start).max(1);
    let elapsed = now.saturating_sub(cur.window_start).min(len);
    let left = (len - elapsed) as u128;
    // Ceil, so the estimate never admits more than the exact count would.
    let carried = (cur.prev as u128 * left).div_ceil(len as u128) as u64;
    (cur, carried)
}

fn resets_in_ms(slot: &Slot, now: Millis, window: Window) -> u64 {
    if window.is_none() {
        return 0;
    }
    window.end(slot.window_start).saturating_sub(now).max(1)
}

fn ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// How global budgets (SPEC 8) are counted in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GlobalView {
    /// `remote + local`: the other Envoys' usage as last learned, plus this Envoy's count.
    #[default]
    Remote,
    /// Degraded with `local_share`: `floor((limit + burst_credits) / N)` on local counts only.
    LocalShare(u64),
}

/// Effective (limit, burst) and the `remote` units a global budget adds under `view`.
fn global_terms(b: &Budget, l: &Limits, view: GlobalView, remote: u64) -> (Limits, u64) {
    if b.global.is_none() {
        return (*l, 0);
    }
    match view {
        GlobalView::Remote => (*l, remote),
        GlobalView::LocalShare(n) => {
            let n = n.max(1);
            let limit = l.limit / n;
            let cap = l.limit.saturating_add(l.burst_credits) / n;
            (Limits { limit, burst_credits: cap.saturating_sub(limit), ..*l }, 0)
        }
    }
}

/// Inputs that stay the same while a decision is retried on CAS conflicts.
pub struct Policy<'a> {
    pub budgets: &'a [Budget],
    /// The tenant's limits, one per budget.
    pub limits: &'a [Limits],
    /// Saturation keep factor for this request's priority (1.0 when not saturated).
    pub keep: f64,
    /// Retry-after for saturation rejections.
    pub saturation_retry_after_s: u64,
    /// How global budgets count.
    pub global: GlobalView,
}

/// Decide a request: check every demand first, then commit all of them.
///
/// On admission `state` is updated in place and `usage` holds one entry per demand; on
/// rejection `state` is left as it was (a rejected request consumes nothing) and the
/// first budget, in config order, that refused is returned. Pure and re-runnable.
pub fn decide(
    policy: &Policy,
    state: &mut TenantState,
    now: Millis,
    demands: &[Demand],
    usage: &mut Vec<Usage>,
) -> Result<(), Rejection> {
    usage.clear();
    // Check. A `warn` budget that does not fit admits anyway (marked); a `queue` one refuses
    // with `queue: true` unless a `reject` budget refuses too, which wins (SPEC 6); a
    // `fallback` one refuses with `fallback: true`, over `queue` and under `reject`.
    let mut queued: Option<Rejection> = None;
    let mut fell: Option<Rejection> = None;
    for d in demands {
        let b = &policy.budgets[d.budget];
        if policy.limits[d.budget].unlimited {
            continue;
        }
        let stored = state.slot(b.id).copied().unwrap_or(Slot { budget: b.id, ..Slot::default() });
        let (cur, carried) = rolled(&stored, now, policy.limits[d.budget].window, b.algorithm == Algorithm::Sliding);
        let (gl, remote) = global_terms(b, &policy.limits[d.budget], policy.global, cur.remote);
        let l = &gl;
        let used = cur.used.saturating_add(carried).saturating_add(remote);
        let fits = |cap: u64| match d.admit {
            Admit::Reserve => used.saturating_add(d.units) <= cap,
            Admit::Probe => used < cap,
        };
        let (limit, burst) = scaled(l, policy.keep);
        let mut warned = None;
        if !fits(limit.saturating_add(burst)) {
            let full_fits = fits(l.limit.saturating_add(l.burst_credits));
            let reset_ms = resets_in_ms(&cur, now, l.window);
            let (reason, retry) = if full_fits && policy.keep < 1.0 {
                (Reason::SaturationThrottle, policy.saturation_retry_after_s.max(1))
            } else if l.burst_credits > 0 {
                (Reason::BurstExhausted, if b.counts == Counts::InFlight { 1 } else { ceil_s(reset_ms) })
            } else {
                (Reason::Exceeded, if b.counts == Counts::InFlight { 1 } else { ceil_s(reset_ms) })
            };
            let reset_s = if l.window.is_none() { 0 } else { ceil_s(reset_ms) };
            let r = Rejection { budget: d.budget, reason, retry_after_s: retry, limit, reset_s, queue: false, fallback: false, window_s: l.window.len_s(now) };
            match b.on_exceed {
                OnExceed::Reject => return Err(r),
                OnExceed::Queue => {
                    queued.get_or_insert(Rejection { queue: true, ..r });
                    continue;
                }
                OnExceed::Fallback => {
                    fell.get_or_insert(Rejection { fallback: true, ..r });
                    continue;
                }
                OnExceed::Warn => warned = Some(reason),
            }
        }
        let taken = if d.admit == Admit::Reserve { d.units } else { 0 };
        let after = used.saturating_add(taken);
        usage.push(Usage {
            budget: d.budget,
            limit,
            burst_credits: burst,
            used: after,
            burst_taken: after.saturating_sub(limit).saturating_sub(used.saturating_sub(limit)),
            used_before: used,
            resets_in_ms: resets_in_ms(&cur, now, l.window),
            window_start: cur.window_start,
            warned,
        });
    }
    if let Some(q) = fell.or(queued) {
        usage.clear();
        return Err(q);
    }
    apply(policy, state, now, demands);
    Ok(())
}

/// Commit the checked demands to `state`. Slots of budgets no longer configured (removed by a
/// config push) are dropped once the state holds more slots than there are budgets, so they
/// never crowd out the current ones (a state keeps at most 255 slots).
fn apply(policy: &Policy, state: &mut TenantState, now: Millis, demands: &[Demand]) {
    if state.slots.len() > policy.budgets.len() {
        state.slots.retain(|s| policy.budgets.iter().any(|b| b.id == s.budget));
    }
    for d in demands {
        let b = &policy.budgets[d.budget];
        let l = &policy.limits[d.budget];
        if l.unlimited {
            continue;
        }
        let slot = state.slot_mut(b.id);
        let (mut cur, _) = rolled(slot, now, l.window, false);
        if d.admit == Admit::Reserve {
            cur.used = cur.used.saturating_add(d.units);
        }
        *slot = cur;
    }
}

/// Charge `units` after the fact (response-header cost, streamed request bytes).
/// Always succeeds: the request already ran. Returns the budget's standing.
pub fn charge(policy: &Policy, state: &mut TenantState, now: Millis, budget: usize, units: u64) -> Option<Usage> {
    let b = &policy.budgets[budget];
    let l = &policy.limits[budget];
    if l.unlimited {
        return None;
    }
    let sliding = b.algorithm == Algorithm::Sliding;
    let slot = state.slot_mut(b.id);
    let (mut cur, carried) = rolled(slot, now, l.window, sliding);
    let (gl, remote) = global_terms(b, l, policy.global, cur.remote);
    let before = cur.used.saturating_add(carried).saturating_add(remote);
    cur.used = cur.used.saturating_add(units);
    *slot = cur;
    let (limit, burst) = scaled(&gl, policy.keep);
    let after = before.saturating_add(units);
    Some(Usage {
        budget,
        limit,
        burst_credits: burst,
        used: after,
        burst_taken: after.saturating_sub(limit).saturating_sub(before.saturating_sub(limit)),
        used_before: before,
        resets_in_ms: resets_in_ms(&cur, now, l.window),
        window_start: cur.window_start,
        warned: None,
    })
}

/// Replace a reservation made at `at` by the actual units (an LLM response's usage, SPEC 5),
/// in one update: `used - reserved + actual` in the reservation's window; if that window has
/// rolled over since, the actual units are charged to the current one. Returns the standing.
#[allow(clippy::too_many_arguments)]
pub fn settle(policy: &Policy, state: &mut TenantState, now: Millis, at: Millis, budget: usize, reserved: u64, actual: u64) -> Option<Usage> {
    let b = &policy.budgets[budget];
    let l = &policy.limits[budget];
    if l.unlimited {
        return None;
    }
    let slot = state.slot_mut(b.id);
    let (mut cur, _) = rolled(slot, now, l.window, false);
    let before = cur.used;
    if cur.window_start == l.window.start(at) {
        cur.used = cur.used.saturating_sub(reserved).saturating_add(actual);
    } else {
        cur.used = cur.used.saturating_add(actual);
    }
    *slot = cur;
    let (limit, burst) = scaled(l, policy.keep);
    Some(Usage {
        budget,
        limit,
        burst_credits: burst,
        used: cur.used,
        burst_taken: cur.used.saturating_sub(limit).saturating_sub(before.saturating_sub(limit)),
        used_before: before,
        resets_in_ms: resets_in_ms(&cur, now, l.window),
        window_start: cur.window_start,
        warned: None,
    })
}

/// A budget's standing at `now` without changing anything (admin usage report).
pub fn standing(policy: &Policy, state: &TenantState, now: Millis, budget: usize) -> Usage {
    let b = &policy.budgets[budget];
    let l = &policy.limits[budget];
    let stored = state.slot(b.id).copied().unwrap_or(Slot { budget: b.id, ..Slot::default() });
    let (cur, carried) = rolled(&stored, now, l.window, b.algorithm == Algorithm::Sliding);
    let (gl, remote) = global_terms(b, l, policy.global, cur.remote);
    let used = cur.used.saturating_add(carried).saturating_add(remote);
    let (limit, burst) = scaled(&gl, policy.keep);
    Usage { budget, limit, burst_credits: burst, used, burst_taken: 0, used_before: used, resets_in_ms: resets_in_ms(&cur, now, l.window), window_start: cur.window_start, warned: None }
}

/// Clear a budget's window counts (not in_flight slots).
pub fn reset(state: &mut TenantState, budget_id: u32) {
    if let Some(s) = state.slots.iter_mut().find(|s| s.budget == budget_id) {
        s.used = 0;
        s.prev = 0;
        s.acked = 0;
        s.remote = 0;
        s.remote_at = 0;
    }
}

/// Alert thresholds (percent of the limit, ascending as the configuration keeps them) this
/// usage crossed: each is crossed by exactly one committed update per window, since every
/// update is a CAS on the subject's one value. The thresholds `used` reached are a prefix of
/// the list, so a usage below the first (the common case) costs one comparison.
pub fn crossed<'a>(u: &'a Usage, thresholds: &'a [u64]) -> impl Iterator<Item = u64> + 'a {
    // used * 100 >= pct * limit, without overflow (and without u128: see `mul_wide`).
    let at = move |used: u64, pct: u64| u.limit != 0 && mul_wide(used, 100) >= mul_wide(pct, u.limit);
    thresholds.iter().copied().take_while(move |&pct| at(u.used, pct)).filter(move |&pct| !at(u.used_before, pct))
}

/// Give back one in_flight slot. Never underflows.
pub fn release(state: &mut TenantState, budget_id: u32, units: u64) {
    let slot = state.slot_mut(budget_id);
    slot.used = slot.used.saturating_sub(units);
}

/// The budget closest to exhaustion (smallest share of its cap left), for response headers.
pub fn closest_to_exhaustion(usage: &[Usage]) -> Option<&Usage> {
    usage.iter().min_by(|a, b| {
        // left_a / cap_a < left_b / cap_b  <=>  left_a * cap_b < left_b * cap_a
        let la = a.cap().saturating_sub(a.used);
        let lb = b.cap().saturating_sub(b.used);
        mul_wide(la, b.cap().max(1)).cmp(&mul_wide(lb, a.cap().max(1)))
    })
}

/// `a * b` as (high, low) 64-bit halves: on wasm32 a `u128` product is a call to
/// `__multi3`, a full 128 x 128-bit multiplication; four 32 x 32-bit products are cheaper.
fn mul_wide(a: u64, b: u64) -> (u64, u64) {
    let (a1, a0) = (a >> 32, a & 0xffff_ffff);
    let (b1, b0) = (b >> 32, b & 0xffff_ffff);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // The middle column: each term < 2^64 - 2^33, so the sum fits.
    let mid = (p00 >> 32) + (p01 & 0xffff_ffff) + (p10 & 0xffff_ffff);
    let low = (mid << 32) | (p00 & 0xffff_ffff);
    let high = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    (high, low)
}

#[cfg(test)]
mod tests;
