//! Envoy stats for SPEC 3: the host side (ids defined lazily, once per worker; updates
//! batched). The names and their bounded label sets are spelt in [`crate::metric_names`].

use super::host;
use crate::config::Config;
use crate::core::{self, Reason, Usage};
use crate::metric_names::{self as names, Labels, COUNTER, GAUGE};
use std::collections::HashMap;

pub use crate::metric_names::Kind;

// Counters and gauges are batched per worker and written to the host on the root's 5 ms
// tick, never on a request: each metric update is a host call (about 1,000 instructions
// with its dispatch), and a request of SPEC's 4 budgets would make six. Stats lag the
// requests by at most one tick.

pub struct Metrics {
    labels: Labels,
    ids: Vec<u32>,
    /// Pending counter increments and latest gauge values, by slot.
    pending: Vec<u64>,
    gauge: Vec<Option<u64>>,
    dirty: Vec<usize>,
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

impl Metrics {
    pub fn new(cfg: &Config) -> Metrics {
        let labels = Labels::new(cfg);
        let n = labels.slots();
        let errors = host::define_metric(COUNTER, names::ERRORS).unwrap_or(0);
        Metrics {
            labels,
            ids: vec![0; n],
            pending: vec![0; n],
            gauge: vec![None; n],
            dirty: Vec::new(),
            errors,
            pending_errors: 0,
            gauges: HashMap::new(),
            admin_failures: 0,
            crossings: Vec::new(),
            current_tenant: String::new(),
        }
    }

    fn id(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind) -> Option<u32> {
        let slot = self.labels.slot(tenant, budget, kind);
        let cur = *self.ids.get(slot)?;
        if cur != 0 {
            return Some(cur);
        }
        let (ty, name) = self.labels.name(cfg, tenant, budget, kind);
        let id = host::define_metric(ty, &name)?;
        self.ids[slot] = id;
        Some(id)
    }

    fn mark(&mut self, slot: usize) {
        if self.pending[slot] == 0 && self.gauge[slot].is_none() {
            self.dirty.push(slot);
        }
    }

    /// The slot of a metric whose id is defined (defined now the first time), if any.
    fn ready(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind) -> Option<usize> {
        let slot = self.labels.slot(tenant, budget, kind);
        match self.ids.get(slot) {
            Some(&id) if id != 0 => Some(slot),
            Some(_) => self.id(cfg, tenant, budget, kind).map(|_| slot),
            None => None,
        }
    }

    pub fn inc(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind, by: u64) {
        if by == 0 {
            return;
        }
        let Some(slot) = self.ready(cfg, tenant, budget, kind) else { return };
        self.mark(slot);
        self.pending[slot] = self.pending[slot].saturating_add(by);
    }

    pub fn set(&mut self, cfg: &Config, tenant: usize, budget: usize, kind: Kind, v: u64) {
        let Some(slot) = self.ready(cfg, tenant, budget, kind) else { return };
        self.mark(slot);
        self.gauge[slot] = Some(v);
    }

    /// A queue event (SPEC 6) of a tenant (`scope` None) or scope id: `waiting` moves the
    /// `quota_queue_waiting` gauge (+1 entering, -1 leaving), `result` counts an outcome.
    pub fn queued(&mut self, cfg: &Config, scope: Option<usize>, who: &str, budget: usize, waiting: i64, result: Option<Kind>) {
        let t = self.labels.label_index(scope, who);
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
        let t = self.labels.tenant_index(tenant_id);
        for (kind, n) in [("input", u.input), ("output", u.output)] {
            if n == 0 {
                continue;
            }
            let name = self.labels.llm_tokens(t, kind);
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
        if let Some(id) = host::define_metric(COUNTER, names::ALERT_WEBHOOK_ERRORS) {
            host::increment_metric(id, 1);
        }
    }

    /// `quota_llm_usage_missing_total`: responses that ended without a usage report.
    pub fn llm_usage_missing(&mut self) {
        if let Some(id) = host::define_metric(COUNTER, names::LLM_USAGE_MISSING) {
            host::increment_metric(id, 1);
        }
    }

    /// `quota_in_flight_reclaimed_total`: slots given back from VMs that stopped.
    pub fn reclaimed(&mut self, n: u64) {
        if let Some(id) = host::define_metric(COUNTER, names::IN_FLIGHT_RECLAIMED) {
            host::increment_metric(id, n as i64);
        }
    }

    /// `quota_admin_auth_failures_total`: admin calls refused (token or source address).
    pub fn admin_auth_failure(&mut self) {
        if self.admin_failures == 0 {
            self.admin_failures = host::define_metric(COUNTER, names::ADMIN_AUTH_FAILURES).unwrap_or(0);
        }
        if self.admin_failures != 0 {
            host::increment_metric(self.admin_failures, 1);
        }
    }

    pub fn error(&mut self) {
        self.pending_errors += 1;
    }

    /// Write batched updates to the host (the tick, and the admin status's totals).
    /// A named tenant's `quota_remaining` is re-read from shared data at flush, so the gauge
    /// is current whichever worker writes it last; `other` keeps the last value seen here.
    pub fn flush(&mut self, cfg: &Config, overrides: &crate::admin::Overrides, now: u64) {
        if self.dirty.is_empty() && self.pending_errors == 0 {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let id = self.ids[slot];
            if self.pending[slot] > 0 {
                host::increment_metric(id, self.pending[slot] as i64);
                self.pending[slot] = 0;
            }
            if let Some(v) = self.gauge[slot].take() {
                let (tenant, budget) = self.labels.of_slot(slot);
                let fresh = cfg.tenants.keys().nth(tenant).and_then(|t| current_remaining(cfg, overrides, t, budget, now));
                host::record_metric(id, fresh.unwrap_or(v));
            }
        }
        // Keep the list's allocation for the next batch.
        dirty.clear();
        self.dirty = dirty;
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
        let t = self.labels.label_index(scope, tenant_id);
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
            let name = self.labels.threshold_crossing(cfg, t, u.budget, pct);
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

    /// A request of `tenant_id` sent to a fallback by `resource` (a budget's name, or a
    /// cooling provider's id) for `reason`. Rare: written at once.
    pub fn fallback(&mut self, tenant_id: &str, resource: &str, reason: &str) {
        let t = self.labels.label_index(None, tenant_id);
        let name = self.labels.fallback(t, resource, reason);
        let id = match self.gauges.get(&name) {
            Some(id) => Some(*id),
            None => host::define_metric(COUNTER, &name).inspect(|id| {
                self.gauges.insert(name, *id);
            }),
        };
        if let Some(id) = id {
            host::increment_metric(id, 1);
        }
    }

    /// [`Metrics::rejected`] of a tenant (`scope` None) or of a scope id.
    pub fn rejected_of(&mut self, cfg: &Config, scope: Option<usize>, tenant_id: &str, budget: usize, reason: Reason, shadow: bool) {
        let t = self.labels.label_index(scope, tenant_id);
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
        self.flush(cfg, overrides, 0);
        let mut out = [0u64; 3];
        for t in 0..self.labels.len() {
            for b in 0..self.labels.budgets() {
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
