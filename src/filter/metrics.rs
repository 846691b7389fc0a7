//! Envoy stats for SPEC 3. Names carry their labels as dotted pairs
//! (`quota_checks_total.tenant_id.acme.resource.rpm.result.allowed`); the `stats_config`
//! tag rules in envoy/envoy.yaml turn them into Prometheus labels. Envoy puts them under
//! `wasmcustom.`. Every distinct name lives until restart, so `tenant_id` is bounded:
//! named tenants by name, everyone else `other`. Ids are defined lazily, once per worker.

use super::host;
use crate::config::Config;
use crate::core::{self, Reason, Usage};
use std::collections::HashMap;

const COUNTER: u32 = 0;
const GAUGE: u32 = 1;

#[derive(Clone, Copy)]
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
const KINDS: usize = 14;

/// Counters and gauges are batched per worker and written to the host at most every
/// [`FLUSH_MS`] (at the end of a request, and on a 5 ms tick for the last ones): each metric
/// update is a host call, which costs as much as the quota decision itself. At low rates
/// every request flushes, so the stats read right after a response are exact.
pub const FLUSH_MS: u64 = 1;

pub struct Metrics {
    tenants: HashMap<String, usize>,
    /// Per scope: named ids' label indices, and the index of its `other`.
    scopes: Vec<(HashMap<String, usize>, usize)>,
    labels: Vec<String>,
    budgets: usize,
    ids: Vec<u32>,
    /// Pending counter increments and latest gauge values, by slot.
    pending: Vec<u64>,
    gauge: Vec<Option<u64>>,
    dirty: Vec<usize>,
    next_flush: u64,
    errors: u32,
    pending_errors: u64,
    gauges: HashMap<String, u32>,
    admin_failures: u32,
    /// Threshold crossings for the alerts webhook, taken by the filter after each update.
    pub crossings: Vec<Crossing>,
    /// The tenant of the request being recorded (a scoped crossing reports it too).
    pub current_tenant: String,
}

/// One threshold crossing (SPEC 5), for `alerts_webhook`.
#[derive(Debug, Clone)]
pub struct Crossing {
    pub tenant: String,
    pub scope: Option<usize>,
    pub id: String,
    pub budget: usize,
    pub threshold: u64,
    pub used: u64,
    pub limit: u64,
    /// Start of the window the crossing happened in (taken at the decision, not at sending).
    pub window_start_ms: u64,
}

/// A label value: named tenants keep their id with anything outside `[A-Za-z0-9_-]` as `_`.
fn label(id: &str) -> String {
    id.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' { b as char } else { '_' }).collect()
}

impl Metrics {
    pub fn new(cfg: &Config) -> Metrics {
        // A label set per named tenant and `other`; then, per scope (SPEC 7), per named id
        // and `other`, as `scope.<scope>.scope_id.<id>` in place of `tenant_id.<id>`, so a
        // scope's series can never be read as a tenant's.
        let mut tenants = HashMap::new();
        let mut labels = Vec::new();
        for (i, id) in cfg.tenants.keys().enumerate() {
            tenants.insert(id.clone(), i);
            labels.push(format!("tenant_id.{}", label(id)));
        }
        labels.push("tenant_id.other".into());
        let mut scopes = Vec::new();
        for sc in &cfg.scopes {
            let mut ids = HashMap::new();
            for id in sc.ids.keys() {
                ids.insert(id.clone(), labels.len());
                labels.push(format!("scope.{}.scope_id.{}", sc.name, label(id)));
            }
            scopes.push((ids, labels.len()));
            labels.push(format!("scope.{}.scope_id.other", sc.name));
        }
        let n = labels.len() * cfg.budgets.len() * KINDS;
        let errors = host::define_metric(COUNTER, "quota_errors_total").unwrap_or(0);
        Metrics {
            tenants,
            scopes,
            labels,
            budgets: cfg.budgets.len(),
            ids: vec![0; n],
            pending: vec![0; n],
            gauge: vec![None; n],
            dirty: Vec::new(),
            next_flush: 0,
            errors,
            pending_errors: 0,
            gauges: HashMap::new(),
            admin_failures: 0,
            crossings: Vec::new(),
            current_tenant: String::new(),
        }
    }

    pub fn tenant_index(&self, id: &str) -> usize {
        self.tenants.get(id).copied().unwrap_or(self.tenants.len())
    }

    /// The label set of a tenant (`scope` None) or of a scope id.
    pub fn label_index(&self, scope: Option<usize>, id: &str) -> usize {
        match scope.and_then(|s| self.scopes.get(s)) {
            None => self.tenant_index(id),
            Some((ids, other)) => ids.get(id).copied().unwrap_or(*other),
        }
    }

    fn id(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind) -> Option<u32> {
        let slot = (tenant * self.budgets + budget) * KINDS + kind as usize;
        let cur = *self.ids.get(slot)?;
        if cur != 0 {
            return Some(cur);
        }
        let t = &self.labels[tenant];
        let b = &cfg.budgets[budget].name;
        let (ty, name) = match kind {
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
        };
        let id = host::define_metric(ty, &name)?;
        self.ids[slot] = id;
        Some(id)
    }

