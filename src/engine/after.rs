//! After admission: units charged after the fact, LLM usage settled, in_flight slots given
//! back, each by one CAS per subject.

use super::{Admitted, Worker};
use crate::config::{Config, Counts, TenantPolicy};
use crate::core::{self, Millis, Policy, Usage};
use crate::store::{self, SharedStore, StoreError};

/// Charge units after the fact to an admitted request's tenant.
#[allow(clippy::too_many_arguments)]
pub fn charge<S: SharedStore>(
    cfg: &Config,
    store: &S,
    w: &mut Worker,
    a: &Admitted,
    policy: &TenantPolicy,
    budget: usize,
    units: u64,
    now: Millis,
) -> Result<Option<Usage>, StoreError> {
    if units == 0 {
        return Ok(None);
    }
    let Some((key, policy)) = a.subject_of(cfg, budget, policy) else { return Ok(None) };
    let pol = Policy { budgets: &cfg.budgets, limits: &policy.limits, keep: a.keep, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
    w.scratch.key.clear();
    w.scratch.key.push_str(key);
    store::transact(store, &mut w.scratch, |st| {
        let u = core::charge(&pol, st, now, budget, units);
        (true, u)
    })
}

/// Settle an admitted request's LLM budgets once its response is over (SPEC 5): each
/// reservation replaced by the actual usage (tokens, or cost at the model's price) in one
/// CAS per subject; a response with status >= 400 releases its reservations; one that ended
/// without a usage report keeps them (`usage` None). Returns the new standings.
#[allow(clippy::too_many_arguments)]
pub fn llm_settle<S: SharedStore>(
    cfg: &Config,
    store: &S,
    w: &mut Worker,
    a: &Admitted,
    policy: &TenantPolicy,
    usage: Option<crate::llm::Usage>,
    failed: bool,
    now: Millis,
) -> Result<Vec<Usage>, StoreError> {
    let price = cfg.llm.prices.get(a.model.as_deref());
    // (budget, reserved, actual) of the budgets whose count changes.
    let mut changes = Vec::new();
    for c in &a.llm {
        let actual = match (failed, usage) {
            (true, _) => 0,
            (false, None) => continue,
            (false, Some(u)) => match &cfg.budgets[c.budget].counts {
                Counts::LlmTokens(k) => u.tokens(*k),
                _ => price.map_or(0, |p| crate::llm::cost(u, p)),
            },
        };
        if actual != c.reserved {
            changes.push((c.budget, c.reserved, actual));
        }
    }
    // One CAS per subject (the tenant, or a scope id) for all of its budgets.
    let mut out = Vec::new();
    let subjects = std::iter::once(None).chain(a.scopes.iter().map(|c| Some(c.scope)));
    for scope in subjects {
        let mine: Vec<(usize, u64, u64)> = changes.iter().copied().filter(|(b, _, _)| cfg.budgets[*b].scope == scope).collect();
        let Some(&(first, _, _)) = mine.first() else { continue };
        let Some((key, p)) = a.subject_of(cfg, first, policy) else { continue };
        let pol = Policy { budgets: &cfg.budgets, limits: &p.limits, keep: a.keep, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
        w.scratch.key.clear();
        w.scratch.key.push_str(key);
        let us = store::transact(store, &mut w.scratch, |st| {
            let us: Vec<Usage> = mine.iter().filter_map(|&(b, r, x)| core::settle(&pol, st, now, a.at, b, r, x)).collect();
            (true, us)
        })?;
        out.extend(us);
    }
    Ok(out)
}

/// Give back the in_flight slots of an admitted request (those of `budgets`, indices into
/// the config's budgets). Must not be lost: retried.
pub fn release<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &Admitted, budgets: &[usize]) -> Result<(), StoreError> {
    if budgets.is_empty() {
        return Ok(());
    }
    // Slots of tenant budgets live under the tenant's key, those of scoped budgets under the
    // scope id's: one transaction per key.
    let mut result = Ok(());
    let keys = std::iter::once(None).chain(a.scopes.iter().map(|c| Some(c.scope)));
    for scope in keys {
        let mine: Vec<usize> = budgets.iter().copied().filter(|&b| cfg.budgets[b].scope == scope).collect();
        if mine.is_empty() {
            continue;
        }
        let key = match scope {
            None => a.key.as_str(),
            Some(sc) => a.scopes.iter().find(|c| c.scope == sc).map_or("", |c| c.key.as_str()),
        };
        w.scratch.key.clear();
        w.scratch.key.push_str(key);
        let mut last = Ok(());
        for _ in 0..4 {
            last = store::transact(store, &mut w.scratch, |st| {
                for &b in &mine {
                    core::release(st, cfg.budgets[b].id, 1);
                }
                (true, ())
            });
            if last.is_ok() {
                break;
            }
        }
        if last.is_err() {
            result = last;
        }
    }
    result
}
