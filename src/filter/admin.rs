//! Host glue of the admin API (SPEC 4): requests under the admin prefix are authenticated at
//! their headers, hold their body, and get a local reply. The API itself is `crate::admin`.

use super::host::{self, map, HostStore};
use super::{global, saturation, Shared};
use crate::admin;
use crate::config::{Admin, Config};
use std::cell::RefCell;

/// An admin request waiting for its body.
pub(super) struct PendingAdmin {
    method: String,
    path: String,
    query: String,
}

/// A local reply's parts.
pub(super) struct LocalReply {
    pub status: u32,
    pub details: &'static str,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

fn json(status: u32, details: &'static str, body: &str) -> LocalReply {
    LocalReply { status, details, body: body.to_string(), headers: vec![("content-type".to_string(), "application/json".to_string())] }
}

fn source_address() -> Option<Vec<u8>> {
    host::property(&["source".to_string(), "address".to_string()])
}

/// Authenticate a request under the admin prefix: the call to answer (after its body, if
/// any), or the refusal.
pub(super) fn authenticate(adm: &Admin, shared: &RefCell<Shared>, path: &str) -> Result<PendingAdmin, LocalReply> {
    let source = if adm.allowed_sources.is_empty() { None } else { source_address() };
    if !admin::source_allowed(adm, source.as_deref()) {
        refused(shared, path, source.as_deref(), "source address not in admin.allowed_sources");
        return Err(json(403, "tenant_quota_admin_forbidden", "{\"error\":\"forbidden\"}"));
    }
    let auth = host::header(map::REQUEST_HEADERS, "authorization");
    if !admin::authorized(adm, auth.as_deref()) {
        let why = if auth.is_some() { "wrong bearer token" } else { "no bearer token" };
        let source = source.or_else(source_address);
        refused(shared, path, source.as_deref(), why);
        let mut r = json(401, "tenant_quota_admin_unauthorized", "{\"error\":\"unauthorized\"}");
        r.headers.push(("www-authenticate".to_string(), "Bearer".to_string()));
        return Err(r);
    }
    let method = String::from_utf8_lossy(&host::header(map::REQUEST_HEADERS, ":method").unwrap_or_default()).into_owned();
    let rest = &path[adm.path_prefix.len()..];
    let (sub, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(PendingAdmin { method, path: sub.to_string(), query: query.to_string() })
}

/// The request has a body: let its headers go on, and hold the body here.
pub(super) fn hold_body() {
    // Host quirk: proxy-wasm turns a paused header phase into StopAllIteration, after
    // which the filter never sees the body. So the headers continue (without the
    // token) and the body is held here; the answer is a local reply, which resets
    // whatever the router started upstream.
    host::remove_header(map::REQUEST_HEADERS, "authorization");
}

/// A refused admin call: counted and logged, never with the token.
fn refused(shared: &RefCell<Shared>, path: &str, source: Option<&[u8]>, why: &str) {
    if let Ok(mut sh) = shared.try_borrow_mut() {
        sh.metrics.admin_auth_failure();
    }
    let path: String = path.chars().take(200).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    let src = source.map(|s| String::from_utf8_lossy(s).chars().take(64).collect::<String>()).unwrap_or_else(|| "unknown".into());
    host::log(host::LOG_WARN, &format!("tenant-quota: admin call refused ({why}) from {src} to {path}"));
}

/// The whole body is here: read it, or refuse it when too large.
pub(super) fn body(body_size: usize) -> Result<Vec<u8>, LocalReply> {
    if body_size > 1 << 20 {
        return Err(json(413, "tenant_quota_admin", "{\"error\":\"body too large\"}"));
    }
    Ok(host::buffer(host::HTTP_REQUEST_BODY, 0, body_size).unwrap_or_default())
}

/// Answer the call (None: the worker's state is busy; let the request go on).
pub(super) fn answer(cfg: &Config, shared: &RefCell<Shared>, p: PendingAdmin, body: &[u8]) -> Option<LocalReply> {
    let now = host::now_ms();
    let Ok(mut sh) = shared.try_borrow_mut() else { return None };
    let sh = &mut *sh;
    sh.overrides.next_check = 0;
    sh.overrides.refresh(cfg, &HostStore, now);
    let req = admin::Request { method: &p.method, path: &p.path, query: &p.query, body };
    sh.saturation.level(cfg, now, &mut sh.metrics);
    let metrics = &mut sh.metrics;
    let ovr = &sh.overrides;
    let r = admin::handle(cfg, &HostStore, &sh.overrides, &req, now, || {
        let t = metrics.totals(cfg, ovr);
        admin::StatusExtra {
            totals: serde_json::json!({ "allowed": t[0], "rejected": t[1], "shadow_rejected": t[2] }),
            saturation: saturation::status(cfg, &sh.saturation),
            global: global::status(cfg, now),
        }
    });
    // A write must be visible to this worker's next request at once.
    sh.overrides.next_check = 0;
    let mut reply = json(r.status, "tenant_quota_admin", "");
    reply.body = r.body;
    Some(reply)
}
