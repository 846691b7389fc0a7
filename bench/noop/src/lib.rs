//! A proxy-wasm HTTP filter that does nothing: the wasm floor for `make bench`.
//!
//! Its plugin configuration can switch on single host operations, so the bench can price
//! them one by one: `{"read_header": true, "shared_pair": true, "add_headers": 1}`, each
//! repeated 10 times per request (also `now`, `header_pairs`, `shared_get`; and
//! `tenant_keys`, see [`Ops`]).
//! `{"poison_key": K}` writes an undecodable value under K at configure (a test aid).
//!
//! `{"grpc_call": {"cluster": C, "domain": D, "limit": N}}`: the floor of a filter that waits
//! for a rate limit service: every request pauses for one
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` call on cluster C (timeout
//! 100 ms), whose answer is read and the request resumed, whatever it says. The call's body
//! is built once at configure: one descriptor like tenant-quota's `exact` check (entries
//! `tenant`=`tenant-0`, `budget`=`requests_per_minute`, `window`=<the minute's index>, limit
//! override N per MINUTE, `hits_addend` 1) in domain D. With `"grpc_state": true` each
//! request also reads all request headers in one call and does a shared-data get + CAS set on
//! `tq1|t|<x-tenant-id>` before the call and again on its answer: tenant-quota's two
//! transactions of an `exact` request, without their logic.
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const REPEAT: usize = 10;

#[derive(Default, Clone, Copy)]
struct Ops {
    read_header: bool,
    shared_pair: bool,
    add_headers: usize,
    now: bool,
    header_pairs: bool,
    shared_get: bool,
    /// `tenant_keys`: one shared-data get + CAS set per request on a key named after the
    /// request's `x-tenant-id`, created on first use: Envoy's shared-data map at scale, with no
    /// quota logic. The key is `tq1|t|<id>`, or `t|<id>` with `short_key`; the value has
    /// `value_bytes` bytes (default 30, at most 64).
    keys: bool,
    short_key: bool,
    value_bytes: usize,
}

/// The `grpc_call` probe: where to send the prebuilt `ShouldRateLimit` body.
struct GrpcProbe {
    cluster: String,
    body: Vec<u8>,
    /// `grpc_state`: the two shared-data transactions and the one-call header read.
    state: bool,
}

const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
const RLS_METHOD: &str = "ShouldRateLimit";
const STATE_BYTES: usize = 56; // about a tenant-quota state with 4 budgets, one global

// A tiny protobuf encoder: just what a `RateLimitRequest` needs.
fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn pb_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    pb_varint(out, field << 3);
    pb_varint(out, v);
}
fn pb_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    pb_varint(out, field << 3 | 2);
    pb_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `RateLimitRequest{domain, descriptors: [{entries: [tenant, budget, window],
/// limit: {requests_per_unit: limit, unit: MINUTE}, hits_addend: {value: 1}}]}`.
fn rls_request(domain: &str, limit: u32, window_index: u64) -> Vec<u8> {
    let entry = |k: &str, v: &str| {
        let mut e = Vec::new();
        pb_bytes(&mut e, 1, k.as_bytes());
        pb_bytes(&mut e, 2, v.as_bytes());
        e
    };
    let mut d = Vec::new();
    pb_bytes(&mut d, 1, &entry("tenant", "tenant-0"));
    pb_bytes(&mut d, 1, &entry("budget", "requests_per_minute"));
    pb_bytes(&mut d, 1, &entry("window", &window_index.to_string()));
    let mut over = Vec::new();
    pb_uint(&mut over, 1, u64::from(limit));
    pb_uint(&mut over, 2, 2); // MINUTE
    pb_bytes(&mut d, 2, &over);
    let mut hits = Vec::new();
    pb_uint(&mut hits, 1, 1);
    pb_bytes(&mut d, 3, &hits);
    let mut req = Vec::new();
    pb_bytes(&mut req, 1, domain.as_bytes());
    pb_bytes(&mut req, 2, &d);
    req
}

#[derive(Default)]
struct Root {
    ops: Ops,
    grpc: Option<Rc<GrpcProbe>>,
}

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let cfg = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten().unwrap_or_default();
        let cfg = String::from_utf8_lossy(&cfg);
        let compact: String = cfg.chars().filter(|c| !c.is_whitespace()).collect();
        self.ops.read_header = compact.contains("\"read_header\":true");
        self.ops.shared_pair = compact.contains("\"shared_pair\":true");
        self.ops.now = compact.contains("\"now\":true");
        self.ops.header_pairs = compact.contains("\"header_pairs\":true");
        self.ops.shared_get = compact.contains("\"shared_get\":true");
        self.ops.keys = compact.contains("\"tenant_keys\":true");
        self.ops.short_key = compact.contains("\"short_key\":true");
        let number = |key: &str| {
            compact
                .split(&format!("\"{key}\":"))
                .nth(1)
                .and_then(|r| r.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<usize>().ok())
        };
        self.ops.add_headers = number("add_headers").unwrap_or(0);
        self.ops.value_bytes = number("value_bytes").unwrap_or(30).min(64);
        // Test aid: write an undecodable value under a key (tests/e2e_on_error.rs runs this
        // filter in tenant-quota's vm_id to corrupt one tenant's state).
        if let Some(key) = compact.split("\"poison_key\":\"").nth(1).and_then(|r| r.split('"').next()) {
            let _ = hostcalls::set_shared_data(key, Some(b"\x09not a tenant state"), None);
        }
        if self.ops.shared_pair || self.ops.shared_get {
            let _ = hostcalls::set_shared_data("noop", Some(b"0"), None);
        }
        if let Some(call) = compact.split("\"grpc_call\":{").nth(1).and_then(|r| r.split('}').next()) {
            let string = |key: &str| call.split(&format!("\"{key}\":\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
            let limit = call
                .split("\"limit\":")
                .nth(1)
                .and_then(|r| r.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().ok())
                .unwrap_or(u32::MAX);
            let now_ms = hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64);
            let domain = string("domain").unwrap_or_else(|| "tenant-quota".into());
            self.grpc = Some(Rc::new(GrpcProbe {
                cluster: string("cluster").unwrap_or_else(|| "ratelimit".into()),
                body: rls_request(&domain, limit, now_ms / 60_000),
                state: compact.contains("\"grpc_state\":true"),
            }));
        }
        true
    }
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        if let Some(g) = &self.grpc {
            return Some(Box::new(GrpcNoop { probe: g.clone(), token: None, key: String::new() }));
        }
        Some(Box::new(Noop { ops: self.ops }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    ops: Ops,
}
impl Context for Noop {}
impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.ops.keys {
            if let Ok(Some(id)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-tenant-id") {
                let prefix = if self.ops.short_key { "t|" } else { "tq1|t|" };
                let key = format!("{prefix}{}", String::from_utf8_lossy(&id));
                match hostcalls::get_shared_data(&key) {
                    Ok((Some(v), cas)) => {
                        let _ = hostcalls::set_shared_data(&key, Some(&v), cas);
                    }
                    _ => {
                        let _ = hostcalls::set_shared_data(&key, Some(&[7u8; 64][..self.ops.value_bytes]), None);
                    }
                }
            }
            return Action::Continue;
        }
        // Each operation runs REPEAT times, so its price stands out of run-to-run noise.
        for _ in 0..REPEAT {
            if self.ops.read_header {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-tenant-id");
            }
            if self.ops.now {
                let _ = hostcalls::get_current_time();
            }
            if self.ops.header_pairs {
                let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
            }
            if self.ops.shared_get {
                let _ = hostcalls::get_shared_data("noop");
            }
            if self.ops.shared_pair {
                if let Ok((Some(v), cas)) = hostcalls::get_shared_data("noop") {
                    let _ = hostcalls::set_shared_data("noop", Some(&v), cas);
                }
            }
        }
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for i in 0..self.ops.add_headers * REPEAT {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, ["x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h", "x-i", "x-j"][i % 10], "12345");
        }
        Action::Continue
    }
}

/// The `grpc_call` probe's request: pause for one `ShouldRateLimit`, resume on its answer.
struct GrpcNoop {
    probe: Rc<GrpcProbe>,
    token: Option<u32>,
    /// `grpc_state`: this request's tenant key.
    key: String,
}

/// One get + CAS set of `key` (created on first use).
fn touch(key: &str) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(v), cas)) => {
            let _ = hostcalls::set_shared_data(key, Some(&v), cas);
        }
        _ => {
            let _ = hostcalls::set_shared_data(key, Some(&[7u8; STATE_BYTES]), None);
        }
    }
}

