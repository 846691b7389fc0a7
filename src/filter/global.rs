//! Host glue of global budgets (SPEC 8): the per-worker part of the sync loop run from the
//! tick, the gRPC calls to the rate limit service, and the service's health as this worker
//! sees it. The logic is in `crate::global`.

use super::host::{self, HostStore};
use crate::config::{Config, Global, TenantPolicy};
use crate::global::{self, rls, Health, SyncLoop};
use crate::metric_names::{self as names, COUNTER, GAUGE};
use proxy_wasm::types::BufferType;
use std::collections::HashSet;

/// Test hook (`test_hooks.trap_sync_leader_path`): a note asking the lease holder to trap.
pub const TRAP_KEY: &str = crate::store::keys::GLOBAL_TRAP;


/// Metric ids, defined once per worker.
struct Ids {
    syncs_ok: u32,
    syncs_error: u32,
    checks_ok: u32,
    checks_over: u32,
    checks_error: u32,
    degraded: u32,
    pending: u32,
    answer_age: u32,
}

pub struct GlobalWorker {
    /// Tenant keys this worker charged since it last published them.
    dirty: HashSet<String>,
    urgent: bool,
    lease_id: u64,
    pub leader: bool,
    sync: SyncLoop,
    health: Health,
    degraded: bool,
    /// When this worker last wrote an exact call's answer to the shared health.
    last_answer_written: u64,
    /// When this worker first ran the sync loop (the answer age before any answer).
    started: u64,
    ids: Ids,
    buf: Vec<u8>,
}

fn counter(name: &str) -> u32 {
    host::define_metric(COUNTER, name).unwrap_or(0)
}

fn inc(id: u32) {
    if id != 0 {
        host::increment_metric(id, 1);
    }
}

/// Send a `ShouldRateLimit` call from the current context; its answer comes to that
/// context's `on_grpc_call_response`.
pub fn dispatch(cfg: &Config, body: &[u8]) -> Option<u32> {
    let g = cfg.global.as_ref()?;
    host::dispatch_grpc_call(&g.cluster, rls::SERVICE, rls::METHOD, body, g.timeout_ms)
}

/// The answer of a call, read in `on_grpc_call_response`: `None` for a failed call.
pub fn answer_bytes(status_code: u32, size: usize) -> Option<Vec<u8>> {
    if status_code != 0 {
        return None;
    }
    host::buffer(BufferType::GrpcReceiveBuffer as u32, 0, size)
}

/// The answers of an `exact` check's call for `n` descriptors, read in
/// `on_grpc_call_response`: `None` (logged) for a failed call or an unusable answer.
pub fn exact_answers(status_code: u32, size: usize, n: usize) -> Option<Vec<crate::global::Answer>> {
    let answers = answer_bytes(status_code, size).and_then(|b| rls::decode_check(&b, n).ok());
    if answers.is_none() {
        host::log(host::LOG_WARN, &format!("tenant-quota: global: exact check failed (gRPC status {status_code})"));
    }
    answers
}

impl GlobalWorker {
    pub fn new(lease_id: u64) -> GlobalWorker {
        let ids = Ids {
            syncs_ok: counter(names::GLOBAL_SYNCS_OK),
            syncs_error: counter(names::GLOBAL_SYNCS_ERROR),
            checks_ok: counter(names::GLOBAL_CHECKS_OK),
            checks_over: counter(names::GLOBAL_CHECKS_OVER),
            checks_error: counter(names::GLOBAL_CHECKS_ERROR),
            degraded: host::define_metric(GAUGE, names::GLOBAL_DEGRADED).unwrap_or(0),
            pending: host::define_metric(GAUGE, names::GLOBAL_PENDING_UNITS).unwrap_or(0),
            answer_age: host::define_metric(GAUGE, names::GLOBAL_LAST_ANSWER_AGE).unwrap_or(0),
        };
        GlobalWorker {
            dirty: HashSet::new(),
            urgent: false,
            lease_id: lease_id | 1,
            leader: false,
            sync: SyncLoop::default(),
            health: Health::default(),
            degraded: false,
            last_answer_written: 0,
            started: 0,
            ids,
            buf: Vec::new(),
        }
    }

