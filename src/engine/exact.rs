//! `exact` global budgets (SPEC 8) after the local decision: the `ShouldRateLimit` call that
//! carries an admitted request's units, and what its answer (or its absence) decides. Each
//! demand belongs to its budget's subject: the tenant, or the request's id of the budget's
//! scope, whose key the local decision resolved.

use super::{global_marks, plain_reply, reject_reply_in, rollback, Admitted, Reply, Worker};
use crate::config::{Config, OnUnavailable, TenantPolicy};
use crate::core::{self, Demand, Millis, Policy, Reason, Rejection, Subject};
use crate::global::{rls, Answer};
use crate::store::{self, keys, SharedStore, StoreError, TenantKind};

/// The outcome of an `exact` request once the service answered or could not.
#[derive(Debug)]
pub enum ExactOutcome {
    Admit,
    Reject(Box<Reply>, Option<Rejection>),
}

/// A demand's subject: its descriptor entry, its key and its policy.
struct Who<'a> {
    subject: Subject<'a>,
    scope: Option<(&'a str, &'a str)>,
    key: &'a str,
    policy: &'a TenantPolicy,
}

fn who<'a>(cfg: &'a Config, a: &'a Admitted, policy: &'a TenantPolicy, d: &Demand) -> Option<Who<'a>> {
    let (key, p) = a.subject_of(cfg, d.budget, policy)?;
    match cfg.budgets[d.budget].scope {
        None => {
            let tenant = if a.key.is_empty() { a.tenant.as_str() } else { keys::tenant_of(&a.key).unwrap_or(&a.tenant) };
            Some(Who { subject: Subject::Tenant(tenant), scope: None, key, policy: p })
        }
        Some(sc) => {
            let (_, id) = a.scope_id_of(cfg, d.budget)?;
            let name = cfg.scopes[sc].name.as_str();
            Some(Who { subject: cfg.subject(Some(sc), id), scope: Some((name, id)), key, policy: p })
        }
    }
}

fn cap(p: &TenantPolicy, budget: usize) -> u64 {
    let l = &p.limits[budget];
    l.limit.saturating_add(l.burst_credits)
}

/// The `ShouldRateLimit` request of an admitted request's `exact` budgets: its units as
/// per-descriptor `hits_addend`, each under its subject.
pub fn exact_request(cfg: &Config, policy: &TenantPolicy, a: &Admitted) -> Vec<u8> {
    let Some(g) = &cfg.global else { return Vec::new() };
    let ds = a
        .exact
        .iter()
        .filter_map(|d| {
            let w = who(cfg, a, policy, d)?;
            let l = &w.policy.limits[d.budget];
            let ws = l.window.start(a.at);
            Some(rls::descriptor(w.subject, &cfg.budgets[d.budget].name, l.window, ws, cap(w.policy, d.budget), d.units))
        })
        .collect();
    rls::encode(&g.domain, ds)
}

fn exact_rejection(policy: &TenantPolicy, d: &Demand, now: Millis) -> Rejection {
    let l = &policy.limits[d.budget];
    let reset_ms = l.window.end(l.window.start(now)).saturating_sub(now).max(1);
    let reset_s = reset_ms.div_ceil(1000).max(1);
    let reason = if l.burst_credits > 0 { Reason::BurstExhausted } else { Reason::Exceeded };
    Rejection { budget: d.budget, reason, retry_after_s: reset_s, limit: l.limit, reset_s, queue: false, fallback: false, window_s: l.window.len_s(now) }
}

/// Finish an `exact` request. `answers`: the service's answer per `a.exact` demand, or
/// `None` when the call failed or timed out (then `on_unavailable` decides).
pub fn exact_finish<S: SharedStore>(
    cfg: &Config,
    store: &S,
    w: &mut Worker,
    a: &mut Admitted,
    policy: &TenantPolicy,
    answers: Option<&[Answer]>,
    now: Millis,
) -> Result<ExactOutcome, StoreError> {
    let exact = std::mem::take(&mut a.exact);
    if a.key.is_empty() && exact.iter().any(|d| cfg.budgets[d.budget].scope.is_none()) {
        // No local budget of the tenant applied: resolve the tenant's key now, to record the units.
        let token = w.token();
        let kind = if cfg.tenants.contains_key(&a.tenant) { TenantKind::Named } else { TenantKind::Dynamic };
        store::resolve(store, Subject::Tenant(&a.tenant), kind, cfg.max_tracked, now, token, &mut w.scratch)?;
        a.key.clone_from(&w.scratch.key);
    }
    let usage = match answers {
        Some(ans) => answered(cfg, store, w, a, policy, &exact, ans, now)?,
        None => unanswered(cfg, store, w, a, policy, &exact, now)?,
    };
    let usage = match usage {
        Ok(u) => u,
        Err((reply, r)) => {
            rollback(cfg, store, w, a, policy)?;
            return Ok(ExactOutcome::Reject(Box::new(reply), r));
        }
    };
    // The exact budgets' standing, for headers and metrics.
    a.usage.extend_from_slice(&usage);
    a.headline = core::closest_to_exhaustion(&a.usage).copied().or(a.headline);
    let (_, urgent) = global_marks(cfg, &a.usage);
    a.global_urgent |= urgent;
    Ok(ExactOutcome::Admit)
}

