//! End-to-end harness: a real Envoy with the built filter, a test upstream, and a small
//! HTTP/1.1 client. Every Envoy gets its own config whose listeners and admin bind port 0:
//! the kernel picks ports nobody holds, Envoy keeps them bound, and the harness reads them
//! back (admin from `--admin-address-path`, listeners from the admin `/listeners`). No port
//! is ever picked, released, then rebound, so two Envoys can never share a port (Envoy sets
//! SO_REUSEPORT on its listeners). Envoy is killed when dropped; a panicking test prints the
//! tail of its log first.
#![allow(dead_code)]

pub mod global;
pub mod llm;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn wasm_path() -> PathBuf {
    let p = std::env::var("TQ_WASM").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/wasm32-wasip1/release/tenant_quota.wasm"));
    assert!(p.exists(), "{} missing: run `make build` (or `make test`)", p.display());
    p
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("tq-{}-{}-{}", tag, std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct EnvoyOpts {
    pub concurrency: u32,
    /// Route timeout for the upstream route.
    pub route_timeout_ms: u64,
    /// Extra bootstrap YAML appended at top level (e.g. stats_config).
    pub extra_bootstrap: String,
    /// HTTP filters placed before the wasm filter (YAML list items, 10-space indent).
    pub pre_filters: String,
    /// Set `allow_on_headers_stop_iteration: true` on the filter (lets it read request bodies
    /// before admission; envoy/envoy.yaml sets it).
    pub allow_stop_iteration: bool,
    /// Clusters appended under `static_resources.clusters` after `upstream` (YAML list items,
    /// 2-space indent, e.g. an HTTP/2 gRPC cluster).
    pub extra_clusters: String,
    /// Listeners appended under `static_resources.listeners` after `main` (YAML list items,
    /// 2-space indent, e.g. from [`http_listener`] with port 0). Each one's bound port is
    /// [`Envoy::listener_port`]`(name)`.
    pub extra_listeners: String,
    /// An `access_log:` block for the `main` listener's connection manager (10-space indent,
    /// e.g. from [`shipped_access_log`]).
    pub access_log: String,
}

impl Default for EnvoyOpts {
    fn default() -> Self {
        EnvoyOpts {
            concurrency: 2,
            route_timeout_ms: 10_000,
            extra_bootstrap: shipped_stats_config(),
            pre_filters: String::new(),
            allow_stop_iteration: false,
            extra_clusters: String::new(),
            extra_listeners: String::new(),
            access_log: String::new(),
        }
    }
}

/// envoy/envoy.yaml's access log, its `log_format` verbatim, written to the file `path`
/// instead of stdout: tests read the shipped format strings.
pub fn shipped_access_log(path: &std::path::Path) -> String {
    let yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let mut format = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line == "              log_format:" {
            inside = true;
        } else if inside && !line.starts_with("                ") {
            break;
        }
        if inside {
            format.push_str(line);
            format.push('\n');
        }
    }
    assert!(format.contains("FILTER_STATE"), "no access log format in envoy/envoy.yaml");
    format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "{}"
{format}"#,
        path.display()
    )
}

/// The `stats_config` block of envoy/envoy.yaml, verbatim: tests use the shipped tag rules.
pub fn shipped_stats_config() -> String {
    let yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.starts_with("stats_config:") {
            inside = true;
        } else if inside && !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            break;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(out.contains("stats_tags"), "no stats_config in envoy/envoy.yaml");
    out
}

