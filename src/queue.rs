//! Requests waiting for room (SPEC 6, `on_exceed: queue`), in order. Host-independent: the
//! filter pauses the requests, decides them again and resumes or answers them; this module
//! only keeps who waits where, and in which order they get their turn.
//!
//! Order: the requests waiting on one (subject, budget) get their turn in arrival order, and
//! a pass over that queue stops at the first that still does not fit, so a later one never
//! overtakes it; those behind it whose timeout has passed leave meanwhile. Queues are passed
//! in (subject key, budget) order. The bound on how many may wait is kept by the caller (a
//! shared count of places, `store::counter`), so this memory is bounded by it.

use std::collections::{BTreeMap, VecDeque};

/// A waiting request. `T` is what the caller needs to decide it again.
#[derive(Debug)]
pub struct Entry<T> {
    /// The request's context (the host's id for it).
    pub ctx: u32,
    /// When it started waiting (ms).
    pub since: u64,
    /// When it stops waiting (ms): its turn, from then on, is a timeout.
    pub deadline: u64,
    /// The budget it waits on (index into the configuration's budgets).
    pub budget: usize,
    /// The shared count of places it holds one of.
    pub count_key: String,
    pub item: T,
}

/// A queue: a subject's key and a budget.
pub type QueueKey = (String, usize);

/// What the caller does with a request's turn in a [`Queues::pass`].
pub trait Turns<T> {
    /// Its timeout passed: it has left its queue (answer it with its rejection).
    fn timed_out(&mut self, e: Entry<T>);
    /// Decide it again: `None` when it leaves the queue (admitted or refused), or the entry
    /// back when it still does not fit; it then keeps the head of its queue and the pass over
    /// that queue stops.
    fn retry(&mut self, e: Entry<T>) -> Option<Entry<T>>;
}

/// Every queue of a worker: (subject key, budget) -> waiting requests, oldest first.
#[derive(Debug)]
pub struct Queues<T> {
    queues: BTreeMap<QueueKey, VecDeque<Entry<T>>>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Queues { queues: BTreeMap::new() }
    }
}

impl<T> Queues<T> {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// How many requests wait, in every queue.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// A request starts waiting, at the back of the queue of its subject and budget.
    pub fn push(&mut self, subject_key: String, e: Entry<T>) {
        self.queues.entry((subject_key, e.budget)).or_default().push_back(e);
    }

    /// The client left while waiting: take its entry out (the caller gives its place back).
    pub fn cancel(&mut self, ctx: u32) -> Option<Entry<T>> {
        let (k, i) = self.queues.iter().find_map(|(k, q)| q.iter().position(|e| e.ctx == ctx).map(|i| (k.clone(), i)))?;
        let q = self.queues.get_mut(&k)?;
        let e = q.remove(i)?;
        if q.is_empty() {
            self.queues.remove(&k);
        }
        Some(e)
    }

    /// Give every queue its turns at `now` (see the module's order).
    pub fn pass(&mut self, now: u64, turns: &mut impl Turns<T>) {
        let keys: Vec<QueueKey> = self.queues.keys().cloned().collect();
        for k in keys {
            loop {
                let Some(e) = self.queues.get_mut(&k).and_then(VecDeque::pop_front) else {
                    self.queues.remove(&k);
                    break;
                };
                if now >= e.deadline {
                    turns.timed_out(e);
                    continue;
                }
                let Some(e) = turns.retry(e) else { continue };
                self.queues.entry(k.clone()).or_default().push_front(e);
                // Those behind it keep their turn, but not past their own timeout.
                for x in self.expired(&k, now) {
                    turns.timed_out(x);
                }
                break;
            }
        }
    }

    /// Take out the entries of a queue whose timeout has passed.
    fn expired(&mut self, k: &QueueKey, now: u64) -> Vec<Entry<T>> {
        let Some(q) = self.queues.get_mut(k) else { return Vec::new() };
        let (gone, keep): (VecDeque<Entry<T>>, VecDeque<Entry<T>>) = std::mem::take(q).into_iter().partition(|e| now >= e.deadline);
        *q = keep;
        gone.into_iter().collect()
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
