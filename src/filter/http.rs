//! A request's context: its phase, and the five HTTP callbacks that move it along. Each
//! concern lives one floor down (admin, LLM bodies, queue, `exact` checks, what an
//! admitted request holds); this file only says which applies when.

use super::admin::{self, LocalReply, PendingAdmin};
use super::admitted::Held;
use super::exact::{self, Asked, ExactCall};
use super::headers;
use super::host::{self, map, HostStore};
use super::llm_body::{self, BodyWait};
use super::queue::{self, Placed};
use super::reroute;
use super::verdict::{self, Next};
use super::{global, log_fields, test_hooks, Shared};
use crate::config::{Config, Mode};
use crate::engine::{self, Admitted, Conditions, RequestFacts};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

pub(super) struct Http {
    config: Rc<Config>,
    shared: Rc<RefCell<Shared>>,
    ctx: u32,
    /// When the request headers arrived (for the upstream latency signal).
    started_ms: u64,
    phase: Phase,
    /// Its body was read before admission (a fallback to another model rewrites it).
    body_read: bool,
    /// The model it was sent upstream with (providers named by model cool by it).
    model: Option<String>,
}

/// Where a request is. Each phase holds what it needs, so the legal combinations are the
/// variants.
enum Phase {
    /// Not decided yet (and never, with mode off).
    Undecided,
    /// An admin request, holding its body until it is complete (SPEC 4).
    Admin(PendingAdmin),
    /// Paused in its header phase to read its body before admission (SPEC 5). The wait sits
    /// in the worker's `body_waits`, where the tick can expire it, until the first body
    /// callback takes it here.
    ReadingBody(Option<BodyWait>),
    /// Paused until the tick delivers its decision (`Queues::delivered`): it waits in a queue
    /// (SPEC 6), or its body wait expired and the tick decided it.
    Queued,
    /// Admitted locally, paused while the service answers its `exact` check (SPEC 8).
    AskingService(ExactCall, Held),
    /// Let through; it holds its admission until its stream ends.
    Admitted(Held),
    /// Answered locally; the reply passes back through the response callbacks.
    Replied,
    /// Its stream ended and everything it held was given back.
    Done,
}

impl Phase {
    fn held(&mut self) -> Option<&mut Held> {
        match self {
            Phase::AskingService(_, h) | Phase::Admitted(h) => Some(h),
            _ => None,
        }
    }
}

impl Http {
    pub(super) fn new(config: Rc<Config>, shared: Rc<RefCell<Shared>>, ctx: u32) -> Http {
        Http { config, shared, ctx, started_ms: 0, phase: Phase::Undecided, body_read: false, model: None }
    }

    fn send(&mut self, status: u32, details: &str, body: &str, headers: &[(String, String)]) -> Action {
        self.phase = Phase::Replied;
        if !host::send_local_response(status, details, body, headers) {
            host::log(host::LOG_ERROR, "tenant-quota: send_local_response failed");
            return Action::Continue;
        }
        Action::Pause
    }

    fn send_local(&mut self, r: &LocalReply) -> Action {
        self.send(r.status, r.details, &r.body, &r.headers)
    }

    /// Answer with the quota's reply (its decision goes to the access-log fields too).
    fn reply(&mut self, r: &engine::Reply) -> Action {
        log_fields::reply(&self.config, r);
        let body = verdict::wire_body(r);
        self.send(r.status, &r.reason, &body, &r.headers)
    }

    /// A request under the admin prefix: authenticate, then answer (after its body, if any).
    fn admin_headers(&mut self, adm: &crate::config::Admin, path: &str, end_of_stream: bool) -> Action {
        match admin::authenticate(adm, &self.shared, path) {
            Err(r) => self.send_local(&r),
            Ok(p) if end_of_stream => self.admin_answer(p, &[]),
            Ok(p) => {
                admin::hold_body();
                self.phase = Phase::Admin(p);
                Action::Continue
            }
        }
    }

    fn admin_answer(&mut self, p: PendingAdmin, body: &[u8]) -> Action {
        match admin::answer(&self.config, &self.shared, p, body) {
            Some(r) => self.send_local(&r),
            None => Action::Continue,
        }
    }

