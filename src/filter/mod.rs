//! The proxy-wasm layer: the only module that talks to the host. It reads headers, hands
//! them to the engine with the host's clock and shared data, and turns verdicts into local
//! replies and response headers.

mod host;

use crate::config::{Config, TenantPolicy, TenantSource};
use crate::engine::{self, Admitted, RequestHeaders, Verdict, Worker};
use crate::store;
use host::{map, HostStore};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(host::LOG_CRITICAL, &format!("tenant-quota: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    worker: Rc<RefCell<Worker>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => b"{}".to_vec(),
            Err(s) => {
                host::log(host::LOG_CRITICAL, &format!("tenant-quota: cannot read plugin configuration: {s:?}"));
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
        if let Err(e) = store::init_registry(&HostStore) {
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
        self.worker = Rc::new(RefCell::new(Worker::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        self.config = Some(Rc::new(cfg));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Http { config, worker: self.worker.clone(), admitted: None, local_reply: false, body_bytes: 0, finished: false }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    config: Rc<Config>,
    worker: Rc<RefCell<Worker>>,
    admitted: Option<Box<Admitted>>,
    /// We answered locally; the reply passes back through the response callbacks.
    local_reply: bool,
    body_bytes: u64,
    finished: bool,
}

struct HostHeaders;

impl RequestHeaders for HostHeaders {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        host::header(map::REQUEST_HEADERS, name)
    }
}

fn no_overrides(_: &str) -> Option<TenantPolicy> {
    None
}

impl Http {
    fn policy(&self, a: &Admitted) -> TenantPolicy {
        self.config.policy(&a.tenant).clone()
    }

    /// Release in_flight slots and charge streamed bytes: once, however the stream ended.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(a) = self.admitted.take() else { return };
        let Ok(mut w) = self.worker.try_borrow_mut() else { return };
        let now = host::now_ms();
        if self.body_bytes > 0 {
            if let Some(b) = a.after.iter().find(|c| c.response_header.is_none()).map(|c| c.budget) {
                let p = self.policy(&a);
                if let Err(e) = engine::charge(&self.config, &HostStore, &mut w, &a, &p, b, self.body_bytes, now) {
                    host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge request bytes: {e:?}"));
                }
            }
        }
        if let Err(e) = engine::release(&self.config, &HostStore, &mut w, &a) {
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not release in_flight slot of `{}`: {e:?}", a.tenant));
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
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
        let tenant = match &cfg.tenant_source {
            TenantSource::Header(h) => host::header(map::REQUEST_HEADERS, h),
            TenantSource::Metadata(path) => host::property(path),
        };
        let verdict = {
            let Ok(mut w) = self.worker.try_borrow_mut() else { return Action::Continue };
            let input = engine::RequestInput { headers: &mut HostHeaders, tenant, end_of_stream, level: 0, now: host::now_ms() };
            engine::evaluate(&cfg, &HostStore, &mut w, input, &no_overrides)
        };
        match verdict {
            Verdict::Pass { error } => {
                if let Some(e) = error {
                    host::log(host::LOG_WARN, &format!("tenant-quota: could not decide, allowing: {e:?}"));
                }
                Action::Continue
            }
            Verdict::Admit(a) => {
                self.admitted = Some(a);
                Action::Continue
            }
            Verdict::Reject { reply, error, .. } => {
                if let Some(e) = error {
                    host::log(host::LOG_WARN, &format!("tenant-quota: could not decide, denying: {e:?}"));
                }
                self.local_reply = true;
                self.finished = true;
                if !host::send_local_response(reply.status, &reply.reason, &reply.body, &reply.headers) {
                    host::log(host::LOG_ERROR, "tenant-quota: send_local_response failed");
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Some(a) = &self.admitted {
            if a.after.iter().any(|c| c.response_header.is_none()) {
                self.body_bytes = self.body_bytes.saturating_add(body_size as u64);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.local_reply {
            return Action::Continue;
        }
        let Some(mut a) = self.admitted.take() else { return Action::Continue };
        let cfg = self.config.clone();
        let charges: Vec<(usize, u64)> = a
            .after
            .iter()
            .filter_map(|c| c.response_header.as_ref().map(|h| (c.budget, h)))
            .filter_map(|(b, h)| host::header(map::RESPONSE_HEADERS, h).and_then(|v| engine::parse_units(&v)).map(|n| (b, n)))
            .collect();
        if !charges.is_empty() {
            let p = self.policy(&a);
            if let Ok(mut w) = self.worker.try_borrow_mut() {
                let now = host::now_ms();
                for (b, n) in charges {
                    match engine::charge(&cfg, &HostStore, &mut w, &a, &p, b, n, now) {
                        Ok(Some(u)) => {
                            if let Some(slot) = a.usage.iter_mut().find(|x| x.budget == b) {
                                *slot = u;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge response cost: {e:?}")),
                    }
                }
                if a.shadow.is_none() || a.headline.is_none() {
                    a.headline = crate::core::closest_to_exhaustion(&a.usage).copied().or(a.headline);
                }
            }
        }
        for (k, v) in engine::admitted_headers(&cfg, &a) {
            host::add_header(map::RESPONSE_HEADERS, &k, &v);
        }
        self.admitted = Some(a);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.finish();
    }
}