pub struct Envoy {
    child: Child,
    /// The bound port of the `main` listener.
    pub port: u16,
    /// The bound admin port.
    pub admin: u16,
    pub log: PathBuf,
    pub dir: PathBuf,
    /// Every listener's name and bound port, as the admin `/listeners` reports them.
    listeners: Vec<(String, u16)>,
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The whole bootstrap: admin on `admin`, the `main` listener on `port` (HTTP connection
/// manager: `opts.pre_filters`, the tenant-quota filter configured with `plugin_json`, the
/// router to cluster `upstream` at 127.0.0.1:`upstream`), then `opts.extra_listeners` and
/// `opts.extra_clusters`. Pass 0 for `port` and `admin` to let the kernel pick (what
/// [`Envoy::try_start`] does).
pub fn bootstrap(plugin_json: &str, port: u16, admin: u16, upstream: u16, opts: &EnvoyOpts) -> String {
    let mut filter = wasm_filter("tenant_quota", "tenant_quota", &wasm_path(), plugin_json);
    if opts.allow_stop_iteration {
        filter = filter.replacen("                failure_policy: FAIL_RELOAD\n", "                failure_policy: FAIL_RELOAD\n                allow_on_headers_stop_iteration: true\n", 1);
    }
    let filters = format!("{}{}", opts.pre_filters, filter);
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
{extra}
static_resources:
  listeners:
{main}{extra_listeners}  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
{extra_clusters}"#,
        extra = opts.extra_bootstrap,
        main = http_listener("main", port, &filters, "upstream", opts.route_timeout_ms)
            .replacen("          stat_prefix: ingress\n", &format!("          stat_prefix: ingress\n{}", opts.access_log), 1),
        extra_listeners = opts.extra_listeners,
        extra_clusters = opts.extra_clusters,
    )
}

/// A listener list item (2-space indent) named `name` on 127.0.0.1:`port` (0: the kernel
/// picks; read it back with [`Envoy::listener_port`]): an HTTP connection manager running
/// `http_filters` (YAML list items, 10-space indent, e.g. from [`wasm_filter`]) then the
/// router, routing everything to `cluster` with a `timeout_ms` route timeout.
pub fn http_listener(name: &str, port: u16, http_filters: &str, cluster: &str, timeout_ms: u64) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster}, timeout: {timeout}s }}
          http_filters:
{http_filters}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#,
        timeout = timeout_ms as f64 / 1000.0,
        // `main` keeps the stat prefix of envoy/envoy.yaml's listener.
        prefix = if name == "main" { "ingress" } else { name },
    )
}

/// An HTTP filter list item (10-space indent): the wasm plugin `plugin` running `wasm` in the
/// VM `vm_id` (tenant-quota's is `tenant_quota`; plugins sharing a vm_id share its shared
/// data), with `config` as its plugin configuration.
pub fn wasm_filter(plugin: &str, vm_id: &str, wasm: &std::path::Path, config: &str) -> String {
    format!(
        r#"          - name: {plugin}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {plugin}
                root_id: {plugin}
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{wasm}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
{config}"#,
        wasm = wasm.display(),
        config = indent(config, 20),
    )
}

impl Envoy {
    pub fn start(plugin_json: &str, upstream: u16, opts: EnvoyOpts) -> Envoy {
        match Envoy::try_start(plugin_json, upstream, opts) {
            Ok(e) => e,
            Err(log) => panic!("envoy did not become ready:\n{log}"),
        }
    }

