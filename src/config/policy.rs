//! A subject's policy: its priority and its limits per budget, from the budgets' own limits
//! with a `tenants` entry, a scope id's entry or an admin API override applied on top.

use super::budget::{check_global_limits, positive_window};
use super::cycle;
use super::error::{err, ConfigError};
use super::raw::{RawOverride, RawTenant};
use crate::core::budget::{Budget, Counts, Limits, Priority};

#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub priority: Priority,
    /// One entry per budget, in `Config::budgets` order.
    pub limits: Vec<Limits>,
}

impl TenantPolicy {
    /// The budgets' own limits, at the default priority.
    pub(super) fn base(budgets: &[Budget]) -> TenantPolicy {
        TenantPolicy { priority: Priority::default(), limits: budgets.iter().map(|b| b.limits).collect() }
    }
}

/// Apply a tenant entry (from the config or the admin API) on top of the budgets' limits.
pub fn compile_tenant(path: &str, budgets: &[Budget], raw: &RawTenant) -> Result<TenantPolicy, ConfigError> {
    compile_tenant_on(path, budgets, &TenantPolicy::base(budgets), raw)
}

/// Apply a tenant entry on top of `base` (a runtime override on top of the configured entry).
pub fn compile_tenant_on(path: &str, budgets: &[Budget], base: &TenantPolicy, raw: &RawTenant) -> Result<TenantPolicy, ConfigError> {
    compile_subject_on(path, budgets, base, raw, None)
}

/// Apply an entry for a tenant (`scope` None) or an id of `scopes[scope]`: it may only
/// override the budgets counted per that subject.
pub fn compile_subject_on(path: &str, budgets: &[Budget], base: &TenantPolicy, raw: &RawTenant, scope: Option<(usize, &str)>) -> Result<TenantPolicy, ConfigError> {
    for bname in raw.budgets.keys() {
        let Some(b) = budgets.iter().find(|b| &b.name == bname) else { continue };
        if b.scope != scope.map(|s| s.0) {
            let bp = format!("{path}.budgets.{bname}");
            return match scope {
                None => err(bp, format!("budget `{bname}` is counted per scope id; override it under `scopes.<scope>.ids`")),
                Some((_, sname)) => err(bp, format!("budget `{bname}` is not counted per `{sname}` id")),
            };
        }
    }
    let mut limits = base.limits.clone();
    if let Some(u) = raw.unlimited {
        for l in limits.iter_mut() {
            l.unlimited = u;
        }
    }
    for (bname, ov) in &raw.budgets {
        let bp = format!("{path}.budgets.{bname}");
        let Some(i) = budgets.iter().position(|b| &b.name == bname) else {
            return err(bp, format!("unknown budget `{bname}` (not in `budgets`)"));
        };
        apply_override(&bp, &budgets[i], &mut limits[i], ov)?;
    }
    if let Some(b) = &raw.billing {
        let b = cycle::billing(&format!("{path}.billing"), b)?;
        cycle::anchor(budgets, &mut limits, scope.map(|s| s.0), b);
    }
    Ok(TenantPolicy { priority: raw.priority.unwrap_or(base.priority), limits })
}

fn apply_override(path: &str, b: &Budget, l: &mut Limits, ov: &RawOverride) -> Result<(), ConfigError> {
    if let Some(v) = ov.limit {
        l.limit = v;
    }
    if let Some(v) = ov.burst_credits {
        l.burst_credits = v;
    }
    if let Some(w) = ov.window_ms {
        let w = positive_window(&format!("{path}.window_ms"), w)?;
        if b.counts != Counts::InFlight {
            l.window = w;
        }
    }
    if let Some(u) = ov.unlimited {
        l.unlimited = u;
    }
    if b.global.is_some() {
        check_global_limits(path, l)?;
    }
    Ok(())
}
