//! The configuration as written by the operator: serde structs that mirror SPEC section 1
//! key for key. Every struct refuses unknown keys; `counts`, `on_unavailable` and `model` are
//! read by the serde enums of [`tagged`]; semantic checks happen in `compile`.

mod tagged;

use super::{ModelSource, OnUnavailable};
use crate::core::budget::{Algorithm, Counts, GlobalMode, OnExceed, Priority};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub tenant: Option<RawTenantSource>,
    #[serde(default)]
    pub budgets: BTreeMap<String, RawBudget>,
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenant>,
    #[serde(default)]
    pub saturation: Option<RawSaturation>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub on_error: Option<OnError>,
    #[serde(default)]
    pub global: Option<RawGlobal>,
    #[serde(default)]
    pub scopes: BTreeMap<String, RawScope>,
    #[serde(default)]
    pub llm: Option<RawLlm>,
    #[serde(default)]
    pub alerts_webhook: Option<RawWebhook>,
    /// Upstream providers: cooldowns after a 429/503 and their fallbacks, the route header.
    #[serde(default)]
    pub providers: Option<RawProviders>,
    /// Write each request's decision into Envoy filter state (access logs, trace tags).
    #[serde(default)]
    pub filter_state: Option<bool>,
    /// Test-only hooks (tests/e2e_global.rs); never set in production.
    #[serde(default)]
    pub test_hooks: Option<RawTestHooks>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTestHooks {
    /// A request to this path makes the worker's VM trap if it holds the global sync lease
    /// (409 otherwise): how the tests kill the lease holder.
    #[serde(default)]
    pub trap_sync_leader_path: Option<String>,
    /// A request to this path makes the VM handling it trap (tests of slot reclaim).
    #[serde(default)]
    pub trap_path: Option<String>,
}

/// SPEC 5: where threshold crossings are POSTed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub cluster: String,
    pub path: String,
}

/// SPEC 5: LLM gateways.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// `{"header": H}` or `{"request_body": "model"}` (see [`tagged`]).
    #[serde(default, deserialize_with = "tagged::optional")]
    pub model: Option<ModelSource>,
    #[serde(default)]
    pub request_body: Option<bool>,
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    #[serde(default)]
    pub default_reserve_tokens: Option<u64>,
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: u64,
    pub output: u64,
}

/// SPEC 7: a further identity requests carry (team, project, ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub metadata: Option<Vec<String>>,
    #[serde(default)]
    pub max_tracked: Option<u64>,
    #[serde(default)]
    pub ids: BTreeMap<String, RawScopeId>,
}

/// A scope id's overrides: a `tenants` entry without `priority`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawScopeId {
    #[serde(default)]
    pub unlimited: Option<bool>,
    #[serde(default)]
    pub budgets: BTreeMap<String, RawOverride>,
    #[serde(default)]
    pub billing: Option<RawBilling>,
}

impl From<&RawScopeId> for RawTenant {
    fn from(r: &RawScopeId) -> RawTenant {
        RawTenant { priority: None, unlimited: r.unlimited, budgets: r.budgets.clone(), billing: r.billing.clone() }
    }
}

/// SPEC 8: the rate limit service that global budgets sync with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    pub cluster: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub sync_period_ms: Option<i64>,
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// `"local"`, `"deny"` or `{"local_share": N}` (see [`tagged`]).
    #[serde(default, deserialize_with = "tagged::optional")]
    pub on_unavailable: Option<OnUnavailable>,
}


