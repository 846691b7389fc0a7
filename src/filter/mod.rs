//! The proxy-wasm layer: the only module that talks to the host. It reads headers, hands
//! them to the engine with the host's clock and shared data, and turns verdicts into local
//! replies and response headers.
//!
//! Files, each importing only files below it (no circle; `Shared` below is the state they
//! share): `root` (the root context) -> `http` (a request's context and its `Phase`) and
//! `tick` (the root's timer) -> `admin`, `exact`, `queue`, `test_hooks`, `admitted` (what an
//! admitted request holds) -> `llm_body` -> `headers`, `verdict` (the one path after a
//! verdict) -> `saturation` -> `metrics`, `global`, `log_fields` -> `host` (every host call).

mod admin;
mod admitted;
mod exact;
mod global;
mod headers;
mod host;
mod http;
mod llm_body;
mod log_fields;
mod metrics;
mod queue;
mod reroute;
mod root;
mod saturation;
mod test_hooks;
mod tick;
mod verdict;

use crate::admin::Overrides;
use crate::engine::Worker;
use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;
use std::collections::HashMap;

/// Small blocks from size-class free lists (crate::pool_alloc): a request's allocations cost
/// a few instructions each instead of dlmalloc's hundreds.
#[global_allocator]
static ALLOC: crate::pool_alloc::Pool<std::alloc::System> = crate::pool_alloc::Pool::new(std::alloc::System);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        host::log(host::LOG_CRITICAL, &format!("tenant-quota: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(root::Root::new(id)) });
}}

/// Per-worker mutable state shared by the root and HTTP contexts of one VM.
struct Shared {
    worker: Worker,
    overrides: Overrides,
    metrics: metrics::Metrics,
    saturation: saturation::SaturationState,
    global: global::GlobalWorker,
    /// In-flight ledger (configs with `in_flight` budgets): a dead VM's slots come back.
    ledger: Option<crate::store::ledger::Ledger>,
    /// Requests waiting for room (SPEC 6).
    queues: queue::Queues,
    /// Requests paused in their header phase to read their body (SPEC 5), by context, until
    /// their first body callback (or the deadline: then the option that lets the filter see
    /// the body is off, and they are decided without it).
    body_waits: HashMap<u32, llm_body::BodyWait>,
    /// Bodies cannot be read (`allow_on_headers_stop_iteration` is off): decide on headers.
    body_reading_off: bool,
    /// `exact` checks asked from the tick, by call token (their answers come to the root).
    tick_exact: HashMap<u32, verdict::TickExact>,
    /// Providers cooling after a 429/503 (configs with `providers`).
    cool: reroute::Cool,
}
