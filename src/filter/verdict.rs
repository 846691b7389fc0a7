//! After the verdict: the one path every decision takes, whichever callback reached it (the
//! header phase, the end of a body wait, a body wait that timed out on the tick, a queue retry
//! on the tick, an `exact` check's answer). Metrics, the mark for the next global sync, the
//! in-flight ledger and the in-flight saturation signal are kept here and nowhere else, so the
//! callers cannot drift apart.

use super::host::{self, map, HostStore};
use super::{global, log_fields, Shared};
use crate::config::{Config, OnError, TenantPolicy};
use crate::engine::{self, Admitted, Reply, Verdict, Waiting};

/// What the caller does next.
pub(super) enum Next {
    /// Let the request go on. `admitted`: its bookkeeping (None: nothing to keep, e.g. mode
    /// off). `counted`: it holds a place in the in-flight saturation signal, given back when
    /// its stream ends.
    Continue { admitted: Option<Box<Admitted>>, counted: bool },
    /// Admitted locally, but `exact` global budgets must first be asked of the service.
    AskExact { admitted: Box<Admitted>, counted: bool },
    Reply(Reply),
    /// Only `queue` budgets refused: the request may wait.
    Wait(Box<Waiting>),
    /// A `fallback` budget refused: send the request to its fallback and decide it again.
    Reroute(Box<engine::Reroute>),
}

/// An admission decided away from its request's context (on the tick), until the context
/// picks it up.
pub(super) struct Delivered {
    pub admitted: Option<Box<Admitted>>,
    pub counted: bool,
}

/// An `exact` check asked from the tick for a request paused in its header phase: its answer
/// comes to the root context.
pub(super) struct TickExact {
    pub ctx: u32,
    pub admitted: Box<Admitted>,
    pub counted: bool,
    pub sent_at: u64,
}

/// The common bookkeeping of a verdict.
pub(super) fn after_verdict(cfg: &Config, sh: &mut Shared, v: Verdict) -> Next {
    record(cfg, sh, &v);
    match v {
        Verdict::Pass { error } => {
            if let Some(e) = error {
                host::log(host::LOG_WARN, &format!("tenant-quota: could not decide, allowing: {e:?}"));
            }
            Next::Continue { admitted: None, counted: count_in_flight(sh) }
        }
        Verdict::Admit(a) => {
            if a.global_dirty {
                for k in a.global_keys(cfg) {
                    sh.global.touched(k, a.global_urgent);
                }
            }
            let counted = count_in_flight(sh);
            if a.exact.is_empty() {
                ledger_acquired(cfg, sh, &a);
                Next::Continue { admitted: Some(a), counted }
            } else {
                Next::AskExact { admitted: a, counted }
            }
        }
        Verdict::Reject { reply, error, .. } => {
            if let Some(e) = error {
                host::log(host::LOG_WARN, &format!("tenant-quota: could not decide, denying: {e:?}"));
            }
            Next::Reply(*reply)
        }
        Verdict::Wait(w) => Next::Wait(w),
        Verdict::Reroute(r) => Next::Reroute(r),
    }
}

fn count_in_flight(sh: &mut Shared) -> bool {
    if sh.saturation.counts_in_flight {
        sh.saturation.pending_in_flight += 1;
    }
    sh.saturation.counts_in_flight
}

/// Give back a place in the in-flight signal (a request that ends, or never started).
pub(super) fn uncount_in_flight(sh: &mut Shared, counted: bool) {
    if counted {
        sh.saturation.pending_in_flight -= 1;
    }
}

pub(super) fn policy(cfg: &Config, sh: &Shared, a: &Admitted) -> TenantPolicy {
    sh.overrides.get(&a.tenant).unwrap_or_else(|| cfg.policy(&a.tenant).clone())
}

