//! One request's path through the quota, independent of the host: its subjects (tenant and
//! scope ids), the demands per budget, the decision committed under CAS subject by subject,
//! and what follows admission (`exact` checks, charges, replies and headers). The filter
//! reads the request's facts once and hands them over with a store; tests do the same.

use crate::config::{Config, Mode, OnError, OnUnavailable, Priority, TenantPolicy};
use crate::core::{self, saturation, Demand, GlobalView, Reason, Rejection, Usage};
use crate::store::{Scratch, SharedStore, StoreError};

mod admitted;
mod after;
mod commit;
mod demands;
mod exact;
mod facts;
pub mod log_fields;
pub mod reply;
mod subject;

pub(crate) use admitted::global_marks;
pub use admitted::{AfterCharge, Admitted, LlmCharge, ScopeCharge};
pub use after::{charge, llm_settle, release};
use commit::{Committed, Refusal, Terms};
pub use commit::rollback;
use demands::Demands;
pub use exact::{exact_finish, exact_request, ExactOutcome};
pub use facts::{parse_priority, parse_units, Conditions, HeaderUnits, Headers, LlmBody, Needs, RequestFacts, Rerouted};
pub use reply::{admitted_headers, plain_reply, policy_header, ratelimit_header, reject_reply, reject_reply_in, LlmApi, ProviderError, Reply};
pub use subject::RuntimePolicies;
use subject::Subjects;

#[derive(Debug)]
pub enum Verdict {
    /// Nothing to do (mode off, or the filter could not decide and `on_error` is allow).
    Pass { error: Option<StoreError> },
    Admit(Box<Admitted>),
    Reject {
        reply: Box<Reply>,
        tenant: Option<String>,
        rejection: Option<Rejection>,
        error: Option<StoreError>,
        /// The scope and id whose budget refused (SPEC 7), if a scoped one did.
        scope: Option<(usize, String)>,
    },
    /// Only `on_exceed: queue` budgets refused (SPEC 6): the request may wait for room.
    /// Nothing is charged. `reply` is its rejection should it time out or find the queue full.
    Wait(Box<Waiting>),
    /// Only `on_exceed: fallback` (and `queue`) budgets refused, on the request's first
    /// decision: it goes to the refusing budget's `fallback` and is decided again there
    /// ([`RequestFacts::rerouted`]). Nothing is charged.
    Reroute(Box<Reroute>),
}

/// A request to send elsewhere.
#[derive(Debug, Clone)]
pub struct Reroute {
    /// The budget whose fallback it takes, and why it refused.
    pub budget: usize,
    pub reason: Reason,
    pub tenant: String,
    /// Its rejection, should the fallback be impossible (e.g. a model that cannot be
    /// rewritten).
    pub reply: Reply,
}

/// A request that may wait for room.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub reply: Reply,
    pub rejection: Rejection,
    pub tenant: String,
    pub scope: Option<(usize, String)>,
    /// The store key of the subject (tenant or scope id) whose budget refused: requests wait
    /// per subject and budget.
    pub key: String,
}

/// Per-worker state the engine reuses between requests.
#[derive(Debug, Default)]
pub struct Worker {
    pub scratch: Scratch,
    pub demands: Vec<Demand>,
    pub usage: Vec<Usage>,
    /// Seed for lock tokens; non-zero.
    pub seed: u64,
    pub calls: u64,
}

impl Worker {
    pub fn new(seed: u64) -> Self {
        Worker { seed: seed | 1, ..Worker::default() }
    }
    /// A token unique to this worker and call, for the registry lock.
    pub fn token(&mut self) -> u64 {
        self.calls = self.calls.wrapping_add(1);
        // splitmix64 of seed + counter
        let mut z = self.seed.wrapping_add(self.calls.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) | 1
    }
}




/// Decide one request. Pure apart from the store: identify its subjects, gather the demands,
/// let saturation refuse, commit subject by subject, admit.
pub fn evaluate<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, facts: &RequestFacts, at: Conditions, overrides: &RuntimePolicies) -> Verdict {
    let mut v = decide(cfg, store, w, facts, at, overrides);
    if let (Verdict::Admit(a), Some(r)) = (&mut v, &facts.rerouted) {
        a.fallback = Some(r.header.clone());
    }
    v
}

