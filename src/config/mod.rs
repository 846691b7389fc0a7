//! Configuration: bytes -> [`Config`], a value that cannot be invalid.
//!
//! Parsing is two steps, as in Kuadrant's wasm-shim: serde into the raw structs of
//! [`raw`] (which refuse unknown keys and wrong types, and report the key path through
//! `serde_path_to_error`), then [`compile`] which checks meaning (zero windows, unknown
//! budgets in overrides, bad tenant ids, thresholds out of order).

pub mod raw;

pub use crate::core::budget::{Algorithm, Budget, Counts, GlobalMode, Limits, Match, OnExceed, Priority, Queue, Saturation, Signal, SignalSource, TokenKind, CALENDAR_MONTH};
pub use crate::core::id::{fnv1a, valid_tenant_id, DEFAULT_MAX_TRACKED, MAX_BUDGETS, MAX_TENANT_ID_LEN};
pub use raw::{Level, Mode, OnError};
pub use raw::RawTenant;
use raw::{RawBudget, RawConfig, RawOverride};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A refused configuration: `path` is the dotted key path (`budgets.rpm.window_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(f, "invalid configuration at `{}`: {}", self.path, self.message)
        }
    }
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { path: path.into(), message: message.into() })
}


/// `alerts_webhook` (SPEC 5): an Envoy cluster and path crossings are POSTed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub cluster: String,
    pub path: String,
}


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

#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub priority: Priority,
    /// One entry per budget, in `Config::budgets` order.
    pub limits: Vec<Limits>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TenantSource {
    Header(String),
    Metadata(Vec<String>),
}


#[derive(Debug, Clone)]
pub struct Admin {
    pub path_prefix: String,
    pub token_sha256: [u8; 32],
    /// Downstream address ranges allowed to call the admin API (empty: any).
    pub allowed_sources: Vec<Cidr>,
}

/// An IPv4 or IPv6 address range, e.g. `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address as 16 bytes (IPv4 mapped into `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Prefix length over the 16 bytes (an IPv4 /n is 96 + n).
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let (addr, bits) = match ip.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(v4) => {
                let b = bits.unwrap_or(32);
                if b > 32 {
                    return None;
                }
                (v4.to_ipv6_mapped().octets(), 96 + b)
            }
            std::net::IpAddr::V6(v6) => {
                let b = bits.unwrap_or(128);
                if b > 128 {
                    return None;
                }
                (v6.octets(), b)
            }
        };
        Some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        let o = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.octets(), |v4| v4.to_ipv6_mapped().octets()),
        };
        let full = usize::from(self.bits / 8);
        if o[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.bits % 8;
        rest == 0 || (o[full] ^ self.addr[full]) >> (8 - rest) == 0
    }
}

/// The IP of a downstream address as Envoy reports it (`1.2.3.4:5678`, `[::1]:5678`).
pub fn parse_source_ip(v: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.parse::<std::net::IpAddr>().ok()
}

/// What global budgets get while the rate limit service does not answer (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// The full limit on this Envoy's counts plus the `remote` last learned in the window.
    Local,
    /// `floor((limit + burst_credits) / N)` on this Envoy's own counts.
    LocalShare(u64),
    /// 503 `quota_unavailable`.
    Deny,
}

/// Where an LLM request's model comes from (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Header(String),
    /// The top-level `model` field of the JSON request body (needs `request_body`).
    RequestBody,
}

/// The `llm` block (SPEC 5).
#[derive(Debug, Clone)]
pub struct Llm {
    pub model: Option<ModelSource>,
    /// Read the JSON request body before admission (SPEC 5).
    pub request_body: bool,
    pub default_reserve_tokens: u64,
    pub max_request_body_bytes: u64,
    pub prices: crate::llm::Prices,
}

impl Default for Llm {
    fn default() -> Self {
        Llm { model: None, request_body: false, default_reserve_tokens: 0, max_request_body_bytes: 1 << 20, prices: crate::llm::Prices::new(Vec::<(String, crate::llm::Price)>::new()) }
    }
}

/// The rate limit service of global budgets (SPEC 8).
#[derive(Debug, Clone)]
pub struct Global {
    pub cluster: String,
    pub domain: String,
    pub sync_period_ms: u64,
    pub timeout_ms: u64,
    pub on_unavailable: OnUnavailable,
}

/// Windows the reference service (envoyproxy/ratelimit) can express: its epoch-aligned units.
pub const GLOBAL_WINDOWS_MS: [u64; 4] = [1000, 60_000, 3_600_000, 86_400_000];

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub tenant_source: TenantSource,
    /// `None`: requests without a tenant id are rejected with 401.
    pub fallback: Option<String>,
    pub max_tracked: u64,
    /// Budgets sorted by name: checked in this order, so the rejecting budget is deterministic.
    pub budgets: Vec<Budget>,
    pub tenants: BTreeMap<String, TenantPolicy>,
    pub default_policy: TenantPolicy,
    pub saturation: Option<Saturation>,
    pub admin: Option<Admin>,
    pub on_error: OnError,
    /// Whether any budget needs `:path`/`:method`.
    pub needs_match: bool,
    pub global: Option<Global>,
    /// Scopes in name order (SPEC 7); budgets refer to them by index.
    pub scopes: Vec<Scope>,
    /// SPEC 5 (defaults when the block is absent).
    pub llm: Llm,
    pub alerts_webhook: Option<Webhook>,
    /// Write each request's decision into Envoy filter state, for access logs and trace tags
    /// (`engine::log_fields`). Off by default: every field is a host call per request.
    pub filter_state: bool,
    /// Test-only: see [`raw::RawTestHooks`].
    pub trap_sync_leader_path: Option<String>,
    pub trap_path: Option<String>,
}


fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    /// Parse and validate the plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError { path, message: e.into_inner().to_string() }
        })?;
        compile(raw)
    }

    pub fn policy(&self, tenant: &str) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.default_policy)
    }

    /// Legal but doubtful settings, for the log at configure (SPEC 6).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.budgets.iter().filter(|b| b.on_exceed == OnExceed::Queue) {
            let t = b.queue.timeout_ms;
            if t == 0 {
                out.push(format!("budgets.{}.queue.timeout_ms is 0: requests never wait (the budget rejects)", b.name));
            } else if t > 15_000 {
                out.push(format!("budgets.{}.queue.timeout_ms is {t} ms, longer than Envoy's default route timeout (15 s): check the route's timeout", b.name));
            }
            if b.limits.window_ms > 0 && t > 0 && b.limits.window_ms / t > 100 {
                let window = if b.limits.window_ms == CALENDAR_MONTH { "a calendar month".to_string() } else { format!("a window of {} ms", b.limits.window_ms) };
                out.push(format!("budgets.{}: {window} is far longer than the queue timeout ({t} ms): few waiting requests will ever see it roll over", b.name));
            }
        }
        out
    }

    pub fn budget_index(&self, name: &str) -> Option<usize> {
        self.budgets.iter().position(|b| b.name == name)
    }
}

fn parse_counts(path: &str, v: &Value) -> Result<Counts, ConfigError> {
    match v {
        Value::String(s) => match s.as_str() {
            "requests" => Ok(Counts::Requests),
            "request_bytes" => Ok(Counts::RequestBytes),
            "in_flight" => Ok(Counts::InFlight),
            "llm_cost" => Ok(Counts::LlmCost),
            other => err(path, format!("unknown counts kind `{other}`, expected one of `requests`, `request_bytes`, `in_flight`, `llm_cost`, {{\"request_header\": H}}, {{\"response_header\": H}}, {{\"llm_tokens\": K}}")),
        },
        Value::Object(m) if m.len() == 1 && m.contains_key("llm_tokens") => match m.get("llm_tokens").and_then(Value::as_str) {
            Some("input") => Ok(Counts::LlmTokens(TokenKind::Input)),
            Some("output") => Ok(Counts::LlmTokens(TokenKind::Output)),
            Some("total") => Ok(Counts::LlmTokens(TokenKind::Total)),
            _ => err(format!("{path}.llm_tokens"), "expected `input`, `output` or `total`"),
        },
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().ok_or_else(|| ConfigError { path: path.into(), message: "empty object".into() })?;
            let h = match v {
                Value::String(h) if valid_header_name(h) => h.to_ascii_lowercase(),
                _ => return err(format!("{path}.{k}"), "expected a header name (string)"),
            };
            match k.as_str() {
                "request_header" => Ok(Counts::RequestHeader(h)),
                "response_header" => Ok(Counts::ResponseHeader(h)),
                other => err(format!("{path}.{other}"), format!("unknown key `{other}`, expected `request_header` or `response_header`")),
            }
        }
        _ => err(path, "expected a string or an object with one key `request_header` or `response_header`"),
    }
}

fn positive_window(path: &str, w: i64) -> Result<u64, ConfigError> {
    if w <= 0 {
        return err(path, format!("window_ms must be a positive number of milliseconds, got {w}"));
    }
    Ok(w as u64)
}

fn compile_budget(name: &str, raw: &RawBudget) -> Result<Budget, ConfigError> {
    let p = format!("budgets.{name}");
    if !valid_name(name) {
        return err(&p, "budget names are 1-64 characters of [A-Za-z0-9_-]");
    }
    let counts = parse_counts(&format!("{p}.counts"), &raw.counts)?;
    let window_ms = match (&counts, raw.window_ms, raw.window.as_deref()) {
        // A window on an in_flight budget means nothing; it is accepted and ignored.
        (Counts::InFlight, _, _) => 0,
        (_, Some(_), Some(_)) => return err(format!("{p}.window"), "set either `window_ms` or `window`, not both"),
        (_, None, Some("calendar_month")) => CALENDAR_MONTH,
        (_, None, Some(w)) => return err(format!("{p}.window"), format!("unknown window `{w}`, expected `calendar_month`")),
        (_, None, None) => return err(format!("{p}.window_ms"), "missing window_ms (required for every kind but in_flight)"),
        (_, Some(w), None) => positive_window(&format!("{p}.window_ms"), w)?,
    };
    let algorithm = raw.algorithm.unwrap_or_default();
    if counts == Counts::InFlight && algorithm == Algorithm::Sliding {
        return err(format!("{p}.algorithm"), "in_flight budgets have no window to slide");
    }
    if window_ms == CALENDAR_MONTH && algorithm == Algorithm::Sliding {
        return err(format!("{p}.algorithm"), "calendar months cannot slide");
    }
    let mut matcher = Match::default();
    if let Some(m) = &raw.match_ {
        if let Some(pp) = &m.path_prefix {
            if !pp.starts_with('/') {
                return err(format!("{p}.match.path_prefix"), "must start with `/`");
            }
            matcher.path_prefix = Some(pp.clone());
        }
        for (i, model) in m.models.iter().flatten().enumerate() {
            if model.is_empty() || model.len() > 256 || model.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                return err(format!("{p}.match.models[{i}]"), "model patterns are 1-256 bytes of visible ASCII (a trailing `*` matches any suffix)");
            }
            matcher.models.push(model.clone());
        }
        for (i, meth) in m.methods.iter().flatten().enumerate() {
            if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_alphabetic()) {
                return err(format!("{p}.match.methods[{i}]"), format!("`{meth}` is not an HTTP method"));
            }
            matcher.methods.push(meth.to_ascii_uppercase());
        }
    }
    let limits = Limits { limit: raw.limit, burst_credits: raw.burst_credits.unwrap_or(0), window_ms, unlimited: false };
    if raw.global.is_some() {
        let gp = format!("{p}.global");
        if counts == Counts::InFlight {
            return err(gp, "in_flight budgets cannot be global (a global concurrency count needs a call per request start and end)");
        }
        if algorithm == Algorithm::Sliding {
            return err(gp, "sliding windows cannot be global (the rate limit service counts fixed windows)");
        }
        check_global_limits(&p, &limits)?;
        check_global_name(&p, name)?;
    }
    let on_exceed = raw.on_exceed.unwrap_or_default();
    let mut queue = Queue::default();
    if let Some(q) = &raw.queue {
        if on_exceed != OnExceed::Queue {
            return err(format!("{p}.queue"), "`queue` settings need `\"on_exceed\": \"queue\"`");
        }
        if let Some(t) = q.timeout_ms {
            if !(0..=300_000).contains(&t) {
                return err(format!("{p}.queue.timeout_ms"), format!("must be between 0 and 300000 ms, got {t}"));
            }
            queue.timeout_ms = t as u64;
        }
        if let Some(m) = q.max_waiting {
            if m == 0 || m > 100_000 {
                return err(format!("{p}.queue.max_waiting"), format!("must be between 1 and 100000, got {m}"));
            }
            queue.max_waiting = m;
        }
    }
    if on_exceed == OnExceed::Queue && raw.global == Some(GlobalMode::Exact) {
        return err(format!("{p}.on_exceed"), "an `exact` global budget cannot queue (its answer comes from the rate limit service)");
    }
    let alerts = match &raw.alerts {
        None if window_ms == 0 => Vec::new(),
        None => vec![80, 90, 95],
        Some(_) if window_ms == 0 => return err(format!("{p}.alerts"), "alerts are for windowed budgets (not in_flight)"),
        Some(list) => {
            let mut v = list.clone();
            if let Some(bad) = v.iter().find(|&&x| x == 0 || x > 1000) {
                return err(format!("{p}.alerts"), format!("alert thresholds are percentages of the limit, 1 to 1000, got {bad}"));
            }
            v.sort_unstable();
            v.dedup();
            v
        }
    };
    Ok(Budget { name: name.to_string(), id: fnv1a(name.as_bytes()), counts, algorithm, limits, matcher, global: raw.global, scope: None, on_exceed, queue, alerts })
}

