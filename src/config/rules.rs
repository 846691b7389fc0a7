//! The rules that tie one block of the configuration to another, in one list. Each block's
//! own rules (a budget's window against its algorithm, `queue` settings against `on_exceed`,
//! the model from the body against `llm.request_body`) stay with the block.

use super::error::{err, ConfigError};
use super::global::Global;
use super::llm::Llm;
use super::scopes::Scope;
use crate::core::budget::{Budget, Counts, GlobalMode, OnExceed};

pub(super) fn check(budgets: &[Budget], scopes: &[Scope], llm: &Llm, global: Option<&Global>) -> Result<(), ConfigError> {
    llm_cost_needs_prices(budgets, llm)?;
    scoped_global_names(budgets, scopes)?;
    queue_excludes_exact(budgets)?;
    global_needs_service(budgets, global)
}

/// An `llm_cost` budget counts prices: `llm.prices` must list some.
fn llm_cost_needs_prices(budgets: &[Budget], llm: &Llm) -> Result<(), ConfigError> {
    match budgets.iter().find(|b| b.counts == Counts::LlmCost) {
        Some(b) if llm.prices.is_empty() => err(format!("budgets.{}.counts", b.name), "an `llm_cost` budget needs `llm.prices`"),
        _ => Ok(()),
    }
}

/// A scope's name is the first descriptor entry's key of its global budgets, and the rate
/// limit service joins entries with `_`: such a scope may not be `tenant` nor contain `_`.
fn scoped_global_names(budgets: &[Budget], scopes: &[Scope]) -> Result<(), ConfigError> {
    for b in budgets.iter().filter(|b| b.global.is_some()) {
        let Some(sname) = b.scope.map(|i| &scopes[i].name) else { continue };
        if sname == "tenant" || sname.contains('_') {
            return err(
                format!("budgets.{}.global", b.name),
                format!("a scope with global budgets needs a name without `_` other than `tenant` (its name is the first descriptor entry's key, and the rate limit service joins entries with `_`), got `{sname}`"),
            );
        }
    }
    Ok(())
}

/// A queued request is decided again from the tick, without a network call: no configuration
/// may both queue and have an `exact` global budget.
fn queue_excludes_exact(budgets: &[Budget]) -> Result<(), ConfigError> {
    let queued = budgets.iter().find(|b| b.on_exceed == OnExceed::Queue);
    let exact = budgets.iter().find(|b| b.global == Some(GlobalMode::Exact));
    match (queued, exact) {
        (Some(q), Some(x)) => err(
            format!("budgets.{}.on_exceed", q.name),
            format!("`queue` cannot be combined with the `exact` global budget `{}` in one configuration (a queued request is decided again without a network call)", x.name),
        ),
        _ => Ok(()),
    }
}

/// A global budget needs the top-level `global` block (the rate limit service's cluster).
fn global_needs_service(budgets: &[Budget], global: Option<&Global>) -> Result<(), ConfigError> {
    match budgets.iter().find(|b| b.global.is_some()) {
        Some(b) if global.is_none() => err(format!("budgets.{}.global", b.name), "a global budget needs the top-level `global` block (the rate limit service's cluster)"),
        _ => Ok(()),
    }
}

/// A fallback to another model rewrites the request's model: `llm.model` must say where it
/// is. Providers named by model need it too.
pub(super) fn fallbacks(budgets: &[Budget], llm: &Llm, providers: Option<&super::Providers>) -> Result<(), ConfigError> {
    if llm.model.is_some() {
        return Ok(());
    }
    if let Some(b) = budgets.iter().find(|b| b.fallback.as_ref().is_some_and(|t| t.model.is_some())) {
        return err(format!("budgets.{}.fallback.model", b.name), "a fallback to another model needs `llm.model` (the header or body field it rewrites)");
    }
    match providers {
        Some(p) if p.by == super::ProviderBy::Model => err("providers.by", "providers named by model need `llm.model`"),
        Some(p) => match p.fallbacks.iter().find(|(_, t)| t.model.is_some()) {
            Some((id, _)) => err(format!("providers.fallbacks.{id}.model"), "a fallback to another model needs `llm.model` (the header or body field it rewrites)"),
            None => Ok(()),
        },
        None => Ok(()),
    }
}