    /// Start Envoy; on failure return its log. Every port is 0 in the config: the admin
    /// address is read from `--admin-address-path`, and once `/ready` answers 200, every
    /// listener's bound port from the admin `/listeners?format=json`.
    pub fn try_start(plugin_json: &str, upstream: u16, opts: EnvoyOpts) -> Result<Envoy, String> {
        let dir = tmpdir("envoy");
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, bootstrap(plugin_json, 0, 0, upstream, &opts)).unwrap();
        Envoy::launch(dir, &cfg, opts.concurrency)
    }

    /// Start Envoy on a whole bootstrap (`yaml`, e.g. envoy/envoy.yaml rewritten): its admin
    /// and listeners should bind port 0, and one listener must be named `main`.
    pub fn start_yaml(yaml: &str, concurrency: u32) -> Envoy {
        let dir = tmpdir("envoy-yaml");
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        Envoy::launch(dir, &cfg, concurrency).unwrap_or_else(|log| panic!("envoy did not become ready:\n{log}"))
    }

    /// Run Envoy on the bootstrap `cfg` (in `dir`, which it owns): ready once the admin
    /// answers `/ready` and the `main` listener is bound; on failure, its log.
    fn launch(dir: PathBuf, cfg: &std::path::Path, concurrency: u32) -> Result<Envoy, String> {
        let log = dir.join("envoy.log");
        let admin_file = dir.join("admin.addr");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(cfg)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "--file-flush-interval-msec", "50", "-l", "info", "--log-path"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start envoy: run `make test` so the Makefile installs it");
        let mut e = Envoy { child, port: 0, admin: 0, log, dir, listeners: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = e.child.try_wait() {
                return Err(e.log_text());
            }
            // Re-read each time: a read racing Envoy's write may see a partial address.
            let admin = std::fs::read_to_string(&admin_file).ok().and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok()).map(|a| a.port());
            if let Some(admin) = admin.filter(|&p| p != 0) {
                if try_request(admin, "GET", "/ready", &[], None).is_ok_and(|r| r.status == 200) {
                    if let Some(listeners) = bound_listeners(admin) {
                        if let Some(&(_, main)) = listeners.iter().find(|(n, _)| n == "main") {
                            (e.admin, e.port, e.listeners) = (admin, main, listeners);
                            return Ok(e);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("envoy not ready after 60 s\n{}", e.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The bound port of the listener `name` (`main` is [`Envoy::port`]).
    pub fn listener_port(&self, name: &str) -> u16 {
        match self.listeners.iter().find(|(n, _)| n == name) {
            Some(&(_, p)) => p,
            None => panic!("no listener {name:?}; listeners: {:?}", self.listeners),
        }
    }

    /// Every listener's name and bound port.
    pub fn listeners(&self) -> &[(String, u16)] {
        &self.listeners
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, "GET", path, headers, None)
    }

    /// `/stats/prometheus` as (series with labels, value) pairs, without comments.
    pub fn prometheus(&self) -> Vec<(String, f64)> {
        // At high rates the filter batches metric updates per worker for up to 5 ms (a tick).
        std::thread::sleep(Duration::from_millis(20));
        let r = request(self.admin, "GET", "/stats/prometheus", &[], None);
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v))))
            .collect()
    }

    /// The value of one Prometheus series, e.g. `quota_errors_total{}`.
    pub fn series(&self, name: &str) -> Option<f64> {
        self.prometheus().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = request(self.admin, "GET", &format!("/stats?filter=^{name}$"), &[], None);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
    }
}

/// The admin `/listeners?format=json` as (name, port) pairs, from
/// `{"listener_statuses":[{"name":..,"local_address":{"socket_address":{"address":..,"port_value":N}}}]}`.
/// None unless every listener reports a non-zero port.
fn bound_listeners(admin: u16) -> Option<Vec<(String, u16)>> {
    let r = try_request(admin, "GET", "/listeners?format=json", &[], None).ok().filter(|r| r.status == 200)?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let mut out = Vec::new();
    for l in v["listener_statuses"].as_array()? {
        let name = l["name"].as_str()?.to_string();
        let port = l["local_address"]["socket_address"]["port_value"].as_u64().filter(|&p| p != 0 && p <= 65535)?;
        out.push((name, port as u16));
    }
    Some(out)
}

/// The last `n` lines of `text`, with how many were left out.
fn tail(text: &str, n: usize) -> (usize, String) {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    (skip, lines[skip..].join("\n"))
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            // Let Envoy flush its log (--file-flush-interval-msec 50) before reading it.
            std::thread::sleep(Duration::from_millis(150));
            let (skipped, last) = tail(&self.log_text(), 200);
            eprintln!("---- envoy log {} (kept; last lines, {skipped} earlier lines omitted) ----\n{last}\n---- end of envoy log ----", self.log.display());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !panicking {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `envoy --mode validate` on a config carrying `plugin_json`: Ok(log) or Err(log).
pub fn validate(plugin_json: &str) -> Result<String, String> {
    let dir = tmpdir("validate");
    let cfg = dir.join("envoy.yaml");
    // Nothing binds in validate mode: every port can be 0.
    std::fs::write(&cfg, bootstrap(plugin_json, 0, 0, 0, &EnvoyOpts::default())).unwrap();
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "info", "-c"])
        .arg(&cfg)
        .output()
        .expect("cannot run envoy");
    let _ = std::fs::remove_dir_all(&dir);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(log)
    } else {
        Err(log)
    }
}

