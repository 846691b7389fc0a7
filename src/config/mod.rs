//! Configuration: bytes -> [`Config`], a value that cannot be invalid.
//!
//! Parsing is two steps, as in Kuadrant's wasm-shim: serde into the raw structs of
//! [`raw`] (which refuse unknown keys and wrong types, and report the key path through
//! `serde_path_to_error`), then `compile`, which checks meaning (zero windows, unknown budgets
//! in overrides, bad tenant ids, thresholds out of order). Each top-level block has its own
//! file with its type and its compile step (`tenant`, `budget`, `policy`, `scopes`, `llm`,
//! `global`, `saturation`, `admin`, `webhook`); the rules that tie blocks together are in
//! `rules`, in one list.

mod admin;
mod budget;
mod cycle;
mod error;
mod global;
mod llm;
mod policy;
mod providers;
pub mod raw;
mod rules;
mod saturation;
mod scopes;
mod tenant;
mod webhook;

pub use crate::core::budget::{Algorithm, Budget, Counts, GlobalMode, Limits, Match, OnExceed, Priority, Queue, Saturation, Signal, SignalSource, TokenKind};
pub use crate::core::id::{fnv1a, valid_tenant_id, DEFAULT_MAX_TRACKED, MAX_BUDGETS, MAX_TENANT_ID_LEN};
pub use admin::{parse_source_ip, Admin, Cidr};
pub use error::ConfigError;
pub use global::{Global, OnUnavailable, GLOBAL_WINDOWS_MS};
pub use llm::{Llm, ModelSource};
pub use providers::{Providers, DEFAULT_ROUTE_HEADER};
pub use raw::ProviderBy;
pub use crate::core::budget::Target;
pub use policy::{compile_subject_on, compile_tenant, compile_tenant_on, TenantPolicy};
pub use raw::{Level, Mode, OnError, RawTenant};
pub use scopes::Scope;
pub use tenant::TenantSource;
pub use webhook::Webhook;
use crate::core::{Subject, Window};
use raw::RawConfig;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub tenant_source: TenantSource,
    /// `None`: requests without a tenant id are rejected with 401.
    pub fallback: Option<String>,
    pub max_tracked: u64,
    /// Budgets sorted by name: checked in this order, so the rejecting budget is deterministic.
    pub budgets: Vec<Budget>,
    pub tenants: BTreeMap<String, TenantPolicy>,
    pub default_policy: TenantPolicy,
    pub saturation: Option<Saturation>,
    pub admin: Option<Admin>,
    pub on_error: OnError,
    /// Whether any budget needs `:path`/`:method`.
    pub needs_match: bool,
    pub global: Option<Global>,
    /// Scopes in name order (SPEC 7); budgets refer to them by index.
    pub scopes: Vec<Scope>,
    /// SPEC 5 (defaults when the block is absent).
    pub llm: Llm,
    pub alerts_webhook: Option<Webhook>,
    /// Upstream providers' cooldowns and fallbacks (None: no cooldowns).
    pub providers: Option<Providers>,
    /// The request header a fallback's `upstream` sets (`providers.route_header`).
    pub route_header: String,
    /// Write each request's decision into Envoy filter state, for access logs and trace tags
    /// (`engine::log_fields`). Off by default: every field is a host call per request.
    pub filter_state: bool,
    /// Test-only: see [`raw::RawTestHooks`].
    pub trap_sync_leader_path: Option<String>,
    pub trap_path: Option<String>,
}

