//! One request's path through the quota, independent of the host: tenant resolution,
//! demands per budget, the CAS-committed decision, and the replies and headers that follow.
//! The proxy-wasm layer feeds it header values and a store; tests feed it the same.

use crate::config::{Config, Counts, GlobalMode, Mode, OnError, OnUnavailable, Priority, TenantPolicy};
use crate::core::{self, saturation, Admit, Demand, Policy, Reason, Rejection, TenantState, Usage};
use crate::store::{self, Scratch, SharedStore, StoreError, TenantKind};

mod admitted;
mod after;
mod commit;
mod exact;
mod facts;
pub mod log_fields;
mod reply;

pub(crate) use admitted::global_marks;
pub use admitted::{AfterCharge, Admitted, LlmCharge, ScopeCharge};
pub use after::{charge, llm_settle, release};
use commit::undo;
pub use commit::rollback;
pub use exact::{exact_finish, exact_request, ExactOutcome};
pub use facts::{parse_priority, parse_units, LlmBody, RequestHeaders, RequestInput};
use facts::trim;
pub use reply::{admitted_headers, plain_reply, policy_header, ratelimit_header, reject_reply, reject_reply_in, Reply};

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
    /// Runtime overrides exist (the host sets it): scope ids are looked up only then.
    pub has_overrides: bool,
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

