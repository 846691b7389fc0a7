//! The parsers' bounds: oversized events, endless lines, big JSON bodies.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
