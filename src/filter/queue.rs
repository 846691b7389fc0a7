//! Host side of the request queues (SPEC 6, `on_exceed: queue`): requests paused while they
//! wait for room, resumed from the worker's tick. The order (who waits where, whose turn it
//! is) is `crate::queue`; the shared count of places, which bounds how many wait per
//! (subject, budget) in the Envoy, is `store::counter`. Here: the root context re-runs a
//! request's decision on its turn (the same CAS as any other, so queueing never breaks
//! exactness) and, on admission, resumes the request after `set_effective_context` (Envoy
//! 1.40 resumes a paused request that way); on timeout it answers the rejection of section 2
//! the same way.

use super::host::{self, HostStore};
use super::metrics::Kind;
use super::verdict::{self, Delivered};
use super::Shared;
use crate::config::Config;
use crate::engine::{self, Conditions, Reply, RequestFacts, Verdict, Waiting};
use crate::store::{counter, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;

/// What is needed to decide a waiting request again.
pub struct Paused {
    /// What the decision reads of the request (read once, at its headers or body).
    pub facts: RequestFacts,
    /// The latest refusal: its reply is sent on timeout; its subject labels the metrics.
    pub waiting: Box<Waiting>,
}

pub type Entry = crate::queue::Entry<Paused>;

#[derive(Default)]
pub struct Queues {
    order: crate::queue::Queues<Paused>,
    /// Requests admitted from a queue, until their context picks the admission up.
    pub delivered: HashMap<u32, Delivered>,
    buf: Vec<u8>,
}

/// The shared count of requests waiting on a (subject, budget) in this Envoy.
pub fn count_key(subject_key: &str, budget_id: u32) -> String {
    counter::places_key(subject_key, budget_id)
}

impl Queues {
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Take a place among the Envoy's waiting requests of this (subject, budget): false when
    /// `max` already wait ([`counter::take_place`]).
    pub fn take_place(&mut self, key: &str, max: u64, now: u64, stale_ms: u64) -> Result<bool, StoreError> {
        counter::take_place(&HostStore, key, &mut self.buf, max, now, stale_ms)
    }

    /// Give a place back.
    pub fn leave_place(&mut self, key: &str, now: u64) {
        counter::leave_place(&HostStore, key, &mut self.buf, now);
    }

    pub fn push(&mut self, e: Entry) {
        self.order.push(e.item.waiting.key.clone(), e);
    }

    /// The client left while waiting: remove its entry (and give its place back).
    pub fn cancel(&mut self, ctx: u32, now: u64) -> Option<Entry> {
        let e = self.order.cancel(ctx)?;
        self.leave_place(&e.count_key, now);
        Some(e)
    }
}

/// Retry the requests waiting in this worker's queues (from the tick): each decided again by
/// the same CAS as any request, in `crate::queue`'s order.
pub(super) fn pass(cfg: &Config, sh: &mut Shared, now: u64) {
    let level = sh.saturation.level(cfg, now, &mut sh.metrics);
    let global_degraded = cfg.global.is_some() && sh.global.degraded(cfg, now);
    // The order is out of the worker's state while the turns use the rest of it: nothing
    // queues a request meanwhile (only a request's own context does, never the tick).
    let mut order = std::mem::take(&mut sh.queues.order);
    order.pass(now, &mut Turns { cfg, sh, at: Conditions { now, level, global_degraded } });
    sh.queues.order = order;
}

struct Turns<'a> {
    cfg: &'a Config,
    sh: &'a mut Shared,
    at: Conditions,
}

fn subject(w: &Waiting) -> (Option<usize>, String) {
    w.scope.clone().map_or((None, w.tenant.clone()), |(s, id)| (Some(s), id))
}