fn decide<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, facts: &RequestFacts, at: Conditions, overrides: &RuntimePolicies) -> Verdict {
    if cfg.mode == Mode::Off {
        return Verdict::Pass { error: None };
    }
    let mut subjects = match subject::identify(cfg, facts, overrides) {
        Ok(s) => s,
        Err(reply) => return shadow_or_reject(cfg, reply),
    };
    let gate = Gate::of(cfg, facts, at, subjects.policy);
    let mut demands = match demands::demands(cfg, facts, at, &subjects, &mut w.demands) {
        Ok(d) => d,
        Err(reply) => return shadow_or_reject(cfg, reply),
    };
    if gate.terms.keep <= 0.0 {
        return saturation_refusal(cfg, &subjects, &w.demands, &demands, &gate, at.now);
    }
    if w.demands.is_empty() && demands.exact.is_empty() && !demands.scoped() {
        let tenant = subjects.tenant.to_owned();
        return Verdict::Admit(Box::new(Admitted { tenant, keep: gate.terms.keep, priority: Some(gate.priority), shadow: demands.shadow_cost, ..Admitted::default() }));
    }
    let mut done = Committed::default();
    match commit::commit(cfg, store, w, &mut subjects, &mut demands, gate.terms, at.now, &mut done) {
        Ok(()) => admit(cfg, done, demands, &gate, at.now),
        Err(refusal) => refused(cfg, &subjects, refusal, done.reported, &gate, facts.rerouted.is_some()),
    }
}

/// The request's standing under saturation, and the terms of its decisions.
struct Gate {
    priority: Priority,
    terms: Terms,
}

impl Gate {
    fn of(cfg: &Config, facts: &RequestFacts, at: Conditions, policy: &TenantPolicy) -> Gate {
        // A request may lower its own priority, never raise it. Only saturation uses it.
        let mut priority = policy.priority;
        if cfg.saturation.is_some() {
            if let Some(p) = facts.priority {
                priority = priority.min(p);
            }
        }
        let keep = saturation::keep(cfg.saturation.as_ref(), at.level, priority);
        let saturation_retry_after_s = cfg.saturation.as_ref().map_or(5, |s| s.retry_after_s);
        let global = match cfg.global.as_ref().map(|g| g.on_unavailable) {
            Some(OnUnavailable::LocalShare(n)) if at.global_degraded => GlobalView::LocalShare(n),
            _ => GlobalView::Remote,
        };
        Gate { priority, terms: Terms { keep, saturation_retry_after_s, global } }
    }
}

/// Saturation refuses this priority outright: under the first budget that applies, or
/// without one when none does.
fn saturation_refusal(cfg: &Config, subjects: &Subjects, tenant_demands: &[Demand], d: &Demands, gate: &Gate, now: core::Millis) -> Verdict {
    let retry = gate.terms.saturation_retry_after_s;
    let tenant = subjects.tenant.to_owned();
    let Some(b) = tenant_demands.first().or_else(|| d.scopes.iter().flatten().next()).map(|d| d.budget) else {
        let mut reply = plain_reply(429, "saturation_throttle", "Tenant throttled while the service is saturated", Some(&tenant));
        reply.headers.push(("retry-after".into(), retry.to_string()));
        return shadow_or_reject(cfg, reply);
    };
    let window_s = subjects.policy.limits[b].window.len_s(now);
    let r = Rejection { budget: b, reason: Reason::SaturationThrottle, retry_after_s: retry, limit: 0, reset_s: retry, queue: false, fallback: false, window_s };
    finish_rejection(cfg, subjects.policy, tenant, r, gate, None)
}

/// The admission of a committed request.
fn admit(cfg: &Config, done: Committed, d: Demands, gate: &Gate, now: core::Millis) -> Verdict {
    let (global_dirty, global_urgent) = global_marks(cfg, &done.usage);
    let mut warned: Vec<(usize, String)> =
        done.usage.iter().filter_map(|u| u.warned.map(|r| (u.budget, r.header_value(&cfg.budgets[u.budget].name)))).collect();
    warned.sort();
    Verdict::Admit(Box::new(Admitted {
        warnings: warned.into_iter().map(|(_, r)| r).collect(),
        queued_ms: None,
        fallback: None,
        llm: d.llm,
        model: d.model,
        headline: core::closest_to_exhaustion(&done.usage).copied(),
        usage: done.usage,
        tenant: done.reported,
        key: done.tenant_key,
        priority: Some(gate.priority),
        keep: gate.terms.keep,
        shadow: d.shadow_cost,
        in_flight: d.in_flight,
        after: d.after,
        reserved: if d.exact.is_empty() { Vec::new() } else { done.tenant_reserved },
        exact: d.exact,
        at: now,
        global_dirty,
        global_urgent,
        scopes: done.scopes,
    }))
}