fn shadow_or_reject(cfg: &Config, reply: Reply, tenant: Option<String>) -> Verdict {
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

/// Decide one request. Pure apart from the store.
pub fn evaluate<S: SharedStore, H: RequestHeaders>(
    cfg: &Config,
    store: &S,
    w: &mut Worker,
    input: RequestInput<'_, H>,
    overrides: &dyn Fn(&str) -> Option<TenantPolicy>,
) -> Verdict {
    if cfg.mode == Mode::Off {
        return Verdict::Pass { error: None };
    }
    // 1. Tenant.
    let (tenant, kind) = match input.tenant.filter(|t| !t.is_empty()) {
        None => match &cfg.fallback {
            Some(f) => (f.clone(), TenantKind::Named),
            None => {
                let reply = plain_reply(401, "missing_tenant", "Tenant id required", None);
                return shadow_or_reject(cfg, reply, None);
            }
        },
        Some(raw) => {
            if !crate::config::valid_tenant_id(&raw) {
                let reply = plain_reply(400, "invalid_tenant", "Invalid tenant id", None);
                return shadow_or_reject(cfg, reply, None);
            }
            // Valid ids are ASCII, so this cannot fail.
            let id = String::from_utf8(raw).unwrap_or_default();
            let kind = if cfg.tenants.contains_key(&id) { TenantKind::Named } else { TenantKind::Dynamic };
            (id, kind)
        }
    };
    let runtime = overrides(&tenant);
    let policy: &TenantPolicy = runtime.as_ref().unwrap_or_else(|| cfg.policy(&tenant));
    // 2. Priority: a request may lower its own, never raise it.
    // The priority only matters to saturation, so the header is read only when configured.
    let mut priority = policy.priority;
    if cfg.saturation.is_some() {
        if let Some(p) = input.headers.get("x-tenant-quota-priority").and_then(|v| parse_priority(trim(&v))) {
            priority = priority.min(p);
        }
    }
    let keep = saturation::keep(cfg.saturation.as_ref(), input.level, priority);
    let sat_retry = cfg.saturation.as_ref().map_or(5, |s| s.retry_after_s);
    // 2b. Scope ids (SPEC 7): an absent id leaves the scope's budgets out; an invalid one is
    // refused like an invalid tenant id.
    let mut scope_ids: Vec<Option<(String, TenantKind, Option<TenantPolicy>)>> = Vec::new();
    for (i, sc) in cfg.scopes.iter().enumerate() {
        let raw = input.scope_ids.get(i).cloned().flatten().filter(|v| !v.is_empty());
        let Some(raw) = raw else {
            scope_ids.push(None);
            continue;
        };
        if !crate::config::valid_tenant_id(&raw) {
            let mut reply = plain_reply(400, "invalid_scope", "Invalid scope id", Some(&tenant));
            reply.headers.push(("x-tenant-quota-scope".into(), sc.name.clone()));
            return shadow_or_reject(cfg, reply, Some(tenant));
        }
        let id = String::from_utf8(raw).unwrap_or_default();
        let kind = if sc.ids.contains_key(&id) { TenantKind::Named } else { TenantKind::Dynamic };
        // Runtime overrides of scope ids are kept under "<scope> <id>" (admin.rs).
        let runtime = if w.has_overrides { overrides(&format!("{} {}", sc.name, id)) } else { None };
        scope_ids.push(Some((id, kind, runtime)));
    }
    let mut scope_demands: Vec<Vec<Demand>> = vec![Vec::new(); cfg.scopes.len()];
    // 3. Demands.
    // Read :method and :path only if some budget's match needs them.
    let method = if cfg.budgets.iter().any(|b| !b.matcher.methods.is_empty()) {
        String::from_utf8_lossy(&input.headers.get(":method").unwrap_or_default()).into_owned()
    } else {
        String::new()
    };
    let path = if cfg.budgets.iter().any(|b| b.matcher.path_prefix.is_some()) {
        String::from_utf8_lossy(&input.headers.get(":path").unwrap_or_default()).into_owned()
    } else {
        String::new()
    };
    // The model, for LLM budgets (SPEC 5): read only if one exists.
    let model: Option<String> = match &cfg.llm.model {
        Some(crate::config::ModelSource::Header(h)) if cfg.budgets.iter().any(|b| b.counts.is_llm() || !b.matcher.models.is_empty()) => {
            input.headers.get(h).and_then(|v| String::from_utf8(trim(&v).to_vec()).ok()).filter(|m| !m.is_empty())
        }
        Some(crate::config::ModelSource::RequestBody) => input.llm_body.as_ref().and_then(|b| b.model.clone()),
        _ => None,
    };
    let mut llm = Vec::new();
    w.demands.clear();
    let mut exact = Vec::new();
    // SPEC 8: `exact` budgets wait for the service, unless it is down (then `on_unavailable`
    // decides them like `sync` ones) or nothing may wait (shadow mode).
    let global = cfg.global.as_ref();
    let exact_waits = cfg.mode == Mode::Enforce && !input.global_degraded;
    let view = match global.map(|g| g.on_unavailable) {
        Some(OnUnavailable::LocalShare(n)) if input.global_degraded => core::GlobalView::LocalShare(n),
        _ => core::GlobalView::Remote,
    };
    let mut after = Vec::new();
    let mut in_flight = Vec::new();
    let mut shadow_cost: Option<String> = None;
    for (i, b) in cfg.budgets.iter().enumerate() {
        if !b.matcher.is_any() && !b.matcher.matches(&method, &path) {
            continue;
        }
        if !b.matcher.models.is_empty() && !crate::llm::matches_any(&b.matcher.models, model.as_deref()) {
            continue;
        }
        let limits = match b.scope {
            None => &policy.limits,
            Some(sc) => match &scope_ids[sc] {
                None => continue,
                Some((id, _, runtime)) => &runtime.as_ref().unwrap_or_else(|| cfg.scopes[sc].policy(id)).limits,
            },
        };
        if limits[i].unlimited {
            continue;
        }
        let d = match &b.counts {
            Counts::Requests => Demand { budget: i, units: 1, admit: Admit::Reserve },
            Counts::RequestBytes => match input.headers.get("content-length").and_then(|v| parse_units(&v)) {
                Some(n) => Demand { budget: i, units: n, admit: Admit::Reserve },
                None if input.end_of_stream => Demand { budget: i, units: 0, admit: Admit::Reserve },
                None => {
                    after.push(AfterCharge { budget: i, response_header: None });
                    Demand { budget: i, units: 0, admit: Admit::Probe }
                }
            },
            Counts::RequestHeader(h) => match input.headers.get(h) {
                None => Demand { budget: i, units: 0, admit: Admit::Reserve },
                Some(v) => match parse_units(&v) {
                    Some(n) => Demand { budget: i, units: n, admit: Admit::Reserve },
                    None => {
                        let reply = plain_reply(400, "invalid_cost", "Invalid cost header", Some(&tenant));
                        if cfg.mode == Mode::Shadow {
                            shadow_cost = Some(reply.reason);
                            Demand { budget: i, units: 0, admit: Admit::Reserve }
                        } else {
                            return Verdict::Reject { reply: Box::new(reply), tenant: Some(tenant), rejection: None, error: None, scope: None };
                        }
                    }
                },
            },
            Counts::ResponseHeader(h) => {
                after.push(AfterCharge { budget: i, response_header: Some(h.clone()) });
                Demand { budget: i, units: 0, admit: Admit::Probe }
            }
            Counts::InFlight => {
                in_flight.push(i);
                Demand { budget: i, units: 1, admit: Admit::Reserve }
            }
            Counts::LlmTokens(_) | Counts::LlmCost => {
                // The reserve (SPEC 5): output tokens = the body's max-tokens field, else
                // default_reserve_tokens; input tokens = ceil(body bytes / 4) when the body was
                // read, else 0; cost = that priced.
                let reserve = match &input.llm_body {
                    Some(body) => crate::llm::Usage { input: body.bytes.div_ceil(4), output: body.max_tokens.unwrap_or(cfg.llm.default_reserve_tokens) },
                    None => crate::llm::Usage { input: 0, output: cfg.llm.default_reserve_tokens },
                };
                let units = match &b.counts {
                    Counts::LlmTokens(k) => reserve.tokens(*k),
                    _ => match cfg.llm.prices.get(model.as_deref()) {
                        Some(p) => crate::llm::cost(reserve, p),
                        None => {
                            let reply = plain_reply(400, "unpriced_model", "The request's model has no price", Some(&tenant));
                            if cfg.mode == Mode::Shadow {
                                shadow_cost = Some(reply.reason);
                                continue;
                            }
                            return Verdict::Reject { reply: Box::new(reply), tenant: Some(tenant), rejection: None, error: None, scope: None };
                        }
                    },
                };
                llm.push(LlmCharge { budget: i, reserved: units });
                Demand { budget: i, units, admit: if units == 0 { Admit::Probe } else { Admit::Reserve } }
            }
        };
        if b.global.is_some() && input.global_degraded && global.is_some_and(|g| g.on_unavailable == OnUnavailable::Deny) {
            let reply = plain_reply(503, "quota_unavailable", "Global quota service unavailable", Some(&tenant));
            return shadow_or_reject(cfg, reply, Some(tenant));
        }
        if b.global == Some(GlobalMode::Exact) && exact_waits {
            exact.push(d);
            continue;
        }
        match b.scope {
            Some(sc) => scope_demands[sc].push(d),
            None => w.demands.push(d),
        }
    }
    // 4. Saturation may refuse this priority outright.
    if keep <= 0.0 {
        let budget = w.demands.first().or_else(|| scope_demands.iter().flatten().next()).map(|d| d.budget);
        let r = match budget {
            Some(b) => Rejection {
                budget: b,
                reason: Reason::SaturationThrottle,
                retry_after_s: sat_retry,
                limit: 0,
                reset_s: sat_retry,
                queue: false,
                window_s: core::window_s(input.now, policy.limits[b].window_ms),
            },
            None => {
                let mut reply = plain_reply(429, "saturation_throttle", "Tenant throttled while the service is saturated", Some(&tenant));
                reply.headers.push(("retry-after".into(), sat_retry.to_string()));
                return shadow_or_reject(cfg, reply, Some(tenant));
            }
        };
        return finish_rejection(cfg, policy, tenant, r, keep, priority);
    }
    let scoped = scope_demands.iter().any(|d| !d.is_empty());
    if w.demands.is_empty() && exact.is_empty() && !scoped {
        return Verdict::Admit(Box::new(Admitted { tenant, keep, priority: Some(priority), shadow: shadow_cost, ..Admitted::default() }));
    }
    // 5. Decide and commit under CAS: the tenant's budgets first, then each scope's in name
    // order (SPEC 7). Each is one exact CAS on its own key; a refusal undoes, by CAS, what the
    // earlier ones reserved, so a refused request consumes nothing anywhere. While it is being
    // undone a concurrent request may see those units and be refused too, never admitted
    // beyond a limit: every admission is checked against counts that include them.
    let pol = Policy { budgets: &cfg.budgets, limits: &policy.limits, keep, saturation_retry_after_s: sat_retry, global: view };
    let token = w.token();
    let mut reported = tenant.clone();
    let mut tenant_key = String::new();
    let mut all_usage: Vec<Usage> = Vec::new();
    let tenant_reserved: Vec<Demand> = if scoped || !exact.is_empty() { w.demands.clone() } else { Vec::new() };
    // An `exact` budget's subject needs its key resolved here, for its units to be recorded.
    let exact_in = |scope: Option<usize>| exact.iter().any(|d| cfg.budgets[d.budget].scope == scope);
    if !w.demands.is_empty() || exact_in(None) {
        let Worker { scratch, demands, usage, .. } = &mut *w;
        store::tenant_key(&tenant, &mut scratch.key);
        let mut run = |scratch: &mut Scratch| {
            store::transact(store, scratch, |st: &mut TenantState| match core::decide(&pol, st, input.now, demands, usage) {
                Ok(()) => (true, Ok(())),
                Err(r) => (false, Err(r)),
            })
        };
        let mut result = run(scratch);
        if result == Err(StoreError::Missing) {
            if let Err(e) = store::resolve(store, &tenant, kind, cfg.max_tracked, input.now, token, scratch) {
                return store_error_verdict(cfg, e, Some(tenant));
            }
            result = run(scratch);
        }
        if scratch.key.ends_with("|overflow") {
            reported = crate::core::id::OVERFLOW.to_string();
        }
        match result {
            Err(e) => return store_error_verdict(cfg, e, Some(reported)),
            Ok(Err(r)) if r.queue && cfg.mode == Mode::Enforce => {
                let reply = reject_reply(cfg, policy, &reported, &r);
                return Verdict::Wait(Box::new(Waiting { reply, rejection: r, tenant: reported, scope: None, key: scratch.key.clone() }));
            }
            Ok(Err(r)) => return finish_rejection(cfg, policy, reported, r, keep, priority),
            Ok(Ok(())) => {}
        }
        tenant_key.clone_from(&scratch.key);
        all_usage.extend_from_slice(usage);
    }
    let mut charged: Vec<ScopeCharge> = Vec::new();
    for (sc, ds) in scope_demands.into_iter().enumerate() {
        if ds.is_empty() && !exact_in(Some(sc)) {
            continue;
        }
        let Some((id, skind, runtime)) = scope_ids[sc].take() else { continue };
        let space = store::Space::Scope(&cfg.scopes[sc].name);
        let spolicy = runtime.as_ref().unwrap_or_else(|| cfg.scopes[sc].policy(&id));
        let spol = Policy { budgets: &cfg.budgets, limits: &spolicy.limits, keep, saturation_retry_after_s: sat_retry, global: view };
        let Worker { scratch, usage, .. } = &mut *w;
        space.key(&id, &mut scratch.key);
        let mut run = |scratch: &mut Scratch| {
            store::transact(store, scratch, |st: &mut TenantState| match core::decide(&spol, st, input.now, &ds, usage) {
                Ok(()) => (true, Ok(())),
                Err(r) => (false, Err(r)),
            })
        };
        let mut result = run(scratch);
        if result == Err(StoreError::Missing) {
            // The same lock token as the tenant's: each space has its own registry lock.
            match store::resolve_in(store, space, &id, skind, cfg.scopes[sc].max_tracked, input.now, token, scratch) {
                Ok(()) => result = run(scratch),
                Err(e) => result = Err(e),
            }
        }
        let sid = if scratch.key.starts_with("tq1|so|") { crate::core::id::OVERFLOW.to_string() } else { id };
        match result {
            Ok(Ok(())) => {
                all_usage.extend_from_slice(usage);
                let key = scratch.key.clone();
                charged.push(ScopeCharge { scope: sc, id: sid, key, runtime, reserved: ds });
            }
            Ok(Err(r)) => {
                let key = scratch.key.clone();
                undo(cfg, store, w, &tenant_key, policy, &tenant_reserved, input.now, &charged);
                if r.queue && cfg.mode == Mode::Enforce {
                    let reply = reject_reply_in(cfg, spolicy, &reported, &r, Some((cfg.scopes[sc].name.as_str(), sid.as_str())));
                    return Verdict::Wait(Box::new(Waiting { reply, rejection: r, tenant: reported, scope: Some((sc, sid)), key }));
                }
                return finish_rejection_in(cfg, spolicy, reported, r, keep, priority, Some((sc, sid)));
            }
            Err(e) => {
                undo(cfg, store, w, &tenant_key, policy, &tenant_reserved, input.now, &charged);
                return store_error_verdict(cfg, e, Some(reported));
            }
        }
    }
    let (global_dirty, global_urgent) = global_marks(cfg, &all_usage);
    let mut warned: Vec<(usize, String)> =
        all_usage.iter().filter_map(|u| u.warned.map(|r| (u.budget, r.header_value(&cfg.budgets[u.budget].name)))).collect();
    warned.sort();
    Verdict::Admit(Box::new(Admitted {
        warnings: warned.into_iter().map(|(_, r)| r).collect(),
        queued_ms: None,
        llm,
        model,
        headline: core::closest_to_exhaustion(&all_usage).copied(),
        usage: all_usage,
        tenant: reported,
        key: tenant_key,
        priority: Some(priority),
        keep,
        shadow: shadow_cost,
        in_flight,
        after,
        reserved: if exact.is_empty() { Vec::new() } else { tenant_reserved },
        exact,
        at: input.now,
        global_dirty,
        global_urgent,
        scopes: charged,
    }))
}



fn finish_rejection(cfg: &Config, policy: &TenantPolicy, tenant: String, r: Rejection, keep: f64, priority: Priority) -> Verdict {
    finish_rejection_in(cfg, policy, tenant, r, keep, priority, None)
}

fn finish_rejection_in(cfg: &Config, policy: &TenantPolicy, tenant: String, r: Rejection, keep: f64, priority: Priority, scope: Option<(usize, String)>) -> Verdict {
    let reply = reject_reply_in(cfg, policy, &tenant, &r, scope.as_ref().map(|(s, id)| (cfg.scopes[*s].name.as_str(), id.as_str())));
    if cfg.mode == Mode::Shadow {
        let headline = Usage { budget: r.budget, limit: r.limit, burst_credits: 0, used: r.limit, burst_taken: 0, used_before: r.limit, resets_in_ms: r.reset_s * 1000, window_start: 0, warned: None };
        // The refusing scope id, so the shadow rejection is counted under its label.
        let scopes = scope
            .map(|(sc, id)| vec![ScopeCharge { scope: sc, id, key: String::new(), runtime: None, reserved: Vec::new() }])
            .unwrap_or_default();
        return Verdict::Admit(Box::new(Admitted {
            tenant,
            keep,
            priority: Some(priority),
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