/// A global budget's window must be a unit of the rate limit service, and its cap fit the
/// service's 32-bit `requests_per_unit`.
fn check_global_limits(path: &str, l: &Limits) -> Result<(), ConfigError> {
    if !GLOBAL_WINDOWS_MS.contains(&l.window_ms) && l.window_ms != CALENDAR_MONTH {
        return err(
            format!("{path}.window_ms"),
            format!(
                "a global budget's window must be 1000, 60000, 3600000 or 86400000 ms (the rate limit service's units) or \"window\": \"calendar_month\", got {}",
                l.window_ms
            ),
        );
    }
    Ok(())
}

/// envoyproxy/ratelimit keys a descriptor by joining its entries with `_`
/// (`<domain>_tenant_<id>_budget_<name>[_month_<YYYY-MM>]`, research note D9), and tenant ids
/// are anyone's: a global budget's name must not let two (id, name) pairs join to one key.
/// With names that neither contain `_budget_` or `_month_` nor begin with `budget_`, the key
/// splits back one way only.
fn check_global_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.contains("_budget_") || name.contains("_month_") || name.starts_with("budget_") {
        return err(
            format!("{path}.global"),
            format!("a global budget's name may not contain `_budget_` or `_month_` nor begin with `budget_` (the rate limit service joins descriptor entries with `_`, so `{name}` could share a counter with another tenant's budget)"),
        );
    }
    Ok(())
}

