//! The root's tick (every 5 ms, per worker): the batched flushes, the global sync loop, the
//! alerts webhook, LLM body waits that expired, the queues' turns, the in-flight ledger.

use super::host::{self, HostStore};
use super::{llm_body, queue, reroute, Shared};
use crate::config::Config;

/// One tick. `root` is the root context's id: steps that act on a paused request's context
/// make the root the effective context again after them.
pub(super) fn run(root: u32, cfg: Option<&Config>, sh: &mut Shared) {
    let now = host::now_ms();
    sh.saturation.flush(now, true);
    if let Some(cfg) = cfg {
        let Shared { metrics, overrides, global, .. } = &mut *sh;
        metrics.flush(cfg, overrides, now);
        if cfg.global.is_some() {
            global.tick(cfg, &|id| overrides.get(id), now);
        }
        if cfg.alerts_webhook.is_some() {
            send_alerts(cfg, sh);
        }
        if !sh.body_waits.is_empty() {
            llm_body::expire_waits(cfg, sh, now);
            host::set_effective_context(root);
        }
        if cfg.llm.request_body {
            llm_body::follow_body_reading(sh);
        }
        if cfg.providers.is_some() {
            reroute::follow(sh);
        }
        if !sh.queues.is_empty() {
            queue::pass(cfg, sh, now);
            // The pass acted on paused requests' contexts; act as the root again.
            host::set_effective_context(root);
        }
    }
    ledger_tick(sh, now);
}

/// Give back the in_flight slots of VMs that stopped, and keep this VM's ledger alive.
fn ledger_tick(sh: &mut Shared, now: u64) {
    let Shared { ledger, worker, metrics, .. } = &mut *sh;
    let Some(l) = ledger else { return };
    let scratch = &mut worker.scratch;
    let r = l.tick(&HostStore, now, |key, budget, n| {
        scratch.key.clear();
        scratch.key.push_str(key);
        crate::store::transact(&HostStore, scratch, |st| {
            crate::core::release(st, budget, u64::from(n));
            (true, ())
        })
    });
    match r {
        Ok(r) if r.reclaimed_ledgers > 0 => {
            metrics.reclaimed(r.reclaimed_slots);
            host::log(
                host::LOG_WARN,
                &format!("tenant-quota: gave back {} in_flight slots held by {} VMs that stopped (trapped)", r.reclaimed_slots, r.reclaimed_ledgers),
            );
        }
        Ok(r) if r.lost_own => host::log(host::LOG_WARN, "tenant-quota: this VM stalled and its in_flight slots were given back by another"),
        Ok(_) => {}
        Err(e) => host::log(host::LOG_WARN, &format!("tenant-quota: in_flight ledger: {e:?}")),
    }
}

/// POST the threshold crossings recorded since the last call to `alerts_webhook` (SPEC 5):
/// at most once per crossing, never retried; a failed dispatch is logged and counted, and an
/// answer other than 2xx is counted when it arrives. Sent from the root's tick (the root
/// context outlives every request, so the answers reach it), never delaying a request.
fn send_alerts(cfg: &Config, sh: &mut Shared) {
    if sh.metrics.crossings.is_empty() {
        return;
    }
    let crossings = std::mem::take(&mut sh.metrics.crossings);
    let Some(w) = &cfg.alerts_webhook else { return };
    for c in crossings {
        let b = &cfg.budgets[c.budget];
        let mut body = serde_json::json!({
            "tenant": c.tenant,
            "budget": b.name,
            "threshold": c.threshold,
            "used": c.used,
            "limit": c.limit,
            "window_start_ms": c.window_start_ms,
        });
        if let Some(s) = c.scope {
            body["scope"] = serde_json::json!(cfg.scopes[s].name);
            body["scope_id"] = serde_json::json!(c.id);
        }
        let body = body.to_string();
        let headers = vec![(":method", "POST"), (":path", w.path.as_str()), (":authority", w.cluster.as_str()), ("content-type", "application/json")];
        if host::dispatch_http_call(&w.cluster, headers, body.as_bytes(), 2000).is_none() {
            sh.metrics.webhook_error();
            host::log(host::LOG_WARN, &format!("tenant-quota: alerts webhook: cannot call cluster `{}`", w.cluster));
        }
    }
}
