//! Requests: fields, reserve, rewrite.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

// ---------------------------------------------------------------------------------------
// Requests: fields, reserve, rewrite.

const MAX: usize = request::DEFAULT_MAX_REQUEST_BODY_BYTES;

const CHAT_REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say \"stream\": false"}],"temperature":0.2,"max_tokens":256,"stream":true}"#;

#[test]
fn request_fields() {
    let r = LlmRequest::parse(CHAT_REQ.as_bytes(), MAX);
    assert_eq!(r, LlmRequest { model: Some("gpt-4o-mini".into()), max_tokens: Some(256), stream: true, include_usage: None });
    let r = LlmRequest::parse(br#"{"model":"o3","max_completion_tokens":4000,"stream":false,"stream_options":{"include_usage":true}}"#, MAX);
    assert_eq!(r, LlmRequest { model: Some("o3".into()), max_tokens: Some(4000), stream: false, include_usage: Some(true) });
    let r = LlmRequest::parse(br#"{"model":"gpt-4.1","input":"hi","max_output_tokens":1024,"stream":true}"#, MAX);
    assert_eq!((r.max_tokens, r.stream), (Some(1024), true));
    let r = LlmRequest::parse(br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}"#, MAX);
    assert_eq!((r.model.as_deref(), r.max_tokens, r.stream), (Some("claude-sonnet-4-5"), Some(1024), false));
    // Several max-tokens fields: the largest (an upper bound whichever the API honours).
    let r = LlmRequest::parse(br#"{"max_tokens":100,"max_completion_tokens":300,"max_output_tokens":200}"#, MAX);
    assert_eq!(r.max_tokens, Some(300));
    // Wrong types read as absent; nested fields are not the top-level ones.
    let r = LlmRequest::parse(br#"{"model":42,"max_tokens":-1,"max_completion_tokens":"9","stream":"true","stream_options":{"include_usage":1},"metadata":{"model":"x","stream":true}}"#, MAX);
    assert_eq!(r, LlmRequest::default());
    let r = LlmRequest::parse(br#"{"max_tokens":12.5,"stream_options":null,"model":null}"#, MAX);
    assert_eq!(r, LlmRequest::default());
}

#[test]
fn not_json_or_too_large_gives_no_fields() {
    for body in [&b""[..], b"model=gpt-4o", b"[{\"model\":\"gpt-4o\"}]", b"\"gpt-4o\"", b"{\"model\":\"gpt-4o\"", b"{\"model\":\"gpt-4o\"} x"] {
        assert_eq!(LlmRequest::parse(body, MAX), LlmRequest::default(), "{:?}", String::from_utf8_lossy(body));
    }
    let body = CHAT_REQ.as_bytes();
    assert_eq!(LlmRequest::parse(body, body.len()).model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(LlmRequest::parse(body, body.len() - 1), LlmRequest::default());
    let i = inspect("/v1/chat/completions", body, body.len() - 1);
    assert_eq!(i, Inspected::default(), "too large: no fields and no rewrite");
}

#[test]
fn reserve_estimate() {
    let r = LlmRequest::parse(CHAT_REQ.as_bytes(), MAX);
    assert_eq!(r.reserve(Some(CHAT_REQ.len() as u64), 0), Usage { input: (CHAT_REQ.len() as u64).div_ceil(4), output: 256 });
    let none = LlmRequest::default();
    assert_eq!(none.reserve(None, 500), Usage { input: 0, output: 500 });
    assert_eq!(none.reserve(Some(0), 0), Usage { input: 0, output: 0 });
    assert_eq!(none.reserve(Some(1), 0).input, 1);
    assert_eq!(none.reserve(Some(4), 0).input, 1);
    assert_eq!(none.reserve(Some(5), 0).input, 2);
    assert_eq!(none.reserve(Some(u64::MAX), 0).input, u64::MAX / 4 + 1);
    let zero = LlmRequest { max_tokens: Some(0), ..LlmRequest::default() };
    assert_eq!(zero.reserve(None, 500).output, 0, "an explicit max-tokens wins over the default");
}

fn as_json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn streamed_chat_completions_get_include_usage() {
    let i = inspect("/v1/chat/completions", CHAT_REQ.as_bytes(), MAX);
    assert_eq!(i.request.model.as_deref(), Some("gpt-4o-mini"));
    let mut want = as_json(CHAT_REQ.as_bytes());
    want["stream_options"] = json!({"include_usage": true});
    let new = i.rewritten.unwrap();
    assert_eq!(as_json(&new), want, "every other field kept");
    let again = LlmRequest::parse(&new, MAX);
    assert_eq!(again.include_usage, Some(true));
    assert!(!again.needs_include_usage("/v1/chat/completions"));

    // An explicit false, other stream_options kept, a non-object replaced, Azure's query.
    let cases = [
        (r#"{"stream":true,"stream_options":{"include_usage":false}}"#, json!({"stream":true,"stream_options":{"include_usage":true}})),
        (r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#, json!({"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}})),
        (r#"{"stream":true,"stream_options":null}"#, json!({"stream":true,"stream_options":{"include_usage":true}})),
        (r#"{"stream":true,"stream_options":{"include_usage":"yes"}}"#, json!({"stream":true,"stream_options":{"include_usage":true}})),
    ];
    for (body, want) in cases {
        for path in ["/v1/chat/completions", "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", "/chat/completions"] {
            let i = inspect(path, body.as_bytes(), MAX);
            assert_eq!(i.rewritten.as_deref().map(as_json), Some(want.clone()), "{body} {path}");
        }
    }
}

#[test]
fn other_requests_pass_unchanged() {
    let no = |path: &str, body: &str| inspect(path, body.as_bytes(), MAX).rewritten;
    assert_eq!(no("/v1/chat/completions", r#"{"stream":true,"stream_options":{"include_usage":true}}"#), None);
    assert_eq!(no("/v1/chat/completions", r#"{"stream":false}"#), None);
    assert_eq!(no("/v1/chat/completions", r#"{"stream":"true"}"#), None);
    assert_eq!(no("/v1/chat/completions", r#"{"model":"gpt-4o"}"#), None);
    assert_eq!(no("/v1/messages", r#"{"stream":true}"#), None);
    assert_eq!(no("/v1/responses", r#"{"stream":true}"#), None);
    assert_eq!(no("/v1/completions", r#"{"stream":true}"#), None);
    assert_eq!(no("/v1/chat/completions/x", r#"{"stream":true}"#), None);
    assert_eq!(no("/v1/chat/completions", "stream=true"), None);
    assert!(is_chat_completions("/v1/chat/completions"));
    assert!(is_chat_completions("/v1/chat/completions#frag"));
    assert!(!is_chat_completions("/v1/chat/completions/"));
    assert!(!is_chat_completions("/v1/x?next=/chat/completions"));
    assert_eq!(with_include_usage(b"[1]"), None);
    assert_eq!(with_include_usage(b"nope"), None);
}

#[test]
fn a_fallback_model_is_written_into_the_body() {
    let out = with_model(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#, "gpt-4o-mini").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["model"].as_str(), v["stream"].as_bool(), v["messages"][0]["content"].as_str()), (Some("gpt-4o-mini"), Some(true), Some("hi")));
    let added: serde_json::Value = serde_json::from_slice(&with_model(b"{}", "m").unwrap()).unwrap();
    assert_eq!(added["model"], "m");
    assert_eq!((with_model(b"[1]", "m"), with_model(b"nope", "m")), (None, None));
}