/// Apply a tenant entry (from the config or the admin API) on top of the budgets' limits.
pub fn compile_tenant(path: &str, budgets: &[Budget], raw: &RawTenant) -> Result<TenantPolicy, ConfigError> {
    let base = TenantPolicy { priority: Priority::default(), limits: budgets.iter().map(|b| b.limits).collect() };
    compile_tenant_on(path, budgets, &base, raw)
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
    compile_tenant_unchecked(path, budgets, base, raw)
}

fn compile_tenant_unchecked(path: &str, budgets: &[Budget], base: &TenantPolicy, raw: &RawTenant) -> Result<TenantPolicy, ConfigError> {
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
            l.window_ms = w;
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

fn parse_signal_source(path: &str, from: &str) -> Result<SignalSource, ConfigError> {
    let s = if let Some(m) = from.strip_prefix("orca:") {
        let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return err(path, format!("bad ORCA metric name in `{from}`"));
        }
        SignalSource::Orca(m.to_string())
    } else if let Some(h) = from.strip_prefix("response_header:") {
        if !valid_header_name(h) {
            return err(path, format!("bad header name in `{from}`"));
        }
        SignalSource::ResponseHeader(h.to_ascii_lowercase())
    } else {
        match from {
            "in_flight" => SignalSource::InFlight,
            "upstream_latency_ms" => SignalSource::UpstreamLatencyMs,
            "operator" | "admin" => SignalSource::Operator,
            _ => return err(path, format!("unknown signal source `{from}`, expected `orca:<metric>`, `response_header:<name>`, `in_flight`, `upstream_latency_ms` or `operator`")),
        }
    };
    Ok(s)
}

