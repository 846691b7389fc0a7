//! Metric names (SPEC 3), host-independent: the filter defines and writes them, this module
//! only spells them. Names carry their labels as dotted pairs
//! (`quota_checks_total.tenant_id.acme.resource.rpm.result.allowed`); the `stats_config`
//! tag rules in envoy/envoy.yaml turn them into Prometheus labels (Envoy puts them under
//! `wasmcustom.`), so every name here is part of the contract: byte for byte.
//!
//! Every distinct name lives until Envoy restarts, so the label sets are bounded by the
//! configuration: named tenants by name and everyone else `other`; per scope (SPEC 7), its
//! named ids and its `other`, as `scope.<scope>.scope_id.<id>` in place of `tenant_id.<id>`,
//! so a scope's series can never be read as a tenant's.

use crate::config::Config;
use std::collections::BTreeMap;

/// The host's metric types (proxy-wasm ABI numbers).
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;

/// Names without labels.
pub const ERRORS: &str = "quota_errors_total";
pub const ALERT_WEBHOOK_ERRORS: &str = "quota_alert_webhook_errors_total";
pub const LLM_USAGE_MISSING: &str = "quota_llm_usage_missing_total";
pub const IN_FLIGHT_RECLAIMED: &str = "quota_in_flight_reclaimed_total";
pub const ADMIN_AUTH_FAILURES: &str = "quota_admin_auth_failures_total";
pub const SATURATION_LEVEL: &str = "saturation_level";
pub const GLOBAL_SYNCS_OK: &str = "quota_global_syncs_total.result.ok";
pub const GLOBAL_SYNCS_ERROR: &str = "quota_global_syncs_total.result.error";
pub const GLOBAL_CHECKS_OK: &str = "quota_global_checks_total.result.ok";
pub const GLOBAL_CHECKS_OVER: &str = "quota_global_checks_total.result.over_limit";
pub const GLOBAL_CHECKS_ERROR: &str = "quota_global_checks_total.result.error";
pub const GLOBAL_DEGRADED: &str = "quota_global_degraded";
pub const GLOBAL_PENDING_UNITS: &str = "quota_global_pending_units";
pub const GLOBAL_LAST_ANSWER_AGE: &str = "quota_global_last_answer_age_ms";

/// The per-(label set, budget) metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Allowed = 0,
    Rejected = 1,
    ShadowRejected = 2,
    ThrottleExceeded = 3,
    ThrottleBurst = 4,
    ThrottleSaturation = 5,
    BurstUsed = 6,
    Remaining = 7,
    Warned = 8,
    QueueWaiting = 9,
    QueuedAdmitted = 10,
    QueuedTimeout = 11,
    QueuedFull = 12,
    QueuedCancelled = 13,
}
/// How many [`Kind`]s there are.
pub const KINDS: usize = 14;

/// A label value: an id with anything outside `[A-Za-z0-9_-]` as `_`.
pub fn label(id: &str) -> String {
    id.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' { b as char } else { '_' }).collect()
}

/// `saturation_<signal>`: a saturation signal's gauge.
pub fn saturation_gauge(signal: &str) -> String {
    format!("saturation_{signal}")
}

/// Which lengths a set of ids has (bit `n` for length `n`, bit 63 for 63 and longer).
#[derive(Debug, Clone, Copy, Default)]
struct Lengths(u64);

impl Lengths {
    fn of<'a>(ids: impl Iterator<Item = &'a String>) -> Lengths {
        Lengths(ids.fold(0, |m, id| m | 1 << id.len().min(63)))
    }
    fn may_hold(self, id: &str) -> bool {
        self.0 >> id.len().min(63) & 1 == 1
    }
}

/// The label sets of one configuration, and the slots of its per-(label set, budget, kind)
/// metrics: slot = (label set * budgets + budget) * [`KINDS`] + kind.
pub struct Labels {
    /// Looked up on every request: a few string comparisons, where a SipHash of the id costs
    /// more (the named ids are few).
    tenants: BTreeMap<String, usize>,
    /// Per scope: named ids' label indices, and the index of its `other`.
    scopes: Vec<(BTreeMap<String, usize>, usize)>,
    /// The lengths of the named tenant ids and of each scope's named ids ([`Lengths`]): most
    /// ids are not named, and most of those are told so without a string comparison.
    tenant_lens: Lengths,
    scope_lens: Vec<Lengths>,
    labels: Vec<String>,
    budgets: usize,
}

impl Labels {
    pub fn new(cfg: &Config) -> Labels {
        let mut tenants = BTreeMap::new();
        let mut labels = Vec::new();
        for (i, id) in cfg.tenants.keys().enumerate() {
            tenants.insert(id.clone(), i);
            labels.push(format!("tenant_id.{}", label(id)));
        }
        labels.push("tenant_id.other".into());
        let mut scopes = Vec::new();
        for sc in &cfg.scopes {
            let mut ids = BTreeMap::new();
            for id in sc.ids.keys() {
                ids.insert(id.clone(), labels.len());
                labels.push(format!("scope.{}.scope_id.{}", sc.name, label(id)));
            }
            scopes.push((ids, labels.len()));
            labels.push(format!("scope.{}.scope_id.other", sc.name));
        }
        let tenant_lens = Lengths::of(tenants.keys());
        let scope_lens = scopes.iter().map(|(ids, _)| Lengths::of(ids.keys())).collect();
        Labels { tenants, scopes, labels, budgets: cfg.budgets.len(), tenant_lens, scope_lens }
    }

