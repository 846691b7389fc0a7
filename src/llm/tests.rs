#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::request::{is_chat_completions, with_include_usage};
use super::*;
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;
use serde_json::{json, Value};

fn pt(cases: u32) -> PtConfig {
    let d = PtConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { d.cases } else { cases };
    PtConfig { cases, failure_persistence: None, ..d }
}

// ---------------------------------------------------------------------------------------
// Recorded streams (shapes of llm-quotas.md §1.2, §3.2 and the providers' API references),
// written with `\n`; `endings` derives the `\r\n` and `\r` versions.

/// OpenAI Chat Completions, `stream: true` with `stream_options.include_usage: true`:
/// every chunk carries `"usage":null`, the last one (empty `choices`) the usage.
const OPENAI_CHAT_SSE: &str = r#"data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[{"index":0,"delta":{"content":"The"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[{"index":0,"delta":{"content":" field \"usage\": {\"prompt_tokens\": 1} is"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[{"index":0,"delta":{"content":" reported last."},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-BRg3nD9tC3pWkB2Lq0yK","object":"chat.completion.chunk","created":1745912345,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]

"#;
const OPENAI_CHAT_USAGE: Usage = Usage { input: 19, output: 10 };

/// OpenAI Responses, `stream: true`: `response.created` / `in_progress` carry
/// `"usage":null`, `response.completed` the usage (and the whole output again).
const RESPONSES_SSE: &str = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_68a1f0c2b9d88190a5f3","object":"response","created_at":1755443394,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":256,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.in_progress
data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_68a1f0c2b9d88190a5f3","object":"response","created_at":1755443394,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":256,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_68a1f0c3a4f08190b1c2","type":"message","status":"in_progress","content":[],"role":"assistant"}}

event: response.content_part.added
data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_68a1f0c3a4f08190b1c2","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_68a1f0c3a4f08190b1c2","output_index":0,"content_index":0,"delta":"Hello","logprobs":[],"obfuscation":"k3Pq9"}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_68a1f0c3a4f08190b1c2","output_index":0,"content_index":0,"delta":" there!","logprobs":[],"obfuscation":"Zr"}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_68a1f0c3a4f08190b1c2","output_index":0,"content_index":0,"text":"Hello there!","logprobs":[]}

event: response.content_part.done
data: {"type":"response.content_part.done","sequence_number":7,"item_id":"msg_68a1f0c3a4f08190b1c2","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello there!"}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_68a1f0c3a4f08190b1c2","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello there!"}],"role":"assistant"}}

event: response.completed
data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_68a1f0c2b9d88190a5f3","object":"response","created_at":1755443394,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":256,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_68a1f0c3a4f08190b1c2","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello there!"}],"role":"assistant"}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}

"#;
const RESPONSES_USAGE: Usage = Usage { input: 37, output: 11 };

/// Anthropic Messages, `stream: true`: `message_start` with input and cache counts and an
/// initial output count, pings, text deltas, two `message_delta`s with the cumulative
/// output (a pause_turn-style continuation), `message_stop`.
const ANTHROPIC_SSE: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":120,"cache_read_input_tokens":1800,"cache_creation":{"ephemeral_5m_input_tokens":120,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! The \"usage\" : {} key"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":40}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" is cumulative."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 89}}

event: message_stop
data: {"type":"message_stop"}

"#;
/// 25 + 120 + 1800 input; output 89 (the last cumulative count, not 1 + 40 + 89).
const ANTHROPIC_USAGE: Usage = Usage { input: 1945, output: 89 };

/// Newer Anthropic shape: `message_delta` repeats the (final) input counts with the output.
const ANTHROPIC_SSE_DELTA_INPUT: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":410,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":410,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":57,"server_tool_use":{"web_search_requests":1}}}

event: message_stop
data: {"type":"message_stop"}

"#;

