//! An LLM test upstream: recorded OpenAI Chat/Completions, OpenAI Responses and Anthropic
//! Messages bodies (JSON and `text/event-stream`), written in small flushed pieces.
//!
//! `GET /llm/<fixture>?split=K&gap=MS&status=S`: the body is written as its first K bytes,
//! then (after MS ms, default 2) the rest; without `split`, in 7-byte pieces.
#![allow(dead_code)]

use super::*;

pub struct Fixture {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// (input, output) tokens the body reports, if it reports usage.
    pub usage: Option<(u64, u64)>,
}

pub const OPENAI_JSON: Fixture = Fixture {
    name: "openai-json",
    content_type: "application/json",
    body: r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#,
    usage: Some((12, 30)),
};

pub const OPENAI_SSE: Fixture = Fixture {
    name: "openai-sse",
    content_type: "text/event-stream",
    body: "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}\n\n\
data: [DONE]\n\n",
    usage: Some((12, 30)),
};

pub const RESPONSES_SSE: Fixture = Fixture {
    name: "responses-sse",
    content_type: "text/event-stream",
    body: "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\r\n\r\n\
event: response.output_text.delta\r\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\r\n\r\n\
event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":20,\"output_tokens\":7,\"total_tokens\":27}}}\r\n\r\n",
    usage: Some((20, 7)),
};

pub const ANTHROPIC_JSON: Fixture = Fixture {
    name: "anthropic-json",
    content_type: "application/json",
    body: r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":25}}"#,
    usage: Some((15, 25)),
};

pub const ANTHROPIC_SSE: Fixture = Fixture {
    name: "anthropic-sse",
    content_type: "text/event-stream",
    body: "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":25}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    usage: Some((15, 25)),
};

pub const NO_USAGE_SSE: Fixture = Fixture {
    name: "no-usage-sse",
    content_type: "text/event-stream",
    body: "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
    usage: None,
};

pub const ERROR_JSON: Fixture = Fixture {
    name: "error-json",
    content_type: "application/json",
    body: r#"{"error":{"message":"bad request","type":"invalid_request_error"}}"#,
    usage: None,
};

pub const FIXTURES: [&Fixture; 7] = [&OPENAI_JSON, &OPENAI_SSE, &RESPONSES_SSE, &ANTHROPIC_JSON, &ANTHROPIC_SSE, &NO_USAGE_SSE, &ERROR_JSON];

/// A status and `retry-after` to answer with instead of the usual answer.
pub type PushBack = Arc<std::sync::Mutex<Option<(u16, Option<u64>)>>>;

pub struct LlmUpstream {
    pub port: u16,
    /// Request bodies received on `/v1/chat/completions`.
    pub bodies: Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, `/v1/chat/completions` answers this status (with `retry-after` if given)
    /// and an OpenAI error body, like a provider that pushes back.
    pub push_back: PushBack,
}

impl LlmUpstream {
    pub fn start() -> LlmUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let push_back = Arc::new(std::sync::Mutex::new(None));
        let (b, pb) = (bodies.clone(), push_back.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (b, pb) = (b.clone(), pb.clone());
                std::thread::spawn(move || serve_llm(s, b, pb));
            }
        });
        LlmUpstream { port, bodies, push_back }
    }
}

/// Like OpenAI: a streamed answer reports usage only when the request asked for it.
fn chat(req: &[u8]) -> (&'static str, String) {
    let v: serde_json::Value = serde_json::from_slice(req).unwrap_or_default();
    let usage = serde_json::json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13});
    if v["stream"] == true {
        let mut out = String::from("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n");
        if v["stream_options"]["include_usage"] == true {
            out.push_str(&format!("data: {}\n\n", serde_json::json!({"choices": [], "usage": usage})));
        }
        out.push_str("data: [DONE]\n\n");
        ("text/event-stream", out)
    } else {
        ("application/json", serde_json::json!({"choices": [{"message": {"content": "Hi"}}], "usage": usage}).to_string())
    }
}

fn query(path: &str, key: &str) -> Option<u64> {
    path.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok()))
}

fn serve_llm(s: TcpStream, bodies: Arc<std::sync::Mutex<Vec<String>>>, push_back: PushBack) {
    let Ok(mut w) = s.try_clone() else { return };
    let _ = w.set_nodelay(true);
    let mut r = BufReader::new(s);
    loop {
        let Ok((first, headers)) = read_head(&mut r) else { return };
        let Ok(req) = read_body(&mut r, &headers) else { return };
        let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path.starts_with("/v1/chat/completions") {
            bodies.lock().unwrap().push(String::from_utf8_lossy(&req).into_owned());
            let pushed = *push_back.lock().unwrap();
            if let Some((status, retry)) = pushed {
                // As OpenAI answers a rate limit (https://platform.openai.com/docs/guides/error-codes).
                let body = r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
                let retry = retry.map(|r| format!("retry-after: {r}\r\n")).unwrap_or_default();
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{retry}content-length: {}\r\n\r\n{body}", body.len());
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            let (ct, body) = chat(&req);
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            if w.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let name = path.trim_start_matches("/llm/").split('?').next().unwrap_or("");
        let Some(f) = FIXTURES.iter().find(|f| f.name == name) else {
            let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        };
        let status = query(&path, "status").unwrap_or(if f.name == "error-json" { 400 } else { 200 });
        let body = f.body.as_bytes();
        let head = format!("HTTP/1.1 {status} X\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\n\r\n", f.content_type);
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let gap = Duration::from_millis(query(&path, "gap").unwrap_or(2));
        let pieces: Vec<&[u8]> = match query(&path, "split") {
            Some(k) => {
                let k = (k as usize).min(body.len());
                vec![&body[..k], &body[k..]]
            }
            None => body.chunks(7).collect(),
        };
        for (i, p) in pieces.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            if i > 0 {
                std::thread::sleep(gap);
            }
            let mut c = format!("{:x}\r\n", p.len()).into_bytes();
            c.extend_from_slice(p);
            c.extend_from_slice(b"\r\n");
            if w.write_all(&c).and_then(|_| w.flush()).is_err() {
                return;
            }
        }
        if w.write_all(b"0\r\n\r\n").is_err() {
            return;
        }
    }
}
