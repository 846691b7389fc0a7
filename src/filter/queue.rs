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
use crate::engine::{self, Conditions, RequestFacts, Verdict, Waiting};
use crate::store::{counter, StoreError};
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
        answer(cfg, e.ctx, &w.reply);
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

/// Resume a paused request from the root context.
pub fn resume(ctx: u32) -> bool {
    host::set_effective_context(ctx) && host::resume_request()
}

/// Answer a paused request from the root context (its decision goes to the access-log
/// fields first, while its context is the effective one).
pub fn answer(cfg: &crate::config::Config, ctx: u32, reply: &crate::engine::Reply) -> bool {
    if !host::set_effective_context(ctx) {
        return false;
    }
    super::log_fields::reply(cfg, reply);
    host::send_local_response(reply.status, &reply.reason, &reply.body, &reply.headers)
}
