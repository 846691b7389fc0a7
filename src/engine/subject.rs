//! Whom a request is counted under: its tenant, and its id in each scope (SPEC 7), each with
//! the policy that applies (a runtime override, else the configured one).

use super::{plain_reply, RequestFacts, Reply};
use crate::config::{valid_tenant_id, Config, TenantPolicy};
use crate::core::Subject;
use crate::store::{keys, TenantKind};
use std::collections::HashMap;

/// Runtime policies (the admin API's overrides) by subject ([`keys::override_entry`]).
pub type RuntimePolicies = HashMap<String, TenantPolicy>;

/// The subjects of one request.
#[derive(Debug)]
pub(crate) struct Subjects<'a> {
    /// The tenant id (the fallback tenant's when the request names none).
    pub tenant: &'a str,
    pub kind: TenantKind,
    pub policy: &'a TenantPolicy,
    /// The request's id in each scope, by scope index (None: absent, its budgets left out).
    pub scopes: Vec<Option<ScopeId<'a>>>,
}

/// A request's id in one scope.
#[derive(Debug)]
pub(crate) struct ScopeId<'a> {
    pub id: &'a str,
    pub kind: TenantKind,
    /// A runtime override's policy; `None`: the configured one.
    pub runtime: Option<TenantPolicy>,
}

/// One subject of the commit: where its counts live and under which policy.
pub(crate) struct Who<'s> {
    pub subject: Subject<'s>,
    pub kind: TenantKind,
    pub max_tracked: u64,
    pub policy: &'s TenantPolicy,
}

impl Subjects<'_> {
    /// The subject of `scope`'s budgets (None: the tenant's), if the request has one.
    pub fn who<'s>(&'s self, cfg: &'s Config, scope: Option<usize>) -> Option<Who<'s>> {
        let Some(sc) = scope else {
            return Some(Who { subject: Subject::Tenant(self.tenant), kind: self.kind, max_tracked: cfg.max_tracked, policy: self.policy });
        };
        let s = self.scopes.get(sc)?.as_ref()?;
        let scope = &cfg.scopes[sc];
        let policy = s.runtime.as_ref().unwrap_or_else(|| scope.policy(s.id));
        Some(Who { subject: cfg.subject(Some(sc), s.id), kind: s.kind, max_tracked: scope.max_tracked, policy })
    }
}

/// Identify the tenant and each scope id. A missing tenant without a fallback, an invalid
/// tenant id or an invalid scope id is refused with the reply to send; an absent scope id
/// leaves that scope's budgets out.
pub(crate) fn identify<'a>(cfg: &'a Config, facts: &'a RequestFacts, overrides: &'a RuntimePolicies) -> Result<Subjects<'a>, Reply> {
    let (tenant, kind) = match facts.tenant.as_deref().filter(|t| !t.is_empty()) {
        None => match &cfg.fallback {
            Some(f) => (f.as_str(), TenantKind::Named),
            None => return Err(plain_reply(401, "missing_tenant", "Tenant id required", None)),
        },
        Some(raw) => {
            if !valid_tenant_id(raw) {
                return Err(plain_reply(400, "invalid_tenant", "Invalid tenant id", None));
            }
            // Valid ids are ASCII, so this cannot fail.
            let id = std::str::from_utf8(raw).unwrap_or_default();
            (id, TenantKind::Dynamic)
        }
    };
    // One lookup for the kind and the configured policy (`cfg.policy`).
    let named = cfg.tenants.get(tenant);
    let kind = if named.is_some() { TenantKind::Named } else { kind };
    // The map is looked at only when it holds something (hashing the id is not free).
    let runtime = if overrides.is_empty() { None } else { overrides.get(tenant) };
    let policy = runtime.or(named).unwrap_or(&cfg.default_policy);
    let mut scopes = Vec::with_capacity(cfg.scopes.len());
    for (i, sc) in cfg.scopes.iter().enumerate() {
        let Some(raw) = facts.scope_ids.get(i).and_then(Option::as_deref).filter(|v| !v.is_empty()) else {
            scopes.push(None);
            continue;
        };
        if !valid_tenant_id(raw) {
            let mut reply = plain_reply(400, "invalid_scope", "Invalid scope id", Some(tenant));
            reply.headers.push(("x-tenant-quota-scope".into(), sc.name.clone()));
            return Err(reply);
        }
        let id = std::str::from_utf8(raw).unwrap_or_default();
        let kind = if sc.ids.contains_key(id) { TenantKind::Named } else { TenantKind::Dynamic };
        let runtime = if overrides.is_empty() { None } else { overrides.get(&keys::override_entry(cfg.subject(Some(i), id))).cloned() };
        scopes.push(Some(ScopeId { id, kind, runtime }));
    }
    Ok(Subjects { tenant, kind, policy, scopes })
}