    /// Decide a request (at its headers, or at the end of its body when it was read) and act.
    /// A request whose provider cools goes to the provider's fallback first; one that a
    /// `fallback` budget refuses goes to the budget's, and is decided again there (once).
    fn decide(&mut self, mut facts: RequestFacts) -> Action {
        let cfg = self.config.clone();
        if cfg.providers.is_some() {
            if let Some((target, why, id)) = reroute::cooling_fallback(&cfg, &self.shared, &facts, host::now_ms()) {
                if let Some(f) = reroute::apply(&cfg, &facts, target, self.body_read, why) {
                    self.count_fallback(&f, &id, "provider_cooling");
                    facts = f;
                }
            }
            self.model = reroute::model_of(&cfg, &facts);
        }
        let next = {
            let Ok(mut sh) = self.shared.try_borrow_mut() else { return Action::Continue };
            let sh = &mut *sh;
            let now = host::now_ms();
            if cfg.admin.is_some() {
                sh.overrides.refresh(&cfg, &HostStore, now);
            }
            self.started_ms = now;
            let level = sh.saturation.level(&cfg, now, &mut sh.metrics);
            let global_degraded = cfg.global.is_some() && sh.global.degraded(&cfg, now);
            let at = Conditions { now, level, global_degraded };
            let v = engine::evaluate(&cfg, &HostStore, &mut sh.worker, &facts, at, &sh.overrides.policies);
            verdict::after_verdict(&cfg, sh, v)
        };
        match next {
            Next::Continue { admitted, counted } => {
                self.phase = Phase::Admitted(Held::new(admitted, counted));
                Action::Continue
            }
            Next::AskExact { admitted, counted } => self.ask_exact(admitted, counted),
            Next::Reply(reply) => self.reply(&reply),
            Next::Reroute(r) => {
                let b = &cfg.budgets[r.budget];
                let reason = r.reason.header_value(&b.name);
                let rerouted = b.fallback.as_ref().and_then(|t| {
                    let why = engine::Rerouted { budget: Some(r.budget), header: reroute::describe(&format!("budget={}; reason={reason}", b.name), t) };
                    reroute::apply(&cfg, &facts, t, self.body_read, why)
                });
                match rerouted {
                    Some(f) => {
                        self.count_fallback(&f, &b.name, &reason);
                        self.decide(f)
                    }
                    None => self.reply(&r.reply),
                }
            }
            Next::Wait(w) => match queue::place(&cfg, &self.shared, self.ctx, w, facts) {
                Placed::Waiting => {
                    self.phase = Phase::Queued;
                    Action::Pause
                }
                Placed::Refused(reply) => self.reply(&reply),
                Placed::WorkerBusy => Action::Continue,
            },
        }
    }

