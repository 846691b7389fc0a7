//! The admin API (SPEC 4), host-independent: authentication, routing, and the state it
//! reads and writes in the shared store. Runtime overrides and operator signal values live
//! in one shared key each, so every worker sees them; workers re-read them at most every
//! [`REFRESH_MS`].

use crate::config::{compile_subject_on, compile_tenant_on, raw::RawTenant, valid_tenant_id, Admin, Config, Counts, TenantPolicy};
use crate::core::{self, Millis, Policy, Subject, TenantState, Window};
use crate::store::{self, keys, Absent, Scratch, SharedStore, Step, StoreError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub use keys::{OPERATOR as OPERATOR_KEY, OVERRIDES as OVERRIDES_KEY};
/// How stale a worker's copy of overrides and operator values may get.
pub const REFRESH_MS: u64 = 500;
/// At most this many runtime overrides (the value must stay small).
pub const MAX_OVERRIDES: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u32,
    pub body: String,
}

fn reply(status: u32, v: Value) -> Response {
    Response { status, body: v.to_string() }
}

fn error(status: u32, msg: impl Into<String>) -> Response {
    reply(status, json!({ "error": msg.into() }))
}

/// Does `path` (with query) address the admin API under `prefix`?
pub fn is_admin_path(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// Whether the downstream address may call the admin API (`admin.allowed_sources`; an
/// address that cannot be read is refused when a list is configured).
pub fn source_allowed(admin: &Admin, source: Option<&[u8]>) -> bool {
    if admin.allowed_sources.is_empty() {
        return true;
    }
    let Some(ip) = source.and_then(crate::config::parse_source_ip) else { return false };
    admin.allowed_sources.iter().any(|c| c.contains(&ip))
}

/// `authorization: Bearer <token>` whose SHA-256 equals the configured hash, compared in
/// constant time (every byte is looked at whatever the first difference).
pub fn authorized(admin: &Admin, authorization: Option<&[u8]>) -> bool {
    let Some(h) = authorization else { return false };
    let token = match h.get(..7) {
        Some(p) if p.eq_ignore_ascii_case(b"bearer ") => &h[7..],
        _ => return false,
    };
    let digest = Sha256::digest(token);
    let mut diff = 0u8;
    for (a, b) in digest.iter().zip(admin.token_sha256.iter()) {
        diff |= a ^ b;
    }
    diff == 0
}

/// Create the shared keys the admin API writes, if missing. Idempotent; run at configure.
pub fn init<S: SharedStore>(store: &S) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    for key in [OVERRIDES_KEY, OPERATOR_KEY] {
        if store.get(key, &mut buf)?.is_none() {
            store.set(key, b"{}", 0)?;
        }
    }
    Ok(())
}

fn read_map<S: SharedStore>(store: &S, key: &str) -> Result<Map<String, Value>, StoreError> {
    let mut buf = Vec::new();
    store.get(key, &mut buf)?.ok_or(StoreError::Unavailable)?;
    decode_map(&buf)
}

fn decode_map(b: &[u8]) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_slice::<Value>(b) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(StoreError::Corrupt),
    }
}

/// CAS-update a JSON map key.
fn update_map<S: SharedStore, R>(store: &S, key: &str, mut f: impl FnMut(&mut Map<String, Value>) -> R) -> Result<R, StoreError> {
    store::update(store, key, Absent::Fail(StoreError::Unavailable), &mut Vec::new(), &mut Vec::new(), |b, out| {
        let mut m = decode_map(b)?;
        let r = f(&mut m);
        out.extend_from_slice(Value::Object(m).to_string().as_bytes());
        Ok(Step::Write(r))
    })
}

/// The subject of a runtime override's entry in the overrides map (None: a scope no longer
/// configured).
pub fn subject_of_override<'a>(cfg: &'a Config, entry: &'a str) -> Option<Subject<'a>> {
    match keys::parse_override_entry(entry) {
        (None, id) => Some(Subject::Tenant(id)),
        (Some(name), id) => cfg.scope_subject(name, id),
    }
}

/// The reply's identification: `{"tenant": id}` or `{"scope": name, "id": id}`.
fn ident(who: Subject<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    match who {
        Subject::Tenant(id) => {
            m.insert("tenant".into(), json!(id));
        }
        Subject::Scope { name, id, .. } => {
            m.insert("scope".into(), json!(name));
            m.insert("id".into(), json!(id));
        }
    }
    m
}

