//! Requests paused while they wait for room (SPEC 6, `on_exceed: queue`), resumed from the
//! worker's tick: the root context re-runs the request's decision (the same CAS as any
//! other, so queueing never breaks exactness) and, on admission, resumes the request after
//! `set_effective_context` (Envoy 1.40 resumes a paused request that way); on timeout it
//! answers the rejection of section 2 the same way.
//!
//! Order: within a worker, the requests waiting on one (tenant or scope id, budget) are
//! retried in arrival order, and a pass stops at the first that still does not fit, so a later
//! one never overtakes it. Bounds: at most `max_waiting` per (subject, budget) in the Envoy,
//! counted in shared data (`tq1|qw|...`, with a timestamp so that counts left by a VM that
//! trapped expire after the longest wait), so the filter's memory for waiting requests is
//! bounded by that.

use super::host::{self, HostStore};
use crate::engine::Waiting;
use crate::store::{counter, StoreError};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// What is needed to decide the request again.
pub struct Entry {
    pub ctx: u32,
    pub since: u64,
    pub deadline: u64,
    /// What the decision reads of the request (read once, at its headers or body).
    pub facts: crate::engine::RequestFacts,
    /// The latest refusal: its reply is sent on timeout; its subject labels the metrics.
    pub waiting: Box<Waiting>,
    /// The budget the request waits on (index into the config's budgets).
    pub budget: usize,
    pub count_key: String,
}

#[derive(Default)]
pub struct Queues {
    /// (subject key, budget) -> waiting requests, oldest first.
    pub queues: BTreeMap<(String, usize), VecDeque<Entry>>,
    /// Requests admitted from a queue, until their context picks the admission up.
    pub delivered: HashMap<u32, super::verdict::Delivered>,
    buf: Vec<u8>,
}

/// The shared count of requests waiting on a (subject, budget) in this Envoy.
pub fn count_key(subject_key: &str, budget_id: u32) -> String {
    counter::places_key(subject_key, budget_id)
}

impl Queues {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
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

    /// Take out the entries of a queue whose timeout has passed (behind a head that waits).
    pub fn expired(&mut self, k: &(String, usize), now: u64) -> Vec<Entry> {
        let Some(q) = self.queues.get_mut(k) else { return Vec::new() };
        let (gone, keep): (VecDeque<Entry>, VecDeque<Entry>) = std::mem::take(q).into_iter().partition(|e| now >= e.deadline);
        *q = keep;
        gone.into_iter().collect()
    }

    pub fn push(&mut self, e: Entry) {
        self.queues.entry((e.waiting.key.clone(), e.budget)).or_default().push_back(e);
    }

    /// The client left while waiting: remove its entry (and give its place back).
    pub fn cancel(&mut self, ctx: u32, now: u64) -> Option<Entry> {
        let mut found = None;
        for (k, q) in self.queues.iter_mut() {
            if let Some(i) = q.iter().position(|e| e.ctx == ctx) {
                found = Some((k.clone(), i));
                break;
            }
        }
        let (k, i) = found?;
        let q = self.queues.get_mut(&k)?;
        let e = q.remove(i)?;
        if q.is_empty() {
            self.queues.remove(&k);
        }
        self.leave_place(&e.count_key, now);
        Some(e)
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
