//! Config pushes: an LDS file and its bootstrap, and a wasm module made new by a custom section.

use super::*;

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
{clusters}"#,
        extra = opts.extra_bootstrap,
        lds = lds.display(),
        clusters = upstream_clusters(upstream, &opts.extra_clusters),
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
