//! The decision in Envoy's access log (`filter_state`): a real Envoy writes envoy/envoy.yaml's
//! access log format (to a file here) and the test reads one JSON line per request.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const CFG: &str = r#"{"filter_state": true,
  "llm": {"model": {"header": "x-model"}},
  "scopes": {"team": {"header": "x-team-id"}},
  "budgets": {
    "rpm":      {"counts": "requests", "window_ms": 3600000, "limit": 2},
    "soft":     {"counts": "requests", "window_ms": 3600000, "limit": 1, "on_exceed": "warn", "match": {"methods": ["POST"]}},
    "team_rpm": {"counts": "requests", "window_ms": 3600000, "limit": 1, "scope": "team"},
    "tokens":   {"counts": {"llm_tokens": "total"}, "window_ms": 3600000, "limit": 100000, "match": {"models": ["gpt-4o"]}}
  }}"#;

/// The access log's lines once there are `n`, as JSON.
fn lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        if v.len() >= n || Instant::now() > deadline {
            assert_eq!(v.len(), n, "access log lines:\n{text}");
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of one tenant, each as the fields the test looks at.
fn of(lines: &[Value], tenant: &str) -> Vec<Value> {
    lines.iter().filter(|l| l["tenant_quota.tenant"] == tenant).cloned().collect()
}

#[test]
fn the_access_log_carries_each_decision() {
    let up = llm::LlmUpstream::start();
    let dir = std::env::temp_dir().join(format!("tq-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let opts = EnvoyOpts { concurrency: 1, access_log: shipped_access_log(&log), ..EnvoyOpts::default() };
    let e = Envoy::start(CFG, up.port, opts);
    let path = "/llm/openai-json";
    let send = |method: &str, h: &[(&str, &str)]| request(e.port, method, path, h, if method == "POST" { Some(b"{}".as_slice()) } else { None }).status;
    // Allowed twice, then rejected by `rpm`.
    let alice: Vec<u16> = (0..3).map(|_| send("GET", &[("x-tenant-id", "alice")])).collect();
    assert_eq!(alice, [200, 200, 429]);
    // Over the `warn` budget: admitted and warned.
    assert_eq!((send("POST", &[("x-tenant-id", "bob")]), send("POST", &[("x-tenant-id", "bob")])), (200, 200));
    // A scoped budget admits once, then refuses.
    let team = [("x-tenant-id", "carol"), ("x-team-id", "blue")];
    assert_eq!((send("GET", &team), send("GET", &team)), (200, 429));
    // An LLM request: its model and the tokens its response reported.
    assert_eq!(send("GET", &[("x-tenant-id", "dave"), ("x-model", "gpt-4o")]), 200);
    let all = lines(&log, 8);

    let a = of(&all, "alice");
    let pick = |l: &Value, k: &str| l[k].as_str().map(str::to_string);
    assert_eq!(a.iter().map(|l| pick(l, "tenant_quota.result")).collect::<Vec<_>>(), [Some("allowed".into()), Some("allowed".into()), Some("rejected".into())]);
    assert_eq!(a.iter().map(|l| pick(l, "tenant_quota.remaining")).collect::<Vec<_>>(), [Some("1".into()), Some("0".into()), Some("0".into())]);
    assert!(a.iter().all(|l| l["tenant_quota.budget"] == "rpm"), "{a:?}");
    assert_eq!((a[2]["status"].as_u64(), pick(&a[2], "tenant_quota.reason")), (Some(429), Some("rpm_exceeded".into())));
    assert_eq!(a[0]["tenant_quota.reason"], Value::Null, "an allowed request has no reason");
    assert_eq!(a[0]["gen_ai.request.model"], Value::Null, "nor a model");

    let b = of(&all, "bob");
    assert_eq!((pick(&b[0], "tenant_quota.result"), pick(&b[1], "tenant_quota.result")), (Some("allowed".into()), Some("warned".into())));
    assert_eq!((b[1]["status"].as_u64(), pick(&b[1], "tenant_quota.reason")), (Some(200), Some("soft_exceeded".into())));

    let c = of(&all, "carol");
    assert!(c.iter().all(|l| l["tenant_quota.scope.team"] == "blue"), "{c:?}");
    assert_eq!((pick(&c[0], "tenant_quota.result"), pick(&c[1], "tenant_quota.result")), (Some("allowed".into()), Some("rejected".into())));
    assert_eq!((pick(&c[1], "tenant_quota.budget"), pick(&c[1], "tenant_quota.reason")), (Some("team_rpm".into()), Some("team_rpm_exceeded".into())));
    assert_eq!(a[0]["tenant_quota.scope.team"], Value::Null, "no team id, no scope field");

    let d = of(&all, "dave");
    assert_eq!(pick(&d[0], "tenant_quota.result"), Some("allowed".into()));
    assert_eq!(pick(&d[0], "gen_ai.request.model"), Some("gpt-4o".into()));
    let (i, o) = llm::OPENAI_JSON.usage.unwrap();
    assert_eq!((pick(&d[0], "gen_ai.usage.input_tokens"), pick(&d[0], "gen_ai.usage.output_tokens")), (Some(i.to_string()), Some(o.to_string())));
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
