//! The proxy-wasm layer: the only module that talks to the host. It reads headers, hands
//! them to the engine with the host's clock and shared data, and turns verdicts into local
//! replies and response headers.

mod global;
mod host;
mod log_fields;
mod metrics;
mod queue;
mod saturation;
mod verdict;

use crate::admin::{self, Overrides};
use crate::config::{Config, Mode, TenantPolicy, TenantSource};
use crate::engine::{self, Admitted, Conditions, Headers, RequestFacts, Verdict, Worker};
use verdict::Next;
use crate::store;
use metrics::Metrics;
use saturation::SaturationState;
use host::{map, HostStore};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(host::LOG_CRITICAL, &format!("tenant-quota: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { id, ..Root::default() }) });
}}

/// Per-worker mutable state shared by the root and HTTP contexts of one VM.
struct Shared {
    worker: Worker,
    overrides: Overrides,
    metrics: Metrics,
    saturation: SaturationState,
    global: global::GlobalWorker,
    /// In-flight ledger (configs with `in_flight` budgets): a dead VM's slots come back.
    ledger: Option<crate::store::ledger::Ledger>,
    /// Requests waiting for room (SPEC 6).
    queues: queue::Queues,
    /// Requests paused in their header phase to read their body (SPEC 5), by context, until
    /// their first body callback (or the deadline: then the option that lets the filter see
    /// the body is off, and they are decided without it).
    body_waits: HashMap<u32, BodyWait>,
    /// Bodies cannot be read (`allow_on_headers_stop_iteration` is off): decide on headers.
    body_reading_off: bool,
    /// `exact` checks asked from the tick, by call token (their answers come to the root).
    tick_exact: HashMap<u32, verdict::TickExact>,
}

/// What a request paused for its body needs to be decided.
struct BodyWait {
    deadline: u64,
    facts: RequestFacts,
    path: String,
}

/// How long a paused request waits for its first body callback before the filter decides
/// the host will not send one.
const BODY_WAIT_MS: u64 = 1000;
/// Shared: `[1]` once a worker found that bodies cannot be read, `[0]` once one saw a body.
const BODY_OFF_KEY: &str = "tq1|bodyoff";

