//! The decision committed under CAS, subject by subject, and undone on refusal.

use super::{Admitted, ScopeCharge, Worker};
use crate::config::{Config, TenantPolicy};
use crate::core::{self, Demand, Millis};
use crate::store::{self, SharedStore, StoreError};

/// Undo reservations: the tenant's (`tenant_reserved` under `tenant_key`) and each scope
/// id's. Best effort: a failure leaves units counted (the safe side) and is not retried.
#[allow(clippy::too_many_arguments)]
pub(super) fn undo<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, tenant_key: &str, policy: &TenantPolicy, tenant_reserved: &[Demand], at: Millis, scopes: &[ScopeCharge]) {
    if !tenant_key.is_empty() && !tenant_reserved.is_empty() {
        w.scratch.key.clear();
        w.scratch.key.push_str(tenant_key);
        let _ = store::transact(store, &mut w.scratch, |st| {
            core::unreserve(st, &cfg.budgets, &policy.limits, at, tenant_reserved);
            (true, ())
        });
    }
    for c in scopes {
        w.scratch.key.clone_from(&c.key);
        let _ = store::transact(store, &mut w.scratch, |st| {
            core::unreserve(st, &cfg.budgets, &c.policy(cfg).limits, at, &c.reserved);
            (true, ())
        });
    }
}

/// Undo the local reservations of an admitted request the service then refused.
pub fn rollback<S: SharedStore>(cfg: &Config, store: &S, w: &mut Worker, a: &Admitted, policy: &TenantPolicy) -> Result<(), StoreError> {
    undo(cfg, store, w, &a.key, policy, &a.reserved, a.at, &a.scopes);
    Ok(())
}