const OPENAI_CHAT_JSON: &str = r#"{
  "id": "chatcmpl-BRg3nD9tC3pWkB2Lq0yK",
  "object": "chat.completion",
  "created": 1745912345,
  "model": "gpt-4o-2024-08-06",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi! How can I help?", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_f5bdcc3276"
}"#;

const RESPONSES_JSON: &str = r#"{"id":"resp_67ccd3a9da748190baa7f1570fe91ac6","object":"response","created_at":1741476777,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4o-2024-08-06","output":[{"type":"message","id":"msg_67ccd3acc8d48190a77525dc6de64b4a","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove...","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1,"truncation":"disabled","usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":0},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380},"user":null,"metadata":{}}"#;

const ANTHROPIC_JSON: &str = r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":2051,"cache_read_input_tokens":4,"cache_creation":{"ephemeral_5m_input_tokens":2051,"ephemeral_1h_input_tokens":0},"output_tokens":503,"service_tier":"standard"}}"#;

/// The three line endings of an `\n` fixture.
fn endings(s: &str) -> [(&'static str, Vec<u8>); 3] {
    [
        ("LF", s.as_bytes().to_vec()),
        ("CRLF", s.replace('\n', "\r\n").into_bytes()),
        ("CR", s.replace('\n', "\r").into_bytes()),
    ]
}

/// Every recorded stream, in every line ending, with its usage.
fn streams() -> Vec<(String, Vec<u8>, Usage)> {
    let fixtures = [
        ("openai-chat", OPENAI_CHAT_SSE, OPENAI_CHAT_USAGE),
        ("responses", RESPONSES_SSE, RESPONSES_USAGE),
        ("anthropic", ANTHROPIC_SSE, ANTHROPIC_USAGE),
        ("anthropic-delta-input", ANTHROPIC_SSE_DELTA_INPUT, Usage { input: 2458, output: 57 }),
    ];
    let mut out = Vec::new();
    for (name, text, usage) in fixtures {
        for (ending, bytes) in endings(text) {
            out.push((format!("{name}/{ending}"), bytes, usage));
        }
    }
    out
}

const SSE: Option<&str> = Some("text/event-stream; charset=utf-8");

/// Feeds `body` cut at the sorted `cuts` and finishes.
fn run_split(content_type: Option<&str>, body: &[u8], cuts: &[usize]) -> (Option<Usage>, UsageParser) {
    let mut p = UsageParser::new(content_type);
    let mut at = 0;
    for &c in cuts {
        p.feed(&body[at..c]);
        at = c;
    }
    p.feed(&body[at..]);
    (p.finish(), p)
}

fn parse_all(content_type: Option<&str>, body: &[u8]) -> (Option<Usage>, UsageParser) {
    run_split(content_type, body, &[])
}

// ---------------------------------------------------------------------------------------
// Usage: recorded streams.

#[test]
fn recorded_streams_give_their_usage_in_every_line_ending() {
    for (name, body, usage) in streams() {
        let (got, p) = parse_all(SSE, &body);
        assert_eq!(got, Some(usage), "{name}");
        assert!(p.found(), "{name}");
        assert_eq!(p.stats().skipped_events, 0, "{name}");
        assert_eq!(p.stats().skipped_bytes, 0, "{name}");
    }
}

#[test]
fn only_events_with_a_usage_object_are_parsed() {
    // OpenAI: 7 events, every chunk has "usage":null and one chunk's text mentions
    // "usage": {...} (escaped): only the final usage chunk is parsed.
    // Responses: created/in_progress carry "usage":null. Anthropic: message_start and the
    // two message_deltas.
    for (text, events, parsed) in [(OPENAI_CHAT_SSE, 7, 1), (RESPONSES_SSE, 10, 1), (ANTHROPIC_SSE, 10, 3)] {
        for (ending, body) in endings(text) {
            let (_, p) = parse_all(SSE, &body);
            assert_eq!((p.stats().events, p.stats().parsed), (events, parsed), "{ending}");
        }
    }
}

#[test]
fn usage_is_known_as_soon_as_its_event_ends() {
    let mut p = UsageParser::new(SSE);
    let body = ANTHROPIC_SSE.as_bytes();
    let first_event_end = ANTHROPIC_SSE.find("\n\n").unwrap() + 2;
    p.feed(&body[..first_event_end - 1]);
    assert_eq!(p.usage(), None, "the event is not over before its blank line");
    p.feed(&body[first_event_end - 1..first_event_end]);
    assert_eq!(p.usage(), Some(Usage { input: 1945, output: 1 }));
    p.feed(&body[first_event_end..]);
    assert_eq!(p.usage(), Some(ANTHROPIC_USAGE));
    assert_eq!(p.finish(), Some(ANTHROPIC_USAGE));
}

#[test]
fn a_stream_without_usage_reports_it_missing() {
    // A client that did not ask for include_usage (and was not rewritten): no usage key.
    let body = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
    let (got, p) = parse_all(SSE, body.as_bytes());
    assert_eq!(got, None);
    assert!(!p.found());
    assert_eq!((p.stats().events, p.stats().parsed), (2, 0));
    // Cut before the usage chunk: missing too.
    let cut = OPENAI_CHAT_SSE.find("\"choices\":[],").unwrap();
    let (got, _) = parse_all(SSE, &OPENAI_CHAT_SSE.as_bytes()[..cut]);
    assert_eq!(got, None);
    // Responses usage null everywhere (cut before response.completed): missing.
    let cut = RESPONSES_SSE.find("event: response.completed").unwrap();
    assert_eq!(parse_all(SSE, &RESPONSES_SSE.as_bytes()[..cut]).0, None);
}

#[test]
fn anthropic_cut_after_message_start_keeps_the_input_and_the_output_so_far() {
    let cut = ANTHROPIC_SSE.find("event: message_delta").unwrap();
    assert_eq!(parse_all(SSE, &ANTHROPIC_SSE.as_bytes()[..cut]).0, Some(Usage { input: 1945, output: 1 }));
}

#[test]
fn openai_last_usage_wins_and_other_events_leave_it() {
    let body = "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n\
                data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n\
                data: {\"usage\":null,\"choices\":[]}\n\n\
                data: [DONE]\n\n";
    assert_eq!(parse_all(SSE, body.as_bytes()).0, Some(Usage { input: 7, output: 3 }));
}

#[test]
fn responses_incomplete_carries_usage_too() {
    let body = "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"usage\":{\"input_tokens\":12,\"output_tokens\":256}}}\n\n";
    assert_eq!(parse_all(SSE, body.as_bytes()).0, Some(Usage { input: 12, output: 256 }));
}

#[test]
fn sse_syntax_details() {
    // Data lines of one event are joined with \n (JSON whitespace); no space after the
    // colon; comments; id/retry/unknown fields; a leading BOM; `data` with no colon.
    let body = "\u{feff}: keep-alive\n\
                retry: 3000\n\n\
                id: 7\n\
                event: message_delta\n\
                data:{\"type\":\"message_delta\",\n\
                data: \"usage\":\n\
                data\n\
                data:  {\"output_tokens\":12}}\n\
                x-unknown: {\"usage\":{\"output_tokens\":999}}\n\n";
    for (ending, body) in endings(body) {
        for cut in 0..=body.len() {
            let (got, p) = run_split(SSE, &body, &[cut]);
            assert_eq!(got, Some(Usage { input: 0, output: 12 }), "{ending} cut at {cut}");
            assert_eq!((p.stats().events, p.stats().parsed), (1, 1), "{ending} cut at {cut}");
        }
    }
    // A BOM is only dropped at the start of the stream.
    let (got, _) = parse_all(SSE, "\u{feff}data: {\"usage\":{\"output_tokens\":1}}\n\n".as_bytes());
    assert_eq!(got, Some(Usage { input: 0, output: 1 }));
    let (got, _) = parse_all(SSE, "\n\u{feff}data: {\"usage\":{\"output_tokens\":1}}\n\n".as_bytes());
    assert_eq!(got, None);
}

#[test]
fn an_unterminated_last_event_is_read_at_finish() {
    for tail in ["", "\n", "\r", "\r\n"] {
        let body = format!("data: {{\"usage\":{{\"prompt_tokens\":4,\"completion_tokens\":2}}}}{tail}");
        assert_eq!(parse_all(SSE, body.as_bytes()).0, Some(Usage { input: 4, output: 2 }), "{tail:?}");
    }
    // A truncated event is not JSON: missing, no error.
    assert_eq!(parse_all(SSE, b"data: {\"usage\":{\"prompt_tokens\":4,\"compl").0, None);
}

#[test]
fn counts_of_the_wrong_type_read_as_absent() {
    let body = "data: {\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":5,\"cache_read_input_tokens\":-3,\"input_tokens\":1.5}}\n\n\
                data: {\"message\":\"not an object\",\"response\":[1,{\"usage\":{}}],\"usage\":[{\"output_tokens\":1}]}\n\n";
    assert_eq!(parse_all(SSE, body.as_bytes()).0, Some(Usage { input: 0, output: 5 }));
    // An empty usage object is not usage.
    assert_eq!(parse_all(SSE, b"data: {\"usage\":{}}\n\n").0, None);
    assert_eq!(parse_all(Some("application/json"), b"{\"usage\":{\"total_tokens\":9}}").0, None);
    // Counts near u64::MAX saturate in the sum.
    let body = format!("{{\"usage\":{{\"input_tokens\":{m},\"cache_read_input_tokens\":{m},\"output_tokens\":{m}}}}}", m = u64::MAX);
    let u = parse_all(None, body.as_bytes()).0.unwrap();
    assert_eq!((u.input, u.total()), (u64::MAX, u64::MAX));
}

#[test]
fn json_bodies_of_the_three_apis() {
    let ct = Some("application/json");
    assert_eq!(parse_all(ct, OPENAI_CHAT_JSON.as_bytes()).0, Some(Usage { input: 1117, output: 46 }));
    assert_eq!(parse_all(ct, RESPONSES_JSON.as_bytes()).0, Some(Usage { input: 328, output: 52 }));
    assert_eq!(parse_all(ct, ANTHROPIC_JSON.as_bytes()).0, Some(Usage { input: 2095 + 2051 + 4, output: 503 }));
    assert_eq!(Usage { input: 2095 + 2051 + 4, output: 503 }.total(), 4653);
    // charset, case, no content-type at all, +json.
    for ct in [Some("application/json; charset=utf-8"), Some("Application/JSON"), None, Some("application/vnd.api+json")] {
        assert_eq!(parse_all(ct, OPENAI_CHAT_JSON.as_bytes()).0, Some(Usage { input: 1117, output: 46 }), "{ct:?}");
    }
    // Only the top-level usage of a JSON body counts; null usage, error bodies, not JSON.
    assert_eq!(parse_all(ct, br#"{"message":{"usage":{"input_tokens":3}}}"#).0, None);
    assert_eq!(parse_all(ct, br#"{"id":"x","usage":null}"#).0, None);
    assert_eq!(parse_all(ct, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).0, None);
    assert_eq!(parse_all(ct, b"<html>502</html>").0, None);
    assert_eq!(parse_all(ct, b"").0, None);
}

#[test]
fn json_body_split_anywhere() {
    let body = ANTHROPIC_JSON.as_bytes();
    for cut in 0..=body.len() {
        assert_eq!(run_split(None, body, &[cut]).0, Some(Usage { input: 4150, output: 503 }), "cut {cut}");
    }
}

#[test]
fn content_types() {
    assert_eq!(BodyFormat::from_content_type(Some("text/event-stream")), BodyFormat::EventStream);
    assert_eq!(BodyFormat::from_content_type(Some(" Text/Event-Stream ;charset=UTF-8")), BodyFormat::EventStream);
    assert_eq!(BodyFormat::from_content_type(Some("application/json")), BodyFormat::Json);
    assert_eq!(BodyFormat::from_content_type(Some("application/problem+json")), BodyFormat::Json);
    assert_eq!(BodyFormat::from_content_type(None), BodyFormat::Json);
    assert_eq!(BodyFormat::from_content_type(Some("")), BodyFormat::Json);
    assert_eq!(BodyFormat::from_content_type(Some("text/plain")), BodyFormat::Other);
    assert_eq!(BodyFormat::from_content_type(Some("application/vnd.amazon.eventstream")), BodyFormat::Other);
    // Other bodies are not read nor buffered; an SSE stream sent as JSON is not JSON.
    let (got, p) = parse_all(Some("text/plain"), OPENAI_CHAT_JSON.as_bytes());
    assert_eq!((got, p.retained_bytes()), (None, 0));
    assert_eq!(parse_all(Some("application/json"), OPENAI_CHAT_SSE.as_bytes()).0, None);
}

#[test]
fn finish_is_idempotent_and_ends_feeding() {
    let mut p = UsageParser::new(SSE);
    p.feed(OPENAI_CHAT_SSE.as_bytes());
    assert_eq!(p.finish(), Some(OPENAI_CHAT_USAGE));
    p.feed(b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
    assert_eq!(p.finish(), Some(OPENAI_CHAT_USAGE));
    assert_eq!(p.retained_bytes(), 0);
}

// ---------------------------------------------------------------------------------------
// Usage: every split of every recorded stream gives the same usage.

#[test]
fn every_single_split_and_byte_by_byte_feeding_give_the_same_usage() {
    for (name, body, usage) in streams() {
        let whole = parse_all(SSE, &body).1.stats();
        for cut in 0..=body.len() {
            let (got, p) = run_split(SSE, &body, &[cut]);
            assert_eq!(got, Some(usage), "{name}: cut at {cut}");
            assert_eq!(p.stats(), whole, "{name}: cut at {cut}");
        }
        let mut p = UsageParser::new(SSE);
        for b in &body {
            p.feed(std::slice::from_ref(b));
        }
        assert_eq!(p.finish(), Some(usage), "{name}: byte by byte");
    }
}

fn cuts_of(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..40).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

proptest! {
    #![proptest_config(pt(256))]

    /// Random split points (many chunks, some empty) of each recorded stream.
    #[test]
    fn random_splits_give_the_same_usage(which in 0..12usize, seed in any::<u64>()) {
        let all = streams();
        let (name, body, usage) = &all[which % all.len()];
        let mut rng = seed;
        let mut cuts: Vec<usize> = (0..(seed % 40)).map(|_| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize % (body.len() + 1)
        }).collect();
        cuts.sort_unstable();
        let (got, _) = run_split(SSE, body, &cuts);
        prop_assert_eq!(got, Some(*usage), "{} cut at {:?}", name, cuts);
    }

    /// The same with proptest-chosen cuts (shrinks to a minimal failing split).
    #[test]
    fn chosen_splits_of_the_anthropic_stream_give_the_same_usage(cuts in cuts_of(ANTHROPIC_SSE.replace('\n', "\r\n").len())) {
        let body = ANTHROPIC_SSE.replace('\n', "\r\n");
        prop_assert_eq!(run_split(SSE, body.as_bytes(), &cuts).0, Some(ANTHROPIC_USAGE));
    }

    /// Arbitrary bytes (rich in line ends, `data:` fields and usage keys), cut anywhere, never panic and never
    /// hold more than the bounds.
    #[test]
    fn arbitrary_bytes_stay_bounded(raw in prop::collection::vec(any::<u8>(), 0..3000), cuts in cuts_of(3000), sse in any::<bool>()) {
        let body: Vec<u8> = raw.iter().flat_map(|&b| match b % 16 {
            0 => b"\n".to_vec(), 1 => b"\r".to_vec(), 2 => b":".to_vec(), 3 => b"data: ".to_vec(),
            4 => b"\"usage\":{\"output_tokens\":".to_vec(), 5 => b"}".to_vec(), _ => vec![b],
        }).collect();
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
        let chunks: Vec<&[u8]> = std::iter::once(0).chain(cuts.iter().copied()).zip(cuts.iter().copied().chain(std::iter::once(body.len())))
            .map(|(a, b)| &body[a..b]).collect();
        let limits = UsageLimits { max_json_bytes: 1000, max_event_bytes: 100 };
        let fmt = if sse { BodyFormat::EventStream } else { BodyFormat::Json };
        let mut p = UsageParser::with_limits(fmt, limits);
        let bound = if sse { 100 } else { 1000 };
        for c in &chunks {
            p.feed(c);
            prop_assert!(p.retained_bytes() <= bound);
        }
        let _ = p.finish();
    }
}

// ---------------------------------------------------------------------------------------
// Usage: bounds.

fn big_delta(n: usize) -> String {
    format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n", "x".repeat(n))
}

#[test]
fn an_oversized_event_is_skipped_and_counted_and_the_rest_still_read() {
    let mut body = String::new();
    let start = ANTHROPIC_SSE.find("event: content_block_start").unwrap();
    body.push_str(&ANTHROPIC_SSE[..start]);
    body.push_str(&big_delta(100 << 10));
    body.push_str(&ANTHROPIC_SSE[start..]);
    for chunk in [1usize, 7, 4096, 1 << 20] {
        let mut p = UsageParser::new(SSE);
        for c in body.as_bytes().chunks(chunk) {
            p.feed(c);
            assert!(p.retained_bytes() <= usage::DEFAULT_MAX_EVENT_BYTES, "chunk {chunk}");
        }
        assert_eq!(p.finish(), Some(ANTHROPIC_USAGE), "chunk {chunk}");
        let s = p.stats();
        assert_eq!((s.events, s.skipped_events, s.parsed), (11, 1, 3), "chunk {chunk}");
        assert!(s.skipped_bytes > 100 << 10 && s.skipped_bytes < (100 << 10) + 200, "{}", s.skipped_bytes);
    }
}

#[test]
fn an_event_of_exactly_the_bound_is_read() {
    let limits = UsageLimits { max_json_bytes: 0, max_event_bytes: 64 };
    let data = format!("{{\"usage\":{{\"output_tokens\":5}}}}{}", " ".repeat(64 - 29));
    assert_eq!(data.len(), 64);
    let mut p = UsageParser::with_limits(BodyFormat::EventStream, limits);
    p.feed(format!("data: {data}\n\n").as_bytes());
    assert_eq!((p.finish(), p.stats().skipped_events), (Some(Usage { input: 0, output: 5 }), 0));
    let mut p = UsageParser::with_limits(BodyFormat::EventStream, limits);
    p.feed(format!("data: {data} \n\n").as_bytes());
    assert_eq!((p.finish(), p.stats().skipped_events), (None, 1));
}

#[test]
fn an_oversized_usage_event_means_missing_usage() {
    // A response.completed whose echoed output is over the bound.
    let body = format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"text\":\"{}\"}}],\"usage\":{{\"input_tokens\":1,\"output_tokens\":2}}}}}}\n\n",
        "y".repeat(70_000)
    );
    let (got, p) = parse_all(SSE, body.as_bytes());
    assert_eq!(got, None);
    assert_eq!(p.stats().skipped_events, 1);
    // With a larger bound it is read.
    let mut p = UsageParser::with_limits(BodyFormat::EventStream, UsageLimits { max_event_bytes: 128 << 10, ..UsageLimits::default() });
    p.feed(body.as_bytes());
    assert_eq!(p.finish(), Some(Usage { input: 1, output: 2 }));
}

#[test]
fn an_endless_line_never_grows_the_buffer() {
    // 8 MiB of data without a line end, then a real event: only one event was skipped.
    let mut p = UsageParser::new(SSE);
    p.feed(b"data: ");
    let junk = vec![b'z'; 4096];
    for _ in 0..2048 {
        p.feed(&junk);
        assert!(p.retained_bytes() <= usage::DEFAULT_MAX_EVENT_BYTES);
    }
    // Non-data lines are never buffered at all, however long.
    p.feed(b"\n: ");
    for _ in 0..256 {
        p.feed(&junk);
    }
    p.feed(b"\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n");
    assert_eq!(p.finish(), Some(Usage { input: 3, output: 4 }));
    let s = p.stats();
    assert_eq!((s.skipped_events, s.skipped_bytes), (1, 8 << 20));
}

#[test]
fn a_json_body_over_the_bound_is_missing_usage_without_growing() {
    let limits = UsageLimits { max_json_bytes: 1 << 10, max_event_bytes: 64 };
    let mut p = UsageParser::with_limits(BodyFormat::Json, limits);
    let body = format!("{{\"pad\":\"{}\",\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}}}}", "p".repeat(2000));
    for c in body.as_bytes().chunks(100) {
        p.feed(c);
        assert!(p.retained_bytes() <= 1 << 10);
    }
    assert_eq!(p.finish(), None);
    let s = p.stats();
    assert!(s.json_over_limit);
    assert_eq!(s.skipped_bytes, body.len() as u64);
    assert_eq!((s.parsed, p.retained_bytes()), (0, 0));
    // Exactly at the bound: read.
    let mut p = UsageParser::with_limits(BodyFormat::Json, UsageLimits { max_json_bytes: body.len(), max_event_bytes: 64 });
    for c in body.as_bytes().chunks(100) {
        p.feed(c);
    }
    assert_eq!(p.finish(), Some(Usage { input: 1, output: 1 }));
    assert!(!p.stats().json_over_limit);
    // The default bound is 1 MiB.
    let mut p = UsageParser::new(Some("application/json"));
    p.feed(&vec![b' '; (1 << 20) + 1]);
    assert!(p.stats().json_over_limit);
    assert_eq!(p.retained_bytes(), 0);
}

// ---------------------------------------------------------------------------------------
// Prices and model patterns.

fn spec_prices() -> Prices {
    Prices::new([
        ("gpt-4o", Price { input: 2_500_000, output: 10_000_000 }),
        ("gpt-4o-mini", Price { input: 150_000, output: 600_000 }),
        ("claude-*", Price { input: 3_000_000, output: 15_000_000 }),
        ("claude-opus-*", Price { input: 15_000_000, output: 75_000_000 }),
    ])
}

#[test]
fn price_lookup_exact_then_longest_pattern() {
    let p = spec_prices();
    assert_eq!(p.get(Some("gpt-4o")), Some(Price { input: 2_500_000, output: 10_000_000 }));
    assert_eq!(p.get(Some("gpt-4o-mini")), Some(Price { input: 150_000, output: 600_000 }));
    assert_eq!(p.get(Some("gpt-4o-2024-08-06")), None, "no pattern covers it");
    assert_eq!(p.get(Some("claude-sonnet-4-5")), Some(Price { input: 3_000_000, output: 15_000_000 }));
    assert_eq!(p.get(Some("claude-opus-4-1")), Some(Price { input: 15_000_000, output: 75_000_000 }));
    assert_eq!(p.get(Some("claude-")), Some(Price { input: 3_000_000, output: 15_000_000 }), "`*` matches an empty suffix");
    assert_eq!(p.get(Some("claude")), None);
    assert_eq!(p.get(None), None, "an unknown model is unpriced without `*`");
    // `*` prices everything, known or not, below every longer match.
    let mut entries = vec![("*".to_owned(), Price { input: 1, output: 2 })];
    entries.push(("gpt-*".to_owned(), Price { input: 3, output: 4 }));
    entries.push(("gpt-4o".to_owned(), Price { input: 5, output: 6 }));
    let p = Prices::new(entries);
    assert_eq!(p.get(None), Some(Price { input: 1, output: 2 }));
    assert_eq!(p.get(Some("llama-3")), Some(Price { input: 1, output: 2 }));
    assert_eq!(p.get(Some("gpt-4o-mini")), Some(Price { input: 3, output: 4 }));
    assert_eq!(p.get(Some("gpt-4o")), Some(Price { input: 5, output: 6 }));
    // A `*` elsewhere is literal; a name given twice keeps its last price.
    let p = Prices::new([("a*b", Price { input: 1, output: 1 }), ("x", Price { input: 1, output: 1 }), ("x", Price { input: 2, output: 2 })]);
    assert_eq!(p.get(Some("a-b")), None);
    assert_eq!(p.get(Some("a*b")), Some(Price { input: 1, output: 1 }));
    assert_eq!(p.get(Some("x")), Some(Price { input: 2, output: 2 }));
    assert!(Prices::default().is_empty() && !p.is_empty());
}

#[test]
fn cost_rounds_up_and_never_overflows() {
    let gpt4o = Price { input: 2_500_000, output: 10_000_000 };
    // 1000 * 2.5 + 500 * 10 = 7500 micro-USD.
    assert_eq!(cost(Usage { input: 1000, output: 500 }, gpt4o), 7500);
    let mini = Price { input: 150_000, output: 600_000 };
    // 1 * 0.15 = 0.15 -> 1; 10 * 0.15 + 0 = 1.5 -> 2; exact multiples stay.
    assert_eq!(cost(Usage { input: 1, output: 0 }, mini), 1);
    assert_eq!(cost(Usage { input: 10, output: 0 }, mini), 2);
    assert_eq!(cost(Usage { input: 20, output: 0 }, mini), 3);
    assert_eq!(cost(Usage { input: 0, output: 5 }, Price { input: 0, output: 200_000 }), 1);
    assert_eq!(cost(Usage { input: 0, output: 0 }, gpt4o), 0);
    assert_eq!(cost(Usage { input: 7, output: 9 }, Price::default()), 0);
    // u64 * u64 overflows u64, not u128: exact result.
    assert_eq!(cost(Usage { input: u64::MAX, output: 0 }, Price { input: 1_000_000, output: 0 }), u64::MAX);
    assert_eq!(cost(Usage { input: 1 << 40, output: 1 << 40 }, Price { input: 1 << 40, output: 1 << 40 }), ((1u128 << 81) / 1_000_000 + 1) as u64);
    // Beyond u64 (or even u128): saturates.
    assert_eq!(cost(Usage { input: u64::MAX, output: u64::MAX }, Price { input: u64::MAX, output: u64::MAX }), u64::MAX);
}

proptest! {
    #![proptest_config(pt(512))]

    #[test]
    fn cost_is_the_exact_ceiling(i in any::<u32>(), o in any::<u32>(), pi in 0..100_000_000u64, po in 0..100_000_000u64) {
        let c = cost(Usage { input: i.into(), output: o.into() }, Price { input: pi, output: po });
        let exact = u128::from(i) * u128::from(pi) + u128::from(o) * u128::from(po);
        prop_assert!(u128::from(c) * 1_000_000 >= exact);
        prop_assert!(exact + 1_000_000 > u128::from(c) * 1_000_000);
    }
}

#[test]
fn match_models_patterns() {
    let models = ["gpt-4o", "gpt-4o-2024-*"];
    assert!(matches_any(&models, Some("gpt-4o")));
    assert!(matches_any(&models, Some("gpt-4o-2024-08-06")));
    assert!(matches_any(&models, Some("gpt-4o-2024-")));
    assert!(!matches_any(&models, Some("gpt-4o-mini")));
    assert!(!matches_any(&models, Some("GPT-4o")));
    assert!(!matches_any(&models, None), "an unknown model matches nothing");
    assert!(matches_any(&["*"], Some("anything")));
    assert!(!matches_any(&["*"], None));
    assert!(!matches_any::<&str>(&[], Some("gpt-4o")));
    assert!(model_matches("claude-*", "claude-3-haiku"));
    assert!(!model_matches("claude-*", "claud"));
    assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    assert!(!model_matches("g*o", "gpt-4o"), "only a trailing `*` is a pattern");
}

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