fn compile_saturation(raw: &raw::RawSaturation) -> Result<Saturation, ConfigError> {
    let mut signals = Vec::new();
    for (name, s) in &raw.signals {
        let p = format!("saturation.signals.{name}");
        if !valid_name(name) {
            return err(&p, "signal names are 1-64 characters of [A-Za-z0-9_-]");
        }
        let source = parse_signal_source(&format!("{p}.from"), &s.from)?;
        if !s.elevated.is_finite() || !s.critical.is_finite() || s.elevated < 0.0 {
            return err(&p, "thresholds must be finite, non-negative numbers");
        }
        if s.elevated > s.critical {
            return err(format!("{p}.elevated"), "elevated must not exceed critical");
        }
        signals.push(Signal { name: name.clone(), source, elevated: s.elevated, critical: s.critical });
    }
    let stale_after_ms = match raw.stale_after_ms {
        None => 10_000,
        Some(v) if v > 0 => v as u64,
        Some(v) => return err("saturation.stale_after_ms", format!("must be positive, got {v}")),
    };
    let mut keep = [[1.0f64; 3]; 3];
    for (level, per) in &raw.keep {
        for (prio, k) in per {
            if !(0.0..=1.0).contains(k) {
                return err(format!("saturation.keep.{level:?}.{prio:?}").to_lowercase(), "keep factors lie in [0, 1]");
            }
            keep[*level as usize][*prio as usize] = *k;
        }
    }
    let retry_after_s = raw.retry_after_s.unwrap_or(5).max(1);
    Ok(Saturation {
        signals,
        stale_after_ms,
        keep,
        retry_after_s,
        expose_signal_headers: raw.expose_signal_headers.unwrap_or(false),
    })
}