    /// Whether global budgets are decided by `on_unavailable` now.
    pub fn degraded(&self, cfg: &Config, now: u64) -> bool {
        cfg.global.as_ref().is_some_and(|g| self.health.degraded(g, now))
    }

    /// Remember a tenant that a request charged (cheap: no host call).
    pub fn touched(&mut self, key: &str, urgent: bool) {
        if !key.is_empty() && !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
        self.urgent |= urgent;
    }

    /// Every tick: publish this worker's changed tenants, refresh the health, hold or
    /// watch the lease, and, as the lease holder, send the next call when one is due.
    pub fn tick(&mut self, cfg: &Config, overrides: &dyn Fn(&str) -> Option<TenantPolicy>, now: u64) {
        let Some(g) = cfg.global.as_ref() else { return };
        if !self.dirty.is_empty() || self.urgent {
            self.publish();
        }
        self.refresh_health(g, now);
        self.hold_lease(g, now);
        if self.leader {
            self.lead(cfg, g, overrides, now);
        }
    }

    /// Publish this worker's changed tenants for the lease holder.
    fn publish(&mut self) {
        // Keys that do not fit in the shared list stay in the set (no duplicates, so
        // memory stays bounded by the tracked tenants) until the leader drains it.
        let mut keys: Vec<String> = self.dirty.drain().collect();
        let r = global::publish_dirty(&HostStore, &mut keys, self.urgent, &mut self.buf);
        self.dirty.extend(keys);
        match r {
            Ok(()) => self.urgent = false,
            Err(e) => host::log(host::LOG_WARN, &format!("tenant-quota: global: cannot publish changed tenants: {e:?}")),
        }
    }

    /// Read the shared health; gauge and log a change of degraded mode.
    fn refresh_health(&mut self, g: &Global, now: u64) {
        if let Ok(h) = global::read_health(&HostStore, &mut self.buf) {
            self.health = h;
        }
        let degraded = self.health.degraded(g, now);
        if degraded == self.degraded {
            return;
        }
        self.degraded = degraded;
        if self.ids.degraded != 0 {
            host::record_metric(self.ids.degraded, u64::from(degraded));
        }
        host::log(
            if degraded { host::LOG_WARN } else { host::LOG_INFO },
            if degraded {
                "tenant-quota: global: rate limit service not answering, global budgets follow on_unavailable"
            } else {
                "tenant-quota: global: rate limit service answering again"
            },
        );
    }

    /// Hold the sync lease, or watch it.
    fn hold_lease(&mut self, g: &Global, now: u64) {
        match global::hold_lease(&HostStore, self.lease_id, now, global::lease_ms(g), &mut self.buf) {
            Ok(held) => {
                if held && !self.leader {
                    host::log(host::LOG_INFO, "tenant-quota: global: this worker runs the sync loop");
                }
                self.leader = held;
            }
            Err(_) => self.leader = false,
        }
    }

    /// The lease holder's part: gauges, the trap hook, and the next sync call when due.
    fn lead(&mut self, cfg: &Config, g: &Global, overrides: &dyn Fn(&str) -> Option<TenantPolicy>, now: u64) {
        self.gauges(now);
        if cfg.trap_sync_leader_path.is_some() {
            use crate::store::SharedStore;
            if let Ok(Some(cas)) = HostStore.get(TRAP_KEY, &mut self.buf) {
                if self.buf.first() == Some(&1) && HostStore.set(TRAP_KEY, &[0], cas).is_ok() {
                    host::log(host::LOG_WARN, "tenant-quota: test hook: trapping the sync leader's VM");
                    std::process::abort();
                }
            }
        }
        // A call that the host never answered (it always should, at its timeout).
        if let Some(b) = &self.sync.inflight {
            if now.saturating_sub(b.sent_at) > g.timeout_ms + 5000 {
                self.sync.failed();
            }
        }
        let mut urgent = false;
        match global::take_dirty(&HostStore, &mut self.buf) {
            Ok((keys, u)) => {
                urgent = u;
                self.sync.watch(g, keys, now);
            }
            Err(e) => host::log(host::LOG_WARN, &format!("tenant-quota: global: cannot read changed tenants: {e:?}")),
        }
        let probe = self.health.first_unanswered != 0;
        if let Some((body, items)) = self.sync.next_call(cfg, &HostStore, overrides, now, urgent, probe) {
            match dispatch(cfg, &body) {
                Some(token) => self.sync.sent(token, now, items),
                None => {
                    inc(self.ids.syncs_error);
                    self.sync.sent(0, now, items);
                    self.sync.failed();
                    let _ = global::record_failure(&HostStore, now, &mut self.buf);
                    host::log(host::LOG_WARN, &format!("tenant-quota: global: cannot call cluster `{}`", g.cluster));
                }
            }
        }
    }