type Decided = Result<Vec<core::Usage>, (Reply, Option<Rejection>)>;

/// The service answered: a refusal of any descriptor refuses the request; otherwise each
/// subject records its units, acknowledged, and the count learned, in one CAS per demand.
#[allow(clippy::too_many_arguments)]
fn answered<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &Admitted, policy: &TenantPolicy, exact: &[Demand], ans: &[Answer], now: Millis) -> Result<Decided, StoreError> {
    for (d, x) in exact.iter().zip(ans) {
        if matches!(x, Answer::Over { .. }) {
            let Some(who) = who(cfg, a, policy, d) else { continue };
            let r = exact_rejection(who.policy, d, now);
            return Ok(Err((reject_reply_in(cfg, who.policy, &a.tenant, &r, who.scope), Some(r))));
        }
    }
    let mut out = Vec::new();
    for (d, x) in exact.iter().zip(ans) {
        let Some(who) = who(cfg, a, policy, d) else { continue };
        let pol = Policy { budgets: &cfg.budgets, limits: &who.policy.limits, keep: a.keep, saturation_retry_after_s: 1, global: core::GlobalView::Remote };
        let l = &who.policy.limits[d.budget];
        let x = rls::unscale(*x, cap(who.policy, d.budget));
        w.scratch.key.clear();
        w.scratch.key.push_str(who.key);
        let u = store::transact(store, &mut w.scratch, |st| {
            core::record_exact(st, cfg.budgets[d.budget].id, l.window, now, d.units, x);
            let mut u = core::standing(&pol, st, now, d.budget);
            u.used_before = u.used.saturating_sub(d.units);
            (true, u)
        })?;
        out.push(u);
    }
    Ok(Ok(out))
}

/// The call failed or timed out: `on_unavailable` decides each subject's exact demands on
/// local counts. What one subject reserved is added to the request's reservations, so a
/// later refusal undoes it too.
fn unanswered<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &mut Admitted, policy: &TenantPolicy, exact: &[Demand], now: Millis) -> Result<Decided, StoreError> {
    let g = cfg.global.as_ref().map_or(OnUnavailable::Local, |g| g.on_unavailable);
    if g == OnUnavailable::Deny {
        return Ok(Err((plain_reply(503, "quota_unavailable", "Global quota service unavailable", Some(&a.tenant)), None)));
    }
    let view = match g {
        OnUnavailable::LocalShare(n) => core::GlobalView::LocalShare(n),
        _ => core::GlobalView::Remote,
    };
    let mut out = Vec::new();
    let subjects = std::iter::once(None).chain(a.scopes.iter().map(|c| Some(c.scope))).collect::<Vec<_>>();
    for scope in subjects {
        let mine: Vec<Demand> = exact.iter().copied().filter(|d| cfg.budgets[d.budget].scope == scope).collect();
        let Some(first) = mine.first() else { continue };
        let Some(who) = who(cfg, a, policy, first) else { continue };
        let (key, sc) = (who.key.to_string(), who.scope.map(|(n, i)| (n.to_string(), i.to_string())));
        let p = who.policy.clone();
        let pol = Policy { budgets: &cfg.budgets, limits: &p.limits, keep: a.keep, saturation_retry_after_s: 1, global: view };
        let Worker { scratch, usage, .. } = &mut *w;
        scratch.key.clone_from(&key);
        let r = store::transact(store, scratch, |st| match core::decide(&pol, st, now, &mine, usage) {
            Ok(()) => (true, Ok(())),
            Err(r) => (false, Err(r)),
        })?;
        if let Err(r) = r {
            let reply = reject_reply_in(cfg, &p, &a.tenant, &r, sc.as_ref().map(|(n, i)| (n.as_str(), i.as_str())));
            return Ok(Err((reply, Some(r))));
        }
        out.extend_from_slice(&w.usage);
        // Admitted on local counts: the units are unacknowledged, the sync loop sends them.
        match scope {
            None => a.reserved.extend_from_slice(&mine),
            Some(s) => {
                if let Some(c) = a.scopes.iter_mut().find(|c| c.scope == s) {
                    c.reserved.extend_from_slice(&mine);
                }
            }
        }
        a.global_dirty = true;
    }
    Ok(Ok(out))
}
