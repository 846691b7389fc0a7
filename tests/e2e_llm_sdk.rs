//! The official `openai` and `anthropic` Python SDKs (pinned by the Makefile in .venv) as
//! clients through Envoy to envoy/demo_backend.py (OpenAI Chat and Anthropic Messages with
//! usage): what the SDK hands the application on a 429 and a 400 (SPEC 2, provider-shaped
//! errors), and that the tokens charged equal the usage the SDK returns (SPEC 5).

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"

/// The Python with the SDKs: `TQ_SDK_PYTHON` (the Makefile's .venv), else .venv/bin/python.
fn python() -> String {
    std::env::var("TQ_SDK_PYTHON").unwrap_or_else(|_| repo().join(".venv/bin/python").display().to_string())
}

fn used(e: &Envoy, tenant: &str) -> u64 {
    let r = request(e.port, "GET", &format!("/.quota/tenants/{tenant}"), &[("authorization", "Bearer secret")], None);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["budgets"]["tokens_per_minute"]["used"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

#[test]
fn the_sdks_read_our_errors_and_their_usage_is_what_we_charge() {
    let backend = DemoBackend::start();
    // 40 tokens a minute: one demo answer (27 tokens) fits, the next request's reserve (its
    // body's bytes / 4, plus max_tokens) does not.
    let cfg = format!(
        r#"{{"llm":{{"request_body":true,"model":{{"request_body":"model"}},"default_reserve_tokens":0}},
  "budgets":{{"tokens_per_minute":{{"counts":{{"llm_tokens":"total"}},"window_ms":60000,"limit":40}}}},
  "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    );
    let e = Envoy::start(&cfg, backend.port, EnvoyOpts { allow_stop_iteration: true, ..EnvoyOpts::default() });
    // Far enough from the minute's end that both calls of a client meet one window.
    let into = now_ms() % 60_000;
    if into > 45_000 {
        std::thread::sleep(std::time::Duration::from_millis(60_000 - into + 50));
    }
    let prefix = format!("sdk{}", now_ms());
    let out = Command::new(python())
        .arg(repo().join("tests/sdk/llm_clients.py"))
        .arg(format!("http://127.0.0.1:{}", e.port))
        .arg(&prefix)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {} (make sdk installs the SDKs): {err}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "llm_clients.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    let cases: HashMap<String, Value> = stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).map(|v| (v["case"].as_str().unwrap().to_string(), v)).collect();
    let case = |k: &str| cases.get(k).unwrap_or_else(|| panic!("no {k} in\n{stdout}"));

    // Usage the SDK returned == tokens charged (JSON, streamed, Anthropic).
    assert_eq!(case("openai_json_1")["usage"], 27);
    assert_eq!(used(&e, &format!("{prefix}-oai")), 27);
    assert_eq!(case("openai_stream")["usage"], 27);
    assert_eq!(used(&e, &format!("{prefix}-stream")), 27);
    assert_eq!(case("anthropic_json_1")["usage"], 27);
    assert_eq!(used(&e, &format!("{prefix}-ant")), 27);

    // OpenAI's SDK: RateLimitError with the code, type and a message naming the budget.
    let r = case("openai_json_2");
    assert_eq!((r["error"].as_str(), r["status"].as_u64()), (Some("RateLimitError"), Some(429)), "{r}");
    assert_eq!((r["code"].as_str(), r["type"].as_str()), (Some("rate_limit_exceeded"), Some("tokens")), "{r}");
    let m = r["message"].as_str().unwrap();
    assert!(m.contains("Tenant quota tokens_per_minute exceeded: limit 40 tokens per 60 s, resets in "), "{m}");
    // The SDK keeps the error object as the exception's body.
    assert_eq!(r["body"]["param"], Value::Null, "{r}");
    let r = case("openai_400");
    assert_eq!((r["error"].as_str(), r["status"].as_u64(), r["code"].as_str()), (Some("BadRequestError"), Some(400), Some("invalid_tenant")), "{r}");

    // Anthropic's SDK: RateLimitError whose error object has type rate_limit_error.
    let r = case("anthropic_json_2");
    assert_eq!((r["error"].as_str(), r["status"].as_u64(), r["type"].as_str()), (Some("RateLimitError"), Some(429), Some("rate_limit_error")), "{r}");
    assert!(r["message"].as_str().unwrap().starts_with("Tenant quota tokens_per_minute exceeded: limit 40 tokens per 60 s"), "{r}");
    // Anthropic's SDK keeps the whole body: the problem body's other members are still there.
    assert_eq!((r["body"]["budget"].as_str(), r["body"]["status"].as_u64()), (Some("tokens_per_minute"), Some(429)), "{r}");
    let r = case("anthropic_400");
    assert_eq!((r["error"].as_str(), r["type"].as_str()), (Some("BadRequestError"), Some("invalid_request_error")), "{r}");
}
