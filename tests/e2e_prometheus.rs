//! The Grafana dashboard and the Prometheus alert rules in deploy/, against a real Prometheus
//! (Debian's `prometheus`, `make test` installs it) scraping a real Envoy's admin
//! `/stats/prometheus` with the shipped stats tag rules. Every query of
//! deploy/grafana/tenant-quota.json (template variables substituted) and every rule of
//! deploy/prometheus/tenant-quota-rules.yaml (its `for:` shortened to 2 s) must return series
//! once traffic has made each condition true, and every alert must fire: a metric or label
//! renamed in the filter, the tag rules or the files breaks this test.
//!
//! The Envoy runs the filter with a global budget whose rate limit cluster points at a
//! loopback socket that never answers (so the filter goes degraded by itself, SPEC 8), an
//! alerts webhook on a path the upstream answers 404 (so deliveries fail), and the bench's
//! no-op filter corrupting one tenant's state (so decisions fail: `quota_errors_total`).

mod common;
use common::llm::LlmUpstream;
use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gauges SPEC 8 names that the filter may not export yet (another change adds them): a query
/// that needs one is skipped, loudly, while the built filter does not contain its name; once
/// it does, the query is checked like any other.
const AWAITED: [&str; 2] = ["quota_global_pending_units", "quota_global_last_answer_age_ms"];

/// The `for:` every rule gets here (the evaluation interval is 1 s).
const TEST_FOR: &str = "2s";

// ------------------------------------------------------------------ a Prometheus process

struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn prometheus_bin() -> PathBuf {
    std::env::var("PROMETHEUS_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("prometheus"))
}

impl Prometheus {
    /// Prometheus on 127.0.0.1, its TSDB in a fresh temporary directory, scraping
    /// `targets` (host:port) at `/stats/prometheus` every second and evaluating `rules` every
    /// second. The port is one the kernel just handed out; Prometheus does not share ports
    /// (no SO_REUSEPORT), so if another process took it meanwhile Prometheus exits and we try
    /// another; the answering server is checked to be this one by its TSDB path.
    fn start(targets: &[String], rules: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tq-prometheus-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\nscrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let data = dir.join("data");
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
            let child = Command::new(prometheus_bin())
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=info")
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}: run `make test` (it installs Debian's prometheus)", prometheus_bin().display()));
            let mut p = Prometheus { child, port, dir: dir.clone() };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = p.child.try_wait() {
                    last = p.log();
                    break; // port taken, or a bad config: try once more, then report
                }
                if try_request(port, "GET", "/-/ready", &[], None).is_ok_and(|r| r.status == 200) {
                    let flags = p.api("/api/v1/status/flags");
                    assert_eq!(flags["data"]["storage.tsdb.path"].as_str(), Some(data.to_str().unwrap()), "port {port} answers, but not our Prometheus");
                    return p;
                }
                if Instant::now() > deadline {
                    panic!("prometheus not ready after 30 s:\n{}", p.log());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // The child has exited: skip Drop, which would remove the directory we retry in.
            std::mem::forget(p);
        }
        panic!("prometheus did not start:\n{last}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path (already encoded); the decoded JSON, whose `status` must be success.
    fn api(&self, path: &str) -> Value {
        let r = request(self.port, "GET", path, &[], None);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body_str()));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v
    }

    /// An instant query's result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let v = self.api(&format!("/api/v1/query?query={}", urlencode(q)));
        assert_eq!(v["data"]["resultType"], "vector", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// `label_values(metric, label)` as Grafana asks it (/api/v1/label/<label>/values).
    fn label_values(&self, metric: &str, label: &str) -> Vec<String> {
        let v = self.api(&format!("/api/v1/label/{label}/values?match[]={}", urlencode(metric)));
        v["data"].as_array().unwrap().iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- prometheus log (last 30 lines) ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------------ the deploy/ files

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/tenant-quota.json")).unwrap();
    serde_json::from_str(&text).expect("deploy/grafana/tenant-quota.json is not JSON")
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("no panels") {
        out.push(p.clone());
        for q in p["panels"].as_array().into_iter().flatten() {
            out.push(q.clone());
        }
    }
    out
}

/// (panel title, expr, legend) of every query target.
fn dashboard_queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
                out.push((p["title"].as_str().unwrap_or("?").to_string(), e.to_string(), legend));
            }
        }
    }
    out
}

