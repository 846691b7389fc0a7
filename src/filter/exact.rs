//! Pausing a request for an `exact` global check (SPEC 8): admitted locally, it waits while
//! the rate limit service is asked, then is admitted or refused on the answer. The
//! outcome's bookkeeping is the common path's (`verdict::exact_answered`); the messages are
//! `engine::exact_request` and `crate::global::rls`.

use super::host;
use super::{global, verdict, Shared};
use crate::config::Config;
use crate::engine::{self, Admitted, Reply};
use std::cell::RefCell;

/// A check in flight: its call's token, and when it was sent.
pub(super) struct ExactCall {
    pub token: u32,
    pub sent_at: u64,
}

/// What asking the service led to.
pub(super) enum Asked {
    /// Wait for the answer.
    Sent(ExactCall),
    /// The call could not be sent (at this time): decide as for a failed call.
    Failed(u64),
    /// The worker's state is busy: let the request go on with its local admission.
    WorkerBusy,
}

/// Ask the service about an admitted request's `exact` budgets.
pub(super) fn ask(cfg: &Config, shared: &RefCell<Shared>, a: &Admitted) -> Asked {
    let now = host::now_ms();
    let body = {
        let Ok(sh) = shared.try_borrow() else { return Asked::WorkerBusy };
        engine::exact_request(cfg, &verdict::policy(cfg, &sh, a), a)
    };
    match global::dispatch(cfg, &body) {
        Some(token) => Asked::Sent(ExactCall { token, sent_at: now }),
        None => {
            host::log(host::LOG_WARN, "tenant-quota: global: cannot call the rate limit service");
            Asked::Failed(now)
        }
    }
}

/// The outcome of a check (`answers` None: the call failed): the admission stands, or the
/// request gets this reply. None: the worker's state is busy (the admission is dropped and
/// the request goes on, as it always did).
pub(super) fn answered(cfg: &Config, shared: &RefCell<Shared>, a: Box<Admitted>, answers: Option<&[crate::global::Answer]>, sent_at: u64) -> Option<Result<Box<Admitted>, Reply>> {
    let now = host::now_ms();
    let Ok(mut sh) = shared.try_borrow_mut() else { return None };
    Some(verdict::exact_answered(cfg, &mut sh, a, answers, sent_at, now))
}