// ---------------------------------------------------------------- HTTP client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn num(&self, name: &str) -> u64 {
        self.header(name).unwrap_or_else(|| panic!("no {name} header in {self:?}")).parse().unwrap()
    }
}

pub fn write_request(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> std::io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if let (Some(b), false) = (body, chunked) {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        if chunked {
            for c in b.chunks(1000) {
                bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                bytes.extend_from_slice(c);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        } else {
            bytes.extend_from_slice(b);
        }
    }
    s.write_all(&bytes)
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof in headers"));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

fn read_body<R: BufRead>(r: &mut R, headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if let Some(n) = get("content-length") {
        let n: usize = n.parse().unwrap_or(0);
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        return Ok(b);
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut t = String::new();
                r.read_line(&mut t)?;
                return Ok(out);
            }
            let mut b = vec![0; n + 2];
            r.read_exact(&mut b)?;
            out.extend_from_slice(&b[..n]);
        }
    }
    Ok(Vec::new())
}

pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (first, headers) = read_head(r)?;
    let status = first.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = read_body(r, &headers)?;
    Ok(Response { status, headers, body })
}

pub fn try_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write_request(&mut s, method, path, headers, body)?;
    read_response(&mut BufReader::new(s))
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    try_request(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A keep-alive connection.
pub struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { r: BufReader::new(s) }
    }
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        write_request(self.r.get_mut(), method, path, headers, body).unwrap();
        read_response(&mut self.r).unwrap()
    }
    /// Send a request and return without reading the response.
    pub fn send_only(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        write_request(self.r.get_mut(), method, path, headers, None).unwrap();
    }
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.r
    }
    /// Abort: close the socket before the response arrives.
    pub fn abort(self) {
        let s = self.r.into_inner();
        let _ = s.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------- test upstream

/// An HTTP/1.1 upstream on a free port:
/// - `/slow/<ms>...` answers after `<ms>` milliseconds;
/// - `/reset...` closes the connection without answering (an upstream reset);
/// - a request header `x-test-respond-<name>: <v>` becomes a response header `<name>: <v>`;
/// - the body is `ok <bytes received>`.
pub struct Upstream {
    pub port: u16,
    pub received: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    /// Headers added to every response (load reports).
    pub extra: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// When each request arrived (Unix ms).
    pub stamps: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Each request's path and body.
    pub bodies: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let extra = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stamps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rc, oc, ec, sc, bc) = (received.clone(), open.clone(), extra.clone(), stamps.clone(), bodies.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (rc, oc, ec, sc, bc) = (rc.clone(), oc.clone(), ec.clone(), sc.clone(), bc.clone());
                std::thread::spawn(move || serve(s, rc, oc, ec, sc, bc));
            }
        });
        Upstream { port, received, open, extra, stamps, bodies }
    }
    /// Set the headers every response carries from now on.
    pub fn report(&self, headers: &[(&str, &str)]) {
        *self.extra.lock().unwrap() = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
    /// When each request arrived (Unix ms), in arrival order.
    pub fn received_at(&self) -> Vec<u64> {
        self.stamps.lock().unwrap().clone()
    }
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn serve(
    s: TcpStream,
    received: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    extra: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stamps: Arc<std::sync::Mutex<Vec<u64>>>,
    bodies: Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    loop {
        let Ok((first, headers)) = read_head(&mut r) else { return };
        let Ok(body) = read_body(&mut r, &headers) else { return };
        stamps.lock().unwrap().push(now_ms());
        received.fetch_add(1, Ordering::SeqCst);
        let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
        bodies.lock().unwrap().push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
        if path.starts_with("/reset") {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms: u64 = ms.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("0").parse().unwrap_or(0);
            open.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            open.fetch_sub(1, Ordering::SeqCst);
        }
        let text = format!("ok {}\n", body.len());
        let mut resp = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n", text.len());
        for (k, v) in extra.lock().unwrap().iter() {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in &headers {
            if let Some(name) = k.strip_prefix("x-test-respond-") {
                resp.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

// =============================================================================================
// Issue 10 (config pushes): an Envoy whose `main` listener comes from a file-based LDS source,
// so a test can push listener updates. Additions only; nothing above uses this block.
// =============================================================================================

/// The LDS file (a DiscoveryResponse, YAML) carrying one listener, `main` on 127.0.0.1:0: the
/// HTTP connection manager runs the tenant-quota filter (vm_id `tenant_quota`) from `wasm`
/// with `plugin_json`, then the router to the static cluster `upstream`. `version` becomes the
/// listener's `version_info`, which the admin `/config_dump` reports once it is active.
pub fn lds_file(version: &str, plugin_json: &str, wasm: &std::path::Path, route_timeout_ms: u64) -> String {
    let filters = wasm_filter("tenant_quota", "tenant_quota", wasm, plugin_json);
    let listener = http_listener("main", 0, &filters, "upstream", route_timeout_ms);
    let item = listener.replacen("  - name: main\n", "  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n    name: main\n", 1);
    assert!(item != listener, "unexpected listener YAML:\n{listener}");
    format!("version_info: \"{version}\"\nresources:\n{item}")
}

/// A bootstrap with admin on port 0, `opts.extra_bootstrap`, listeners from the LDS file
/// `lds` (watched for moves: replace it with a rename), and the static cluster `upstream` at
/// 127.0.0.1:`upstream` plus `opts.extra_clusters`. `opts.pre_filters` and
/// `opts.extra_listeners` do not apply.
pub fn lds_bootstrap(lds: &std::path::Path, upstream: u16, opts: &EnvoyOpts) -> String {
    format!(
        r#"node: {{ id: tq-test, cluster: tq-test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{extra}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {{ path: "{lds}" }}
static_resources:
  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
{extra_clusters}"#,
        extra = opts.extra_bootstrap,
        lds = lds.display(),
        extra_clusters = opts.extra_clusters,
    )
}

impl Envoy {
    /// The LDS file of an Envoy from [`Envoy::start_lds`].
    pub fn lds_path(&self) -> PathBuf {
        self.dir.join("lds.yaml")
    }

    /// Start Envoy with `main` served over LDS (version `v1`, `plugin_json`, the filter's wasm
    /// from [`wasm_path`]); ready once `main` is bound. Push updates with [`Envoy::push_lds`].
    pub fn start_lds(plugin_json: &str, upstream: u16, opts: EnvoyOpts) -> Envoy {
        let dir = tmpdir("envoy-lds");
        let lds = dir.join("lds.yaml");
        std::fs::write(&lds, lds_file("v1", plugin_json, &wasm_path(), opts.route_timeout_ms)).unwrap();
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, lds_bootstrap(&lds, upstream, &opts)).unwrap();
        Envoy::launch(dir, &cfg, opts.concurrency).unwrap_or_else(|log| panic!("envoy did not become ready:\n{log}"))
    }

    /// The `main` listener as the admin `/config_dump` reports it: (when the active listener
    /// was last updated, whether an update is warming, the last rejected update if any).
    /// (Envoy 1.40 keeps the active state's `version_info` across in-place updates, so the
    /// version is read from the LDS subscription's stats instead.)
    pub fn lds_state(&self) -> (Option<String>, bool, Option<String>) {
        let r = request(self.admin, "GET", "/config_dump?resource=dynamic_listeners", &[], None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let empty = Vec::new();
        let main = v["configs"].as_array().unwrap_or(&empty).iter().find(|l| l["name"] == "main");
        let Some(l) = main else { return (None, false, None) };
        let updated = l["active_state"]["last_updated"].as_str().map(str::to_string);
        let warming = !l["warming_state"].is_null();
        let error = (!l["error_state"].is_null()).then(|| l["error_state"].to_string());
        (updated, warming, error)
    }

    /// The LDS subscription's accepted version (`listener_manager.lds.version_text`).
    pub fn lds_version(&self) -> Option<String> {
        let r = request(self.admin, "GET", "/stats?filter=^listener_manager.lds.version_text$", &[], None);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        body.lines().find_map(|l| l.strip_prefix("listener_manager.lds.version_text: ").map(|v| v.trim().trim_matches('"').to_string()))
    }

    /// [`Envoy::push_lds_file`] of [`lds_file`]`(version, plugin_json, wasm)` with the
    /// default route timeout.
    pub fn push_lds(&mut self, version: &str, plugin_json: &str, wasm: &std::path::Path) -> Duration {
        self.push_lds_file(version, &lds_file(version, plugin_json, wasm, EnvoyOpts::default().route_timeout_ms))
    }

    /// Push a listener update: write `contents` (an LDS file whose `version_info` is
    /// `version`, and whose listener differs from the active one) next to the watched file
    /// and rename it over (Envoy reloads on the move). Returns how long Envoy took to make it
    /// active (the subscription accepted `version`, the active listener was updated, nothing
    /// warms), after giving the workers a moment to pick it up and re-reading the bound ports
    /// (`port` follows `main`). Panics, with the log, on a rejected update.
    pub fn push_lds_file(&mut self, version: &str, contents: &str) -> Duration {
        let (updated_before, _, _) = self.lds_state();
        let rejected_before = self.stat("listener_manager.lds.update_rejected").unwrap_or(0);
        let started = Instant::now();
        let next = self.dir.join("lds.yaml.next");
        std::fs::write(&next, contents).unwrap();
        std::fs::rename(&next, self.lds_path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.stat("listener_manager.lds.update_rejected").unwrap_or(0) > rejected_before {
                std::thread::sleep(Duration::from_millis(150));
                panic!("LDS update {version} rejected: {:?}\n{}", self.lds_state().2, self.log_text());
            }
            let accepted = self.lds_version();
            let (updated, warming, _) = self.lds_state();
            if accepted.as_deref() == Some(version) && updated != updated_before && !warming {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "LDS update {version} not active after 60 s (accepted {accepted:?}; listener updated {updated:?}, before {updated_before:?}; warming {warming})\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        // The main thread has switched; each worker gets the new filter chain by a post.
        std::thread::sleep(Duration::from_millis(200));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(listeners) = bound_listeners(self.admin) {
                if let Some(&(_, main)) = listeners.iter().find(|(n, _)| n == "main") {
                    (self.port, self.listeners) = (main, listeners);
                    return took;
                }
            }
            assert!(Instant::now() < deadline, "listener main not bound after the push");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A copy of `wasm` at `to` with a custom section (`name`, `payload`) appended: the same
/// filter as a different module, so Envoy treats it as new code.
pub fn wasm_with_custom_section(wasm: &std::path::Path, to: &std::path::Path, name: &str, payload: &[u8]) {
    fn leb128(out: &mut Vec<u8>, mut v: usize) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut bytes = std::fs::read(wasm).unwrap();
    assert_eq!(&bytes[..4], b"\0asm", "{} is not a wasm module", wasm.display());
    let mut content = Vec::new();
    leb128(&mut content, name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    bytes.push(0); // custom section id
    leb128(&mut bytes, content.len());
    bytes.extend_from_slice(&content);
    std::fs::write(to, bytes).unwrap();
}
// ================================================================ end of issue 10 block

/// envoy/demo_backend.py (the `make run` upstream: OpenAI and Anthropic APIs with usage) on a
/// port of the kernel's; stopped on drop.
pub struct DemoBackend {
    pub port: u16,
    child: Child,
}

impl DemoBackend {
    pub fn start() -> DemoBackend {
        let mut child = Command::new("python3")
            .arg(repo().join("envoy/demo_backend.py"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start python3 envoy/demo_backend.py");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let port = first.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("demo backend said {first:?}"));
        DemoBackend { port, child }
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