    /// The drift gauges (SPEC 8), set by the lease holder: units found unacknowledged by the
    /// last complete sync round, and the age of the last answer (since start while none came).
    fn gauges(&mut self, now: u64) {
        if self.ids.pending != 0 {
            host::record_metric(self.ids.pending, self.sync.pending);
        }
        if self.ids.answer_age != 0 {
            if self.started == 0 {
                self.started = now;
            }
            let since = if self.health.last_answer == 0 { self.started } else { self.health.last_answer };
            host::record_metric(self.ids.answer_age, now.saturating_sub(since));
        }
    }

    /// The answer to a sync call (root context).
    pub fn sync_answered(&mut self, cfg: &Config, token: u32, status_code: u32, size: usize, now: u64) {
        let Some(b) = &self.sync.inflight else { return };
        if b.token != token {
            return;
        }
        let sent_at = b.sent_at;
        let n = b.items.len().max(1);
        let decoded = answer_bytes(status_code, size).ok_or(None).and_then(|bytes| rls::decode_statuses(&bytes, n).map_err(Some));
        match decoded {
            Ok(answers) => {
                inc(self.ids.syncs_ok);
                let errors = self.sync.answered(cfg, &HostStore, &answers, now);
                if errors > 0 {
                    host::log(host::LOG_WARN, &format!("tenant-quota: global: {errors} answers could not be stored"));
                }
                if let Ok(h) = global::record_answer(&HostStore, now, &mut self.buf) {
                    self.health = h;
                }
            }
            Err(e) => {
                inc(self.ids.syncs_error);
                self.sync.failed();
                if let Ok(h) = global::record_failure(&HostStore, sent_at, &mut self.buf) {
                    self.health = h;
                }
                match e {
                    None => host::log(host::LOG_WARN, &format!("tenant-quota: global: sync call failed (gRPC status {status_code})")),
                    Some(e) => host::log(host::LOG_WARN, &format!("tenant-quota: global: unusable answer: {e:?}")),
                }
            }
        }
    }

    /// An `exact` call's outcome, for the health and the metrics.
    pub fn check_done(&mut self, ok: Option<bool>, sent_at: u64, now: u64) {
        match ok {
            Some(admitted) => {
                inc(if admitted { self.ids.checks_ok } else { self.ids.checks_over });
                // Write the shared health only when it changes or has aged.
                if self.health.first_unanswered != 0 || now.saturating_sub(self.last_answer_written) > 100 {
                    self.last_answer_written = now;
                    if let Ok(h) = global::record_answer(&HostStore, now, &mut self.buf) {
                        self.health = h;
                    }
                }
            }
            None => {
                inc(self.ids.checks_error);
                if let Ok(h) = global::record_failure(&HostStore, sent_at, &mut self.buf) {
                    self.health = h;
                }
            }
        }
    }
}

/// The admin status's `global` object.
pub fn status(cfg: &Config, now: u64) -> serde_json::Value {
    let Some(g) = cfg.global.as_ref() else { return serde_json::Value::Null };
    let mut buf = Vec::new();
    match global::read_health(&HostStore, &mut buf) {
        Ok(h) => serde_json::json!({
            "state": if h.degraded(g, now) { "degraded" } else { "ok" },
            "last_answer_age_ms": if h.last_answer == 0 { serde_json::Value::Null } else { now.saturating_sub(h.last_answer).into() },
            "errors": h.errors,
            "cluster": g.cluster,
            "domain": g.domain,
        }),
        Err(e) => serde_json::json!({ "state": "unknown", "error": format!("{e:?}") }),
    }
}
