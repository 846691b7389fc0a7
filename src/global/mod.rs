//! Global budgets (SPEC 8), host-independent: the sync loop's state machine, the records it
//! keeps in shared data, and the RLS messages ([`rls`]). The gRPC dispatch lives in
//! `filter/global.rs`.
//!
//! # How one Envoy syncs
//! - Every request is decided locally in the tenant's shared-data value, counting
//!   `remote + used` for a global budget (`core::global_slot`).
//! - Shared data cannot list keys, so each worker remembers the tenants it charged and, on
//!   its tick, appends their keys to the shared [`DIRTY_KEY`] (a bounded list).
//! - One worker per Envoy holds the [`LEASE_KEY`] lease (taken and renewed by CAS on tick,
//!   with a deadline, so when its VM traps another worker takes over). The holder drains the
//!   dirty list into its watch set and, every `sync_period_ms` (sooner when a tenant nears
//!   its limit), sends each watched tenant's unacknowledged units as per-descriptor
//!   `hits_addend` (0 reads only), [`BATCH`] descriptors per `ShouldRateLimit`, one call in
//!   flight. Answers set `acked` and `remote` by CAS.
//! - Units sent by a call that fails stay unacknowledged and are sent again (at least once:
//!   a timed-out call may have been applied, and counting twice errs on the safe side).
//! - [`Health`] in shared data records the first unanswered call and the last answer; every
//!   worker reads it on tick to know whether the Envoy is degraded.
//!
//! # Overshoot bound
//! Envoy i's view of a tenant misses only units other Envoys admitted after their last
//! acknowledged send before i's last answer: at most `2 * sync_period_ms + rpc time` of
//! admissions. So across N Envoys a window admits at most `cap + (Λ - λ_i)·(2P + R)`, and
//! never more than `N · cap` (each Envoy alone never passes the cap), i.e. the overshoot is
//! at most `(N − 1)·cap`. The README derives it in full.

pub mod rls;

use crate::config::{Config, GlobalMode, TenantPolicy};
pub use crate::core::Answer;
use crate::core::{self, Millis, TenantState};
use crate::core::{Subject, Window};
use crate::store::{self, keys, Absent, Scratch, SharedStore, Step, StoreError};
use std::collections::HashMap;

pub use keys::{DIRTY as DIRTY_KEY, HEALTH as HEALTH_KEY, LEASE as LEASE_KEY};
/// Descriptors per `ShouldRateLimit` call.
pub const BATCH: usize = 500;
/// The dirty list's bound; past it, workers keep their keys until the leader drains it.
pub const MAX_DIRTY_BYTES: usize = 256 * 1024;
/// A budget at or above this share of its cap (in percent, counting `remote`) makes the next
/// sync round come sooner.
pub const URGENT_PCT: u64 = 80;

/// The sync lease: which worker runs the sync loop, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    pub owner: u64,
    pub deadline: Millis,
}