/// The outcome of an `exact` check (`answers` None: the call failed or timed out): the
/// admission stands, or the request gets this reply. Metrics, the sync mark and the ledger
/// are kept here.
pub(super) fn exact_answered(cfg: &Config, sh: &mut Shared, mut a: Box<Admitted>, answers: Option<&[crate::global::Answer]>, sent_at: u64, now: u64) -> Result<Box<Admitted>, Reply> {
    let p = policy(cfg, sh, &a);
    let r = engine::exact_finish(cfg, &HostStore, &mut sh.worker, &mut a, &p, answers, now);
    let admitted = matches!(r, Ok(engine::ExactOutcome::Admit));
    sh.global.check_done(answers.map(|_| admitted), sent_at, now);
    match r {
        Ok(engine::ExactOutcome::Admit) => {
            ledger_acquired(cfg, sh, &a);
            if a.global_dirty {
                for k in a.global_keys(cfg) {
                    sh.global.touched(k, false);
                }
            }
            for u in a.usage.iter().filter(|u| cfg.budgets[u.budget].global.is_some()) {
                let (scope, who) = a.scope_id_of(cfg, u.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                sh.metrics.usage_of(cfg, scope, who, u, true);
            }
            Ok(a)
        }
        Ok(engine::ExactOutcome::Reject(reply, rej)) => {
            if let Some(rej) = rej {
                sh.metrics.rejected(cfg, &a.tenant, rej.budget, rej.reason, false);
            }
            Err(*reply)
        }
        Err(e) => {
            sh.metrics.error();
            host::log(host::LOG_WARN, &format!("tenant-quota: global: could not record an exact check: {e:?}"));
            match cfg.on_error {
                OnError::Allow => Ok(a),
                OnError::Deny => Err(engine::plain_reply(503, "quota_unavailable", "Quota state unavailable", Some(&a.tenant))),
            }
        }
    }
}

/// Carry out, from the tick, what the common path decided for a request paused in its header
/// phase (`ctx`): resume it with its admission, ask the service first, or answer it.
/// `Wait` is answered with its rejection: waiting from here would need a queue place the
/// caller did not take (the queue's own pass handles `Wait` itself).
pub(super) fn deliver(cfg: &Config, sh: &mut Shared, ctx: u32, next: Next, now: u64) {
    match next {
        Next::Continue { admitted, counted } => resume(cfg, sh, ctx, Delivered { admitted, counted }),
        Next::AskExact { admitted, counted } => {
            let body = engine::exact_request(cfg, &policy(cfg, sh, &admitted), &admitted);
            match global::dispatch(cfg, &body) {
                Some(token) => {
                    sh.tick_exact.insert(token, TickExact { ctx, admitted, counted, sent_at: now });
                }
                None => {
                    host::log(host::LOG_WARN, "tenant-quota: global: cannot call the rate limit service");
                    let r = exact_answered(cfg, sh, admitted, None, now, now);
                    exact_delivered(cfg, sh, ctx, r, counted);
                }
            }
        }
        Next::Reply(reply) => {
            answer(cfg, ctx, &reply);
        }
        Next::Wait(w) => {
            answer(cfg, ctx, &w.reply);
        }
        // Decided on the tick (a queue retry, a body wait that expired): the request is not
        // rerouted from there; it gets the rejection.
        Next::Reroute(r) => {
            answer(cfg, ctx, &r.reply);
        }
    }
}

/// The answer of an `exact` check asked from the tick.
pub(super) fn tick_exact_answered(cfg: &Config, sh: &mut Shared, token: u32, status_code: u32, size: usize, now: u64) -> bool {
    let Some(t) = sh.tick_exact.remove(&token) else { return false };
    let answers = global::exact_answers(status_code, size, t.admitted.exact.len());
    let r = exact_answered(cfg, sh, t.admitted, answers.as_deref(), t.sent_at, now);
    exact_delivered(cfg, sh, t.ctx, r, t.counted);
    true
}

fn exact_delivered(cfg: &Config, sh: &mut Shared, ctx: u32, r: Result<Box<Admitted>, Reply>, counted: bool) {
    match r {
        Ok(a) => resume(cfg, sh, ctx, Delivered { admitted: Some(a), counted }),
        Err(reply) => {
            uncount_in_flight(sh, counted);
            answer(cfg, ctx, &reply);
        }
    }
}

/// Resume a paused request with what was decided for it; if it is gone (its client left as
/// it was admitted), undo the admission.
fn resume(cfg: &Config, sh: &mut Shared, ctx: u32, d: Delivered) {
    sh.queues.delivered.insert(ctx, d);
    if resume_paused(ctx) {
        return;
    }
    let Some(d) = sh.queues.delivered.remove(&ctx) else { return };
    uncount_in_flight(sh, d.counted);
    if let Some(a) = d.admitted {
        let p = policy(cfg, sh, &a);
        if let Err(e) = engine::rollback(cfg, &HostStore, &mut sh.worker, &a, &p) {
            sh.metrics.error();
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not undo the admission of `{}`: {e:?}", a.tenant));
        }
    }
}

/// Resume a paused request from the root context.
fn resume_paused(ctx: u32) -> bool {
    host::set_effective_context(ctx) && host::resume_request()
}

/// Answer a paused request from the root context (its decision goes to the access-log
/// fields first, while its context is the effective one).
pub(super) fn answer(cfg: &Config, ctx: u32, reply: &Reply) -> bool {
    if !host::set_effective_context(ctx) {
        return false;
    }
    log_fields::reply(cfg, reply);
    host::send_local_response(reply.status, &reply.reason, &wire_body(reply), &reply.headers)
}

/// A reply's body as the client gets it: on LLM API paths its `error` is the provider's error
/// object (SPEC 2). The effective context must be the request's: its `:path` is read here,
/// only when a request is refused.
pub(super) fn wire_body(r: &Reply) -> std::borrow::Cow<'_, str> {
    let path = host::header(map::REQUEST_HEADERS, ":path").unwrap_or_default();
    match crate::engine::LlmApi::of_path(&path) {
        Some(api) => std::borrow::Cow::Owned(r.provider_body(api)),
        None => std::borrow::Cow::Borrowed(&r.body),
    }
}

