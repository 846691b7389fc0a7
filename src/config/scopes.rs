//! `scopes` (SPEC 7): further identities requests carry (team, project, ...), each with its
//! own counts per id and its own per-id entries.

use super::error::{err, ConfigError};
use super::policy::{compile_subject_on, TenantPolicy};
use super::raw::{RawScope, RawTenant};
use super::tenant::{id_source, max_tracked, TenantSource};
use super::valid_name;
use crate::core::budget::Budget;
use crate::core::id::{valid_tenant_id, OVERFLOW};
use std::collections::BTreeMap;

/// A further identity requests carry (SPEC 7), with its own counts per id.
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: String,
    pub source: TenantSource,
    pub max_tracked: u64,
    /// Configured ids' limits (every budget's entry; only this scope's budgets are used).
    pub ids: BTreeMap<String, TenantPolicy>,
    pub default_policy: TenantPolicy,
}

impl Scope {
    pub fn policy(&self, id: &str) -> &TenantPolicy {
        self.ids.get(id).unwrap_or(&self.default_policy)
    }
}

/// Scopes in name order: budgets refer to them by index (`Budget::scope`).
pub(super) fn compile_all(raw: &BTreeMap<String, RawScope>, budgets: &[Budget]) -> Result<Vec<Scope>, ConfigError> {
    raw.iter().enumerate().map(|(i, (name, rs))| compile(i, name, rs, budgets)).collect()
}

fn compile(index: usize, name: &str, rs: &RawScope, budgets: &[Budget]) -> Result<Scope, ConfigError> {
    let p = format!("scopes.{name}");
    if !valid_name(name) {
        return err(&p, "scope names are 1-64 characters of [A-Za-z0-9_-]");
    }
    let Some(source) = id_source(&p, &rs.header, &rs.metadata)? else {
        return err(&p, "set `header` or `metadata`: where the scope's id comes from");
    };
    let max_tracked = max_tracked(&p, rs.max_tracked)?;
    let default_policy = TenantPolicy::base(budgets);
    let mut ids = BTreeMap::new();
    for (id, r) in &rs.ids {
        let ip = format!("{p}.ids.{id}");
        if !valid_tenant_id(id.as_bytes()) {
            return err(ip, "scope ids are 1-256 bytes of visible ASCII");
        }
        if id == OVERFLOW {
            return err(ip, "`overflow` is the id shared by ids past max_tracked; it cannot be configured");
        }
        ids.insert(id.clone(), compile_subject_on(&ip, budgets, &default_policy, &RawTenant::from(r), Some((index, name)))?);
    }
    Ok(Scope { name: name.to_string(), source, max_tracked, ids, default_policy })
}
