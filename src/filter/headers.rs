//! The request's facts, read from its headers (and properties) once, at its header phase:
//! the engine reads no header.

use super::host::{self, map};
use crate::config::{Config, TenantSource};
use crate::engine::{self, Headers, RequestFacts};

/// Request headers, read for the engine's facts. Each host call costs about as much as
/// reading every header at once (bench/RESULTS.md), so when a configuration reads several
/// headers per request they are fetched in one call and looked up here.
pub(super) enum HostHeaders {
    OneByOne,
    /// The serialized map and where its pairs lie ([`crate::wire::pairs_index`]).
    All(Vec<u8>, Vec<[u32; 4]>),
}

impl HostHeaders {
    fn for_config(cfg: &Config, needs: engine::Needs) -> HostHeaders {
        if header_reads(cfg, needs) >= 2 {
            if let Some(all) = host::headers_raw(map::REQUEST_HEADERS) {
                let index = crate::wire::pairs_index(&all);
                return HostHeaders::All(all, index);
            }
        }
        HostHeaders::OneByOne
    }

    pub(super) fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        self.with(name, <[u8]>::to_vec)
    }
}

/// How many request headers a request may read under this configuration.
fn header_reads(cfg: &Config, needs: engine::Needs) -> usize {
    let scope_headers = cfg.scopes.iter().filter(|s| matches!(s.source, TenantSource::Header(_))).count();
    // The tenant, then each header the engine's facts need.
    1 + usize::from(needs.priority) + usize::from(needs.path) + usize::from(needs.method) + usize::from(needs.content_length) + scope_headers + needs.cost_headers
}

impl Headers for HostHeaders {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            HostHeaders::OneByOne => host::header(map::REQUEST_HEADERS, name).map(|v| f(&v)),
            HostHeaders::All(all, index) => crate::wire::index_get(all, index, name).map(f),
        }
    }
}

/// Everything the decision needs of the request, and the headers (for the LLM body check).
pub(super) fn read_facts(cfg: &Config, end_of_stream: bool) -> (RequestFacts, HostHeaders) {
    let needs = engine::Needs::of(cfg);
    let mut headers = HostHeaders::for_config(cfg, needs);
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
    let facts = RequestFacts::read_needing(cfg, needs, &mut headers, tenant, scope_ids, end_of_stream);
    (facts, headers)
}