fn compile_admin(raw: &raw::RawAdmin) -> Result<Admin, ConfigError> {
    if !raw.path_prefix.starts_with('/') || raw.path_prefix.len() < 2 || raw.path_prefix.ends_with('/') {
        return err("admin.path_prefix", "must start with `/`, not end with `/`, and not be `/` alone");
    }
    let hex = raw.token_sha256.as_bytes();
    if hex.len() != 64 {
        return err("admin.token_sha256", "must be 64 hex digits (the SHA-256 of the bearer token)");
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok().and_then(|s| u8::from_str_radix(s, 16).ok());
        match s {
            Some(v) => out[i] = v,
            None => return err("admin.token_sha256", "must be 64 hex digits"),
        }
    }
    let mut allowed_sources = Vec::new();
    for (i, c) in raw.allowed_sources.iter().flatten().enumerate() {
        match Cidr::parse(c) {
            Some(c) => allowed_sources.push(c),
            None => return err(format!("admin.allowed_sources[{i}]"), format!("`{c}` is not a CIDR (e.g. 10.0.0.0/8, ::1/128)")),
        }
    }
    if raw.allowed_sources.as_ref().is_some_and(|v| v.is_empty()) {
        return err("admin.allowed_sources", "an empty list would allow no one; leave it out to allow any address");
    }
    Ok(Admin { path_prefix: raw.path_prefix.clone(), token_sha256: out, allowed_sources })
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let src = raw.tenant.unwrap_or_default();
    let tenant_source = match (&src.header, &src.metadata) {
        (Some(_), Some(_)) => return err("tenant", "set either `header` or `metadata`, not both"),
        (_, Some(path)) => {
            if path.is_empty() || path.iter().any(|p| p.is_empty()) {
                return err("tenant.metadata", "expected a non-empty list of non-empty path segments");
            }
            TenantSource::Metadata(path.clone())
        }
        (Some(h), None) => {
            if !valid_header_name(h) {
                return err("tenant.header", format!("`{h}` is not a valid header name"));
            }
            TenantSource::Header(h.to_ascii_lowercase())
        }
        (None, None) => TenantSource::Header("x-tenant-id".into()),
    };
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
    let max_tracked = match src.max_tracked {
        None => DEFAULT_MAX_TRACKED,
        Some(0) => return err("tenant.max_tracked", "must be at least 1"),
        Some(n) => n,
    };
    if raw.budgets.len() > MAX_BUDGETS {
        return err("budgets", format!("at most {MAX_BUDGETS} budgets, got {}", raw.budgets.len()));
    }
    let mut budgets = Vec::new();
    for (name, b) in &raw.budgets {
        budgets.push(compile_budget(name, b)?);
    }
    // Budget ids must be distinct, or two budgets would share stored state.
    for (i, a) in budgets.iter().enumerate() {
        if budgets[..i].iter().any(|b| b.id == a.id) {
            return err(format!("budgets.{}", a.name), "budget name collides with another budget's id; rename it");
        }
    }
    let llm = compile_llm(raw.llm.as_ref())?;
    let alerts_webhook = match &raw.alerts_webhook {
        None => None,
        Some(w) => {
            let c = w.cluster.trim();
            if c.is_empty() || c.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                return err("alerts_webhook.cluster", "must name an Envoy cluster");
            }
            if !w.path.starts_with('/') || w.path.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                return err("alerts_webhook.path", "must be a path starting with `/`");
            }
            Some(Webhook { cluster: c.to_string(), path: w.path.clone() })
        }
    };
    for b in &budgets {
        if b.counts == Counts::LlmCost && llm.prices.is_empty() {
            return err(format!("budgets.{}.counts", b.name), "an `llm_cost` budget needs `llm.prices`");
        }
    }
    let scope_names: Vec<&String> = raw.scopes.keys().collect();
    for (b, (name, rb)) in budgets.iter_mut().zip(raw.budgets.iter()) {
        let Some(sname) = &rb.scope else { continue };
        let p = format!("budgets.{name}.scope");
        let Some(i) = scope_names.iter().position(|n| *n == sname) else {
            return err(p, format!("unknown scope `{sname}` (not in `scopes`)"));
        };
        if b.global.is_some() && (sname == "tenant" || sname.contains('_')) {
            return err(
                format!("budgets.{name}.global"),
                format!("a scope with global budgets needs a name without `_` other than `tenant` (its name is the first descriptor entry's key, and the rate limit service joins entries with `_`), got `{sname}`"),
            );
        }
        b.scope = Some(i);
    }
    let mut scopes = Vec::new();
    for (i, (name, rs)) in raw.scopes.iter().enumerate() {
        scopes.push(compile_scope(i, name, rs, &budgets)?);
    }
    let mut tenants = BTreeMap::new();
    for (id, t) in &raw.tenants {
        let p = format!("tenants.{id}");
        if !valid_tenant_id(id.as_bytes()) {
            return err(p, "tenant ids are 1-256 bytes of visible ASCII");
        }
        tenants.insert(id.clone(), compile_tenant(&p, &budgets, t)?);
    }
    let default_policy = compile_tenant("", &budgets, &RawTenant::default())?;
    let saturation = raw.saturation.as_ref().map(compile_saturation).transpose()?;
    let admin = raw.admin.as_ref().map(compile_admin).transpose()?;
    let needs_match = budgets.iter().any(|b| !b.matcher.is_any());
    let global = raw.global.as_ref().map(compile_global).transpose()?;
    if let (Some(q), Some(x)) = (
        budgets.iter().find(|b| b.on_exceed == OnExceed::Queue),
        budgets.iter().find(|b| b.global == Some(GlobalMode::Exact)),
    ) {
        return err(
            format!("budgets.{}.on_exceed", q.name),
            format!("`queue` cannot be combined with the `exact` global budget `{}` in one configuration (a queued request is decided again without a network call)", x.name),
        );
    }
    if global.is_none() {
        if let Some(b) = budgets.iter().find(|b| b.global.is_some()) {
            return err(format!("budgets.{}.global", b.name), "a global budget needs the top-level `global` block (the rate limit service's cluster)");
        }
    }
    Ok(Config {
        mode: raw.mode.unwrap_or_default(),
        tenant_source,
        fallback,
        max_tracked,
        budgets,
        tenants,
        default_policy,
        saturation,
        admin,
        on_error: raw.on_error.unwrap_or_default(),
        needs_match,
        global,
        scopes,
        llm,
        alerts_webhook,
        filter_state: raw.filter_state.unwrap_or(false),
        trap_sync_leader_path: raw.test_hooks.as_ref().and_then(|t| t.trap_sync_leader_path.clone()),
        trap_path: raw.test_hooks.as_ref().and_then(|t| t.trap_path.clone()),
    })
}

