#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::request::{is_chat_completions, with_include_usage, with_model};
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

// One file per subject.
mod bounds;
mod pricing;
mod requests;
mod splits;
mod streams;