/// The labels a legend format names (`{{tenant_id}} {{resource}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_string())).collect()
}

/// The variable `name` of the dashboard's templating list.
fn variable<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no template variable {name}"))
}

/// `label_values(metric, label)` of a query variable: (metric, label).
fn label_values_of(v: &Value) -> (String, String) {
    let q = v["query"]["query"].as_str().or(v["query"].as_str()).or(v["definition"].as_str()).unwrap();
    let inner = q.trim().strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("not label_values(): {q}"));
    let (m, l) = inner.split_once(',').unwrap();
    (m.trim().to_string(), l.trim().to_string())
}

/// The shape Grafana needs to import the file as is, and the conventions that keep its
/// template variables working (checked without Prometheus).
fn check_dashboard_shape(d: &Value) {
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 39, "schemaVersion of a current Grafana");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()) && d["title"].as_str().is_some());
    let ds = variable(d, "datasource");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    for name in ["tenant", "budget"] {
        let v = variable(d, name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        label_values_of(v);
    }
    let mut ids = std::collections::HashSet::new();
    for p in panels(d) {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        let g = &p["gridPos"];
        assert!(["h", "w", "x", "y"].iter().all(|k| g[k].is_u64()), "gridPos of {}", p["title"]);
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{} is wider than the grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "a target of {}", p["title"]);
        }
    }
    // A multi-value variable becomes `(a|b)` or the All value: only `=~` matches it.
    for (title, e, _) in dashboard_queries(d) {
        for var in ["$tenant", "$budget", "$spend_budget"] {
            for (i, _) in e.match_indices(var) {
                assert!(e[..i].ends_with("=~\""), "{title}: {var} outside a =~ matcher: {e}");
            }
        }
    }
}

/// The rules file with every `for:` shortened to [`TEST_FOR`]; and how many alerts it has.
fn rules_for_test() -> (String, usize) {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/tenant-quota-rules.yaml")).unwrap();
    let alerts = text.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    let mut fors = 0;
    let out: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("for:") {
                fors += 1;
                format!("{}for: {TEST_FOR}\n", &l[..l.len() - t.len()])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(fors, alerts, "every alert has a `for:`");
    (out, alerts)
}

fn awaited_missing(wasm: &[u8]) -> Vec<&'static str> {
    AWAITED.iter().copied().filter(|name| !wasm.windows(name.len()).any(|w| w == name.as_bytes())).collect()
}

fn needs_missing<'a>(expr: &str, missing: &[&'a str]) -> Option<&'a str> {
    missing.iter().copied().find(|m| expr.contains(m))
}

// ------------------------------------------------------------------ the Envoy under test

// sha256("secret")
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
const AUTH: (&str, &str) = ("authorization", "Bearer secret");

fn plugin() -> String {
    format!(
        r#"{{
  "budgets": {{
    "requests_per_day": {{"counts":"requests","window_ms":86400000,"limit":20,"burst_credits":5,"match":{{"path_prefix":"/api"}}}},
    "soft_requests_per_day": {{"counts":"requests","window_ms":86400000,"limit":3,"on_exceed":"warn","match":{{"path_prefix":"/api"}}}},
    "queued_per_day": {{"counts":"requests","window_ms":86400000,"limit":1,"on_exceed":"queue","queue":{{"timeout_ms":100,"max_waiting":10}},"match":{{"path_prefix":"/q"}}}},
    "fallback_per_day": {{"counts":"requests","window_ms":86400000,"limit":1,"on_exceed":"fallback","fallback":{{"upstream":"backup"}},"match":{{"path_prefix":"/fb"}}}},
    "team_requests_per_day": {{"counts":"requests","window_ms":86400000,"limit":10,"scope":"team"}},
    "tokens_per_day": {{"counts":{{"llm_tokens":"total"}},"window_ms":86400000,"limit":1000000,"match":{{"path_prefix":"/llm/"}}}},
    "spend_per_month": {{"counts":"llm_cost","window":"calendar_month","limit":500000000,"match":{{"path_prefix":"/llm/"}}}},
    "global_requests_per_day": {{"counts":"requests","window_ms":86400000,"limit":100000,"global":"sync","match":{{"path_prefix":"/g"}}}}
  }},
  "tenants": {{"acme":{{"priority":"normal"}}, "beta":{{}}, "batch":{{"priority":"low"}}}},
  "scopes": {{"team": {{"header":"x-team-id","ids":{{"blue":{{"budgets":{{"team_requests_per_day":{{"limit":2}}}}}}}}}}}},
  "llm": {{"model":{{"header":"x-model"}},"prices":{{"gpt-4o":{{"input":2500000,"output":10000000}}}}}},
  "saturation": {{"signals":{{"cpu_load":{{"from":"orca:cpu_utilization","elevated":0.75,"critical":0.9}}}},
                  "keep":{{"critical":{{"vip":1.0,"normal":1.0,"low":0.0}}}}}},
  "alerts_webhook": {{"cluster":"upstream","path":"/webhook"}},
  "global": {{"cluster":"ratelimit","domain":"tenant-quota","sync_period_ms":200,"timeout_ms":100,"on_unavailable":"local"}},
  "admin": {{"path_prefix":"/.quota","token_sha256":"{HASH}"}},
  "on_error": "allow"
}}"#
    )
}