/// A subject's policy compiled with a runtime override's entry on top of its configured one.
fn compile_override(cfg: &Config, who: Subject<'_>, raw: &RawTenant) -> Result<TenantPolicy, crate::config::ConfigError> {
    match who {
        Subject::Tenant(id) => compile_tenant_on("", &cfg.budgets, cfg.policy(id), raw),
        Subject::Scope { ix, name, id } => compile_subject_on("", &cfg.budgets, cfg.scopes[ix].policy(id), raw, Some((ix, name))),
    }
}

/// A worker's copy of the runtime overrides.
#[derive(Debug, Default)]
pub struct Overrides {
    pub cas: u32,
    pub next_check: Millis,
    pub policies: HashMap<String, TenantPolicy>,
    pub raw: Map<String, Value>,
}

impl Overrides {
    /// Re-read the shared overrides if the copy may be stale. Entries that no longer fit the
    /// configuration (a budget was removed) are skipped.
    pub fn refresh<S: SharedStore>(&mut self, cfg: &Config, store: &S, now: Millis) {
        if now < self.next_check {
            return;
        }
        self.next_check = now.saturating_add(REFRESH_MS);
        let mut buf = Vec::new();
        let Ok(Some(cas)) = store.get(OVERRIDES_KEY, &mut buf) else { return };
        if cas == self.cas {
            return;
        }
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&buf) else { return };
        self.policies = m
            .iter()
            .filter_map(|(k, v)| {
                let raw: RawTenant = serde_json::from_value(v.clone()).ok()?;
                let p = compile_override(cfg, subject_of_override(cfg, k)?, &raw).ok()?;
                Some((k.clone(), p))
            })
            .collect();
        self.raw = m;
        self.cas = cas;
    }

    pub fn get(&self, id: &str) -> Option<TenantPolicy> {
        if self.policies.is_empty() {
            return None;
        }
        self.policies.get(id).cloned()
    }
}

/// Operator signal values: `{name: {"value": v, "expires_ms": t}}`.
pub fn operator_values<S: SharedStore>(store: &S, now: Millis) -> Vec<(String, f64)> {
    let Ok(m) = read_map(store, OPERATOR_KEY) else { return Vec::new() };
    m.iter()
        .filter_map(|(k, v)| {
            let value = v.get("value")?.as_f64()?;
            let exp = v.get("expires_ms")?.as_u64()?;
            (now < exp).then(|| (k.clone(), value))
        })
        .collect()
}

/// What the host layer adds to `GET /status`.
pub struct StatusExtra {
    pub totals: Value,
    pub saturation: Value,
    /// SPEC 8: `{"state", "last_answer_age_ms", "errors"}`, or null without global budgets.
    pub global: Value,
}