/// Budget, scope and signal names: 1-64 characters of `[A-Za-z0-9_-]`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every byte printable ASCII other than space (true for "": callers check the length).
fn visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl Config {
    /// Whether a fallback may rewrite a request's model (then a read body may change length).
    pub fn rewrites_model(&self) -> bool {
        let model = |t: &Target| t.model.is_some();
        self.budgets.iter().any(|b| b.fallback.as_ref().is_some_and(model)) || self.providers.as_ref().is_some_and(|p| p.fallbacks.values().any(model))
    }

    /// Parse and validate the plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de)?;
        compile(raw)
    }

    pub fn policy(&self, tenant: &str) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.default_policy)
    }

    /// The subject `id` of a scope (by index; None: a tenant).
    pub fn subject<'a>(&'a self, scope: Option<usize>, id: &'a str) -> Subject<'a> {
        match scope {
            None => Subject::Tenant(id),
            Some(ix) => Subject::Scope { ix, name: &self.scopes[ix].name, id },
        }
    }

    /// The subject `id` of the scope named `name`, if it is configured.
    pub fn scope_subject<'a>(&'a self, name: &str, id: &'a str) -> Option<Subject<'a>> {
        let ix = self.scopes.iter().position(|s| s.name == name)?;
        Some(Subject::Scope { ix, name: &self.scopes[ix].name, id })
    }

    /// A subject's configured policy (its entry, or its space's default).
    pub fn configured_policy(&self, who: Subject<'_>) -> &TenantPolicy {
        match who {
            Subject::Tenant(id) => self.policy(id),
            Subject::Scope { ix, id, .. } => self.scopes[ix].policy(id),
        }
    }

    /// Whether a subject is named in the configuration.
    pub fn configures(&self, who: Subject<'_>) -> bool {
        match who {
            Subject::Tenant(id) => self.tenants.contains_key(id),
            Subject::Scope { ix, id, .. } => self.scopes[ix].ids.contains_key(id),
        }
    }

    /// Legal but doubtful settings, for the log at configure (SPEC 6).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.budgets.iter().filter(|b| b.on_exceed == OnExceed::Queue) {
            let t = b.queue.timeout_ms;
            if t == 0 {
                out.push(format!("budgets.{}.queue.timeout_ms is 0: requests never wait (the budget rejects)", b.name));
            } else if t > 15_000 {
                out.push(format!("budgets.{}.queue.timeout_ms is {t} ms, longer than Envoy's default route timeout (15 s): check the route's timeout", b.name));
            }
            let long = match b.limits.window {
                Window::None => None,
                Window::Fixed(ms) => (ms.get() / t.max(1) > 100).then(|| format!("a window of {ms} ms")),
                Window::CalendarMonth => Some("a calendar month".to_string()),
                Window::Cycle(_) => Some("a billing cycle".to_string()),
            };
            if let (Some(window), true) = (long, t > 0) {
                out.push(format!("budgets.{}: {window} is far longer than the queue timeout ({t} ms): few waiting requests will ever see it roll over", b.name));
            }
        }
        out
    }

    pub fn budget_index(&self, name: &str) -> Option<usize> {
        self.budgets.iter().position(|b| b.name == name)
    }
}

/// Each block on its own, then the rules between blocks. Budgets come before the blocks
/// that refer to them (scope ids and tenants override budgets' limits).
fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let tenant = tenant::compile(raw.tenant.unwrap_or_default())?;
    let budgets = budget::compile_all(&raw.budgets, &raw.scopes)?;
    let llm = llm::compile(raw.llm.as_ref())?;
    let alerts_webhook = raw.alerts_webhook.as_ref().map(webhook::compile).transpose()?;
    let scopes = scopes::compile_all(&raw.scopes, &budgets)?;
    let tenants = tenant::compile_tenants(&raw.tenants, &budgets)?;
    let default_policy = compile_tenant("", &budgets, &RawTenant::default())?;
    let saturation = raw.saturation.as_ref().map(saturation::compile).transpose()?;
    let admin = raw.admin.as_ref().map(admin::compile).transpose()?;
    let global = raw.global.as_ref().map(global::compile).transpose()?;
    let (providers, route_header) = providers::compile(raw.providers.as_ref())?;
    rules::check(&budgets, &scopes, &llm, global.as_ref())?;
    rules::fallbacks(&budgets, &llm, providers.as_ref())?;
    let hooks = raw.test_hooks.unwrap_or_default();
    Ok(Config {
        mode: raw.mode.unwrap_or_default(),
        tenant_source: tenant.source,
        fallback: tenant.fallback,
        max_tracked: tenant.max_tracked,
        needs_match: budgets.iter().any(|b| !b.matcher.is_any()),
        budgets,
        tenants,
        default_policy,
        saturation,
        admin,
        on_error: raw.on_error.unwrap_or_default(),
        global,
        scopes,
        llm,
        alerts_webhook,
        providers,
        route_header,
        filter_state: raw.filter_state.unwrap_or(false),
        trap_sync_leader_path: hooks.trap_sync_leader_path,
        trap_path: hooks.trap_path,
    })
}

#[cfg(test)]
pub(crate) mod tests;