impl Context for GrpcNoop {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.token != Some(token_id) {
            return;
        }
        self.token = None;
        // A real filter reads the answer; this one ignores what it says.
        let answer = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size).ok().flatten();
        if status_code != 0 || answer.is_none() {
            let _ = hostcalls::log(LogLevel::Warn, &format!("noop: ShouldRateLimit failed (gRPC status {status_code})"));
        }
        if self.probe.state && !self.key.is_empty() {
            touch(&self.key);
        }
        let _ = hostcalls::resume_http_request();
    }
}

impl HttpContext for GrpcNoop {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.probe.state {
            if let Ok(pairs) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
                if let Some((_, id)) = pairs.iter().find(|(k, _)| k == "x-tenant-id") {
                    self.key = format!("tq1|t|{}", String::from_utf8_lossy(id));
                    touch(&self.key);
                }
            }
        }
        let p = &self.probe;
        match hostcalls::dispatch_grpc_call(&p.cluster, RLS_SERVICE, RLS_METHOD, Vec::new(), Some(&p.body), Duration::from_millis(100)) {
            Ok(token) => {
                self.token = Some(token);
                Action::Pause
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Warn, &format!("noop: cannot dispatch ShouldRateLimit: {e:?}"));
                Action::Continue
            }
        }
    }
}
