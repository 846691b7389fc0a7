//! What an admitted request carries until its stream ends: its subjects' keys, what it
//! reserved, and what is still to be charged, settled or released.

use crate::config::{Config, Priority, TenantPolicy};
use crate::core::{Demand, Millis, Usage};

/// Units charged after admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterCharge {
    pub budget: usize,
    /// Response header carrying the cost, or `None` for streamed request bytes.
    pub response_header: Option<String>,
}

/// An admitted request's bookkeeping, kept until the stream ends.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// Tenant id as reported (the overflow tenant reports `overflow`).
    pub tenant: String,
    /// The store key the decision was committed under.
    pub key: String,
    pub priority: Option<Priority>,
    pub keep: f64,
    /// The budget closest to exhaustion, for the response headers.
    pub headline: Option<Usage>,
    /// `x-tenant-quota-shadow` reason of a would-be rejection (shadow mode).
    pub shadow: Option<String>,
    /// `x-tenant-quota-fallback`: the request was sent to a fallback (why, and where).
    pub fallback: Option<String>,
    /// Budgets holding an in_flight slot, released when the stream ends.
    pub in_flight: Vec<usize>,
    pub after: Vec<AfterCharge>,
    /// Every budget's standing after admission (metrics).
    pub usage: Vec<Usage>,
    /// `exact` global budgets still to be asked of the rate limit service (SPEC 8).
    pub exact: Vec<Demand>,
    /// What the local decision reserved, and when (to undo it if the service refuses).
    pub reserved: Vec<Demand>,
    pub at: Millis,
    /// The request charged a global budget locally: the tenant needs a sync.
    pub global_dirty: bool,
    /// A global budget is near its cap: sync sooner.
    pub global_urgent: bool,
    /// What the request reserved in each scope (SPEC 7), in scope order.
    pub scopes: Vec<ScopeCharge>,
    /// `x-tenant-quota-warning` reasons of `warn` budgets admitted past their cap, in budget
    /// name order (SPEC 6).
    pub warnings: Vec<String>,
    /// How long the request waited in a queue before admission (SPEC 6).
    pub queued_ms: Option<u64>,
    /// LLM token and cost budgets to settle once the response's usage is known (SPEC 5).
    pub llm: Vec<LlmCharge>,
    /// The request's model, when known (prices the actual usage).
    pub model: Option<String>,
}

/// An LLM budget's reservation at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmCharge {
    pub budget: usize,
    pub reserved: u64,
}

/// A scope id's part of an admitted request.
#[derive(Debug, Clone)]
pub struct ScopeCharge {
    /// Index into `Config::scopes`.
    pub scope: usize,
    /// The id as reported (`overflow` for ids past `max_tracked`).
    pub id: String,
    /// The store key the reservation was committed under.
    pub key: String,
    /// A runtime override's policy; `None`: the configured one ([`ScopeCharge::policy`]).
    pub runtime: Option<TenantPolicy>,
    pub reserved: Vec<Demand>,
}

impl ScopeCharge {
    pub fn policy<'a>(&'a self, cfg: &'a Config) -> &'a TenantPolicy {
        match &self.runtime {
            Some(p) => p,
            None => cfg.scopes[self.scope].policy(&self.id),
        }
    }
}

impl Admitted {
    /// The store key and policy a budget's units belong to: its scope id's, or the tenant's.
    pub fn subject_of<'a>(&'a self, cfg: &'a Config, budget: usize, tenant_policy: &'a TenantPolicy) -> Option<(&'a str, &'a TenantPolicy)> {
        match cfg.budgets.get(budget)?.scope {
            None => Some((self.key.as_str(), tenant_policy)),
            Some(s) => self.scopes.iter().find(|c| c.scope == s).map(|c| (c.key.as_str(), c.policy(cfg))),
        }
    }

    /// The state keys of the subjects whose global budgets this request charged (the sync
    /// loop sends their units).
    pub fn global_keys<'a>(&'a self, cfg: &'a Config) -> impl Iterator<Item = &'a str> + 'a {
        let global_of = move |scope: Option<usize>| self.usage.iter().any(|u| cfg.budgets[u.budget].global.is_some() && cfg.budgets[u.budget].scope == scope);
        let tenant = global_of(None);
        let scopes = self.scopes.iter().filter(move |c| global_of(Some(c.scope)));
        tenant.then_some(self.key.as_str()).into_iter().chain(scopes.map(|c| c.key.as_str())).filter(|k| !k.is_empty())
    }

    /// The scope id a budget was counted under (None: a tenant budget).
    pub fn scope_id_of(&self, cfg: &Config, budget: usize) -> Option<(usize, &str)> {
        let s = cfg.budgets.get(budget)?.scope?;
        self.scopes.iter().find(|c| c.scope == s).map(|c| (s, c.id.as_str()))
    }
}

/// Whether admitted usage touched a global budget, and whether one is near its cap.
pub(crate) fn global_marks(cfg: &Config, usage: &[Usage]) -> (bool, bool) {
    let mut dirty = false;
    let mut urgent = false;
    for u in usage {
        if cfg.budgets[u.budget].global.is_some() {
            dirty = true;
            urgent |= u128::from(u.used) * 100 >= u128::from(crate::global::URGENT_PCT) * u128::from(u.cap().max(1));
        }
    }
    (dirty, urgent)
}