/// Put an admitted request's in_flight slots on this VM's ledger.
pub(super) fn ledger_acquired(cfg: &Config, sh: &mut Shared, a: &Admitted) {
    if let Some(l) = &mut sh.ledger {
        for &b in &a.in_flight {
            l.acquired(&HostStore, key_of(cfg, a, b), cfg.budgets[b].id);
        }
    }
}

/// The store key a budget's units of an admitted request live under.
pub(super) fn key_of<'a>(cfg: &Config, a: &'a Admitted, budget: usize) -> &'a str {
    match cfg.budgets[budget].scope {
        None => &a.key,
        Some(sc) => a.scopes.iter().find(|c| c.scope == sc).map_or("", |c| c.key.as_str()),
    }
}

/// Metrics of a verdict.
pub(super) fn record(cfg: &Config, sh: &mut Shared, verdict: &Verdict) {
    if let Verdict::Admit(a) = verdict {
        sh.metrics.current_tenant.clone_from(&a.tenant);
    }
    match verdict {
        Verdict::Pass { error: Some(_) } => sh.metrics.error(),
        Verdict::Pass { error: None } => {}
        Verdict::Admit(a) => {
            if let (Some(_), Some(h)) = (&a.shadow, &a.headline) {
                if a.usage.is_empty() {
                    // A would-be rejection in shadow mode.
                    let reason = if h.burst_credits > 0 { crate::core::Reason::BurstExhausted } else { crate::core::Reason::Exceeded };
                    let (scope, who) = a.scope_id_of(cfg, h.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                    sh.metrics.rejected_of(cfg, scope, who, h.budget, reason, true);
                    return;
                }
            }
            for u in &a.usage {
                let (scope, who) = a.scope_id_of(cfg, u.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                sh.metrics.usage_of(cfg, scope, who, u, true);
            }
        }
        // Counted where the reroute is carried out (`quota_fallbacks_total`).
        Verdict::Wait(_) | Verdict::Reroute(_) => {}
        Verdict::Reject { tenant, rejection, error, scope, .. } => {
            if error.is_some() {
                sh.metrics.error();
            }
            if let (Some(t), Some(r)) = (tenant, rejection) {
                match scope {
                    Some((s, id)) => sh.metrics.rejected_of(cfg, Some(*s), id, r.budget, r.reason, false),
                    None => sh.metrics.rejected(cfg, t, r.budget, r.reason, false),
                }
            }
        }
    }
}