impl crate::queue::Turns<Paused> for Turns<'_> {
    fn timed_out(&mut self, e: Entry) {
        let (cfg, sh, now) = (self.cfg, &mut *self.sh, self.at.now);
        let w = &e.item.waiting;
        let (scope, who) = subject(w);
        sh.queues.leave_place(&e.count_key, now);
        sh.metrics.queued(cfg, scope, &who, e.budget, -1, Some(Kind::QueuedTimeout));
        sh.metrics.rejected_of(cfg, scope, &who, w.rejection.budget, w.rejection.reason, false);
        verdict::answer(cfg, e.ctx, &w.reply);
    }

    fn retry(&mut self, mut e: Entry) -> Option<Entry> {
        let (cfg, sh, now) = (self.cfg, &mut *self.sh, self.at.now);
        let (scope, who) = subject(&e.item.waiting);
        match engine::evaluate(cfg, &HostStore, &mut sh.worker, &e.item.facts, self.at, &sh.overrides.policies) {
            Verdict::Wait(w) => {
                e.item.waiting = w;
                Some(e)
            }
            mut v => {
                sh.queues.leave_place(&e.count_key, now);
                let kind = if let Verdict::Admit(a) = &mut v {
                    a.queued_ms = Some(now.saturating_sub(e.since));
                    Some(Kind::QueuedAdmitted)
                } else {
                    None
                };
                sh.metrics.queued(cfg, scope, &who, e.budget, -1, kind);
                let next = verdict::after_verdict(cfg, sh, v);
                verdict::deliver(cfg, sh, e.ctx, next, now);
                None
            }
        }
    }
}

/// What a request refused only by `queue` budgets does.
pub(super) enum Placed {
    /// It waits in its queue (paused).
    Waiting,
    /// The queue is full (or its timeout is 0): the rejection now.
    Refused(Reply),
    /// The worker's state is busy: let it go on.
    WorkerBusy,
}

/// A request only `queue` budgets refused: take a place and wait for room, or get the
/// rejection now.
pub(super) fn place(cfg: &Config, shared: &RefCell<Shared>, ctx: u32, w: Box<Waiting>, facts: RequestFacts) -> Placed {
    let budget = w.rejection.budget;
    let b = &cfg.budgets[budget];
    let now = host::now_ms();
    let count_key = count_key(&w.key, b.id);
    let stale_ms = b.queue.timeout_ms.saturating_add(10_000);
    let placed = {
        let Ok(mut sh) = shared.try_borrow_mut() else { return Placed::WorkerBusy };
        let sh = &mut *sh;
        let (scope, who) = w.scope.as_ref().map_or((None, w.tenant.as_str()), |(s, id)| (Some(*s), id.as_str()));
        let placed = b.queue.timeout_ms > 0 && sh.queues.take_place(&count_key, b.queue.max_waiting, now, stale_ms).unwrap_or(false);
        if placed {
            sh.metrics.queued(cfg, scope, who, budget, 1, None);
        } else {
            sh.metrics.queued(cfg, scope, who, budget, 0, Some(Kind::QueuedFull));
            sh.metrics.rejected_of(cfg, scope, who, budget, w.rejection.reason, false);
        }
        placed
    };
    if !placed {
        return Placed::Refused(w.reply);
    }
    let e = Entry { ctx, since: now, deadline: now.saturating_add(b.queue.timeout_ms), budget, count_key, item: Paused { facts, waiting: w } };
    if let Ok(mut sh) = shared.try_borrow_mut() {
        sh.queues.push(e);
    }
    Placed::Waiting
}

/// The client left while waiting: nothing was charged; free its place.
pub(super) fn cancel(cfg: &Config, shared: &RefCell<Shared>, ctx: u32) {
    let Ok(mut sh) = shared.try_borrow_mut() else { return };
    let sh = &mut *sh;
    if let Some(e) = sh.queues.cancel(ctx, host::now_ms()) {
        let (scope, who) = subject(&e.item.waiting);
        sh.metrics.queued(cfg, scope, &who, e.budget, -1, Some(Kind::QueuedCancelled));
    }
}