pub struct Request<'a> {
    pub method: &'a str,
    /// Path below the prefix, without the query string (e.g. `/tenants/acme`).
    pub path: &'a str,
    /// The query string without `?` (empty if none).
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Handle an authorized admin request.
pub fn handle<S: SharedStore>(
    cfg: &Config,
    store: &S,
    overrides: &Overrides,
    req: &Request,
    now: Millis,
    extra: impl FnOnce() -> StatusExtra,
) -> Response {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // `?in_flight=true` on a reset also zeroes in_flight slots: the remedy for slots a trapped
    // VM can no longer release (live requests then release into zero, never below).
    let in_flight = req.query.split('&').any(|kv| kv == "in_flight=true");
    let scope = |name: &str| cfg.scopes.iter().position(|s| s.name == name);
    match (req.method, parts.as_slice()) {
        ("GET", ["status"]) => status(cfg, store, extra()),
        ("GET", ["tenants", id]) => with_id(id, |id| usage(cfg, store, overrides, Subject::Tenant(id), now)),
        ("PUT", ["tenants", id, "overrides"]) => with_id(id, |id| put_override(cfg, store, Subject::Tenant(id), req.body)),
        ("DELETE", ["tenants", id, "overrides"]) => with_id(id, |id| delete_override(store, Subject::Tenant(id))),
        ("POST", ["tenants", id, "reset"]) => with_id(id, |id| reset(cfg, store, Subject::Tenant(id), in_flight)),
        (_, ["scopes", name, ..]) if scope(name).is_none() => error(404, format!("no scope `{name}` in the configuration")),
        ("GET", ["scopes", name, id]) => with_id(id, |id| usage(cfg, store, overrides, cfg.subject(Some(scope(name).unwrap_or(0)), id), now)),
        ("PUT", ["scopes", name, id, "overrides"]) => with_id(id, |id| put_override(cfg, store, cfg.subject(Some(scope(name).unwrap_or(0)), id), req.body)),
        ("DELETE", ["scopes", name, id, "overrides"]) => with_id(id, |id| delete_override(store, cfg.subject(Some(scope(name).unwrap_or(0)), id))),
        ("POST", ["scopes", name, id, "reset"]) => with_id(id, |id| reset(cfg, store, cfg.subject(Some(scope(name).unwrap_or(0)), id), in_flight)),
        ("PUT", ["saturation"]) => put_saturation(store, req.body, now),
        (_, ["status"])
        | (_, ["tenants", _])
        | (_, ["tenants", _, "overrides"])
        | (_, ["tenants", _, "reset"])
        | (_, ["scopes", _, _])
        | (_, ["scopes", _, _, "overrides"])
        | (_, ["scopes", _, _, "reset"])
        | (_, ["saturation"]) => error(405, format!("method {} not allowed here", req.method)),
        _ => error(404, "no such admin endpoint; see GET {prefix}/status, {prefix}/tenants/{id}, {prefix}/scopes/{scope}/{id}"),
    }
}

fn with_id(id: &str, f: impl FnOnce(&str) -> Response) -> Response {
    if !valid_tenant_id(id.as_bytes()) {
        return error(400, "tenant ids are 1-256 bytes of visible ASCII");
    }
    f(id)
}

fn store_error(e: StoreError) -> Response {
    error(503, format!("shared data unavailable: {e:?}"))
}

fn read_state<S: SharedStore>(store: &S, who: Subject) -> Result<Option<TenantState>, StoreError> {
    let key = keys::state_key(who);
    let mut buf = Vec::new();
    match store.get(&key, &mut buf)? {
        None => Ok(None),
        Some(_) => TenantState::decode(&buf).map(Some).map_err(|_| StoreError::Corrupt),
    }
}

