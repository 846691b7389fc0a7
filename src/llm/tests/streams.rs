//! Usage from recorded streams and JSON bodies of the three APIs.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