#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Off,
    Shadow,
    #[default]
    Enforce,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTenantSource {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub metadata: Option<Vec<String>>,
    /// Absent: "anonymous". `null`: reject requests without a tenant (401).
    #[serde(default, deserialize_with = "double_option")]
    pub fallback: Option<Option<String>>,
    #[serde(default)]
    pub max_tracked: Option<u64>,
}

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// `"requests"`, `"request_bytes"`, `"in_flight"`, `"llm_cost"`, `{"request_header": H}`,
    /// `{"response_header": H}` or `{"llm_tokens": K}` (see [`tagged`]).
    #[serde(deserialize_with = "tagged::deserialize")]
    pub counts: Counts,
    #[serde(default)]
    pub window_ms: Option<i64>,
    /// `"calendar_month"` (SPEC 5) or a billing cycle, instead of `window_ms`.
    #[serde(default)]
    pub window: Option<RawWindow>,
    pub limit: u64,
    #[serde(default)]
    pub burst_credits: Option<u64>,
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    #[serde(default, rename = "match")]
    pub match_: Option<RawMatch>,
    #[serde(default)]
    pub global: Option<GlobalMode>,
    /// SPEC 7: count per id of this scope instead of per tenant.
    #[serde(default)]
    pub scope: Option<String>,
    /// SPEC 6: what a request that does not fit gets.
    #[serde(default)]
    pub on_exceed: Option<OnExceed>,
    #[serde(default)]
    pub queue: Option<RawQueue>,
    /// For `on_exceed: fallback`: where the request goes instead.
    #[serde(default)]
    pub fallback: Option<RawTarget>,
    /// Percentages of `limit` whose crossing is logged and counted (SPEC 5).
    #[serde(default)]
    pub alerts: Option<Vec<u64>>,
}


/// Where a rerouted request goes: another model, another upstream (the route header's value).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
}

/// `providers`: what names an upstream provider, when one cools after pushing back, and where
/// its requests go meanwhile.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    /// `"cluster"` (the route's upstream cluster) or `"model"`.
    #[serde(default)]
    pub by: Option<ProviderBy>,
    #[serde(default)]
    pub route_header: Option<String>,
    #[serde(default)]
    pub cooldown_on: Option<Vec<u32>>,
    #[serde(default)]
    pub cooldown_s: Option<u64>,
    #[serde(default)]
    pub max_cooldown_s: Option<u64>,
    #[serde(default)]
    pub fallbacks: BTreeMap<String, RawTarget>,
}

/// What names a provider (`providers.by`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderBy {
    /// The upstream cluster of the request's route (Envoy's `xds.cluster_name`).
    #[default]
    Cluster,
    /// The request's model (`llm.model`).
    Model,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    #[serde(default)]
    pub max_waiting: Option<u64>,
}


#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Model names; a trailing `*` matches any suffix (SPEC 5).
    #[serde(default)]
    pub models: Option<Vec<String>>,
}


#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub unlimited: Option<bool>,
    #[serde(default)]
    pub budgets: BTreeMap<String, RawOverride>,
    /// The subject's own billing-cycle anchor (day, time zone) for every cycle budget.
    #[serde(default)]
    pub billing: Option<RawBilling>,
}

/// A budget's `window` when it is not `window_ms`: a name (`"calendar_month"`) or a billing
/// cycle object (read in `tagged`).
#[derive(Debug, Clone)]
pub enum RawWindow {
    Named(String),
    Cycle(RawCycle),
}

/// `{"cycle": "monthly", "day": 15, "time_zone": "America/New_York"}` or
/// `{"cycle": "daily", "time_zone": "Asia/Tokyo"}`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCycle {
    pub cycle: CycleKind,
    #[serde(default)]
    pub day: Option<RawDay>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A cycle's day of the month: 1..=31, or `"last"` read as 31 (every month's last day);
/// anything else is refused while it is read (see `tagged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDay(pub u8);

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CycleKind {
    Daily,
    Monthly,
}

/// `billing` of a `tenants` entry or a scope id: the anchor of the subject's cycles.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    #[serde(default)]
    pub day: Option<RawDay>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub burst_credits: Option<u64>,
    #[serde(default)]
    pub window_ms: Option<i64>,
    #[serde(default)]
    pub unlimited: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Normal,
    Elevated,
    Critical,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSaturation {
    #[serde(default)]
    pub signals: BTreeMap<String, RawSignal>,
    #[serde(default)]
    pub stale_after_ms: Option<i64>,
    #[serde(default)]
    pub keep: BTreeMap<Level, BTreeMap<Priority, f64>>,
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// Keep the upstream's load headers on client responses (default: strip them).
    #[serde(default)]
    pub expose_signal_headers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    pub from: String,
    pub elevated: f64,
    pub critical: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub path_prefix: String,
    pub token_sha256: String,
    /// CIDRs the downstream address must be in (besides the token); absent: any address.
    #[serde(default)]
    pub allowed_sources: Option<Vec<String>>,
}
