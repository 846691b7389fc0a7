//! Bad configurations are refused by a real Envoy, with one log line naming the key; the
//! shipped envoy/envoy.yaml validates.

mod common;
use common::*;

const BAD: &[(&str, &str)] = &[
    (r#"{"mode":"enforce","surprise":true}"#, "surprise"),
    (r#"{"budgets":{"rpm":{"counts":"requests","window_ms":60000,"limit":"many"}}}"#, "budgets.rpm.limit"),
    (r#"{"budgets":{"rpm":{"counts":"requests","window_ms":0,"limit":1}}}"#, "budgets.rpm.window_ms"),
    (r#"{"budgets":{"rpm":{"counts":"requests","window_ms":-1000,"limit":1}}}"#, "budgets.rpm.window_ms"),
    (r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1}},"tenants":{"acme":{"budgets":{"rps":{"limit":2}}}}}"#, "tenants.acme.budgets.rps"),
    (r#"{"tenants":{"acme":{"priority":"platinum"}}}"#, "tenants.acme.priority"),
    (r#"{"saturation":{"keep":{"apocalyptic":{"vip":1.0}}}}"#, "apocalyptic"),
    (r#"{"on_error":"explode"}"#, "on_error"),
];

fn config_error_line(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains("tenant-quota: invalid configuration"))
}

#[test]
fn bad_configs_are_refused_in_validate_mode_with_the_key_named() {
    for (cfg, key) in BAD {
        let log = validate(cfg).expect_err(&format!("config accepted: {cfg}"));
        let line = config_error_line(&log).unwrap_or_else(|| panic!("no error line for {cfg}:\n{log}"));
        assert!(line.contains(key), "line does not name `{key}`: {line}");
    }
}

#[test]
fn envoy_refuses_to_start_with_a_bad_config() {
    let up = Upstream::start();
    let log = match Envoy::try_start(BAD[2].0, up.port, EnvoyOpts::default()) {
        Ok(_) => panic!("envoy started with a zero window"),
        Err(log) => log,
    };
    let line = config_error_line(&log).unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(line.contains("budgets.rpm.window_ms"), "{line}");
    assert_eq!(log.matches("tenant-quota: invalid configuration").count(), 1, "one line per refusal:\n{log}");
}

#[test]
fn good_configs_validate_including_saturation_and_admin() {
    let spec = r#"{
      "mode": "enforce",
      "tenant": { "header": "x-tenant-id", "fallback": "anonymous", "max_tracked": 100000 },
      "budgets": {
        "requests_per_minute":   { "counts": "requests",      "window_ms": 60000,    "limit": 100,         "burst_credits": 20 },
        "ingest_bytes_per_day":  { "counts": "request_bytes", "window_ms": 86400000, "limit": 10737418240, "burst_credits": 536870912 },
        "query_cost_per_minute": { "counts": { "request_header": "x-query-cost" }, "window_ms": 60000, "limit": 20000, "burst_credits": 2000 },
        "export_concurrency":    { "counts": "in_flight", "limit": 10, "burst_credits": 2, "match": { "path_prefix": "/export" } }
      },
      "tenants": {
        "acme":    { "priority": "vip", "budgets": { "requests_per_minute": { "limit": 200, "burst_credits": 25 } } },
        "batchco": { "priority": "low" }
      },
      "saturation": {
        "signals": {
          "cpu_load":      { "from": "orca:cpu_utilization",             "elevated": 0.75, "critical": 0.9 },
          "queue_depth":   { "from": "in_flight",                        "elevated": 200,  "critical": 500 },
          "db_latency_ms": { "from": "response_header:x-db-latency-ms",  "elevated": 250,  "critical": 1000 }
        },
        "stale_after_ms": 10000,
        "keep": {
          "elevated": { "vip": 1.0, "normal": 0.8, "low": 0.5 },
          "critical": { "vip": 1.0, "normal": 0.5, "low": 0.0 }
        },
        "retry_after_s": 5
      },
      "admin": { "path_prefix": "/.quota", "token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" },
      "on_error": "allow"
    }"#;
    validate(spec).unwrap_or_else(|log| panic!("SPEC example refused:\n{log}"));
}

#[test]
fn shipped_envoy_yaml_validates() {
    let out = std::process::Command::new(envoy_bin())
        .current_dir(repo())
        .args(["--mode", "validate", "--disable-hot-restart", "-c", "envoy/envoy.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