fn usage<S: SharedStore>(cfg: &Config, store: &S, overrides: &Overrides, who: Subject, now: Millis) -> Response {
    let state = match read_state(store, who) {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let okey = keys::override_entry(who);
    let runtime = overrides.policies.get(&okey).cloned();
    let policy = runtime.as_ref().unwrap_or_else(|| cfg.configured_policy(who));
    let pol = Policy { budgets: &cfg.budgets, limits: &policy.limits, keep: 1.0, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
    let empty = TenantState::default();
    let st = state.as_ref().unwrap_or(&empty);
    let mut budgets = Map::new();
    // A tenant's report has the budgets counted per tenant; a scope id's, its scope's.
    for (i, b) in cfg.budgets.iter().enumerate().filter(|(_, b)| b.scope == who.scope()) {
        let l = &policy.limits[i];
        let u = core::standing(&pol, st, now, i);
        let mut e = json!({
            "counts": counts_name(&b.counts),
            "used": u.used,
            "limit": u.limit,
            "burst_credits": u.burst_credits,
            "remaining": u.remaining(),
            "burst_used": u.used.saturating_sub(u.limit).min(u.burst_credits),
            "burst_remaining": u.burst_remaining(),
            "unlimited": l.unlimited,
        });
        if b.counts == Counts::InFlight {
            e["resets_in_ms"] = Value::Null;
        } else {
            match l.window {
                // The configuration's own spelling.
                Window::CalendarMonth => e["window"] = json!("calendar_month"),
                Window::Cycle(c) => e["window"] = cycle_json(c),
                w => e["window_ms"] = json!(w.fixed_ms().unwrap_or(0)),
            }
            e["resets_in_ms"] = json!(u.resets_in_ms);
            // The window `used` counts in (a billing cycle's bounds are no arithmetic on
            // resets_in_ms a reader could do).
            e["window_start_ms"] = json!(u.window_start);
            e["window_end_ms"] = json!(l.window.end(u.window_start));
        }
        if let Some(mode) = b.global {
            e["global"] = global_usage(mode, st, b.id, l.window, now);
        }
        budgets.insert(b.name.clone(), e);
    }
    let mut out = ident(who);
    out.insert("tracked".into(), json!(state.is_some()));
    out.insert("configured".into(), json!(cfg.configures(who)));
    if let Subject::Tenant(_) = who {
        out.insert("priority".into(), json!(format!("{:?}", policy.priority).to_lowercase()));
    }
    out.insert("override".into(), overrides.raw.get(&okey).cloned().unwrap_or(Value::Null));
    out.insert("budgets".into(), Value::Object(budgets));
    reply(200, Value::Object(out))
}

/// A billing cycle in the configuration's spelling, with the subject's own anchor: the zone
/// by its IANA name, or a POSIX string in canonical form; day 31 is every month's last day.
fn cycle_json(c: crate::core::Cycle) -> Value {
    match c.period {
        crate::core::cycle::Period::Daily => json!({"cycle": "daily", "time_zone": c.zone.to_string()}),
        crate::core::cycle::Period::Monthly(day) => json!({"cycle": "monthly", "day": day, "time_zone": c.zone.to_string()}),
    }
}

/// SPEC 8: a global budget's `used` split into this Envoy's own units (`local`) and the
/// other Envoys' as last learned (`remote`), and the age of that figure (null: never learned
/// in this window).
fn global_usage(mode: crate::core::budget::GlobalMode, st: &TenantState, id: u32, window: Window, now: Millis) -> Value {
    let slot = st.slot(id).filter(|s| s.window_start == window.start(now));
    let (local, remote, at) = slot.map_or((0, 0, 0), |s| (s.used, s.remote, s.remote_at));
    json!({
        "mode": match mode {
            crate::core::budget::GlobalMode::Sync => "sync",
            crate::core::budget::GlobalMode::Exact => "exact",
        },
        "local": local,
        "remote": remote,
        "remote_age_ms": if at == 0 { Value::Null } else { now.saturating_sub(at).into() },
    })
}

fn counts_name(c: &Counts) -> Value {
    match c {
        Counts::Requests => json!("requests"),
        Counts::RequestBytes => json!("request_bytes"),
        Counts::InFlight => json!("in_flight"),
        Counts::RequestHeader(h) => json!({ "request_header": h }),
        Counts::ResponseHeader(h) => json!({ "response_header": h }),
        Counts::LlmTokens(k) => json!({ "llm_tokens": format!("{k:?}").to_lowercase() }),
        Counts::LlmCost => json!("llm_cost"),
    }
}

fn put_override<S: SharedStore>(cfg: &Config, store: &S, who: Subject, body: &[u8]) -> Response {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let raw: RawTenant = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => return error(400, format!("invalid override at `{}`: {}", e.path(), e.inner())),
    };
    if who.scope().is_some() && raw.priority.is_some() {
        return error(400, "invalid override at `priority`: priority is a tenant's, not a scope id's");
    }
    if let Err(e) = compile_override(cfg, who, &raw) {
        return error(400, format!("invalid override at `{}`: {}", e.path.trim_start_matches('.'), e.message));
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return error(400, "invalid JSON") };
    let key = keys::override_entry(who);
    let r = update_map(store, OVERRIDES_KEY, |m| {
        if !m.contains_key(&key) && m.len() >= MAX_OVERRIDES {
            return false;
        }
        m.insert(key.clone(), value.clone());
        true
    });
    let mut out = ident(who);
    match r {
        Ok(true) => {
            out.insert("override".into(), value);
            reply(200, Value::Object(out))
        }
        Ok(false) => error(409, format!("at most {MAX_OVERRIDES} runtime overrides")),
        Err(e) => store_error(e),
    }
}

fn delete_override<S: SharedStore>(store: &S, who: Subject) -> Response {
    let key = keys::override_entry(who);
    let mut out = ident(who);
    match update_map(store, OVERRIDES_KEY, |m| m.remove(&key).is_some()) {
        Ok(true) => {
            out.insert("override".into(), Value::Null);
            reply(200, Value::Object(out))
        }
        Ok(false) => error(404, "no runtime override for this subject"),
        Err(e) => store_error(e),
    }
}

fn reset<S: SharedStore>(cfg: &Config, store: &S, who: Subject, in_flight: bool) -> Response {
    let mut sc = Scratch::default();
    keys::state(who, &mut sc.key);
    let run = |sc: &mut Scratch| {
        store::transact(store, sc, |st| {
            for b in cfg.budgets.iter().filter(|b| b.scope == who.scope() && (in_flight || b.counts != Counts::InFlight)) {
                core::reset(st, b.id);
            }
            (true, ())
        })
    };
    let mut repaired = false;
    let mut r = run(&mut sc);
    if r == Err(StoreError::Corrupt) {
        // An undecodable state (written by something else in this vm_id) is replaced by an
        // empty one, under CAS, so the operator can repair a subject stuck on `on_error`.
        r = repair(store, &mut sc).and_then(|()| run(&mut sc));
        repaired = r.is_ok();
    }
    let mut out = ident(who);
    match r {
        Ok(()) => {
            out.insert("reset".into(), json!(true));
            out.insert("in_flight_reset".into(), json!(in_flight));
            if repaired {
                out.insert("repaired".into(), json!(true));
            }
        }
        Err(StoreError::Missing) => {
            out.insert("reset".into(), json!(false));
            out.insert("note".into(), json!(format!("{} has no state yet", if who.scope().is_some() { "this scope id" } else { "tenant" })));
        }
        Err(e) => return store_error(e),
    }
    reply(200, Value::Object(out))
}

/// Replace an undecodable tenant state by an empty one (no-op if it decodes by now).
fn repair<S: SharedStore>(store: &S, sc: &mut Scratch) -> Result<(), StoreError> {
    store::update(store, &sc.key, Absent::Fail(StoreError::Missing), &mut sc.buf, &mut sc.out, |b, out| {
        if TenantState::decode(b).is_ok() {
            return Ok(Step::Keep(()));
        }
        TenantState::default().encode_into(out);
        Ok(Step::Write(()))
    })
}

fn put_saturation<S: SharedStore>(store: &S, body: &[u8], now: Millis) -> Response {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return error(400, "expected a JSON object such as {\"cpu_load\":0.95,\"ttl_ms\":60000}");
    };
    let ttl = match m.get("ttl_ms") {
        None => 60_000,
        Some(v) => match v.as_u64() {
            Some(t) if t > 0 => t,
            _ => return error(400, "ttl_ms must be a positive integer"),
        },
    };
    let mut values = Vec::new();
    for (k, v) in &m {
        if k == "ttl_ms" {
            continue;
        }
        let ok_name = !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match v.as_f64() {
            Some(x) if ok_name && x.is_finite() && x >= 0.0 => values.push((k.clone(), x)),
            _ => return error(400, format!("`{k}`: expected a signal name with a non-negative number")),
        }
    }
    if values.is_empty() {
        return error(400, "no signal value given");
    }
    let expires = now.saturating_add(ttl);
    let r = update_map(store, OPERATOR_KEY, |map| {
        map.retain(|_, v| v.get("expires_ms").and_then(Value::as_u64).is_some_and(|e| e > now));
        for (k, x) in &values {
            map.insert(k.clone(), json!({ "value": x, "expires_ms": expires }));
        }
    });
    match r {
        Ok(()) => reply(200, json!({ "signals": values.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(), "expires_ms": expires })),
        Err(e) => store_error(e),
    }
}

fn status<S: SharedStore>(cfg: &Config, store: &S, extra: StatusExtra) -> Response {
    let reg = match store::read_registry(store) {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let overrides = read_map(store, OVERRIDES_KEY).map(|m| m.len()).unwrap_or(0);
    reply(
        200,
        json!({
            "mode": format!("{:?}", cfg.mode).to_lowercase(),
            "tracked_tenants": reg.tracked,
            "max_tracked": cfg.max_tracked,
            "named_tenants": cfg.tenants.len(),
            "runtime_overrides": overrides,
            "budgets": cfg.budgets.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
            "totals": extra.totals,
            "saturation": extra.saturation,
            "global": extra.global,
        }),
    )
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