fn compile_llm(raw: Option<&raw::RawLlm>) -> Result<Llm, ConfigError> {
    let Some(raw) = raw else { return Ok(Llm::default()) };
    let request_body = raw.request_body.unwrap_or(false);
    let model = match &raw.model {
        None => None,
        Some(Value::Object(m)) if m.len() == 1 => match (m.get("header"), m.get("request_body")) {
            (Some(Value::String(h)), _) if valid_header_name(h) => Some(ModelSource::Header(h.to_ascii_lowercase())),
            (Some(_), _) => return err("llm.model.header", "expected a header name"),
            (_, Some(Value::String(f))) if f == "model" && request_body => Some(ModelSource::RequestBody),
            (_, Some(Value::String(f))) if f == "model" => {
                return err("llm.model.request_body", "the model can come from the request body only with `llm.request_body: true`")
            }
            (_, Some(_)) => return err("llm.model.request_body", "expected \"model\" (the body's top-level field)"),
            _ => return err("llm.model", "expected {\"header\": H} or {\"request_body\": \"model\"}"),
        },
        Some(_) => return err("llm.model", "expected {\"header\": H} or {\"request_body\": \"model\"}"),
    };
    let mut prices = Vec::new();
    for (name, p) in &raw.prices {
        if name.is_empty() || name.len() > 256 || name.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return err(format!("llm.prices.{name}"), "model names are 1-256 bytes of visible ASCII (a trailing `*` matches any suffix)");
        }
        prices.push((name.clone(), crate::llm::Price { input: p.input, output: p.output }));
    }
    let max_request_body_bytes = raw.max_request_body_bytes.unwrap_or(1 << 20);
    if max_request_body_bytes > 64 << 20 {
        return err("llm.max_request_body_bytes", "at most 64 MiB");
    }
    Ok(Llm {
        model,
        request_body,
        default_reserve_tokens: raw.default_reserve_tokens.unwrap_or(0),
        max_request_body_bytes,
        prices: crate::llm::Prices::new(prices),
    })
}

