//! tenant-quota: per-tenant quotas for Envoy and Istio as a proxy-wasm filter.
//!
//! The quota logic (`config`, `core`, `store`, `engine`) is host-independent and tested
//! natively and on wasm32 under Node; `filter` is the thin proxy-wasm layer, compiled only
//! for `wasm32-wasip1` (the target Envoy loads).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod config;
pub mod core;
pub mod engine;
pub mod global;
pub mod llm;
pub mod metric_names;
pub mod pool_alloc;
pub mod providers;
pub mod queue;
pub mod store;
pub mod wire;

#[cfg(target_os = "wasi")]
mod filter;
#[cfg(test)] mod prop_tests;
