//! A real Envoy with the built filter: options, bootstrap, start and wait, stats, drop.

use super::*;

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
    /// The `main` listener's route list (YAML list items, 14-space indent) in place of the
    /// one route to `upstream` (e.g. a header match to another of `extra_clusters`).
    pub routes: String,
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
            routes: String::new(),
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
    pub(super) listeners: Vec<(String, u16)>,
}

/// `listener` with its route list replaced by `routes` (unchanged when `routes` is empty).
fn with_routes(listener: String, routes: &str) -> String {
    if routes.is_empty() {
        return listener;
    }
    let start = listener.find("              - match:").expect("a route list");
    let end = listener[start..].find("          http_filters:").map(|e| start + e).expect("http_filters after the routes");
    format!("{}{}{}", &listener[..start], routes, &listener[end..])
}

pub fn indent(s: &str, n: usize) -> String {
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
{clusters}"#,
        extra = opts.extra_bootstrap,
        main = with_routes(http_listener("main", port, &filters, "upstream", opts.route_timeout_ms), &opts.routes)
            .replacen("          stat_prefix: ingress\n", &format!("          stat_prefix: ingress\n{}", opts.access_log), 1),
        extra_listeners = opts.extra_listeners,
        clusters = upstream_clusters(upstream, &opts.extra_clusters),
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
    pub(super) fn launch(dir: PathBuf, cfg: &std::path::Path, concurrency: u32) -> Result<Envoy, String> {
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
pub fn bound_listeners(admin: u16) -> Option<Vec<(String, u16)>> {
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
pub fn tail(text: &str, n: usize) -> (usize, String) {
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

/// The static cluster `upstream` at 127.0.0.1:`port`, then `extra` (YAML list items, 2-space
/// indent): the `clusters:` items of every test bootstrap.
pub fn upstream_clusters(port: u16, extra: &str) -> String {
    format!(
        r#"  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
{extra}"#
    )
}