fn noop_wasm() -> PathBuf {
    let p = std::env::var("TQ_NOOP_WASM").map(PathBuf::from).unwrap_or_else(|_| repo().join("bench/noop/target/wasm32-wasip1/release/noop_filter.wasm"));
    assert!(p.exists(), "{} missing: run `make e2e-test` (it builds bench/noop)", p.display());
    p
}

fn status(e: &Envoy, path: &str, headers: &[(&str, &str)]) -> u16 {
    e.get(path, headers).status
}

/// Wait until Prometheus has scraped the Envoy successfully at least once.
fn wait_scraped(p: &Prometheus, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = p.api("/api/v1/targets");
        let up = v["data"]["activeTargets"].as_array().into_iter().flatten().any(|t| t["scrapeUrl"].as_str().is_some_and(|u| u.contains(target)) && t["health"] == "up");
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "prometheus never scraped {target}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dashboard_queries_and_alert_rules_against_a_real_prometheus() {
    let t0 = Instant::now();
    let d = dashboard();
    check_dashboard_shape(&d);
    let (rules, n_alerts) = rules_for_test();
    let missing = awaited_missing(&std::fs::read(wasm_path()).unwrap());
    for m in &missing {
        eprintln!("NOTE: the built filter does not export `{m}` yet (SPEC 8): queries that need it are skipped");
    }

    // The rate limit service: a socket that accepts connections (in the kernel) and never answers.
    let rls_dir = std::env::temp_dir().join(format!("tq-prom-rls-{}", std::process::id()));
    std::fs::create_dir_all(&rls_dir).unwrap();
    let _ = std::fs::remove_file(rls_dir.join("rls.sock"));
    let rls_sock = rls_dir.join("rls.sock");
    let rls = std::os::unix::net::UnixListener::bind(&rls_sock).unwrap();
    let up = LlmUpstream::start();
    let poisoner = wasm_filter("poisoner", "tenant_quota", &noop_wasm(), r#"{"poison_key":"tq1|t|victim"}"#);
    let e = Envoy::start(
        &plugin(),
        up.port,
        EnvoyOpts { pre_filters: poisoner, extra_clusters: common::global::rls_cluster(&rls_sock), ..EnvoyOpts::default() },
    );
    let target = format!("127.0.0.1:{}", e.admin);
    let prom = Prometheus::start(std::slice::from_ref(&target), &rules);
    wait_scraped(&prom, &target);
    eprintln!("envoy and prometheus up, first scrape done: {:?}", t0.elapsed());

    // Traffic. acme: 25 of 30 admitted (20 + 5 burst credits), then burst_exhausted; past 3 it
    // is warned by the soft budget; its crossings (80, 90, 95 %) go to a webhook path the
    // upstream answers 404.
    let acme = [("x-tenant-id", "acme")];
    let admitted = (0..30).filter(|_| status(&e, "/api/a", &acme) != 429).count();
    assert_eq!(admitted, 25);
    // Queue: the first waits for nothing, the next two time out after 100 ms.
    let q: Vec<u16> = (0..3).map(|_| status(&e, "/q/a", &acme)).collect();
    assert_eq!(q.iter().filter(|&&s| s == 429).count(), 2, "{q:?}");
    // Fallback: past the first, requests are sent on with the route header set (one cluster
    // here, so they reach the same upstream) instead of refused.
    let fb: Vec<Option<String>> = (0..3).map(|_| e.get("/fb/a", &acme).header("x-tenant-quota-fallback").map(str::to_string)).collect();
    assert_eq!(fb.iter().filter(|h| h.is_some()).count(), 2, "{fb:?}");
    // Scope: team blue has 2 requests a day.
    let team = [("x-tenant-id", "acme"), ("x-team-id", "blue")];
    let t: Vec<u16> = (0..4).map(|_| status(&e, "/t", &team)).collect();
    assert_eq!(t.iter().filter(|&&s| s == 429).count(), 2, "{t:?}");
    // LLM: usage read from the responses (tokens, spend), and one without usage.
    let llm = [("x-tenant-id", "acme"), ("x-model", "gpt-4o")];
    for path in ["/llm/openai-json", "/llm/anthropic-json", "/llm/no-usage-sse"] {
        assert_eq!(status(&e, path, &llm), 200, "{path}");
    }
    // Errors: tenant victim's state is corrupt (on_error allow passes it; the LLM upstream
    // answers 404 to anything but its fixtures).
    for _ in 0..3 {
        assert_eq!(status(&e, "/api/a", &[("x-tenant-id", "victim")]), 404);
    }
    // An admin call with a wrong token.
    assert_eq!(request(e.port, "GET", "/.quota/status", &[("authorization", "Bearer wrong")], None).status, 401);
    // Saturation critical (an operator value for cpu_load): low-priority tenants are refused.
    let r = request(e.port, "PUT", "/.quota/saturation", &[AUTH], Some(br#"{"cpu_load":0.95,"ttl_ms":600000}"#));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = e.get("/api/a", &[("x-tenant-id", "batch")]);
        if r.header("x-tenant-quota-reason") == Some("saturation_throttle") {
            break;
        }
        assert!(Instant::now() < deadline, "batch never throttled by saturation: {} {:?}", r.status, r.headers);
        std::thread::sleep(Duration::from_millis(50));
    }

    // From now on, in the background (at most 2 minutes): acme keeps knocking (refused), and
    // requests of the global budget pile up units the dead service never acknowledges (a
    // daily window, so no window closes and drops them while the test runs).
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, port) = (stop.clone(), e.port);
    let background = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(120);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < until {
            let _ = try_request(port, "GET", "/api/a", &[("x-tenant-id", "acme")], None);
            let _ = try_request(port, "GET", "/g", &[("x-tenant-id", "acme")], None);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // The webhook error counter appeared with its first failures (a new series starts where
    // the counter stands, so increase() sees only later ones): a second tenant's crossings,
    // after Prometheus has scraped the counter once, make it grow.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..20 {
        status(&e, "/api/a", &[("x-tenant-id", "beta")]);
    }
    // A second wave of corrupt decisions, likewise for quota_errors_total's increase().
    for _ in 0..3 {
        status(&e, "/api/a", &[("x-tenant-id", "victim")]);
    }
    eprintln!("traffic sent: {:?}", t0.elapsed());

    // The template variables, as Grafana resolves them.
    let (m, l) = label_values_of(variable(&d, "tenant"));
    let tenants = prom.label_values(&m, &l);
    assert!(tenants.contains(&"acme".to_string()), "tenant values {tenants:?}");
    let (m, l) = label_values_of(variable(&d, "budget"));
    let budgets = prom.label_values(&m, &l);
    assert!(budgets.contains(&"requests_per_day".to_string()) && budgets.contains(&"team_requests_per_day".to_string()), "budget values {budgets:?}");
    let sv = variable(&d, "spend_budget");
    let (m, l) = label_values_of(sv);
    let re = sv["regex"].as_str().unwrap().trim_matches('/').to_string();
    let spend: Vec<String> = prom.label_values(&m, &l).into_iter().filter(|b| b.contains(re.as_str())).collect();
    assert_eq!(spend, ["spend_per_month"], "spend_budget values (regex /{re}/)");

    // Grafana's substitutions: one tenant; every budget (the All value); the spend budgets as
    // a multi-value regex; the interval macros.
    let substitute = |e: &str| {
        e.replace("$tenant", "acme")
            .replace("$budget", variable(&d, "budget")["allValue"].as_str().unwrap())
            .replace("$spend_budget", &format!("({})", spend.join("|")))
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$__interval", "15s")
    };
    // (what, query, labels each series must carry: those its legend shows).
    let mut checks: Vec<(String, String, Vec<String>)> = Vec::new();
    for (title, expr, legend) in dashboard_queries(&d) {
        let q = substitute(&expr);
        assert!(!q.contains('$'), "{title}: a variable left in {q}");
        checks.push((format!("panel `{title}`"), q, legend_labels(&legend)));
    }
    let loaded = prom.api("/api/v1/rules");
    let loaded: Vec<Value> = loaded["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect();
    assert_eq!(loaded.len(), n_alerts, "rules loaded by Prometheus");
    for r in &loaded {
        assert_eq!(r["type"], "alerting");
        // An alert's summary names the labels it needs.
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        let needs = summary.split("$labels.").skip(1).map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_string());
        // (Labels in an `if` may be absent: tenant_id for a scope id.)
        let needs: Vec<String> = needs.filter(|l| !["tenant_id", "scope", "scope_id"].contains(&l.as_str())).collect();
        checks.push((format!("rule {}", r["name"].as_str().unwrap()), r["query"].as_str().unwrap().to_string(), needs));
    }
    let (skipped, checks): (Vec<_>, Vec<_>) = checks.into_iter().partition(|(_, q, _)| needs_missing(q, &missing).is_some());
    for (what, q, _) in &skipped {
        eprintln!("SKIPPED (needs {}): {what}", needs_missing(q, &missing).unwrap());
    }

    // Every query returns series (Prometheus scrapes every second; rates need two samples),
    // and some series carry every label its legend or summary shows.
    let fails = |(_, q, labels): &&(String, String, Vec<String>)| {
        let result = prom.query(q);
        !result.iter().any(|s| labels.iter().all(|l| s["metric"][l.as_str()].as_str().is_some_and(|v| !v.is_empty())))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty: Vec<&(String, String, Vec<String>)>;
    loop {
        empty = checks.iter().filter(fails).collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        empty.is_empty(),
        "queries without series (with the labels named) after 60 s:\n{}\nthe filter's series now:\n{}",
        empty.iter().map(|(w, q, l)| format!("  {w}: {q} (labels {l:?}): {:?}\n", prom.query(q))).collect::<String>(),
        e.prometheus().iter().filter(|(k, _)| !k.starts_with("envoy_")).map(|(k, v)| format!("  {k} {v}\n")).collect::<String>()
    );
    eprintln!("{} queries return series ({} skipped): {:?}", checks.len(), skipped.len(), t0.elapsed());

    // Every alert fires; the near-limit one for acme's requests_per_day.
    let expected: Vec<String> = loaded.iter().map(|r| r["name"].as_str().unwrap().to_string()).filter(|n| !skipped.iter().any(|(w, _, _)| w == &format!("rule {n}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut firing, mut near);
    loop {
        let v = prom.api("/api/v1/alerts");
        let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
        firing = alerts.iter().filter(|a| a["state"] == "firing").map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string()).collect::<std::collections::BTreeSet<_>>();
        near = alerts.iter().find(|a| a["state"] == "firing" && a["labels"]["alertname"] == "TenantQuotaNearLimit" && a["labels"]["tenant_id"] == "acme" && a["labels"]["resource"] == "requests_per_day").cloned();
        if (near.is_some() && expected.iter().all(|n| firing.contains(n))) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let near = near.unwrap_or_else(|| panic!("TenantQuotaNearLimit not firing for acme/requests_per_day; firing: {firing:?}"));
    assert_eq!(near["labels"]["severity"], "warning");
    assert_eq!(near["annotations"]["summary"].as_str(), Some(format!("Tenant acme is at or near its requests_per_day limit on {target}").as_str()));
    let not_firing: Vec<&String> = expected.iter().filter(|n| !firing.contains(*n)).collect();
    assert!(not_firing.is_empty(), "alerts not firing: {not_firing:?}; firing: {firing:?}");
    eprintln!("alerts firing {firing:?}: {:?}", t0.elapsed());

    stop.store(true, Ordering::SeqCst);
    background.join().unwrap();
    drop(rls);
    let _ = std::fs::remove_dir_all(&rls_dir);
}
