//! One request's path through the quota, independent of the host: tenant resolution,
//! demands per budget, the CAS-committed decision, and the replies and headers that follow.
//! The proxy-wasm layer feeds it header values and a store; tests feed it the same.

use crate::config::{Config, Counts, GlobalMode, Mode, OnError, OnUnavailable, Priority, TenantPolicy};
use crate::core::{self, saturation, Admit, Demand, Millis, Policy, Reason, Rejection, TenantState, Usage};
use crate::store::{self, Scratch, SharedStore, StoreError, TenantKind};

/// What the engine needs to know about a request's headers.
pub trait RequestHeaders {
    /// The value of a request header (lower-case name, pseudo-headers included).
    fn get(&mut self, name: &str) -> Option<Vec<u8>>;
}

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    /// `x-tenant-quota-reason`, also used as Envoy's response code details.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The tenant the reply is for, when it is known (access-log fields).
    pub tenant: Option<String>,
    /// The error as an LLM provider's SDK reads it, for replies on LLM API paths (SPEC 2).
    pub provider: reply::ProviderError,
}

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

pub fn parse_priority(v: &[u8]) -> Option<Priority> {
    if v.eq_ignore_ascii_case(b"low") {
        Some(Priority::Low)
    } else if v.eq_ignore_ascii_case(b"normal") {
        Some(Priority::Normal)
    } else if v.eq_ignore_ascii_case(b"vip") {
        Some(Priority::Vip)
    } else {
        None
    }
}

/// A non-negative decimal integer, at most 19 digits; `None` for anything else.
pub fn parse_units(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in v {
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &v[s..e]
}

pub mod log_fields;
pub mod reply;
pub use reply::{admitted_headers, plain_reply, LlmApi, ProviderError, policy_header, ratelimit_header, reject_reply, reject_reply_in};

/// Inputs from the host for one request.
pub struct RequestInput<'h, H: RequestHeaders> {
    pub headers: &'h mut H,
    /// The tenant id as read from the header or property (None: absent).
    pub tenant: Option<Vec<u8>>,
    /// The request has no body (headers carried end_of_stream).
    pub end_of_stream: bool,
    /// Current saturation level (0 normal, 1 elevated, 2 critical).
    pub level: u8,
    pub now: Millis,
    /// The rate limit service has not answered for long enough (SPEC 8).
    pub global_degraded: bool,
    /// Each scope's id as read (by scope index; None: absent). Empty without scopes.
    pub scope_ids: Vec<Option<Vec<u8>>>,
    /// What the JSON request body said, when it was read before admission (SPEC 5).
    pub llm_body: Option<LlmBody>,
}

/// The fields of an LLM request body that admission uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmBody {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    /// The client's body size (before any rewrite).
    pub bytes: u64,
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

/// Undo reservations: the tenant's (`tenant_reserved` under `tenant_key`) and each scope
/// id's. Best effort: a failure leaves units counted (the safe side) and is not retried.
#[allow(clippy::too_many_arguments)]
fn undo<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, tenant_key: &str, policy: &TenantPolicy, tenant_reserved: &[Demand], at: Millis, scopes: &[ScopeCharge]) {
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

/// Undo the local reservations of an admitted request the service then refused.
pub fn rollback<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &Admitted, policy: &TenantPolicy) -> Result<(), StoreError> {
    undo(cfg, store, w, &a.key, policy, &a.reserved, a.at, &a.scopes);
    Ok(())
}

mod exact;
pub use exact::{exact_finish, exact_request, ExactOutcome};

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

#[cfg(test)]
mod tests;