    fn slot(&self, tenant: usize, budget: usize, kind: Kind) -> usize {
        (tenant * self.budgets + budget) * KINDS + kind as usize
    }

    fn mark(&mut self, slot: usize) {
        if self.pending[slot] == 0 && self.gauge[slot].is_none() {
            self.dirty.push(slot);
        }
    }

    pub fn inc(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind, by: u64) {
        if by == 0 || self.id(cfg, tenant, budget, kind).is_none() {
            return;
        }
        let slot = self.slot(tenant, budget, kind);
        self.mark(slot);
        self.pending[slot] = self.pending[slot].saturating_add(by);
    }

    pub fn set(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind, v: u64) {
        if self.id(cfg, tenant, budget, kind).is_none() {
            return;
        }
        let slot = self.slot(tenant, budget, kind);
        self.mark(slot);
        self.gauge[slot] = Some(v);
    }

    /// A queue event (SPEC 6) of a tenant (`scope` None) or scope id: `waiting` moves the
    /// `quota_queue_waiting` gauge (+1 entering, -1 leaving), `result` counts an outcome.
    pub fn queued(&mut self, cfg: &Config, scope: Option<usize>, who: &str, budget: usize, waiting: i64, result: Option<Kind>) {
        let t = self.label_index(scope, who);
        if waiting != 0 {
            if let Some(id) = self.id(cfg, t, budget, Kind::QueueWaiting) {
                host::increment_metric(id, waiting);
            }
        }
        if let Some(k) = result {
            self.inc(cfg, t, budget, k, 1);
        }
    }

    /// `quota_llm_tokens_total{tenant_id,kind}` (SPEC 5).
    pub fn llm_tokens(&mut self, tenant_id: &str, u: crate::llm::Usage) {
        let t = self.tenant_index(tenant_id);
        for (kind, n) in [("input", u.input), ("output", u.output)] {
            if n == 0 {
                continue;
            }
            let name = format!("quota_llm_tokens_total.{}.kind.{kind}", self.labels[t]);
            let id = match self.gauges.get(&name) {
                Some(id) => *id,
                None => {
                    let Some(id) = host::define_metric(COUNTER, &name) else { continue };
                    self.gauges.insert(name, id);
                    id
                }
            };
            host::increment_metric(id, n as i64);
        }
    }

    /// `quota_alert_webhook_errors_total`: crossings whose webhook call failed.
    pub fn webhook_error(&mut self) {
        if let Some(id) = host::define_metric(COUNTER, "quota_alert_webhook_errors_total") {
            host::increment_metric(id, 1);
        }
    }

    /// `quota_llm_usage_missing_total`: responses that ended without a usage report.
    pub fn llm_usage_missing(&mut self) {
        if let Some(id) = host::define_metric(COUNTER, "quota_llm_usage_missing_total") {
            host::increment_metric(id, 1);
        }
    }

    /// `quota_in_flight_reclaimed_total`: slots given back from VMs that stopped.
    pub fn reclaimed(&mut self, n: u64) {
        if let Some(id) = host::define_metric(COUNTER, "quota_in_flight_reclaimed_total") {
            host::increment_metric(id, n as i64);
        }
    }

    /// `quota_admin_auth_failures_total`: admin calls refused (token or source address).
    pub fn admin_auth_failure(&mut self) {
        if self.admin_failures == 0 {
            self.admin_failures = host::define_metric(COUNTER, "quota_admin_auth_failures_total").unwrap_or(0);
        }
        if self.admin_failures != 0 {
            host::increment_metric(self.admin_failures, 1);
        }
    }

    pub fn error(&mut self) {
        self.pending_errors += 1;
    }

    /// Write batched updates to the host: at most every [`FLUSH_MS`], or now if `force`.
    /// A named tenant's `quota_remaining` is re-read from shared data at flush, so the gauge
    /// is current whichever worker writes it last; `other` keeps the last value seen here.
    pub fn flush(&mut self, cfg: &Config, overrides: &crate::admin::Overrides, now: u64, force: bool) {
        if !force && now < self.next_flush {
            return;
        }
        self.next_flush = now.saturating_add(FLUSH_MS);
        let named: Vec<&String> = cfg.tenants.keys().collect();
        for slot in std::mem::take(&mut self.dirty) {
            let id = self.ids[slot];
            if self.pending[slot] > 0 {
                host::increment_metric(id, self.pending[slot] as i64);
                self.pending[slot] = 0;
            }
            if let Some(v) = self.gauge[slot].take() {
                let tenant = slot / KINDS / self.budgets.max(1);
                let budget = (slot / KINDS) % self.budgets.max(1);
                let fresh = named.get(tenant).and_then(|t| current_remaining(cfg, overrides, t, budget, now));
                host::record_metric(id, fresh.unwrap_or(v));
            }
        }
        if self.pending_errors > 0 && self.errors != 0 {
            host::increment_metric(self.errors, self.pending_errors as i64);
            self.pending_errors = 0;
        }
    }

