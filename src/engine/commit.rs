//! The decision committed under CAS, subject by subject, and undone on refusal.

use super::demands::Demands;
use super::subject::{Subjects, Who};
use super::{Admitted, ScopeCharge, Worker};
use crate::config::{Config, TenantPolicy};
use crate::core::{self, id::OVERFLOW, Demand, GlobalView, Millis, Policy, Rejection, TenantState, Usage};
use crate::store::{self, keys, Scratch, SharedStore, StoreError};

/// What every subject's decision of one request shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    /// The share of every limit saturation leaves this request's priority (1.0: all).
    pub keep: f64,
    pub saturation_retry_after_s: u64,
    pub global: GlobalView,
}

/// What a request reserved, subject by subject.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The tenant id as reported (`overflow` once past `max_tracked`).
    pub reported: String,
    /// The tenant's key, once its budgets were committed (else empty).
    pub tenant_key: String,
    /// The tenant's reservations, kept when something may undo them (scopes, `exact`).
    pub tenant_reserved: Vec<Demand>,
    /// Each scope id's part, in scope order.
    pub scopes: Vec<ScopeCharge>,
    /// Every committed budget's standing.
    pub usage: Vec<Usage>,
}

/// Why a commit stopped; what it had reserved is undone.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The store failed (`on_error` decides).
    Store(StoreError),
    /// A budget refused. `scope`: the refusing scope and id (None: the tenant's budget);
    /// `key`: the refusing subject's key, for a `queue` refusal (else empty).
    Rejected { rejection: Rejection, scope: Option<(usize, String)>, key: String },
}

/// Decide and commit under CAS: the tenant's budgets first, then each scope's in name
/// order (SPEC 7). Each is one exact CAS on its own key; a refusal undoes, by CAS, what the
/// earlier ones reserved, so a refused request consumes nothing anywhere. While it is being
/// undone a concurrent request may see those units and be refused too, never admitted
/// beyond a limit: every admission is checked against counts that include them.
///
/// The tenant's demands are `w.demands`; a subject is committed when it has demands, or an
/// `exact` budget (whose units are recorded under its key later). `done` receives what was
/// committed (and, whatever the outcome, the tenant id as reported).
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, subjects: &mut Subjects<'_>, d: &mut Demands, terms: Terms, now: Millis, done: &mut Committed) -> Result<(), Refusal> {
    let token = w.token();
    done.reported = subjects.tenant.to_owned();
    if d.scoped() || !d.exact.is_empty() {
        done.tenant_reserved = w.demands.clone();
        done.scopes.reserve_exact(cfg.scopes.len());
    }
    for scope in std::iter::once(None).chain((0..cfg.scopes.len()).map(Some)) {
        let Some(who) = subjects.who(cfg, scope) else { continue };
        let Worker { scratch, demands, usage, .. } = &mut *w;
        let ds: &[Demand] = match scope {
            None => demands,
            Some(sc) => &d.scopes[sc],
        };
        if ds.is_empty() && !d.exact.iter().any(|x| cfg.budgets[x.budget].scope == scope) {
            continue;
        }
        let pol = Policy { budgets: &cfg.budgets, limits: &who.policy.limits, keep: terms.keep, saturation_retry_after_s: terms.saturation_retry_after_s, global: terms.global };
        let result = decide(store, scratch, usage, &who, ds, &pol, token, now);
        if let Err(Failure { error, resolving: true }) = result {
            undo(cfg, store, w, &done.tenant_key, subjects.policy, &done.tenant_reserved, now, &done.scopes);
            return Err(Refusal::Store(error));
        }
        let overflow = keys::is_overflow(&scratch.key);
        if overflow && scope.is_none() {
            done.reported = OVERFLOW.to_string();
        }
        let id = if overflow { OVERFLOW } else { who.subject.id() };
        match result {
            Ok(Ok(())) => {
                done.usage.extend_from_slice(usage);
                match scope {
                    None => done.tenant_key.clone_from(&scratch.key),
                    Some(sc) => {
                        let (id, key) = (id.to_string(), scratch.key.clone());
                        let runtime = subjects.scopes[sc].take().and_then(|s| s.runtime);
                        done.scopes.push(ScopeCharge { scope: sc, id, key, runtime, reserved: std::mem::take(&mut d.scopes[sc]) });
                    }
                }
            }
            Ok(Err(rejection)) => {
                let key = if rejection.queue { scratch.key.clone() } else { String::new() };
                undo(cfg, store, w, &done.tenant_key, subjects.policy, &done.tenant_reserved, now, &done.scopes);
                return Err(Refusal::Rejected { rejection, scope: scope.map(|sc| (sc, id.to_string())), key });
            }
            Err(Failure { error, .. }) => {
                undo(cfg, store, w, &done.tenant_key, subjects.policy, &done.tenant_reserved, now, &done.scopes);
                return Err(Refusal::Store(error));
            }
        }
    }
    Ok(())
}

/// A store failure in one subject's decision; `resolving`: while creating its key.
struct Failure {
    error: StoreError,
    resolving: bool,
}

/// One subject's decision, by one exact CAS on its key; a subject without a key yet gets one
/// first (created under its space's registry lock, or its space's `overflow` past
/// `max_tracked`). Leaves the key decided under in `scratch.key`, its standings in `usage`.
#[allow(clippy::too_many_arguments)]
fn decide<S: SharedStore>(store: &S, scratch: &mut Scratch, usage: &mut Vec<Usage>, who: &Who<'_>, ds: &[Demand], pol: &Policy<'_>, token: u64, now: Millis) -> Result<Result<(), Rejection>, Failure> {
    keys::state(who.subject, &mut scratch.key);
    let mut run = |scratch: &mut Scratch| {
        store::transact(store, scratch, |st: &mut TenantState| match core::decide(pol, st, now, ds, usage) {
            Ok(()) => (true, Ok(())),
            Err(r) => (false, Err(r)),
        })
    };
    match run(scratch) {
        Err(StoreError::Missing) => {}
        r => return r.map_err(|error| Failure { error, resolving: false }),
    }
    // The same lock token for every subject: each space has its own registry lock.
    store::resolve(store, who.subject, who.kind, who.max_tracked, now, token, scratch).map_err(|error| Failure { error, resolving: true })?;
    run(scratch).map_err(|error| Failure { error, resolving: false })
}

/// Undo reservations: the tenant's (`tenant_reserved` under `tenant_key`) and each scope
/// id's. Best effort: a failure leaves units counted (the safe side) and is not retried.
#[allow(clippy::too_many_arguments)]
pub(super) fn undo<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, tenant_key: &str, policy: &TenantPolicy, tenant_reserved: &[Demand], at: Millis, scopes: &[ScopeCharge]) {
    if !tenant_key.is_empty() && !tenant_reserved.is_empty() {
        w.scratch.key.clear();
        w.scratch.key.push_str(tenant_key);
        let _ = store::transact(store, &mut w.scratch, |st| {
            core::unreserve(st, &cfg.budgets, &policy.limits, at, tenant_reserved);
            (true, ())
        });
    }
    for c in scopes {
        w.scratch.key.clone_from(&c.key);
        let _ = store::transact(store, &mut w.scratch, |st| {
            core::unreserve(st, &cfg.budgets, &c.policy(cfg).limits, at, &c.reserved);
            (true, ())
        });
    }
}

/// Undo the local reservations of an admitted request the service then refused.
pub fn rollback<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &Admitted, policy: &TenantPolicy) -> Result<(), StoreError> {
    undo(cfg, store, w, &a.key, policy, &a.reserved, a.at, &a.scopes);
    Ok(())
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
