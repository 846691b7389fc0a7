//! A request's decision as Envoy's access log formatters and tracers read it (opt-in
//! `filter_state`): one filter-state entry per field, under the key `wasm.<key>` (Envoy's
//! `setProperty` prefixes `wasm.`), each a plain string, read with
//! `%FILTER_STATE(wasm.<key>:PLAIN)%`. A field without a value is not written, so a log line
//! shows `-` for it. Pure: the filter hands each (key, value) pair to the host.

use super::{Admitted, Reply};
use crate::config::Config;

/// The tenant the request was counted as (`overflow` past `tenant.max_tracked`).
pub const TENANT: &str = "tenant_quota.tenant";
/// [`Outcome`] as a word.
pub const RESULT: &str = "tenant_quota.result";
/// The budget that decided: the refusing one, or for an admitted request the one closest to
/// exhaustion (the one its `x-tenant-quota-*` headers describe).
pub const BUDGET: &str = "tenant_quota.budget";
/// That budget's `max(limit - used, 0)` after the request (0 on a rejection).
pub const REMAINING: &str = "tenant_quota.remaining";
/// `x-tenant-quota-reason` of a rejection, `x-tenant-quota-warning` of a warned request,
/// `x-tenant-quota-shadow` of a shadow would-be rejection.
pub const REASON: &str = "tenant_quota.reason";
/// Prefix of one key per scope the decision counted: `tenant_quota.scope.<scope>` = the id.
pub const SCOPE_PREFIX: &str = "tenant_quota.scope.";
/// OpenTelemetry GenAI semantic conventions' attribute names, under the filter's namespace.
pub const MODEL: &str = "tenant_quota.gen_ai.request.model";
pub const INPUT_TOKENS: &str = "tenant_quota.gen_ai.usage.input_tokens";
pub const OUTPUT_TOKENS: &str = "tenant_quota.gen_ai.usage.output_tokens";

/// What the filter did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// A local reply: 429, or 400/401/503 (`reason` says which).
    Rejected,
    /// Admitted past a `warn` budget's cap (SPEC 6).
    Warned,
    /// Admitted after waiting in a queue (SPEC 6).
    Queued,
    /// Would have been rejected, admitted because the mode is `shadow`.
    Shadow,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Rejected => "rejected",
            Outcome::Warned => "warned",
            Outcome::Queued => "queued",
            Outcome::Shadow => "shadow",
        }
    }

    /// An admitted request's outcome: shadow before warned before queued.
    pub fn of_admitted(a: &Admitted) -> Outcome {
        if a.shadow.is_some() {
            Outcome::Shadow
        } else if !a.warnings.is_empty() {
            Outcome::Warned
        } else if a.queued_ms.is_some() {
            Outcome::Queued
        } else {
            Outcome::Allowed
        }
    }
}

/// The fields of an admitted request, handed to `put` one by one (its model included; its
/// tokens come later, from [`usage_fields`]).
pub fn admitted_fields(cfg: &Config, a: &Admitted, mut put: impl FnMut(&str, &str)) {
    put(TENANT, &a.tenant);
    put(RESULT, Outcome::of_admitted(a).as_str());
    if let Some(u) = &a.headline {
        if let Some(b) = cfg.budgets.get(u.budget) {
            put(BUDGET, &b.name);
            let mut buf = [0u8; 20];
            put(REMAINING, crate::wire::fmt_u64(u.remaining(), &mut buf));
        }
    }
    if let Some(s) = &a.shadow {
        put(REASON, s);
    } else if !a.warnings.is_empty() {
        put(REASON, &a.warnings.join(","));
    }
    let mut key = String::new();
    for c in &a.scopes {
        if let Some(sc) = cfg.scopes.get(c.scope) {
            key.clear();
            key.push_str(SCOPE_PREFIX);
            key.push_str(&sc.name);
            put(&key, &c.id);
        }
    }
    if let Some(m) = &a.model {
        put(MODEL, m);
    }
}

/// The fields of a local reply (the reply's own headers name its budget and scope).
pub fn reply_fields(r: &Reply, mut put: impl FnMut(&str, &str)) {
    if let Some(t) = &r.tenant {
        put(TENANT, t);
    }
    put(RESULT, Outcome::Rejected.as_str());
    put(REASON, &r.reason);
    let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(b) = header("x-tenant-quota-budget") {
        put(BUDGET, b);
        put(REMAINING, "0");
    }
    if let (Some(s), Some(id)) = (header("x-tenant-quota-scope"), header("x-tenant-quota-scope-id")) {
        put(&format!("{SCOPE_PREFIX}{s}"), id);
    }
}

/// The tokens an LLM response reported.
pub fn usage_fields(u: crate::llm::Usage, mut put: impl FnMut(&str, &str)) {
    let mut buf = [0u8; 20];
    put(INPUT_TOKENS, crate::wire::fmt_u64(u.input, &mut buf));
    put(OUTPUT_TOKENS, crate::wire::fmt_u64(u.output, &mut buf));
}