    pub fn gauge_named(&mut self, name: &str, v: u64) {
        let id = match self.gauges.get(name) {
            Some(id) => *id,
            None => {
                let Some(id) = host::define_metric(GAUGE, name) else { return };
                self.gauges.insert(name.to_string(), id);
                id
            }
        };
        host::record_metric(id, v);
    }

    /// Standing after an admission or a charge, of a tenant (`scope` None) or of a scope id:
    /// allowed checks, burst use, remaining, threshold crossings (logged once each per window).
    pub fn usage_of(&mut self, cfg: &Config, scope: Option<usize>, tenant_id: &str, u: &Usage, count_check: bool) {
        let t = self.label_index(scope, tenant_id);
        let who = match scope.and_then(|s| cfg.scopes.get(s)) {
            None => "tenant",
            Some(sc) => sc.name.as_str(),
        };
        if count_check {
            self.inc(cfg, t, u.budget, Kind::Allowed, 1);
            if u.warned.is_some() {
                self.inc(cfg, t, u.budget, Kind::Warned, 1);
            }
        }
        self.inc(cfg, t, u.budget, Kind::BurstUsed, u.burst_taken);
        self.set(cfg, t, u.budget, Kind::Remaining, u.remaining());
        for pct in core::crossed(u, &cfg.budgets[u.budget].alerts) {
            let name = format!("quota_threshold_crossings_total.{}.resource.{}.threshold.{pct}", self.labels[t], cfg.budgets[u.budget].name);
            let id = match self.gauges.get(&name) {
                Some(id) => Some(*id),
                None => host::define_metric(COUNTER, &name).inspect(|id| {
                    self.gauges.insert(name.clone(), *id);
                }),
            };
            if let Some(id) = id {
                host::increment_metric(id, 1);
            }
            host::log(
                host::LOG_WARN,
                &format!("tenant-quota: {who} `{tenant_id}` crossed {pct}% of budget `{}`: used {} of limit {}", cfg.budgets[u.budget].name, u.used, u.limit),
            );
            if cfg.alerts_webhook.is_some() {
                let tenant = if scope.is_some() { self.current_tenant.clone() } else { tenant_id.to_string() };
                self.crossings.push(Crossing { tenant, scope, id: tenant_id.to_string(), budget: u.budget, threshold: pct, used: u.used, limit: u.limit, window_start_ms: u.window_start });
            }
        }
    }

    pub fn rejected(&mut self, cfg: &Config, tenant_id: &str, budget: usize, reason: Reason, shadow: bool) {
        self.rejected_of(cfg, None, tenant_id, budget, reason, shadow);
    }

    /// [`Metrics::rejected`] of a tenant (`scope` None) or of a scope id.
    pub fn rejected_of(&mut self, cfg: &Config, scope: Option<usize>, tenant_id: &str, budget: usize, reason: Reason, shadow: bool) {
        let t = self.label_index(scope, tenant_id);
        if shadow {
            self.inc(cfg, t, budget, Kind::ShadowRejected, 1);
            return;
        }
        self.inc(cfg, t, budget, Kind::Rejected, 1);
        let kind = match reason {
            Reason::Exceeded => Kind::ThrottleExceeded,
            Reason::BurstExhausted => Kind::ThrottleBurst,
            Reason::SaturationThrottle => Kind::ThrottleSaturation,
        };
        self.inc(cfg, t, budget, kind, 1);
    }

    /// Sum of the check counters across every label set (for the admin status).
    pub fn totals(&mut self, cfg: &Config, overrides: &crate::admin::Overrides) -> [u64; 3] {
        self.flush(cfg, overrides, 0, true);
        let mut out = [0u64; 3];
        for t in 0..self.labels.len() {
            for b in 0..self.budgets {
                for (i, k) in [Kind::Allowed, Kind::Rejected, Kind::ShadowRejected].into_iter().enumerate() {
                    if let Some(id) = self.id(cfg, t, b, k) {
                        out[i] += host::get_metric(id).unwrap_or(0);
                    }
                }
            }
        }
        out
    }
}

/// A named tenant's remaining units in a budget, from shared data.
fn current_remaining(cfg: &Config, overrides: &crate::admin::Overrides, tenant: &str, budget: usize, now: u64) -> Option<u64> {
    use crate::store::SharedStore;
    let key = crate::store::keys::state_key(crate::core::Subject::Tenant(tenant));
    let mut buf = Vec::new();
    host::HostStore.get(&key, &mut buf).ok()??;
    let state = crate::core::TenantState::decode(&buf).ok()?;
    let runtime = overrides.get(tenant);
    let policy = runtime.as_ref().unwrap_or_else(|| cfg.policy(tenant));
    let pol = crate::core::Policy { budgets: &cfg.budgets, limits: &policy.limits, keep: 1.0, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
    Some(crate::core::standing(&pol, &state, now, budget).remaining())
}