fn set_body_reading_off(sh: &mut Shared, off: bool) {
    if sh.body_reading_off != off {
        sh.body_reading_off = off;
        let _ = crate::store::SharedStore::set(&HostStore, BODY_OFF_KEY, &[u8::from(off)], 0);
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

#[derive(Default)]
struct Root {
    id: u32,
    config: Option<Rc<Config>>,
    shared: Option<Rc<RefCell<Shared>>>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {
        // The only HTTP calls are alerts webhooks, sent from the tick: count an answer other
        // than 2xx (a failed connection answers with no status at all).
        let status = host::header(host::map::HTTP_CALL_RESPONSE_HEADERS, ":status").and_then(|v| engine::parse_units(&v)).unwrap_or(0);
        if !(200..300).contains(&status) {
            if let Some(Ok(mut sh)) = self.shared.as_ref().map(|s| s.try_borrow_mut()) {
                sh.metrics.webhook_error();
            }
            host::log(host::LOG_WARN, &format!("tenant-quota: alerts webhook answered {status}"));
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let (Some(cfg), Some(sh)) = (&self.config, &self.shared) else { return };
        if let Ok(mut sh) = sh.try_borrow_mut() {
            let now = host::now_ms();
            if verdict::tick_exact_answered(cfg, &mut sh, token_id, status_code, response_size, now) {
                // It acted on a paused request's context; act as the root again.
                host::set_effective_context(self.id);
            } else {
                sh.global.sync_answered(cfg, token_id, status_code, response_size, now);
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match host::plugin_configuration(size) {
            Ok(b) => b,
            Err(s) => {
                host::log(host::LOG_CRITICAL, &format!("tenant-quota: cannot read plugin configuration: host status {s}"));
                return false;
            }
        };
        let cfg = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                host::log(host::LOG_CRITICAL, &format!("tenant-quota: {e}"));
                return false;
            }
        };
        let init = store::init_registry(&HostStore)
            .and_then(|_| admin::init(&HostStore))
            .and_then(|_| saturation::init(&cfg))
            .and_then(|_| if cfg.global.is_some() { crate::global::init(&HostStore) } else { Ok(()) })
            .and_then(|_| if has_in_flight(&cfg) { crate::store::ledger::init(&HostStore) } else { Ok(()) })
            .and_then(|_| cfg.scopes.iter().try_for_each(|sc| store::init_registry_in(&HostStore, store::Space::Scope(&sc.name))));
        if let Err(e) = init {
            host::log(host::LOG_CRITICAL, &format!("tenant-quota: shared data unavailable at configure: {e:?}"));
            return false;
        }
        host::log(
            host::LOG_INFO,
            &format!(
                "tenant-quota: configured: mode {:?}, {} budgets, {} named tenants",
                cfg.mode,
                cfg.budgets.len(),
                cfg.tenants.len()
            ),
        );
        let seed = host::now_ms() ^ ((self as *const Root as u64) << 32) ^ 0x5151_7a7a;
        let mut worker = Worker::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let lease_id = worker.token();
        let ledger = has_in_flight(&cfg).then(|| crate::store::ledger::Ledger::new(worker.token()));
        for w in cfg.warnings() {
            host::log(host::LOG_WARN, &format!("tenant-quota: {w}"));
        }
        let shared = Shared {
            ledger,
            queues: queue::Queues::default(),
            body_waits: HashMap::new(),
            body_reading_off: false,
            tick_exact: HashMap::new(),
            global: global::GlobalWorker::new(lease_id),
            worker,
            overrides: Overrides::default(),
            metrics: Metrics::new(&cfg),
            saturation: SaturationState::new(&cfg),
        };
        // Idle workers flush batched metrics and in-flight changes on a tick.
        if !host::set_tick_period(5) {
            host::log(host::LOG_WARN, "tenant-quota: the host refused a 5 ms tick: queues, syncs and flushes will not run");
        }
        self.shared = Some(Rc::new(RefCell::new(shared)));
        self.config = Some(Rc::new(cfg));
        true
    }

    fn on_tick(&mut self) {
        if let Some(sh) = &self.shared {
            if let Ok(mut sh) = sh.try_borrow_mut() {
                let now = host::now_ms();
                sh.saturation.flush(now, true);
                if let Some(cfg) = &self.config {
                    let Shared { metrics, overrides, global, .. } = &mut *sh;
                    metrics.flush(cfg, overrides, now, true);
                    if cfg.global.is_some() {
                        global.tick(cfg, &|id| overrides.get(id), now);
                    }
                }
                if let Some(cfg) = &self.config {
                    if cfg.alerts_webhook.is_some() {
                        send_alerts(cfg, &mut sh);
                    }
                    if !sh.body_waits.is_empty() {
                        body_timeouts(cfg, &mut sh, now);
                        host::set_effective_context(self.id);
                    }
                    if cfg.llm.request_body {
                        // Every worker follows what any worker learned about body reading.
                        let mut b = Vec::new();
                        if let Ok(Some(_)) = crate::store::SharedStore::get(&HostStore, BODY_OFF_KEY, &mut b) {
                            sh.body_reading_off = b.first() == Some(&1);
                        }
                    }
                    if !sh.queues.is_empty() {
                        queue::pass(cfg, &mut sh, now);
                        // The pass acted on paused requests' contexts; act as the root again.
                        host::set_effective_context(self.id);
                    }
                }
                let Shared { ledger, worker, metrics, .. } = &mut *sh;
                if let Some(l) = ledger {
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
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        let shared = self.shared.clone()?;
        Some(Box::new(Http {
            config,
            shared,
            admitted: None,
            local_reply: false,
            body_bytes: 0,
            finished: false,
            admin: None,
            started_ms: 0,
            counted_in_flight: false,
            exact_call: None,
            ctx: context_id,
            waiting: false,
            usage: None,
            status: 0,
            body_reading: false,
            body_wait: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn has_in_flight(cfg: &Config) -> bool {
    cfg.budgets.iter().any(|b| b.counts == crate::config::Counts::InFlight)
}

/// Put an admitted request's in_flight slots on this VM's ledger.
fn ledger_acquired(cfg: &Config, sh: &mut Shared, a: &Admitted) {
    if let Some(l) = &mut sh.ledger {
        for &b in &a.in_flight {
            l.acquired(&HostStore, key_of(cfg, a, b), cfg.budgets[b].id);
        }
    }
}

/// The store key a budget's units of an admitted request live under.
fn key_of<'a>(cfg: &Config, a: &'a Admitted, budget: usize) -> &'a str {
    match cfg.budgets[budget].scope {
        None => &a.key,
        Some(sc) => a.scopes.iter().find(|c| c.scope == sc).map_or("", |c| c.key.as_str()),
    }
}

/// Metrics of a verdict.
fn record(cfg: &Config, sh: &mut Shared, verdict: &Verdict) {
    if let Verdict::Admit(a) = verdict {
        sh.metrics.current_tenant.clone_from(&a.tenant);
    }
    match verdict {
        Verdict::Pass { error: Some(_) } => sh.metrics.error(),
        Verdict::Pass { error: None } => {}
        Verdict::Admit(a) => {
            if let (Some(_), Some(h)) = (&a.shadow, &a.headline) {
                if a.usage.is_empty() {
                    // A would-be rejection in shadow mode.
                    let reason = if h.burst_credits > 0 { crate::core::Reason::BurstExhausted } else { crate::core::Reason::Exceeded };
                    let (scope, who) = a.scope_id_of(cfg, h.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                    sh.metrics.rejected_of(cfg, scope, who, h.budget, reason, true);
                    return;
                }
            }
            for u in &a.usage {
                let (scope, who) = a.scope_id_of(cfg, u.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                sh.metrics.usage_of(cfg, scope, who, u, true);
            }
        }
        Verdict::Wait(_) => {}
        Verdict::Reject { tenant, rejection, error, scope, .. } => {
            if error.is_some() {
                sh.metrics.error();
            }
            if let (Some(t), Some(r)) = (tenant, rejection) {
                match scope {
                    Some((s, id)) => sh.metrics.rejected_of(cfg, Some(*s), id, r.budget, r.reason, false),
                    None => sh.metrics.rejected(cfg, t, r.budget, r.reason, false),
                }
            }
        }
    }
}


/// Requests paused for their body whose first body callback did not come in time: the host
/// does not give the body to a paused header phase (Envoy without
/// `allow_on_headers_stop_iteration`, e.g. Istio's WasmPlugin): decide them on their headers
/// (model unknown, default reserve), resume them, and stop pausing later requests.
fn body_timeouts(cfg: &Config, sh: &mut Shared, now: u64) {
    let due: Vec<u32> = sh.body_waits.iter().filter(|(_, w)| now >= w.deadline).map(|(c, _)| *c).collect();
    for ctx in due {
        let Some(w) = sh.body_waits.remove(&ctx) else { continue };
        if !sh.body_reading_off {
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

/// An admin request waiting for its body.
struct PendingAdmin {
    method: String,
    path: String,
    query: String,
}

struct Http {
    config: Rc<Config>,
    shared: Rc<RefCell<Shared>>,
    admin: Option<PendingAdmin>,
    admitted: Option<Box<Admitted>>,
    /// We answered locally; the reply passes back through the response callbacks.
    local_reply: bool,
    body_bytes: u64,
    finished: bool,
    /// When the request headers arrived (for the upstream latency signal).
    started_ms: u64,
    /// This request is in the all-tenant in-flight count (queue depth signal).
    counted_in_flight: bool,
    /// An `exact` global check in flight: (token, sent at). `admitted` holds the request's
    /// local reservations meanwhile.
    exact_call: Option<(u32, u64)>,
    ctx: u32,
    /// Paused in a queue (SPEC 6); its admission, once decided, waits in `Queues::delivered`.
    waiting: bool,
    /// Reads the LLM usage from the response body as it streams (SPEC 5).
    usage: Option<crate::llm::UsageParser>,
    /// The response's status (0 until its headers).
    status: u32,
    /// Paused in the header phase to read the body before admission (SPEC 5); the wait is in
    /// `Shared::body_waits` until the first body callback moves it to `body_wait`.
    body_reading: bool,
    body_wait: Option<BodyWait>,
}

/// Request headers, read for the engine's facts. Each host call costs about as much as
/// reading every header at once (bench/RESULTS.md), so when a configuration reads several
/// headers per request they are fetched in one call and looked up here.
enum HostHeaders {
    OneByOne,
    All(Vec<u8>),
}

impl HostHeaders {
    fn for_config(cfg: &Config) -> HostHeaders {
        if header_reads(cfg) >= 2 {
            if let Some(all) = host::headers_raw(map::REQUEST_HEADERS) {
                return HostHeaders::All(all);
            }
        }
        HostHeaders::OneByOne
    }
}

/// How many request headers a request may read under this configuration.
fn header_reads(cfg: &Config) -> usize {
    let needs = engine::Needs::of(cfg);
    let scope_headers = cfg.scopes.iter().filter(|s| matches!(s.source, TenantSource::Header(_))).count();
    // The tenant, then each header the engine's facts need.
    1 + usize::from(needs.priority) + usize::from(needs.path) + usize::from(needs.method) + usize::from(needs.content_length) + scope_headers + needs.cost_headers
}

impl HostHeaders {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        self.with(name, <[u8]>::to_vec)
    }
}

impl Headers for HostHeaders {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            HostHeaders::OneByOne => host::header(map::REQUEST_HEADERS, name).map(|v| f(&v)),
            HostHeaders::All(all) => crate::wire::pairs_get(all, name).map(f),
        }
    }
}

impl Http {
    fn policy(&self, sh: &Shared, a: &Admitted) -> TenantPolicy {
        verdict::policy(&self.config, sh, a)
    }

    fn send(&mut self, status: u32, details: &str, body: &str, headers: &[(String, String)]) -> Action {
        self.local_reply = true;
        self.finished = true;
        if !host::send_local_response(status, details, body, headers) {
            host::log(host::LOG_ERROR, "tenant-quota: send_local_response failed");
            return Action::Continue;
        }
        Action::Pause
    }

    /// Answer with the quota's reply (its decision goes to the access-log fields too).
    fn reply(&mut self, r: &engine::Reply) -> Action {
        log_fields::reply(&self.config, r);
        // On LLM API paths the body's `error` is the provider's error object (SPEC 2); the
        // path is read only here, when a request is refused.
        let path = host::header(map::REQUEST_HEADERS, ":path").unwrap_or_default();
        match engine::LlmApi::of_path(&path) {
            Some(api) => {
                let body = r.provider_body(api);
                self.send(r.status, &r.reason, &body, &r.headers)
            }
            None => self.send(r.status, &r.reason, &r.body, &r.headers),
        }
    }

    /// Requests under the admin prefix: authenticate, then answer (after the body, if any).
    fn admin_headers(&mut self, path: &str, end_of_stream: bool) -> Action {
        let Some(adm) = &self.config.admin else { return Action::Continue };
        let source = if adm.allowed_sources.is_empty() { None } else { host::property(&["source".to_string(), "address".to_string()]) };
        if !admin::source_allowed(adm, source.as_deref()) {
            self.admin_refused(path, source.as_deref(), "source address not in admin.allowed_sources");
            let h = vec![("content-type".to_string(), "application/json".to_string())];
            return self.send(403, "tenant_quota_admin_forbidden", "{\"error\":\"forbidden\"}", &h);
        }
        let auth = host::header(map::REQUEST_HEADERS, "authorization");
        if !admin::authorized(adm, auth.as_deref()) {
            let why = if auth.is_some() { "wrong bearer token" } else { "no bearer token" };
            let source = source.or_else(|| host::property(&["source".to_string(), "address".to_string()]));
            self.admin_refused(path, source.as_deref(), why);
            let h = vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("www-authenticate".to_string(), "Bearer".to_string()),
            ];
            return self.send(401, "tenant_quota_admin_unauthorized", "{\"error\":\"unauthorized\"}", &h);
        }
        let method = String::from_utf8_lossy(&host::header(map::REQUEST_HEADERS, ":method").unwrap_or_default()).into_owned();
        let rest = &path[adm.path_prefix.len()..];
        let (sub, query) = rest.split_once('?').unwrap_or((rest, ""));
        self.admin = Some(PendingAdmin { method, path: sub.to_string(), query: query.to_string() });
        if end_of_stream {
            return self.admin_answer(&[]);
        }
        // Host quirk: proxy-wasm turns a paused header phase into StopAllIteration, after
        // which the filter never sees the body. So the headers continue (without the
        // token) and the body is held here; the answer is a local reply, which resets
        // whatever the router started upstream.
        host::remove_header(map::REQUEST_HEADERS, "authorization");
        Action::Continue
    }

    /// A refused admin call: counted and logged, never with the token.
    fn admin_refused(&self, path: &str, source: Option<&[u8]>, why: &str) {
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            sh.metrics.admin_auth_failure();
        }
        let path: String = path.chars().take(200).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
        let src = source.map(|s| String::from_utf8_lossy(s).chars().take(64).collect::<String>()).unwrap_or_else(|| "unknown".into());
        host::log(host::LOG_WARN, &format!("tenant-quota: admin call refused ({why}) from {src} to {path}"));
    }

    fn admin_answer(&mut self, body: &[u8]) -> Action {
        let Some(p) = self.admin.take() else { return Action::Continue };
        let cfg = self.config.clone();
        let now = host::now_ms();
        let resp = {
            let Ok(mut sh) = self.shared.try_borrow_mut() else { return Action::Continue };
            let sh = &mut *sh;
            sh.overrides.next_check = 0;
            sh.overrides.refresh(&cfg, &HostStore, now);
            let req = admin::Request { method: &p.method, path: &p.path, query: &p.query, body };
            sh.saturation.level(&cfg, now, &mut sh.metrics);
            let metrics = &mut sh.metrics;
            let ovr = &sh.overrides;
            let r = admin::handle(&cfg, &HostStore, &sh.overrides, &req, now, || {
                let t = metrics.totals(&cfg, ovr);
                admin::StatusExtra {
                    totals: serde_json::json!({ "allowed": t[0], "rejected": t[1], "shadow_rejected": t[2] }),
                    saturation: saturation::status(&cfg, &sh.saturation),
                    global: global::status(&cfg, now),
                }
            });
            // A write must be visible to this worker's next request at once.
            sh.overrides.next_check = 0;
            r
        };
        let h = vec![("content-type".to_string(), "application/json".to_string())];
        self.send(resp.status, "tenant_quota_admin", &resp.body, &h)
    }

    /// Ask the service about the request's `exact` budgets; the request waits (SPEC 8).
    fn ask_exact(&mut self) -> Action {
        let Some(a) = &self.admitted else { return Action::Continue };
        let cfg = self.config.clone();
        let now = host::now_ms();
        let body = {
            let Ok(sh) = self.shared.try_borrow() else { return Action::Continue };
            engine::exact_request(&cfg, &self.policy(&sh, a), a)
        };
        match global::dispatch(&cfg, &body) {
            Some(token) => {
                self.exact_call = Some((token, now));
                Action::Pause
            }
            None => {
                host::log(host::LOG_WARN, "tenant-quota: global: cannot call the rate limit service");
                self.exact_done(None, now)
            }
        }
    }

    /// Admit or refuse a request once its `exact` check is answered (or failed: `None`).
    fn exact_done(&mut self, answers: Option<&[crate::global::Answer]>, sent_at: u64) -> Action {
        let Some(a) = self.admitted.take() else { return Action::Continue };
        let cfg = self.config.clone();
        let now = host::now_ms();
        let r = {
            let Ok(mut sh) = self.shared.try_borrow_mut() else { return Action::Continue };
            verdict::exact_answered(&cfg, &mut sh, a, answers, sent_at, now)
        };
        match r {
            Ok(a) => {
                self.admitted = Some(a);
                Action::Continue
            }
            Err(reply) => self.reply(&reply),
        }
    }

    /// Replace the LLM reservations by the usage the response reported (SPEC 5).
    fn settle_llm(&mut self, a: &Admitted) {
        let usage = self.usage.as_mut().and_then(|p| p.finish());
        self.usage = None;
        let failed = self.status >= 400;
        let Ok(mut sh) = self.shared.try_borrow_mut() else { return };
        let sh = &mut *sh;
        let cfg = self.config.clone();
        let p = self.policy(sh, a);
        match usage {
            Some(u) => {
                sh.metrics.llm_tokens(&a.tenant, u);
                log_fields::usage(&cfg, u);
            }
            None if !failed => sh.metrics.llm_usage_missing(),
            None => {}
        }
        match engine::llm_settle(&cfg, &HostStore, &mut sh.worker, a, &p, usage, failed, host::now_ms()) {
            Ok(us) => {
                for u in &us {
                    let (scope, who) = a.scope_id_of(&cfg, u.budget).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                    sh.metrics.usage_of(&cfg, scope, who, u, false);
                    // Settled units of a global budget (beyond or below the reserve) are synced.
                    if cfg.budgets[u.budget].global.is_some() {
                        sh.global.touched(a.subject_of(&cfg, u.budget, &p).map_or("", |x| x.0), false);
                    }
                }
            }
            Err(e) => {
                sh.metrics.error();
                host::log(host::LOG_ERROR, &format!("tenant-quota: could not settle the LLM usage of `{}`: {e:?}", a.tenant));
            }
        }
    }

    /// Decide a request (at its headers, or at the end of its body when it was read) and act.
    fn decide(&mut self, facts: RequestFacts) -> Action {
        let cfg = self.config.clone();
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
                self.admitted = admitted;
                self.counted_in_flight = counted;
                Action::Continue
            }
            Next::AskExact { admitted, counted } => {
                self.admitted = Some(admitted);
                self.counted_in_flight = counted;
                self.ask_exact()
            }
            Next::Reply(reply) => self.reply(&reply),
            Next::Wait(w) => self.wait(w, facts),
        }
    }

    /// The request's body arrived after a header pause: read it, rewrite it if asked, decide.
    fn decide_with_body(&mut self, body_size: usize) -> Action {
        self.body_reading = false;
        let Some(mut wait) = self.body_wait.take() else { return Action::Continue };
        let cfg = self.config.clone();
        let max = cfg.llm.max_request_body_bytes as usize;
        let body = if body_size <= max { host::buffer(host::HTTP_REQUEST_BODY, 0, body_size).unwrap_or_default() } else { Vec::new() };
        let inspected = crate::llm::inspect(&wait.path, &body, max);
        if let Some(new) = &inspected.rewritten {
            if !host::set_buffer(host::HTTP_REQUEST_BODY, 0, body_size, new) {
                host::log(host::LOG_WARN, "tenant-quota: could not rewrite the request body (include_usage)");
            }
        }
        let r = inspected.request;
        wait.facts.llm_body = Some(engine::LlmBody { model: r.model, max_tokens: r.max_tokens, bytes: if body_size <= max { body_size as u64 } else { 0 } });
        self.decide(wait.facts)
    }

    /// Pick up an admission decided while the request waited in a queue.
    fn adopt(&mut self) {
        if !self.waiting && !self.body_reading {
            return;
        }
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            if let Some(d) = sh.queues.delivered.remove(&self.ctx) {
                self.admitted = d.admitted;
                self.counted_in_flight = d.counted;
                self.waiting = false;
                self.body_reading = false;
            }
        }
    }

    /// A request only `queue` budgets refused: wait for room, or get the rejection now when
    /// the queue is full (or the timeout is 0).
    fn wait(&mut self, w: Box<engine::Waiting>, facts: RequestFacts) -> Action {
        let cfg = self.config.clone();
        let budget = w.rejection.budget;
        let b = &cfg.budgets[budget];
        let now = host::now_ms();
        let count_key = queue::count_key(&w.key, b.id);
        let stale_ms = b.queue.timeout_ms.saturating_add(10_000);
        let placed = {
            let Ok(mut sh) = self.shared.try_borrow_mut() else { return Action::Continue };
            let sh = &mut *sh;
            let (scope, who) = w.scope.as_ref().map_or((None, w.tenant.as_str()), |(s, id)| (Some(*s), id.as_str()));
            let placed = b.queue.timeout_ms > 0 && sh.queues.take_place(&count_key, b.queue.max_waiting, now, stale_ms).unwrap_or(false);
            if placed {
                sh.metrics.queued(&cfg, scope, who, budget, 1, None);
            } else {
                sh.metrics.queued(&cfg, scope, who, budget, 0, Some(metrics::Kind::QueuedFull));
                sh.metrics.rejected_of(&cfg, scope, who, budget, w.rejection.reason, false);
            }
            placed
        };
        if !placed {
            return self.reply(&w.reply);
        }
        let e = queue::Entry {
            ctx: self.ctx,
            since: now,
            deadline: now.saturating_add(b.queue.timeout_ms),
            budget,
            count_key,
            item: queue::Paused { facts, waiting: w },
        };
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            sh.queues.push(e);
        }
        self.waiting = true;
        Action::Pause
    }

    /// Release in_flight slots and charge streamed bytes: once, however the stream ended.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.body_reading {
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                sh.body_waits.remove(&self.ctx);
            }
            self.body_reading = false;
            self.waiting = true;
        }
        self.adopt();
        if self.waiting {
            // The client left while waiting: nothing was charged; free its place.
            self.waiting = false;
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                let sh = &mut *sh;
                if let Some(e) = sh.queues.cancel(self.ctx, host::now_ms()) {
                    let (scope, who) = e.item.waiting.scope.clone().map_or((None, e.item.waiting.tenant.clone()), |(s, id)| (Some(s), id));
                    sh.metrics.queued(&self.config, scope, &who, e.budget, -1, Some(metrics::Kind::QueuedCancelled));
                }
            }
        }
        if self.counted_in_flight {
            self.counted_in_flight = false;
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                sh.saturation.pending_in_flight -= 1;
            }
        }
        let Some(a) = self.admitted.take() else { return };
        if !a.llm.is_empty() {
            self.settle_llm(&a);
        }
        if self.exact_call.take().is_some() {
            // The client left while the service was being asked: nothing is consumed.
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                let sh = &mut *sh;
                let p = self.policy(sh, &a);
                if let Err(e) = engine::rollback(&self.config, &HostStore, &mut sh.worker, &a, &p) {
                    sh.metrics.error();
                    host::log(host::LOG_ERROR, &format!("tenant-quota: could not undo the reservation of `{}`: {e:?}", a.tenant));
                }
            }
            return;
        }
        if a.in_flight.is_empty() && self.body_bytes == 0 {
            return;
        }
        let Ok(mut sh) = self.shared.try_borrow_mut() else { return };
        let sh = &mut *sh;
        let now = host::now_ms();
        if self.body_bytes > 0 {
            if let Some(b) = a.after.iter().find(|c| c.response_header.is_none()).map(|c| c.budget) {
                let p = self.policy(sh, &a);
                match engine::charge(&self.config, &HostStore, &mut sh.worker, &a, &p, b, self.body_bytes, now) {
                    Ok(Some(u)) => {
                        if self.config.budgets[b].global.is_some() {
                            sh.global.touched(a.subject_of(&self.config, b, &p).map_or("", |x| x.0), false);
                        }
                        let (scope, who) = a.scope_id_of(&self.config, b).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                        sh.metrics.usage_of(&self.config, scope, who, &u, false)
                    }
                    Ok(None) => {}
                    Err(e) => {
                        sh.metrics.error();
                        host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge request bytes: {e:?}"));
                    }
                }
            }
        }
        let budgets: Vec<usize> = match &mut sh.ledger {
            None => a.in_flight.clone(),
            Some(l) => a.in_flight.iter().copied().filter(|&b| l.release(&HostStore, key_of(&self.config, &a, b), self.config.budgets[b].id).unwrap_or(true)).collect(),
        };
        if let Err(e) = engine::release(&self.config, &HostStore, &mut sh.worker, &a, &budgets) {
            sh.metrics.error();
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not release in_flight slot of `{}`: {e:?}", a.tenant));
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((token, sent_at)) = self.exact_call else { return };
        if token != token_id {
            return;
        }
        let n = self.admitted.as_ref().map_or(0, |a| a.exact.len());
        let answers = global::answer_bytes(status_code, response_size).and_then(|b| crate::global::rls::decode_check(&b, n).ok());
        if answers.is_none() {
            host::log(host::LOG_WARN, &format!("tenant-quota: global: exact check failed (gRPC status {status_code})"));
        }
        self.exact_call = None;
        let action = self.exact_done(answers.as_deref(), sent_at);
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
            if admin::is_admin_path(&adm.path_prefix, &path) {
                return self.admin_headers(&path, end_of_stream);
            }
        }
        if let Some(trap) = &cfg.trap_path {
            if host::header(map::REQUEST_HEADERS, ":path").is_some_and(|p| p == trap.as_bytes()) {
                host::log(host::LOG_WARN, "tenant-quota: test hook: trapping this VM");
                std::process::abort();
            }
        }
        if let Some(trap) = &cfg.trap_sync_leader_path {
            if host::header(map::REQUEST_HEADERS, ":path").is_some_and(|p| p == trap.as_bytes()) {
                // Test hook: the sync loop may run in a VM no request reaches (Envoy ticks
                // the main thread's VM too), so the request leaves a note in shared data and
                // the lease holder traps on its next tick (reloaded under FAIL_RELOAD).
                let ok = crate::store::SharedStore::set(&HostStore, global::TRAP_KEY, &[1], 0).is_ok();
                return self.send(if ok { 202 } else { 503 }, "tenant_quota_test_hook", "{}", &[]);
            }
        }
        let mut headers = HostHeaders::for_config(&cfg);
        let tenant = match &cfg.tenant_source {
            TenantSource::Header(h) => headers.get(h),
            TenantSource::Metadata(path) => host::property(path),
        };
        let scope_ids: Vec<Option<Vec<u8>>> = cfg
            .scopes
            .iter()
            .map(|sc| match &sc.source {
                TenantSource::Header(h) => headers.get(h),
                TenantSource::Metadata(path) => host::property(path),
            })
            .collect();
        // Everything the decision needs of the request, read once: the engine reads no header.
        let facts = RequestFacts::read(&cfg, &mut headers, tenant, scope_ids, end_of_stream);
        // SPEC 5: read the JSON body before admission when an LLM budget may apply.
        if cfg.llm.request_body && !end_of_stream && llm_may_apply(&cfg, &mut headers) {
            let now = host::now_ms();
            // What any worker learned (shared data), read now rather than at the next tick.
            let mut b = Vec::new();
            let shared_off = matches!(crate::store::SharedStore::get(&HostStore, BODY_OFF_KEY, &mut b), Ok(Some(_))) && b.first() == Some(&1);
            let off = shared_off || self.shared.try_borrow().map(|sh| sh.body_reading_off).unwrap_or(true);
            if !off {
                let path = String::from_utf8_lossy(&headers.get(":path").unwrap_or_default()).into_owned();
                if crate::llm::request::is_chat_completions(&path) {
                    // A rewritten body may change length: let Envoy frame it (chunked).
                    host::remove_header(map::REQUEST_HEADERS, "content-length");
                }
                let wait = BodyWait { deadline: now.saturating_add(BODY_WAIT_MS), facts, path };
                if let Ok(mut sh) = self.shared.try_borrow_mut() {
                    sh.body_waits.insert(self.ctx, wait);
                }
                self.body_reading = true;
                self.started_ms = now;
                return Action::Pause;
            }
        }
        self.decide(facts)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.body_reading {
            // The host let the paused header phase see the body: the option is on.
            if self.body_wait.is_none() {
                if let Ok(mut sh) = self.shared.try_borrow_mut() {
                    self.body_wait = sh.body_waits.remove(&self.ctx);
                    set_body_reading_off(&mut sh, false);
                }
            }
            if self.body_wait.is_some() {
                if !end_of_stream {
                    // Hold the body until it is complete (bounded by Envoy's buffer limit).
                    return Action::Pause;
                }
                return self.decide_with_body(body_size);
            }
            // The tick decided it already (the body came after the deadline).
            self.body_reading = false;
            self.waiting = true;
        }
        if self.waiting {
            // Decided by the tick after the body did not come in time (the option looked off),
            // yet it came: the option is on after all.
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                set_body_reading_off(&mut sh, false);
            }
        }
        self.adopt();
        if self.admin.is_some() {
            if !end_of_stream {
                // Buffer until the whole body is here.
                return Action::Pause;
            }
            if body_size > 1 << 20 {
                self.admin = None;
                let h = vec![("content-type".to_string(), "application/json".to_string())];
                return self.send(413, "tenant_quota_admin", "{\"error\":\"body too large\"}", &h);
            }
            let body = host::buffer(host::HTTP_REQUEST_BODY, 0, body_size).unwrap_or_default();
            return self.admin_answer(&body);
        }
        if let Some(a) = &self.admitted {
            if a.after.iter().any(|c| c.response_header.is_none()) {
                self.body_bytes = self.body_bytes.saturating_add(body_size as u64);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        self.adopt();
        if self.local_reply {
            return Action::Continue;
        }
        if self.config.saturation.is_some() && self.config.mode != Mode::Off {
            let now = host::now_ms();
            let latency = (self.started_ms > 0).then(|| now.saturating_sub(self.started_ms));
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                sh.saturation.observe_response(&self.config, now, latency);
            }
        }
        let Some(mut a) = self.admitted.take() else { return Action::Continue };
        let cfg = self.config.clone();
        if !a.llm.is_empty() {
            self.status = host::header(map::RESPONSE_HEADERS, ":status").and_then(|v| engine::parse_units(&v)).unwrap_or(0) as u32;
            let ct = host::header(map::RESPONSE_HEADERS, "content-type");
            let ct = ct.as_deref().and_then(|v| std::str::from_utf8(v).ok());
            self.usage = Some(crate::llm::UsageParser::new(ct));
        }
        let charges: Vec<(usize, u64)> = a
            .after
            .iter()
            .filter_map(|c| c.response_header.as_ref().map(|h| (c.budget, h)))
            .filter_map(|(b, h)| host::header(map::RESPONSE_HEADERS, h).and_then(|v| engine::parse_units(&v)).map(|n| (b, n)))
            .collect();
        if !charges.is_empty() {
            if let Ok(mut sh) = self.shared.try_borrow_mut() {
                let sh = &mut *sh;
                let p = self.policy(sh, &a);
                let now = host::now_ms();
                for (b, n) in charges {
                    match engine::charge(&cfg, &HostStore, &mut sh.worker, &a, &p, b, n, now) {
                        Ok(Some(u)) => {
                            if cfg.budgets[b].global.is_some() {
                                sh.global.touched(a.subject_of(&cfg, b, &p).map_or("", |x| x.0), false);
                            }
                            let (scope, who) = a.scope_id_of(&cfg, b).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                            sh.metrics.usage_of(&cfg, scope, who, &u, false);
                            if let Some(slot) = a.usage.iter_mut().find(|x| x.budget == b) {
                                *slot = u;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            sh.metrics.error();
                            host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge response cost: {e:?}"));
                        }
                    }
                }
                if a.shadow.is_none() || a.headline.is_none() {
                    a.headline = crate::core::closest_to_exhaustion(&a.usage).copied().or(a.headline);
                }
            }
        }
        engine::admitted_headers(&a, |k, v| {
            host::add_header(map::RESPONSE_HEADERS, k, v);
        });
        log_fields::admitted(&cfg, &a);
        self.admitted = Some(a);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // The body streams on to the client as it comes (never held); the usage is read from
        // each piece, bounded in memory by the parser.
        if let Some(p) = &mut self.usage {
            if body_size > 0 {
                if let Some(chunk) = host::buffer(host::HTTP_RESPONSE_BODY, 0, body_size) {
                    p.feed(&chunk);
                }
            }
        }
        if end_of_stream && self.usage.is_some() {
            if let Some(a) = self.admitted.take() {
                self.settle_llm(&a);
                let mut a = a;
                a.llm.clear();
                self.admitted = Some(a);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.finish();
        if let Ok(mut sh) = self.shared.try_borrow_mut() {
            let Shared { metrics, overrides, .. } = &mut *sh;
            // The request's start time is recent enough to pace flushes, and saves a host call.
            let now = if self.started_ms > 0 { self.started_ms } else { host::now_ms() };
            metrics.flush(&self.config, overrides, now, false);
        }
    }
}