/// The verdict of a commit that stopped: `on_error` for a store failure; for a refusal, a
/// wait when only `queue` budgets refused (enforce mode), else the rejection.
fn refused(cfg: &Config, subjects: &Subjects, refusal: Refusal, reported: String, gate: &Gate, rerouted: bool) -> Verdict {
    let (mut r, scope, key) = match refusal {
        Refusal::Store(error) => return store_error_verdict(cfg, error, Some(reported)),
        Refusal::Rejected { rejection, scope, key } => (rejection, scope, key),
    };
    let policy = subjects.who(cfg, scope.as_ref().map(|s| s.0)).map_or(subjects.policy, |w| w.policy);
    // One hop: a request already rerouted is refused by a fallback budget like by any other.
    if r.fallback && !rerouted && cfg.mode == Mode::Enforce {
        let reply = reject_reply_in(cfg, policy, &reported, &r, scope.as_ref().map(|(s, id)| (cfg.scopes[*s].name.as_str(), id.as_str())));
        return Verdict::Reroute(Box::new(Reroute { budget: r.budget, reason: r.reason, tenant: reported, reply }));
    }
    r.fallback = false;
    if r.queue && cfg.mode == Mode::Enforce {
        let reply = reject_reply_in(cfg, policy, &reported, &r, scope.as_ref().map(|(s, id)| (cfg.scopes[*s].name.as_str(), id.as_str())));
        return Verdict::Wait(Box::new(Waiting { reply, rejection: r, tenant: reported, scope, key }));
    }
    finish_rejection(cfg, policy, reported, r, gate, scope)
}

fn store_error_verdict(cfg: &Config, e: StoreError, tenant: Option<String>) -> Verdict {
    match cfg.on_error {
        OnError::Allow => Verdict::Pass { error: Some(e) },
        OnError::Deny => Verdict::Reject {
            reply: Box::new(plain_reply(503, "quota_unavailable", "Quota state unavailable", tenant.as_deref())),
            tenant,
            rejection: None,
            error: Some(e),
            scope: None,
        },
    }
}

/// A refusal without a budget (the request's own input, or a service down): shadow mode
/// admits the request with the refusal's reason.
fn shadow_or_reject(cfg: &Config, reply: Reply) -> Verdict {
    let tenant = reply.tenant.clone();
    if cfg.mode == Mode::Shadow {
        Verdict::Admit(Box::new(Admitted {
            tenant: tenant.unwrap_or_default(),
            keep: 1.0,
            shadow: Some(reply.reason),
            ..Admitted::default()
        }))
    } else {
        Verdict::Reject { reply: Box::new(reply), tenant, rejection: None, error: None, scope: None }
    }
}

/// A budget's refusal; `scope` (index, id) when a scoped budget refused. Shadow mode admits
/// the request with the reason, its headline the refusing budget.
fn finish_rejection(cfg: &Config, policy: &TenantPolicy, tenant: String, r: Rejection, gate: &Gate, scope: Option<(usize, String)>) -> Verdict {
    let reply = reject_reply_in(cfg, policy, &tenant, &r, scope.as_ref().map(|(s, id)| (cfg.scopes[*s].name.as_str(), id.as_str())));
    if cfg.mode == Mode::Shadow {
        let headline = Usage { budget: r.budget, limit: r.limit, burst_credits: 0, used: r.limit, burst_taken: 0, used_before: r.limit, resets_in_ms: r.reset_s * 1000, window_start: 0, warned: None };
        // The refusing scope id, so the shadow rejection is counted under its label.
        let scopes = scope
            .map(|(sc, id)| vec![ScopeCharge { scope: sc, id, key: String::new(), runtime: None, reserved: Vec::new() }])
            .unwrap_or_default();
        return Verdict::Admit(Box::new(Admitted {
            tenant,
            keep: gate.terms.keep,
            priority: Some(gate.priority),
            headline: Some(headline),
            shadow: Some(reply.reason),
            scopes,
            ..Admitted::default()
        }));
    }
    Verdict::Reject { reply: Box::new(reply), tenant: Some(tenant), rejection: Some(r), error: None, scope }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
#[path = "fallback_tests.rs"]
mod fallback_tests;
#[cfg(test)]
mod cycle_tests;
