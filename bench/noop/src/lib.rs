//! A proxy-wasm HTTP filter that does nothing: the wasm floor for `make bench`.
//!
//! Its plugin configuration can switch on single host operations, so the bench can price
//! them one by one: `{"read_header": true, "shared_pair": true, "add_headers": 1}`, each
//! repeated 10 times per request (also `now`, `header_pairs`, `shared_get`; and
//! `tenant_keys`, see [`Ops`]).
//! `{"poison_key": K}` writes an undecodable value under K at configure (a test aid).
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

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

#[derive(Default)]
struct Root {
    ops: Ops,
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
        true
    }
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
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
