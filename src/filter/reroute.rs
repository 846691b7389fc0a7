//! Fallback instead of refusal, and providers that push back, on the host: sending a request
//! elsewhere (its model rewritten in the body and the model header, the route header set and
//! the route chosen again through Envoy's `clear_route_cache`), and the cooldowns of providers
//! that answered 429/503 (`crate::providers`), seen by every worker.

use super::host::{self, map, HostStore};
use super::Shared;
use crate::config::{Config, ModelSource, ProviderBy, Target, TenantSource};
use crate::engine::{RequestFacts, Rerouted};
use crate::providers::{self, Cooling};
use std::cell::RefCell;

/// Envoy's attribute for the upstream cluster of the request's route.
const CLUSTER_NAME: [&str; 2] = ["xds", "cluster_name"];

/// What a worker knows of the cooling providers: the shared list as of its last tick, plus
/// its own marks since.
#[derive(Default)]
pub(super) struct Cool {
    pub list: Cooling,
    buf: Vec<u8>,
}

/// Tick: follow the shared list (only with a `providers` block).
pub(super) fn follow(sh: &mut Shared) {
    let Cool { list, buf } = &mut sh.cool;
    *list = providers::read(&HostStore, buf);
}

/// The upstream cluster of the request's route (Envoy's `xds.cluster_name`).
fn cluster_name() -> Option<String> {
    let path: Vec<String> = CLUSTER_NAME.iter().map(|s| s.to_string()).collect();
    host::property(&path).and_then(|v| String::from_utf8(v).ok())
}

/// The provider a request goes to: its route's upstream cluster, or its model.
pub(super) fn provider_of(cfg: &Config, facts: &RequestFacts) -> Option<String> {
    match cfg.providers.as_ref()?.by {
        ProviderBy::Cluster => cluster_name(),
        ProviderBy::Model => model_of(cfg, facts),
    }
}

pub(super) fn model_of(cfg: &Config, facts: &RequestFacts) -> Option<String> {
    match cfg.llm.model.as_ref()? {
        ModelSource::Header(_) => facts.model.clone(),
        ModelSource::RequestBody => facts.llm_body.as_ref().and_then(|b| b.model.clone()),
    }
}

/// Before a decision: if the request's provider cools and has a fallback, where it goes
/// instead and why (`x-tenant-quota-fallback`).
pub(super) fn cooling_fallback<'c>(cfg: &'c Config, shared: &RefCell<Shared>, facts: &RequestFacts, now: u64) -> Option<(&'c Target, Rerouted, String)> {
    let p = cfg.providers.as_ref()?;
    if facts.rerouted.is_some() || p.fallbacks.is_empty() || !shared.try_borrow().is_ok_and(|sh| sh.cool.list.any(now)) {
        return None;
    }
    let id = provider_of(cfg, facts)?;
    let target = p.fallbacks.get(&id)?;
    shared.try_borrow().ok()?.cool.list.until(&id, now)?;
    let header = describe(&format!("provider={id}; reason=provider_cooling"), target);
    Some((target, Rerouted { budget: None, header }, id))
}

/// The `x-tenant-quota-fallback` value: why, then where.
pub(super) fn describe(why: &str, t: &Target) -> String {
    let mut s = why.to_string();
    if let Some(m) = &t.model {
        s.push_str("; model=");
        s.push_str(m);
    }
    if let Some(u) = &t.upstream {
        s.push_str("; upstream=");
        s.push_str(u);
    }
    s
}

/// Send the request to `target`: the model rewritten (the body when it was read, of
/// `body_size` bytes as the client sent it; the model header when the model comes from a
/// header), the route header set and the route chosen again. The facts to decide it with
/// there, or None when the request cannot be sent there (a model that lives in a body that
/// was not read, or the host refused a change): it then gets its rejection.
pub(super) fn apply(cfg: &Config, facts: &RequestFacts, target: &Target, body_read: bool, why: Rerouted) -> Option<RequestFacts> {
    let mut f = facts.clone();
    if let Some(m) = &target.model {
        let mut done = false;
        if let Some(ModelSource::Header(h)) = &cfg.llm.model {
            if !host::replace_header(map::REQUEST_HEADERS, h, m) {
                return None;
            }
            f.model = Some(m.clone());
            done = true;
        }
        if body_read {
            let body = host::buffer(host::HTTP_REQUEST_BODY, 0, usize::MAX >> 1)?;
            let new = crate::llm::request::with_model(&body, m);
            match new {
                Some(new) if host::set_buffer(host::HTTP_REQUEST_BODY, 0, body.len(), &new) => {
                    if let Some(b) = f.llm_body.as_mut() {
                        b.model = Some(m.clone());
                    }
                    done = true;
                }
                // Not JSON: a model in the body cannot be rewritten.
                _ if matches!(cfg.llm.model, Some(ModelSource::RequestBody)) => return None,
                _ => {}
            }
        }
        if !done {
            return None;
        }
    }
    if let Some(u) = &target.upstream {
        if !host::replace_header(map::REQUEST_HEADERS, &cfg.route_header, u) {
            return None;
        }
        if !host::clear_route_cache() {
            host::log(host::LOG_WARN, "tenant-quota: fallback: Envoy's clear_route_cache is not available; the route may not follow the route header");
        }
        // Per-provider scopes (ids from `xds.cluster_name`) follow the route. Envoy keeps the
        // first route's cluster in that attribute until its router chooses again, so the id
        // is the target's `cluster` (default: the `upstream` value).
        let cluster = target.cluster.as_ref().unwrap_or(u);
        for (i, sc) in cfg.scopes.iter().enumerate() {
            if let (TenantSource::Metadata(path), Some(id)) = (&sc.source, f.scope_ids.get_mut(i)) {
                if path.len() == 2 && path[0] == CLUSTER_NAME[0] && path[1] == CLUSTER_NAME[1] {
                    *id = Some(cluster.as_bytes().to_vec());
                }
            }
        }
    }
    f.rerouted = Some(why);
    Some(f)
}

/// At an upstream answer's headers: a status in `providers.cooldown_on` cools the provider
/// the request went to (`model`: its model, for providers named by model) for its
/// `retry-after` or `providers.cooldown_s`, at most `providers.max_cooldown_s`.
pub(super) fn observe_answer(cfg: &Config, shared: &RefCell<Shared>, model: Option<&str>) {
    let Some(p) = &cfg.providers else { return };
    let status = host::header(map::RESPONSE_HEADERS, ":status").and_then(|v| crate::engine::parse_units(&v)).unwrap_or(0);
    if !u32::try_from(status).is_ok_and(|s| p.cools_on(s)) {
        return;
    }
    let id = match p.by {
        ProviderBy::Cluster => cluster_name(),
        ProviderBy::Model => model.map(str::to_string),
    };
    let Some(id) = id else { return };
    let now = host::now_ms();
    let until = now.saturating_add(p.cooldown_ms(host::header(map::RESPONSE_HEADERS, "retry-after").as_deref()));
    let Ok(mut sh) = shared.try_borrow_mut() else { return };
    let was = sh.cool.list.until(&id, now);
    match providers::mark(&HostStore, &id, until, now) {
        Ok(list) => sh.cool.list = list,
        Err(e) => {
            // This worker still knows.
            sh.cool.list.mark(&id, until, now);
            host::log(host::LOG_WARN, &format!("tenant-quota: providers: could not share the cooldown of `{id}`: {e:?}"));
        }
    }
    if was.is_none() {
        host::log(host::LOG_INFO, &format!("tenant-quota: provider `{id}` answered {status}: cooling for {} ms", until - now));
    }
}
