//! LLM bodies (SPEC 5). The request's JSON body, read before admission when an LLM budget
//! may apply: the request pauses in its header phase, its body (model, `max_tokens`, the
//! `include_usage` rewrite) joins its facts, and it is decided at the end of the body; a
//! host that never shows the body to a paused header phase is found out by a deadline on
//! the tick. The response's usage, read from its body as it streams, settles the
//! reservation.

use super::headers::HostHeaders;
use super::host::{self, map, HostStore};
use super::{log_fields, verdict, Shared};
use crate::config::Config;
use crate::engine::{self, Admitted, Conditions, RequestFacts};
use crate::store::SharedStore;
use std::cell::RefCell;

/// What a request paused for its body needs to be decided.
pub(super) struct BodyWait {
    deadline: u64,
    facts: RequestFacts,
    path: String,
}

/// How long a paused request waits for its first body callback before the filter decides
/// the host will not send one.
const BODY_WAIT_MS: u64 = 1000;
/// Shared: `[1, <when, 8 bytes LE ms>]` once a worker found that bodies cannot be read, `[0]`
/// once one saw a body come to a paused request.
const BODY_OFF_KEY: &str = crate::store::keys::BODY_OFF;
/// How long "bodies cannot be read" holds before one request pauses for its body again: a
/// body that only came late (a slow client while the option is on) cannot be told from the
/// option being off, since it comes after the request was resumed either way; the next
/// probe finds out, at the cost of one request's wait per period when the option is off.
const BODY_OFF_RETRY_MS: u64 = 600_000;

fn set_body_reading_off(sh: &mut Shared, off: bool) {
    if sh.body_reading_off != off {
        sh.body_reading_off = off;
        let mut v = vec![u8::from(off)];
        if off {
            v.extend_from_slice(&host::now_ms().to_le_bytes());
        }
        let _ = HostStore.set(BODY_OFF_KEY, &v, 0);
    }
}

/// What the shared flag says at `now`: off, unless it was set over [`BODY_OFF_RETRY_MS`] ago.
fn shared_off(now: u64) -> Option<bool> {
    let mut b = Vec::new();
    let Ok(Some(_)) = HostStore.get(BODY_OFF_KEY, &mut b) else { return None };
    match b.as_slice() {
        [1, when @ ..] if when.len() == 8 => {
            let mut t = [0u8; 8];
            t.copy_from_slice(when);
            Some(now.saturating_sub(u64::from_le_bytes(t)) < BODY_OFF_RETRY_MS)
        }
        [1, ..] => Some(true),
        _ => Some(false),
    }
}

/// Tick: every worker follows what any worker learned about body reading.
pub(super) fn follow_body_reading(sh: &mut Shared) {
    if let Some(off) = shared_off(host::now_ms()) {
        sh.body_reading_off = off;
    }
}

/// Whether an LLM budget may apply to the request, by its path and method (its model is not
/// known before the body is read).
fn llm_may_apply(cfg: &Config, headers: &mut HostHeaders) -> bool {
    let llm: Vec<&crate::config::Budget> = cfg.budgets.iter().filter(|b| b.counts.is_llm()).collect();
    if llm.is_empty() {
        return false;
    }
    let method = String::from_utf8_lossy(&headers.get(":method").unwrap_or_default()).into_owned();
    let path = String::from_utf8_lossy(&headers.get(":path").unwrap_or_default()).into_owned();
    llm.iter().any(|b| b.matcher.is_any() || b.matcher.matches(&method, &path))
}

/// At the request headers: whether to read the JSON body before admission (an LLM budget
/// may apply and bodies can be read). `Some(now)`: pause for it ([`pause_for_body`]).
pub(super) fn body_wanted(cfg: &Config, shared: &RefCell<Shared>, headers: &mut HostHeaders, end_of_stream: bool) -> Option<u64> {
    // Providers named by model need the model of every request.
    let by_model = cfg.providers.as_ref().is_some_and(|p| p.by == crate::config::ProviderBy::Model);
    if !cfg.llm.request_body || end_of_stream || !(by_model || llm_may_apply(cfg, headers)) {
        return None;
    }
    let now = host::now_ms();
    // What any worker learned (shared data), read now rather than at the next tick; an old
    // "off" lets this request probe again.
    let off = match shared_off(now) {
        Some(off) => off,
        None => shared.try_borrow().map(|sh| sh.body_reading_off).unwrap_or(true),
    };
    (!off).then_some(now)
}

/// Pause the request for its body: its wait goes to the worker's `body_waits` (where the
/// tick expires it) until its first body callback.
pub(super) fn pause_for_body(cfg: &Config, shared: &RefCell<Shared>, ctx: u32, facts: RequestFacts, headers: &mut HostHeaders, now: u64) {
    let path = String::from_utf8_lossy(&headers.get(":path").unwrap_or_default()).into_owned();
    if crate::llm::request::is_chat_completions(&path) || cfg.rewrites_model() {
        // A rewritten body may change length: let Envoy frame it (chunked).
        host::remove_header(map::REQUEST_HEADERS, "content-length");
    }
    let wait = BodyWait { deadline: now.saturating_add(BODY_WAIT_MS), facts, path };
    if let Ok(mut sh) = shared.try_borrow_mut() {
        sh.body_waits.insert(ctx, wait);
    }
}

/// The first body callback of a request paused for its body: the host lets the paused
/// header phase see the body (the option is on). Its wait, unless the tick decided it
/// already (the body came after the deadline).
pub(super) fn first_body(shared: &RefCell<Shared>, ctx: u32) -> Option<BodyWait> {
    let Ok(mut sh) = shared.try_borrow_mut() else { return None };
    let wait = sh.body_waits.remove(&ctx);
    if wait.is_some() {
        // The body came to the paused request: the host shows bodies (the option is on).
        // After the tick decided and resumed it, its body says nothing of that.
        set_body_reading_off(&mut sh, false);
    }
    wait
}

