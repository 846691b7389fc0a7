//! `tenant` (where a request's tenant id comes from, the fallback, how many are tracked) and
//! `tenants` (per-tenant entries over the budgets' limits).

use super::error::{err, ConfigError};
use super::policy::{compile_tenant, TenantPolicy};
use super::raw::{RawTenant, RawTenantSource};
use super::valid_header_name;
use crate::core::budget::Budget;
use crate::core::id::{valid_tenant_id, DEFAULT_MAX_TRACKED};
use std::collections::BTreeMap;

/// Where a subject's id comes from: a request header, or a path into dynamic metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantSource {
    Header(String),
    Metadata(Vec<String>),
}

/// The `tenant` block, compiled.
pub(super) struct TenantBlock {
    pub source: TenantSource,
    /// `None`: requests without a tenant id are rejected with 401.
    pub fallback: Option<String>,
    pub max_tracked: u64,
}

pub(super) fn compile(src: RawTenantSource) -> Result<TenantBlock, ConfigError> {
    let source = id_source("tenant", &src.header, &src.metadata)?.unwrap_or_else(|| TenantSource::Header("x-tenant-id".into()));
    let fallback = match src.fallback {
        None => Some("anonymous".to_string()),
        Some(None) => None,
        Some(Some(f)) => {
            if !valid_tenant_id(f.as_bytes()) {
                return err("tenant.fallback", "must be 1-256 bytes of visible ASCII, or null");
            }
            Some(f)
        }
    };
    let max_tracked = max_tracked("tenant", src.max_tracked)?;
    Ok(TenantBlock { source, fallback, max_tracked })
}

/// The `tenants` entries, each over the budgets' limits.
pub(super) fn compile_tenants(raw: &BTreeMap<String, RawTenant>, budgets: &[Budget]) -> Result<BTreeMap<String, TenantPolicy>, ConfigError> {
    let mut tenants = BTreeMap::new();
    for (id, t) in raw {
        let p = format!("tenants.{id}");
        if !valid_tenant_id(id.as_bytes()) {
            return err(p, "tenant ids are 1-256 bytes of visible ASCII");
        }
        tenants.insert(id.clone(), compile_tenant(&p, budgets, t)?);
    }
    Ok(tenants)
}

/// `<path>.header` or `<path>.metadata` (of `tenant` or a scope): `None` when neither is set.
pub(super) fn id_source(path: &str, header: &Option<String>, metadata: &Option<Vec<String>>) -> Result<Option<TenantSource>, ConfigError> {
    match (header, metadata) {
        (Some(_), Some(_)) => err(path, "set either `header` or `metadata`, not both"),
        (_, Some(segments)) => {
            if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
                return err(format!("{path}.metadata"), "expected a non-empty list of non-empty path segments");
            }
            Ok(Some(TenantSource::Metadata(segments.clone())))
        }
        (Some(h), None) => {
            if !valid_header_name(h) {
                return err(format!("{path}.header"), format!("`{h}` is not a valid header name"));
            }
            Ok(Some(TenantSource::Header(h.to_ascii_lowercase())))
        }
        (None, None) => Ok(None),
    }
}

/// `<path>.max_tracked`: at least 1, [`DEFAULT_MAX_TRACKED`] when absent.
pub(super) fn max_tracked(path: &str, v: Option<u64>) -> Result<u64, ConfigError> {
    match v {
        None => Ok(DEFAULT_MAX_TRACKED),
        Some(0) => err(format!("{path}.max_tracked"), "must be at least 1"),
        Some(n) => Ok(n),
    }
}
