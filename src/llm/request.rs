//! What the filter reads from an LLM request body before admission (SPEC section 5,
//! `llm.request_body`), the reserve estimate, and the `stream_options.include_usage`
//! rewrite for streamed OpenAI Chat Completions.
//!
//! A body that is not a JSON object, or is longer than `max_request_body_bytes`, gives no
//! fields ([`LlmRequest::default`]) and is never rewritten: it is never an error. Fields of
//! an unexpected type read as absent.

use super::json::{next, next_obj, Fields, Obj};
use super::usage::Usage;
use serde::de::MapAccess;
use serde_json::{Map, Value};

/// Default `llm.max_request_body_bytes` (1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// The fields of a request body that quotas use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LlmRequest {
    /// Top-level `model` (a string).
    pub model: Option<String>,
    /// The largest of `max_tokens`, `max_completion_tokens`, `max_output_tokens` present
    /// (non-negative integers), so the reserve is an upper bound whichever the API honours.
    pub max_tokens: Option<u64>,
    /// `stream` is `true`.
    pub stream: bool,
    /// `stream_options.include_usage` when it is a boolean.
    pub include_usage: Option<bool>,
}

/// The result of reading a request body once: its fields, and the body to send instead
/// when it needs `stream_options.include_usage` set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspected {
    pub request: LlmRequest,
    pub rewritten: Option<Vec<u8>>,
}

impl LlmRequest {
    /// Reads the fields from a complete request body of at most `max_bytes` bytes.
    pub fn parse(body: &[u8], max_bytes: usize) -> LlmRequest {
        if body.len() > max_bytes {
            return LlmRequest::default();
        }
        let Ok(Obj(Some(raw))) = serde_json::from_slice::<Obj<RawRequest>>(body) else {
            return LlmRequest::default();
        };
        let max_tokens = [raw.max_tokens, raw.max_completion_tokens, raw.max_output_tokens].into_iter().flatten().max();
        LlmRequest {
            model: raw.model,
            max_tokens,
            stream: raw.stream == Some(true),
            include_usage: raw.stream_options.and_then(|o| o.include_usage),
        }
    }

    /// Whether a request to `path` with these fields gets `stream_options.include_usage: true`
    /// set: a path ending in `/chat/completions` (query string ignored), `"stream": true`,
    /// and `include_usage` not already `true`.
    pub fn needs_include_usage(&self, path: &str) -> bool {
        self.stream && self.include_usage != Some(true) && is_chat_completions(path)
    }

    /// The reserve: output = the max-tokens field, else `default_reserve_tokens`; input =
    /// ceil(`body_bytes` / 4) when the body was read (the client's length, before any
    /// rewrite), else 0.
    pub fn reserve(&self, body_bytes: Option<u64>, default_reserve_tokens: u64) -> Usage {
        Usage {
            input: body_bytes.map_or(0, |n| n.div_ceil(4)),
            output: self.max_tokens.unwrap_or(default_reserve_tokens),
        }
    }
}

/// Reads `body` (a request to `path`) once: its fields, and the rewritten body when
/// [`LlmRequest::needs_include_usage`].
pub fn inspect(path: &str, body: &[u8], max_bytes: usize) -> Inspected {
    let request = LlmRequest::parse(body, max_bytes);
    let rewritten = if request.needs_include_usage(path) { with_include_usage(body) } else { None };
    Inspected { request, rewritten }
}

/// Whether `path` (a `:path`, possibly with a query string) ends in `/chat/completions`.
pub fn is_chat_completions(path: &str) -> bool {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).is_some_and(|p| p.ends_with("/chat/completions"))
}

/// `body` (a JSON object) with `stream_options.include_usage` set to `true`: other members
/// of `stream_options` kept, a `stream_options` that is not an object replaced. The other
/// fields are kept (key order may change). `None` when `body` is not a JSON object.
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let obj = doc.as_object_mut()?;
    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    options.as_object_mut()?.insert("include_usage".to_owned(), Value::Bool(true));
    serde_json::to_vec(&doc).ok()
}

#[derive(Default)]
struct RawRequest {
    model: Option<String>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<RawStreamOptions>,
}

impl Fields for RawRequest {
    const KEYS: &'static [&'static str] =
        &["model", "max_tokens", "max_completion_tokens", "max_output_tokens", "stream", "stream_options"];
    fn set<'de, A: MapAccess<'de>>(&mut self, key: usize, map: &mut A) -> Result<(), A::Error> {
        match key {
            0 => self.model = next(map)?,
            1 => self.max_tokens = next(map)?,
            2 => self.max_completion_tokens = next(map)?,
            3 => self.max_output_tokens = next(map)?,
            4 => self.stream = next(map)?,
            _ => self.stream_options = next_obj(map)?,
        }
        Ok(())
    }
}

#[derive(Default)]
struct RawStreamOptions {
    include_usage: Option<bool>,
}

impl Fields for RawStreamOptions {
    const KEYS: &'static [&'static str] = &["include_usage"];
    fn set<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.include_usage = next(map)?;
        Ok(())
    }
}

/// `body` (a JSON object) with its top-level `model` set to `model` (a fallback to another
/// model). The other fields are kept (key order may change). `None` when `body` is not a
/// JSON object.
pub fn with_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    doc.as_object_mut()?.insert("model".to_owned(), Value::String(model.to_owned()));
    serde_json::to_vec(&doc).ok()
}