fn compile_scope(index: usize, name: &str, rs: &raw::RawScope, budgets: &[Budget]) -> Result<Scope, ConfigError> {
    let p = format!("scopes.{name}");
    if !valid_name(name) {
        return err(&p, "scope names are 1-64 characters of [A-Za-z0-9_-]");
    }
    let source = match (&rs.header, &rs.metadata) {
        (Some(_), Some(_)) => return err(&p, "set either `header` or `metadata`, not both"),
        (None, None) => return err(&p, "set `header` or `metadata`: where the scope's id comes from"),
        (_, Some(path)) => {
            if path.is_empty() || path.iter().any(|s| s.is_empty()) {
                return err(format!("{p}.metadata"), "expected a non-empty list of non-empty path segments");
            }
            TenantSource::Metadata(path.clone())
        }
        (Some(h), None) => {
            if !valid_header_name(h) {
                return err(format!("{p}.header"), format!("`{h}` is not a valid header name"));
            }
            TenantSource::Header(h.to_ascii_lowercase())
        }
    };
    let max_tracked = match rs.max_tracked {
        None => DEFAULT_MAX_TRACKED,
        Some(0) => return err(format!("{p}.max_tracked"), "must be at least 1"),
        Some(n) => n,
    };
    let default_policy = TenantPolicy { priority: Priority::default(), limits: budgets.iter().map(|b| b.limits).collect() };
    let mut ids = BTreeMap::new();
    for (id, r) in &rs.ids {
        let ip = format!("{p}.ids.{id}");
        if !valid_tenant_id(id.as_bytes()) {
            return err(ip, "scope ids are 1-256 bytes of visible ASCII");
        }
        if id == crate::core::id::OVERFLOW {
            return err(ip, "`overflow` is the id shared by ids past max_tracked; it cannot be configured");
        }
        ids.insert(id.clone(), compile_subject_on(&ip, budgets, &default_policy, &RawTenant::from(r), Some((index, name)))?);
    }
    Ok(Scope { name: name.to_string(), source, max_tracked, ids, default_policy })
}