/// The request's stream ended while it waited for its body.
pub(super) fn forget_wait(shared: &RefCell<Shared>, ctx: u32) {
    if let Ok(mut sh) = shared.try_borrow_mut() {
        sh.body_waits.remove(&ctx);
    }
}

/// The whole body is here: read it, rewrite it if asked, and add it to the facts.
pub(super) fn facts_with_body(cfg: &Config, wait: BodyWait, body_size: usize) -> RequestFacts {
    let BodyWait { mut facts, path, .. } = wait;
    let max = cfg.llm.max_request_body_bytes as usize;
    let body = if body_size <= max { host::buffer(host::HTTP_REQUEST_BODY, 0, body_size).unwrap_or_default() } else { Vec::new() };
    let inspected = crate::llm::inspect(&path, &body, max);
    if let Some(new) = &inspected.rewritten {
        if !host::set_buffer(host::HTTP_REQUEST_BODY, 0, body_size, new) {
            host::log(host::LOG_WARN, "tenant-quota: could not rewrite the request body (include_usage)");
        }
    }
    let r = inspected.request;
    facts.llm_body = Some(engine::LlmBody { model: r.model, max_tokens: r.max_tokens, bytes: if body_size <= max { body_size as u64 } else { 0 } });
    facts
}

/// Tick: requests paused for their body whose first body callback did not come in time: the
/// host does not give the body to a paused header phase (Envoy without
/// `allow_on_headers_stop_iteration`, e.g. Istio's WasmPlugin): decide them on their headers
/// (model unknown, default reserve), resume them, and stop pausing later requests.
pub(super) fn expire_waits(cfg: &Config, sh: &mut Shared, now: u64) {
    let due: Vec<u32> = sh.body_waits.iter().filter(|(_, w)| now >= w.deadline).map(|(c, _)| *c).collect();
    for ctx in due {
        let Some(w) = sh.body_waits.remove(&ctx) else { continue };
        if !sh.body_reading_off || shared_off(now) != Some(true) {
            sh.body_reading_off = false;
            set_body_reading_off(sh, true);
            host::log(
                host::LOG_WARN,
                "tenant-quota: llm.request_body: a paused request got no body callback in 1 s; the host does not show bodies to a paused header phase (set allow_on_headers_stop_iteration: true); deciding on headers",
            );
        }
        let level = sh.saturation.level(cfg, now, &mut sh.metrics);
        let degraded = cfg.global.is_some() && sh.global.degraded(cfg, now);
        let at = Conditions { now, level, global_degraded: degraded };
        let v = engine::evaluate(cfg, &HostStore, &mut sh.worker, &w.facts, at, &sh.overrides.policies);
        let next = verdict::after_verdict(cfg, sh, v);
        verdict::deliver(cfg, sh, ctx, next, now);
    }
}

/// An admitted LLM request's response: its status, and its usage read as the body streams
/// (SPEC 5).
pub(super) struct LlmResponse {
    usage: crate::llm::UsageParser,
    status: u32,
}

impl LlmResponse {
    /// At the response headers.
    pub(super) fn start() -> LlmResponse {
        let status = host::header(map::RESPONSE_HEADERS, ":status").and_then(|v| engine::parse_units(&v)).unwrap_or(0) as u32;
        let ct = host::header(map::RESPONSE_HEADERS, "content-type");
        let ct = ct.as_deref().and_then(|v| std::str::from_utf8(v).ok());
        LlmResponse { usage: crate::llm::UsageParser::new(ct), status }
    }

    /// A piece of the response body: the body streams on to the client as it comes (never
    /// held); the usage is read from each piece, bounded in memory by the parser.
    pub(super) fn feed(&mut self, body_size: usize) {
        if body_size > 0 {
            if let Some(chunk) = host::buffer(host::HTTP_RESPONSE_BODY, 0, body_size) {
                self.usage.feed(&chunk);
            }
        }
    }
}

/// Replace the LLM reservations by the usage the response reported (`response` None: no
/// response came).
pub(super) fn settle(cfg: &Config, shared: &RefCell<Shared>, a: &Admitted, response: Option<LlmResponse>) {
    let (usage, failed) = match response {
        Some(mut r) => (r.usage.finish(), r.status >= 400),
        None => (None, false),
    };
    let Ok(mut sh) = shared.try_borrow_mut() else { return };
    let sh = &mut *sh;
    let p = verdict::policy(cfg, sh, a);
    match usage {
        Some(u) => {
            sh.metrics.llm_tokens(&a.tenant, u);
            log_fields::usage(cfg, u);
        }
        None if !failed => sh.metrics.llm_usage_missing(),
        None => {}
    }
    match engine::llm_settle(cfg, &HostStore, &mut sh.worker, a, &p, usage, failed, host::now_ms()) {
        Ok(us) => {
            for u in &us {
                let (scope, who) = a.scope_id_of(cfg, u.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                sh.metrics.usage_of(cfg, scope, who, u, false);
                // Settled units of a global budget (beyond or below the reserve) are synced.
                if cfg.budgets[u.budget].global.is_some() {
                    sh.global.touched(a.subject_of(cfg, u.budget, &p).map_or("", |x| x.0), false);
                }
            }
        }
        Err(e) => {
            sh.metrics.error();
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not settle the LLM usage of `{}`: {e:?}", a.tenant));
        }
    }
}