    /// How many label sets there are.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// How many budgets the slots span.
    pub fn budgets(&self) -> usize {
        self.budgets
    }

    /// How many slots there are.
    pub fn slots(&self) -> usize {
        self.labels.len() * self.budgets * KINDS
    }

    /// A tenant's label set (named tenants their own, everyone else `other`).
    pub fn tenant_index(&self, id: &str) -> usize {
        let other = self.tenants.len();
        if !self.tenant_lens.may_hold(id) {
            return other;
        }
        self.tenants.get(id).copied().unwrap_or(other)
    }

    /// The label set of a tenant (`scope` None) or of a scope id.
    pub fn label_index(&self, scope: Option<usize>, id: &str) -> usize {
        match scope.and_then(|s| self.scopes.get(s).zip(self.scope_lens.get(s))) {
            None => self.tenant_index(id),
            Some(((_, other), lens)) if !lens.may_hold(id) => *other,
            Some(((ids, other), _)) => ids.get(id).copied().unwrap_or(*other),
        }
    }

    pub fn slot(&self, label: usize, budget: usize, kind: Kind) -> usize {
        (label * self.budgets + budget) * KINDS + kind as usize
    }

    /// The (label set, budget) of a slot.
    pub fn of_slot(&self, slot: usize) -> (usize, usize) {
        let label = slot / KINDS / self.budgets.max(1);
        let budget = (slot / KINDS) % self.budgets.max(1);
        (label, budget)
    }

    /// The type and name of a per-(label set, budget) metric.
    pub fn name(&self, cfg: &Config, label: usize, budget: usize, kind: Kind) -> (u32, String) {
        let t = &self.labels[label];
        let b = &cfg.budgets[budget].name;
        match kind {
            Kind::Allowed => (COUNTER, format!("quota_checks_total.{t}.resource.{b}.result.allowed")),
            Kind::Rejected => (COUNTER, format!("quota_checks_total.{t}.resource.{b}.result.rejected")),
            Kind::ShadowRejected => (COUNTER, format!("quota_checks_total.{t}.resource.{b}.result.shadow_rejected")),
            Kind::ThrottleExceeded => (COUNTER, format!("quota_throttles_total.{t}.resource.{b}.reason.{b}_exceeded")),
            Kind::ThrottleBurst => (COUNTER, format!("quota_throttles_total.{t}.resource.{b}.reason.burst_exhausted")),
            Kind::ThrottleSaturation => (COUNTER, format!("quota_throttles_total.{t}.resource.{b}.reason.saturation_throttle")),
            Kind::BurstUsed => (COUNTER, format!("burst_credits_used_total.{t}.resource.{b}")),
            Kind::Remaining => (GAUGE, format!("quota_remaining.{t}.resource.{b}")),
            Kind::Warned => (COUNTER, format!("quota_checks_total.{t}.resource.{b}.result.warned")),
            Kind::QueueWaiting => (GAUGE, format!("quota_queue_waiting.{t}.resource.{b}")),
            Kind::QueuedAdmitted => (COUNTER, format!("quota_queued_total.{t}.resource.{b}.result.admitted")),
            Kind::QueuedTimeout => (COUNTER, format!("quota_queued_total.{t}.resource.{b}.result.timeout")),
            Kind::QueuedFull => (COUNTER, format!("quota_queued_total.{t}.resource.{b}.result.full")),
            Kind::QueuedCancelled => (COUNTER, format!("quota_queued_total.{t}.resource.{b}.result.cancelled")),
        }
    }

    /// `quota_fallbacks_total{tenant_id,resource,reason}`: requests sent to a fallback, by the
    /// budget (or the cooling provider, `reason` `provider_cooling`) that sent them.
    pub fn fallback(&self, label: usize, resource: &str, reason: &str) -> String {
        format!("quota_fallbacks_total.{}.resource.{}.reason.{}", self.labels[label], self::label(resource), self::label(reason))
    }

    /// `quota_llm_tokens_total{tenant_id,kind}` (SPEC 5); `kind` is `input` or `output`.
    pub fn llm_tokens(&self, label: usize, kind: &str) -> String {
        format!("quota_llm_tokens_total.{}.kind.{kind}", self.labels[label])
    }

    /// `quota_threshold_crossings_total{...,resource,threshold}` (SPEC 5).
    pub fn threshold_crossing(&self, cfg: &Config, label: usize, budget: usize, pct: u64) -> String {
        format!("quota_threshold_crossings_total.{}.resource.{}.threshold.{pct}", self.labels[label], cfg.budgets[budget].name)
    }
}

#[cfg(test)]
#[path = "metric_names_tests.rs"]
mod tests;
