//! The decision in access logs and traces (opt-in `filter_state`): writes
//! [`crate::engine::log_fields`] into Envoy filter state, one host call per field, while the
//! request's context is the current (or effective) one.

use super::host;
use crate::config::Config;
use crate::engine::{log_fields, Admitted, Reply};
use std::sync::atomic::{AtomicBool, Ordering};

/// One warning per VM when the host refuses a field.
static REFUSED: AtomicBool = AtomicBool::new(false);

fn put(key: &str, value: &str) {
    if !host::set_property(key, value.as_bytes()) && !REFUSED.swap(true, Ordering::Relaxed) {
        host::log(host::LOG_WARN, &format!("tenant-quota: filter_state: the host refused `{key}`; access-log fields may be missing"));
    }
}

pub fn admitted(cfg: &Config, a: &Admitted) {
    if cfg.filter_state {
        log_fields::admitted_fields(cfg, a, put);
    }
}

pub fn reply(cfg: &Config, r: &Reply) {
    if cfg.filter_state {
        log_fields::reply_fields(r, put);
    }
}

pub fn usage(cfg: &Config, u: crate::llm::Usage) {
    if cfg.filter_state {
        log_fields::usage_fields(u, put);
    }
}