fn compile_global(raw: &raw::RawGlobal) -> Result<Global, ConfigError> {
    let c = raw.cluster.trim();
    if c.is_empty() || c.len() > 256 || c.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return err("global.cluster", "must name the Envoy cluster (HTTP/2) of the rate limit service");
    }
    let domain = raw.domain.clone().unwrap_or_else(|| "tenant-quota".into());
    if domain.is_empty() || domain.len() > 128 || domain.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return err("global.domain", "must be 1-128 bytes of visible ASCII");
    }
    let ms = |key: &str, v: Option<i64>, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) if v >= min as i64 && v <= max as i64 => Ok(v as u64),
            Some(v) => err(format!("global.{key}"), format!("must be between {min} and {max} ms, got {v}")),
        }
    };
    let sync_period_ms = ms("sync_period_ms", raw.sync_period_ms, 200, 10, 60_000)?;
    let timeout_ms = ms("timeout_ms", raw.timeout_ms, 100, 1, 60_000)?;
    let on_unavailable = match &raw.on_unavailable {
        None => OnUnavailable::Local,
        Some(Value::String(s)) if s == "local" => OnUnavailable::Local,
        Some(Value::String(s)) if s == "deny" => OnUnavailable::Deny,
        Some(Value::Object(m)) if m.len() == 1 && m.contains_key("local_share") => match m.get("local_share").and_then(Value::as_u64) {
            Some(n) if n >= 1 => OnUnavailable::LocalShare(n),
            _ => return err("global.on_unavailable.local_share", "must be a whole number of Envoys, at least 1"),
        },
        Some(_) => return err("global.on_unavailable", "expected `local`, `deny` or {\"local_share\": N}"),
    };
    Ok(Global { cluster: c.to_string(), domain, sync_period_ms, timeout_ms, on_unavailable })
}

#[cfg(test)]
mod tests;
