//! `providers` and budgets' `fallback` (issue: fallback instead of refusal): where a request
//! goes when a budget with `on_exceed: fallback` is over, or when its provider cools after
//! answering 429/503; and the request header a fallback's `upstream` sets for the route to
//! match.

use super::error::{err, ConfigError};
use super::raw::{ProviderBy, RawProviders, RawTarget};
use super::{valid_header_name, visible_ascii};
use crate::core::budget::Target;
use std::collections::BTreeMap;

/// The header a fallback's `upstream` sets when `providers.route_header` is not given.
pub const DEFAULT_ROUTE_HEADER: &str = "x-tenant-quota-route";

#[derive(Debug, Clone, PartialEq)]
pub struct Providers {
    pub by: ProviderBy,
    /// Upstream answers that cool their provider.
    pub cooldown_on: Vec<u32>,
    /// A cooldown without `retry-after`, in seconds.
    pub cooldown_s: u64,
    /// The longest cooldown (a longer `retry-after` is cut to it).
    pub max_cooldown_s: u64,
    /// Per provider id: where its requests go while it cools.
    pub fallbacks: BTreeMap<String, Target>,
}

impl Providers {
    /// Whether an upstream answer with this status cools its provider.
    pub fn cools_on(&self, status: u32) -> bool {
        self.cooldown_on.contains(&status)
    }

    /// How long a provider cools after an answer with `retry_after` (its header's value, if
    /// any: delta-seconds; an HTTP date or garbage counts as absent), in ms.
    pub fn cooldown_ms(&self, retry_after: Option<&[u8]>) -> u64 {
        let s = retry_after.and_then(delta_seconds).unwrap_or(self.cooldown_s);
        s.clamp(1, self.max_cooldown_s) * 1000
    }
}

/// A `retry-after` in delta-seconds (surrounding spaces allowed), at most 19 digits.
fn delta_seconds(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The `providers` block (None without one) and the route header.
pub(super) fn compile(raw: Option<&RawProviders>) -> Result<(Option<Providers>, String), ConfigError> {
    let Some(raw) = raw else { return Ok((None, DEFAULT_ROUTE_HEADER.to_string())) };
    let p = "providers";
    let route_header = match &raw.route_header {
        None => DEFAULT_ROUTE_HEADER.to_string(),
        Some(h) if valid_header_name(h) && !h.starts_with(':') => h.to_ascii_lowercase(),
        Some(h) => return err(format!("{p}.route_header"), format!("`{h}` is not a header name (1-128 characters of [A-Za-z0-9_-])")),
    };
    let cooldown_on = raw.cooldown_on.clone().unwrap_or_else(|| vec![429, 503]);
    if let Some((i, s)) = cooldown_on.iter().enumerate().find(|(_, s)| !(400..=599).contains(*s)) {
        return err(format!("{p}.cooldown_on[{i}]"), format!("statuses that cool a provider are 400-599, got {s}"));
    }
    let cooldown_s = raw.cooldown_s.unwrap_or(30);
    if !(1..=86_400).contains(&cooldown_s) {
        return err(format!("{p}.cooldown_s"), format!("a cooldown is 1-86400 seconds, got {cooldown_s}"));
    }
    let max_cooldown_s = raw.max_cooldown_s.unwrap_or(300.max(cooldown_s));
    if max_cooldown_s < cooldown_s || max_cooldown_s > 86_400 {
        return err(format!("{p}.max_cooldown_s"), format!("must be at least cooldown_s ({cooldown_s}) and at most 86400, got {max_cooldown_s}"));
    }
    let mut fallbacks = BTreeMap::new();
    for (id, t) in &raw.fallbacks {
        let fp = format!("{p}.fallbacks.{id}");
        if id.is_empty() || id.len() > 256 || !visible_ascii(id) {
            return err(fp, "provider ids are 1-256 bytes of visible ASCII (a cluster name or a model)");
        }
        let target = target(&fp, t)?;
        let own = match raw.by.unwrap_or_default() {
            ProviderBy::Cluster => target.upstream.is_none(),
            ProviderBy::Model => target.model.as_deref() == Some(id.as_str()),
        };
        if own {
            return err(fp, "a provider's fallback must send its requests elsewhere (by cluster: set `upstream`; by model: another `model`)");
        }
        fallbacks.insert(id.clone(), target);
    }
    Ok((Some(Providers { by: raw.by.unwrap_or_default(), cooldown_on, cooldown_s, max_cooldown_s, fallbacks }), route_header))
}

/// A fallback target: `model` and/or `upstream`, each 1-256 bytes of visible ASCII.
pub(super) fn target(p: &str, raw: &RawTarget) -> Result<Target, ConfigError> {
    for (key, v) in [("model", &raw.model), ("upstream", &raw.upstream), ("cluster", &raw.cluster)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 256 || !visible_ascii(v) {
                return err(format!("{p}.{key}"), "1-256 bytes of visible ASCII");
            }
        }
    }
    if raw.model.is_none() && raw.upstream.is_none() {
        return err(p, "set `model` (another model) or `upstream` (the route header's value), or both");
    }
    if raw.cluster.is_some() && raw.upstream.is_none() {
        return err(format!("{p}.cluster"), "`cluster` names where the route for `upstream` goes: set `upstream` too");
    }
    Ok(Target { model: raw.model.clone(), upstream: raw.upstream.clone(), cluster: raw.cluster.clone() })
}
