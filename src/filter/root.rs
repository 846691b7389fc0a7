//! The root context: configuration (parse, compile, create the shared keys), the per-worker
//! state, the answers to calls sent from the root, and the tick.

use super::global::GlobalWorker;
use super::host::{self, HostStore};
use super::http::Http;
use super::metrics::Metrics;
use super::queue::Queues;
use super::saturation::{self, SaturationState};
use super::{tick, verdict, Shared};
use crate::admin::{self, Overrides};
use crate::config::Config;
use crate::engine::{self, Worker};
use crate::store;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
pub(super) struct Root {
    id: u32,
    config: Option<Rc<Config>>,
    shared: Option<Rc<RefCell<Shared>>>,
}

impl Root {
    pub(super) fn new(id: u32) -> Root {
        Root { id, ..Root::default() }
    }
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
        let init = store::init_registry(&HostStore, None)
            .and_then(|_| admin::init(&HostStore))
            .and_then(|_| saturation::init(&cfg))
            .and_then(|_| if cfg.global.is_some() { crate::global::init(&HostStore) } else { Ok(()) })
            .and_then(|_| if has_in_flight(&cfg) { crate::store::ledger::init(&HostStore) } else { Ok(()) })
            .and_then(|_| cfg.scopes.iter().try_for_each(|sc| store::init_registry(&HostStore, Some(&sc.name))));
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
            queues: Queues::default(),
            body_waits: HashMap::new(),
            body_reading_off: false,
            tick_exact: HashMap::new(),
            cool: super::reroute::Cool::default(),
            global: GlobalWorker::new(lease_id),
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
                tick::run(self.id, self.config.as_deref(), &mut sh);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        let shared = self.shared.clone()?;
        Some(Box::new(Http::new(config, shared, context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn has_in_flight(cfg: &Config) -> bool {
    cfg.budgets.iter().any(|b| b.counts == crate::config::Counts::InFlight)
}
