//! What a decision looks like on the wire (SPEC 2): the 429 and the other error replies with
//! their problem bodies and RateLimit headers, and the headers of admitted responses.

use super::Admitted;
use crate::config::{Config, TenantPolicy};
use crate::core::{Reason, Rejection};

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    /// `x-tenant-quota-reason`, also used as Envoy's response code details.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The tenant the reply is for, when it is known (access-log fields).
    pub tenant: Option<String>,
}

fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// A 400/401/503 reply without a budget.
pub fn plain_reply(status: u32, reason: &str, title: &str, tenant: Option<&str>) -> Reply {
    let tenant_json = tenant.map_or("null".to_string(), |t| format!("\"{}\"", json_escape(t)));
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"{}\",\"status\":{},\"error\":\"{}\",\"reason\":\"{}\",\"tenant\":{}}}",
        json_escape(title),
        status,
        reason,
        reason,
        tenant_json
    );
    Reply {
        status,
        reason: reason.to_string(),
        headers: vec![
            ("content-type".into(), "application/problem+json".into()),
            ("x-tenant-quota-reason".into(), reason.to_string()),
        ],
        body,
        tenant: tenant.map(str::to_string),
    }
}

/// `ratelimit-policy` value for a budget (IETF httpapi RateLimit fields, draft 10).
pub fn policy_header(cfg: &Config, budget: usize, limit: u64, window_s: u64) -> String {
    let b = &cfg.budgets[budget];
    let mut s = format!("\"{}\";q={}", b.name, limit);
    if window_s > 0 {
        s.push_str(&format!(";w={window_s}"));
    }
    if let Some(qu) = b.counts.quota_unit() {
        s.push_str(&format!(";qu=\"{qu}\""));
    }
    s
}

/// `ratelimit` value: remaining units and seconds until they reset.
pub fn ratelimit_header(cfg: &Config, budget: usize, remaining: u64, reset_s: u64) -> String {
    format!("\"{}\";r={};t={}", cfg.budgets[budget].name, remaining, reset_s)
}

/// The 429 for a rejection.
pub fn reject_reply(cfg: &Config, policy: &TenantPolicy, tenant: &str, r: &Rejection) -> Reply {
    reject_reply_in(cfg, policy, tenant, r, None)
}

/// The 429 for a rejection; `scope` (name, id) when a scoped budget refused (SPEC 7).
pub fn reject_reply_in(cfg: &Config, policy: &TenantPolicy, tenant: &str, r: &Rejection, scope: Option<(&str, &str)>) -> Reply {
    let b = &cfg.budgets[r.budget];
    let reason = r.reason.header_value(&b.name);
    let window_ms = policy.limits[r.budget].window_ms;
    let reset_s = if r.reason == Reason::SaturationThrottle { r.retry_after_s } else { r.reset_s.max(if window_ms == 0 { 1 } else { 0 }) };
    let title = match r.reason {
        Reason::SaturationThrottle => "Tenant throttled while the service is saturated",
        _ => "Tenant quota exceeded",
    };
    let scope_json = scope.map_or(String::new(), |(sn, id)| format!(",\"scope\":\"{}\",\"scope_id\":\"{}\"", json_escape(sn), json_escape(id)));
    let body = format!(
        "{{\"type\":\"urn:tenant-quota:{}\",\"title\":\"{}\",\"status\":429,\"violated-policies\":[\"{}\"],\"error\":\"quota_exceeded\",\"reason\":\"{}\",\"budget\":\"{}\",\"tenant\":\"{}\",\"retry_after_s\":{}{}}}",
        reason,
        title,
        b.name,
        reason,
        b.name,
        json_escape(tenant),
        r.retry_after_s,
        scope_json
    );
    let mut reply = Reply {
        status: 429,
        reason: reason.clone(),
        headers: vec![
            ("retry-after".into(), r.retry_after_s.to_string()),
            ("x-tenant-quota-reason".into(), reason),
            ("x-tenant-quota-budget".into(), b.name.clone()),
            ("x-tenant-quota-limit".into(), r.limit.to_string()),
            ("x-tenant-quota-remaining".into(), "0".into()),
            ("ratelimit-policy".into(), policy_header(cfg, r.budget, r.limit, if window_ms == 0 { 0 } else { r.window_s })),
            ("ratelimit".into(), ratelimit_header(cfg, r.budget, 0, reset_s)),
            ("content-type".into(), "application/problem+json".into()),
        ],
        body,
        tenant: Some(tenant.to_string()),
    };
    if let Some((sn, id)) = scope {
        reply.headers.push(("x-tenant-quota-scope".into(), sn.to_string()));
        reply.headers.push(("x-tenant-quota-scope-id".into(), id.to_string()));
    }
    reply
}

/// Headers for an admitted response (enforce and shadow): the three SPEC headers for the
/// budget closest to exhaustion, and the shadow reason, handed to `add` one by one. Each
/// header is a host call, so admitted responses carry no more than these (429s carry the
/// full set); numbers are formatted on the stack, so nothing is allocated per header.
pub fn admitted_headers(a: &Admitted, mut add: impl FnMut(&'static str, &str)) {
    if let Some(u) = &a.headline {
        let mut buf = [0u8; 20];
        add("x-tenant-quota-limit", crate::wire::fmt_u64(u.limit, &mut buf));
        add("x-tenant-quota-remaining", crate::wire::fmt_u64(u.remaining(), &mut buf));
        add("x-tenant-quota-burst-remaining", crate::wire::fmt_u64(u.burst_remaining(), &mut buf));
    }
    if let Some(s) = &a.shadow {
        add("x-tenant-quota-shadow", s);
    }
    if !a.warnings.is_empty() {
        add("x-tenant-quota-warning", &a.warnings.join(","));
    }
    if let Some(ms) = a.queued_ms {
        let mut buf = [0u8; 20];
        add("x-tenant-quota-queued-ms", crate::wire::fmt_u64(ms, &mut buf));
    }
}