impl Lease {
    pub fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[0] = 1;
        b[1..9].copy_from_slice(&self.owner.to_le_bytes());
        b[9..17].copy_from_slice(&self.deadline.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<Lease, StoreError> {
        if b.len() != 17 || b[0] != 1 {
            return Err(StoreError::Corrupt);
        }
        Ok(Lease { owner: u64_at(b, 1), deadline: u64_at(b, 9) })
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// How long a lease lasts without renewal: a trapped holder's successor starts within this.
pub fn lease_ms(g: &crate::config::Global) -> u64 {
    (2 * g.sync_period_ms + g.timeout_ms).max(100)
}

/// Take or renew the lease for `me`. Returns whether `me` holds it. One attempt: losing the
/// race means another worker took the lease.
pub fn hold_lease<S: SharedStore>(store: &S, me: u64, now: Millis, lease_ms: u64, buf: &mut Vec<u8>) -> Result<bool, StoreError> {
    let r = store::update_once(store, LEASE_KEY, Absent::Fail(StoreError::Unavailable), buf, &mut Vec::new(), |b, out| {
        let l = Lease::decode(b)?;
        let free = l.owner == 0 || now >= l.deadline;
        if l.owner != me && !free {
            return Ok(Step::Keep(false));
        }
        if l.owner == me && l.deadline.saturating_sub(now) > lease_ms / 2 {
            return Ok(Step::Keep(true));
        }
        out.extend_from_slice(&Lease { owner: me, deadline: now.saturating_add(lease_ms) }.encode());
        Ok(Step::Write(true))
    });
    match r {
        Err(StoreError::CasMismatch) => Ok(false),
        r => r,
    }
}

/// Whether the rate limit service answers, as every worker of the Envoy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// When the first call that got no answer was sent (0: the last call was answered).
    pub first_unanswered: Millis,
    pub last_answer: Millis,
    /// Calls that failed, since start.
    pub errors: u64,
}

impl Health {
    pub fn encode(&self) -> [u8; 25] {
        let mut b = [0u8; 25];
        b[0] = 1;
        b[1..9].copy_from_slice(&self.first_unanswered.to_le_bytes());
        b[9..17].copy_from_slice(&self.last_answer.to_le_bytes());
        b[17..25].copy_from_slice(&self.errors.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<Health, StoreError> {
        if b.len() != 25 || b[0] != 1 {
            return Err(StoreError::Corrupt);
        }
        Ok(Health { first_unanswered: u64_at(b, 1), last_answer: u64_at(b, 9), errors: u64_at(b, 17) })
    }
    /// SPEC 8: degraded once `2 * sync_period_ms + timeout_ms` passed since the first call
    /// that got no answer, with no answer since.
    pub fn degraded(&self, g: &crate::config::Global, now: Millis) -> bool {
        self.first_unanswered != 0 && now.saturating_sub(self.first_unanswered) >= 2 * g.sync_period_ms + g.timeout_ms
    }
}

pub fn read_health<S: SharedStore>(store: &S, buf: &mut Vec<u8>) -> Result<Health, StoreError> {
    match store.get(HEALTH_KEY, buf)? {
        Some(_) => Health::decode(buf),
        None => Err(StoreError::Unavailable),
    }
}

fn update_health<S: SharedStore>(store: &S, buf: &mut Vec<u8>, f: impl Fn(&mut Health)) -> Result<Health, StoreError> {
    store::update(store, HEALTH_KEY, Absent::Fail(StoreError::Unavailable), buf, &mut Vec::new(), |b, out| {
        let mut h = Health::decode(b)?;
        f(&mut h);
        out.extend_from_slice(&h.encode());
        Ok(Step::Write(h))
    })
}

/// An answer arrived: the Envoy is (again) not degraded.
pub fn record_answer<S: SharedStore>(store: &S, now: Millis, buf: &mut Vec<u8>) -> Result<Health, StoreError> {
    update_health(store, buf, |h| {
        h.first_unanswered = 0;
        h.last_answer = h.last_answer.max(now);
    })
}

/// A call sent at `sent_at` got no usable answer.
pub fn record_failure<S: SharedStore>(store: &S, sent_at: Millis, buf: &mut Vec<u8>) -> Result<Health, StoreError> {
    update_health(store, buf, |h| {
        h.errors = h.errors.saturating_add(1);
        // An answer that came after this call was sent proves the service was up then.
        if h.first_unanswered == 0 && h.last_answer <= sent_at {
            h.first_unanswered = sent_at.max(1);
        }
    })
}

/// Create the shared records if missing. Idempotent; run at configure, before traffic.
pub fn init<S: SharedStore>(store: &S) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    if store.get(LEASE_KEY, &mut buf)?.is_none() {
        store.set(LEASE_KEY, &Lease::default().encode(), 0)?;
    }
    if store.get(HEALTH_KEY, &mut buf)?.is_none() {
        store.set(HEALTH_KEY, &Health::default().encode(), 0)?;
    }
    if store.get(DIRTY_KEY, &mut buf)?.is_none() {
        store.set(DIRTY_KEY, &[0], 0)?;
    }
    Ok(())
}

/// Append a worker's changed tenants (store keys) to the shared dirty list. Keys that do not
/// fit under [`MAX_DIRTY_BYTES`] stay in `keys` for the next tick.
pub fn publish_dirty<S: SharedStore>(store: &S, keys: &mut Vec<String>, urgent: bool, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    let taken = store::update(store, DIRTY_KEY, Absent::Fail(StoreError::Unavailable), buf, &mut Vec::new(), |b, out| {
        out.extend_from_slice(if b.is_empty() { &[0] } else { b });
        if urgent {
            out[0] = 1;
        }
        let mut taken = 0;
        for k in keys.iter() {
            if out.len() + k.len() + 1 > MAX_DIRTY_BYTES {
                break;
            }
            out.push(b'\n');
            out.extend_from_slice(k.as_bytes());
            taken += 1;
        }
        Ok(Step::Write(taken))
    })?;
    keys.drain(..taken);
    Ok(())
}

/// Take the whole dirty list: (keys, whether a worker asked for an early round).
pub fn take_dirty<S: SharedStore>(store: &S, buf: &mut Vec<u8>) -> Result<(Vec<String>, bool), StoreError> {
    store::update(store, DIRTY_KEY, Absent::Fail(StoreError::Unavailable), buf, &mut Vec::new(), |b, out| {
        if b.len() <= 1 && b.first().copied().unwrap_or(0) == 0 {
            return Ok(Step::Keep((Vec::new(), false)));
        }
        out.push(0);
        let urgent = b[0] == 1;
        let keys = b[1..]
            .split(|&c| c == b'\n')
            .filter(|k| !k.is_empty())
            .filter_map(|k| std::str::from_utf8(k).ok().map(str::to_string))
            .collect();
        Ok(Step::Write((keys, urgent)))
    })
}

/// Whose counts a state key holds (None: not a state key, or a scope no longer configured).
pub fn subject_of<'a>(cfg: &'a Config, key: &'a str) -> Option<Subject<'a>> {
    match keys::parse_state(key)? {
        (None, id) => Some(Subject::Tenant(id)),
        (Some(name), id) => cfg.scope_subject(name, id),
    }
}

/// A subject's policy: a runtime override (kept under [`keys::override_entry`]) or the
/// configured one.
pub fn policy_of(cfg: &Config, overrides: &dyn Fn(&str) -> Option<TenantPolicy>, who: Subject<'_>) -> TenantPolicy {
    overrides(&keys::override_entry(who)).unwrap_or_else(|| cfg.configured_policy(who).clone())
}

/// One descriptor of a sync call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The subject's state key.
    pub key: String,
    pub budget: usize,
    pub window_start: Millis,
    /// Units sent (0: a read).
    pub units: u64,
    /// The cap sent (the answer is read back in its scale).
    pub cap: u64,
    /// The subject's window (a tenant entry may set its own).
    pub window: Window,
}

/// The descriptors a subject's state calls for at `now`: every global budget of its scope it
/// has a slot for (`exact` ones only when they hold units not acknowledged: admitted while
/// degraded, or found after the response beyond the reserve).
pub fn plan(cfg: &Config, policy: &TenantPolicy, scope: Option<usize>, key: &str, state: &TenantState, now: Millis, out: &mut Vec<Pending>) {
    for (i, b) in cfg.budgets.iter().enumerate() {
        let Some(mode) = b.global else { continue };
        if b.scope != scope {
            continue;
        }
        let l = &policy.limits[i];
        if l.unlimited {
            continue;
        }
        if let Some((ws, units)) = core::unsent(state, b.id, l.window, now) {
            if mode == GlobalMode::Exact && units == 0 {
                continue;
            }
            out.push(Pending { key: key.to_string(), budget: i, window_start: ws, units, cap: l.limit.saturating_add(l.burst_credits), window: l.window });
        }
    }
}

/// The RLS descriptor of a pending item.
pub fn descriptor_of(cfg: &Config, policy: &TenantPolicy, p: &Pending) -> rls::RateLimitDescriptor {
    let b = &cfg.budgets[p.budget];
    let l = &policy.limits[p.budget];
    let who = subject_of(cfg, &p.key).unwrap_or(Subject::Tenant(crate::core::id::OVERFLOW));
    rls::descriptor(who, &b.name, l.window, p.window_start, p.cap, p.units)
}

/// Whether the service counted a status in the window the units were sent for. Without the
/// window in the descriptor (D1) the service counts a call in the window it processes it
/// in, and says when that window ends: `duration_until_reset`, in whole seconds from the
/// second it processed the call (envoyproxy/ratelimit `CalculateReset`; Limitador gives ms).
/// `answered_at + reset` is that end give or take the call's time, the 1 s granularity and
/// the skew between the service's clock and ours: for windows of a minute or more, far less
/// than half a window, so the window boundary nearest to it names the window exactly. An
/// answer counted in another window is not applied (its units stay counted by the service,
/// the safe side; as our window is over, they are never sent again).
///
/// For 1 s windows the reset always says 1 s: it cannot tell, and the answer is applied.
/// Not applying an answer that was ours sends its units again (counted twice, and the window
/// then admits that many less); applying one the service counted in the next second only
/// sets `remote` of a window that is over, or ends within the clock skew (the README states
/// this residual error). Calendar months and billing cycles (the month or the cycle is in
/// the descriptor) and answers without a reset are taken as they are.
pub fn same_window(window: Window, window_start: Millis, answered_at: Millis, reset_ms: Option<u64>) -> bool {
    let Some(reset) = reset_ms else { return true };
    match window.fixed_ms() {
        Some(w) if w > 1000 => {
            let est = answered_at.saturating_add(reset);
            let nearest = est.saturating_add(w / 2) / w * w;
            nearest == window.end(window_start)
        }
        _ => true,
    }
}

/// A call in flight.
#[derive(Debug, Clone)]
pub struct Batch {
    pub token: u32,
    pub sent_at: Millis,
    pub items: Vec<Pending>,
}

/// The leader's sync loop: which tenants to sync and when. Lives in the lease holder's VM;
/// a new holder starts empty and learns tenants from the dirty list again.
#[derive(Debug, Default)]
pub struct SyncLoop {
    /// Tenant keys to sync, with the time after which an idle one is dropped.
    pub watch: HashMap<String, Millis>,
    queue: Vec<String>,
    pub inflight: Option<Batch>,
    last_round: Millis,
    /// The last call failed: keep every watched tenant (its units are unacknowledged).
    failing: bool,
    scratch: Scratch,
    /// Calls sent (for tests and status).
    pub calls: u64,
    /// Units found unacknowledged by the round being sent, and by the last complete round
    /// (`quota_global_pending_units`).
    round_pending: u64,
    pub pending: u64,
}

/// How long a tenant stays watched after it last changed here: its `remote` keeps being
/// refreshed meanwhile, so a tenant busy on other Envoys is seen near its limit.
pub fn watch_ms(g: &crate::config::Global) -> u64 {
    (10 * g.sync_period_ms).max(2000)
}

impl SyncLoop {
    /// Add tenants that changed.
    pub fn watch(&mut self, g: &crate::config::Global, keys: Vec<String>, now: Millis) {
        let until = now.saturating_add(watch_ms(g));
        for k in keys {
            self.watch.insert(k, until);
        }
    }

    /// The next call to send, if one is due: `(encoded request, items)`. `urgent`: a tenant
    /// is near its limit. `probe`: the service is not answering, so send a read even with
    /// nothing to sync, to learn when it is back.
    pub fn next_call<S: SharedStore>(
        &mut self,
        cfg: &Config,
        store: &S,
        overrides: &dyn Fn(&str) -> Option<TenantPolicy>,
        now: Millis,
        urgent: bool,
        probe: bool,
    ) -> Option<(Vec<u8>, Vec<Pending>)> {
        let g = cfg.global.as_ref()?;
        if self.inflight.is_some() {
            return None;
        }
        if self.queue.is_empty() {
            let since = now.saturating_sub(self.last_round);
            let early = (g.sync_period_ms / 8).max(5);
            // An early round re-reads every watched tenant: only when that is one call.
            let early_ok = urgent && since >= early && self.watch.len() <= BATCH;
            if since < g.sync_period_ms && !early_ok {
                return None;
            }
            if !self.failing {
                self.watch.retain(|_, until| *until >= now);
            }
            self.queue = self.watch.keys().cloned().collect();
            self.last_round = now;
            self.round_pending = 0;
            if self.queue.is_empty() && probe {
                // A read of a descriptor no tenant can have: tells whether the service is back.
                let second = Window::from_ms(1000);
                let d = rls::descriptor(Subject::Tenant("-"), "-", second, second.start(now), 1, 0);
                return Some((rls::encode(&g.domain, vec![d]), Vec::new()));
            }
        }
        let mut items = Vec::new();
        let mut descriptors = Vec::new();
        while items.len() < BATCH {
            let Some(key) = self.queue.pop() else { break };
            let Some(who) = subject_of(cfg, &key) else { continue };
            let policy = policy_of(cfg, overrides, who);
            self.scratch.key.clone_from(&key);
            let Ok(Some(_)) = store.get(&key, &mut self.scratch.buf) else { continue };
            if self.scratch.state.decode_from(&self.scratch.buf).is_err() {
                continue;
            }
            let from = items.len();
            plan(cfg, &policy, who.scope(), &key, &self.scratch.state, now, &mut items);
            for p in &items[from..] {
                self.round_pending = self.round_pending.saturating_add(p.units);
                descriptors.push(descriptor_of(cfg, &policy, p));
            }
        }
        if self.queue.is_empty() {
            self.pending = self.round_pending;
        }
        if items.is_empty() {
            return None;
        }
        Some((rls::encode(&g.domain, descriptors), items))
    }

    /// Remember the call just dispatched.
    pub fn sent(&mut self, token: u32, now: Millis, items: Vec<Pending>) {
        self.calls += 1;
        self.inflight = Some(Batch { token, sent_at: now, items });
    }

    /// The call could not be dispatched or got no usable answer: its units stay
    /// unacknowledged, the round stops, and the next one (after the period) sends them again.
    pub fn failed(&mut self) {
        self.inflight = None;
        self.queue.clear();
        self.failing = true;
    }

    /// Apply an answer to the call in flight. Returns the store errors met (the affected
    /// tenants are synced again next round).
    pub fn answered<S: SharedStore>(&mut self, cfg: &Config, store: &S, answers: &[rls::Status], now: Millis) -> usize {
        let Some(batch) = self.inflight.take() else { return 0 };
        self.failing = false;
        let mut errors = 0;
        for (p, st) in batch.items.iter().zip(answers) {
            self.scratch.key.clone_from(&p.key);
            let Some(b) = cfg.budgets.get(p.budget) else { continue };
            let window = p.window;
            if !same_window(window, p.window_start, now, st.reset_ms) {
                continue;
            }
            let a = rls::unscale(st.answer, p.cap);
            let r = store::transact(store, &mut self.scratch, |s| (core::apply_answer(s, b.id, window, p.window_start, batch.sent_at, p.units, a), ()));
            if r.is_err() {
                errors += 1;
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests;
