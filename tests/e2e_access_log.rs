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

/// Envoy 1.40's tracing `custom_tags` take a substitution format string (`value`), so a span
/// can carry the same fields: Zipkin spans, posted to a test collector, have the tags.
#[test]
fn trace_tags_read_the_same_fields() {
    let up = llm::LlmUpstream::start();
    let collector = Upstream::start();
    let tracing = r#"          tracing:
            random_sampling: { value: 100 }
            custom_tags:
            - tag: tenant_quota.tenant
              value: "%FILTER_STATE(wasm.tenant_quota.tenant:PLAIN)%"
            - tag: tenant_quota.result
              value: "%FILTER_STATE(wasm.tenant_quota.result:PLAIN)%"
            - tag: gen_ai.usage.output_tokens
              value: "%FILTER_STATE(wasm.tenant_quota.gen_ai.usage.output_tokens:PLAIN)%"
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
"#;
    let zipkin = format!(
        "  - name: zipkin\n    connect_timeout: 1s\n    type: STATIC\n    load_assignment:\n      cluster_name: zipkin\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        collector.port
    );
    let opts = EnvoyOpts { concurrency: 1, access_log: tracing.into(), extra_clusters: zipkin, ..EnvoyOpts::default() };
    let e = Envoy::start(CFG, up.port, opts);
    // The Zipkin tracer posts once 5 spans are buffered.
    for t in ["t1", "t2", "t3", "t4"] {
        assert_eq!(e.get("/llm/openai-json", &[("x-tenant-id", t)]).status, 200);
    }
    assert_eq!(e.get("/llm/openai-json", &[("x-tenant-id", "t5"), ("x-model", "gpt-4o")]).status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans: Vec<Value> = loop {
        let posted = collector.bodies.lock().unwrap().clone();
        let spans: Vec<Value> = posted.iter().filter_map(|(_, b)| serde_json::from_str::<Vec<Value>>(b).ok()).flatten().collect();
        if spans.len() >= 5 || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let t5 = spans.iter().find(|s| s["tags"]["tenant_quota.tenant"] == "t5").unwrap_or_else(|| panic!("no span of t5 in {spans:?}"));
    assert_eq!(t5["tags"]["tenant_quota.result"], "allowed");
    assert_eq!(t5["tags"]["gen_ai.usage.output_tokens"], llm::OPENAI_JSON.usage.unwrap().1.to_string());
}