    /// `quota_fallbacks_total`: a request sent to a fallback by `resource` for `reason`.
    fn count_fallback(&self, facts: &RequestFacts, resource: &str, reason: &str) {
        let tenant = facts.tenant.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            sh.metrics.fallback(&tenant, resource, reason);
        }
    }

    /// Ask the service about the request's `exact` budgets; the request waits (SPEC 8).
    fn ask_exact(&mut self, a: Box<Admitted>, counted: bool) -> Action {
        let held = Held::new(Some(a), counted);
        let asked = match held.admitted() {
            Some(a) => exact::ask(&self.config, &self.shared, a),
            None => Asked::WorkerBusy,
        };
        match asked {
            Asked::Sent(call) => {
                self.phase = Phase::AskingService(call, held);
                Action::Pause
            }
            Asked::Failed(now) => self.exact_done(held, None, now),
            Asked::WorkerBusy => {
                self.phase = Phase::Admitted(held);
                Action::Continue
            }
        }
    }

    /// Admit or refuse a request once its `exact` check is answered (or failed: `None`).
    fn exact_done(&mut self, mut held: Held, answers: Option<&[crate::global::Answer]>, sent_at: u64) -> Action {
        let outcome = match held.take_admitted() {
            Some(a) => exact::answered(&self.config, &self.shared, a, answers, sent_at),
            None => None,
        };
        match outcome {
            Some(Err(reply)) => {
                // Refused: what it held (its place in the in-flight signal) goes back now.
                held.release(&self.config, &self.shared, false);
                return self.reply(&reply);
            }
            Some(Ok(a)) => held.readmit(a),
            None => {}
        }
        self.phase = Phase::Admitted(held);
        Action::Continue
    }

    /// The request's whole body arrived after a header pause: read it, rewrite it if asked,
    /// decide.
    fn decide_with_body(&mut self, body_size: usize) -> Action {
        let Phase::ReadingBody(Some(wait)) = std::mem::replace(&mut self.phase, Phase::Undecided) else { return Action::Continue };
        let facts = llm_body::facts_with_body(&self.config, wait, body_size);
        self.body_read = facts.llm_body.is_some();
        self.decide(facts)
    }

    /// Pick up a decision the tick made while the request was paused.
    fn adopt(&mut self) {
        if !matches!(self.phase, Phase::ReadingBody(_) | Phase::Queued) {
            return;
        }
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            if let Some(d) = sh.queues.delivered.remove(&self.ctx) {
                self.phase = Phase::Admitted(Held::new(d.admitted, d.counted));
            }
        }
    }

    /// The stream ended (however): give back what the request holds, once.
    fn finish(&mut self) {
        match self.phase {
            Phase::Replied | Phase::Done => return,
            Phase::ReadingBody(_) => {
                llm_body::forget_wait(&self.shared, self.ctx);
                self.phase = Phase::Queued;
            }
            _ => {}
        }
        self.adopt();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Queued => queue::cancel(&self.config, &self.shared, self.ctx),
            Phase::AskingService(_, held) => held.release(&self.config, &self.shared, true),
            Phase::Admitted(held) => held.release(&self.config, &self.shared, false),
            _ => {}
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Phase::AskingService(call, held) = &self.phase else { return };
        if call.token != token_id {
            return;
        }
        let n = held.admitted().map_or(0, |a| a.exact.len());
        let answers = global::exact_answers(status_code, response_size, n);
        let Phase::AskingService(call, held) = std::mem::replace(&mut self.phase, Phase::Undecided) else { return };
        let action = self.exact_done(held, answers.as_deref(), call.sent_at);
        if action == Action::Continue && !host::resume_request() {
            host::log(host::LOG_WARN, "tenant-quota: global: could not resume the request");
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let cfg = self.config.clone();
        if cfg.mode == Mode::Off {
            return Action::Continue;
        }
        if let Some(adm) = &cfg.admin {
            let path = host::header(map::REQUEST_HEADERS, ":path").unwrap_or_default();
            let path = String::from_utf8_lossy(&path);
            if crate::admin::is_admin_path(&adm.path_prefix, &path) {
                return self.admin_headers(adm, &path, end_of_stream);
            }
        }
        if let Some(status) = test_hooks::on_request(&cfg) {
            return self.send(status, "tenant_quota_test_hook", "{}", &[]);
        }
        // Everything the decision needs of the request, read once: the engine reads no header.
        let (facts, mut headers) = headers::read_facts(&cfg, end_of_stream);
        // SPEC 5: read the JSON body before admission when an LLM budget may apply.
        if let Some(now) = llm_body::body_wanted(&cfg, &self.shared, &mut headers, end_of_stream) {
            llm_body::pause_for_body(&cfg, &self.shared, self.ctx, facts, &mut headers, now);
            self.phase = Phase::ReadingBody(None);
            self.started_ms = now;
            return Action::Pause;
        }
        self.decide(facts)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Phase::ReadingBody(wait) = &mut self.phase {
            if wait.is_none() {
                *wait = llm_body::first_body(&self.shared, self.ctx);
            }
            if wait.is_some() {
                // Hold the body until it is complete (bounded by Envoy's buffer limit).
                return if end_of_stream { self.decide_with_body(body_size) } else { Action::Pause };
            }
            // Decided by the tick after the body did not come in time, and resumed: its body
            // now flows whether or not the host shows bodies to a paused header phase, so it
            // says nothing of that (the flag is probed again later: llm_body).
            self.phase = Phase::Queued;
        }
        self.adopt();
        if let Phase::Admin(_) = self.phase {
            if !end_of_stream {
                // Buffer until the whole body is here.
                return Action::Pause;
            }
            let Phase::Admin(p) = std::mem::replace(&mut self.phase, Phase::Undecided) else { return Action::Continue };
            return match admin::body(body_size) {
                Ok(body) => self.admin_answer(p, &body),
                Err(r) => self.send_local(&r),
            };
        }
        if let Some(held) = self.phase.held() {
            held.request_body(body_size);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        self.adopt();
        if let Phase::Replied = self.phase {
            return Action::Continue;
        }
        if self.config.saturation.is_some() && self.config.mode != Mode::Off {
            let now = host::now_ms();
            let latency = (self.started_ms > 0).then(|| now.saturating_sub(self.started_ms));
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                sh.saturation.observe_response(&self.config, now, latency);
            }
        }
        if self.config.providers.is_some() {
            reroute::observe_answer(&self.config, &self.shared, self.model.as_deref());
        }
        if let Some(held) = self.phase.held() {
            held.response_headers(&self.config, &self.shared);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(held) = self.phase.held() {
            held.response_body(&self.config, &self.shared, body_size, end_of_stream);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // Metrics are written on the tick (filter/metrics.rs).
        self.finish();
    }
}
