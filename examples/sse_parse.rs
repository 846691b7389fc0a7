//! The SSE usage parser on bench (g2)'s 40 KB answer (bench/run.py `sse_body`), fed in 16 KB
//! chunks: time per KB natively (the bench measures it inside Envoy's V8).
//! `cargo run --release --example sse_parse` (or under callgrind for instructions per KB).
use std::time::Instant;
use tenant_quota::llm::UsageParser;

fn body(kb: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut n = 0;
    while n < kb * 1024 - 200 {
        out.push_str(&format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}],\"usage\":null}}\n\n", "x".repeat(24)));
        n = out.len();
    }
    let events = out.matches("data: ").count();
    out.push_str(&format!("data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":100,\"completion_tokens\":{events},\"total_tokens\":{}}}}}\n\n", events + 100));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn main() {
    let iters: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let b = body(40);
    let mut total = 0u64;
    let t = Instant::now();
    for _ in 0..iters {
        let mut p = UsageParser::new(Some("text/event-stream"));
        for c in b.chunks(16 * 1024) {
            p.feed(c);
        }
        total += p.finish().map_or(0, |u| u.total());
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!("{:.1} ns per KB ({} bytes, total tokens {})", ns / (b.len() as f64 / 1024.0), b.len(), total / iters as u64);
}
