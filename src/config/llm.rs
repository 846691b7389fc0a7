//! `llm` (SPEC 5): where an LLM request's model comes from, whether its body is read, prices.

use super::error::{err, ConfigError};
use super::raw::RawLlm;
use super::visible_ascii;
use crate::llm::{Price, Prices};

/// Where an LLM request's model comes from (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Header(String),
    /// The top-level `model` field of the JSON request body (needs `request_body`).
    RequestBody,
}

/// The `llm` block (SPEC 5).
#[derive(Debug, Clone)]
pub struct Llm {
    pub model: Option<ModelSource>,
    /// Read the JSON request body before admission (SPEC 5).
    pub request_body: bool,
    pub default_reserve_tokens: u64,
    pub max_request_body_bytes: u64,
    pub prices: Prices,
}

impl Default for Llm {
    fn default() -> Self {
        Llm { model: None, request_body: false, default_reserve_tokens: 0, max_request_body_bytes: 1 << 20, prices: Prices::new(Vec::<(String, Price)>::new()) }
    }
}

pub(super) fn compile(raw: Option<&RawLlm>) -> Result<Llm, ConfigError> {
    let Some(raw) = raw else { return Ok(Llm::default()) };
    let request_body = raw.request_body.unwrap_or(false);
    if raw.model == Some(ModelSource::RequestBody) && !request_body {
        return err("llm.model.request_body", "the model can come from the request body only with `llm.request_body: true`");
    }
    let mut prices = Vec::new();
    for (name, p) in &raw.prices {
        if name.is_empty() || name.len() > 256 || !visible_ascii(name) {
            return err(format!("llm.prices.{name}"), "model names are 1-256 bytes of visible ASCII (a trailing `*` matches any suffix)");
        }
        prices.push((name.clone(), Price { input: p.input, output: p.output }));
    }
    let max_request_body_bytes = raw.max_request_body_bytes.unwrap_or(1 << 20);
    if max_request_body_bytes > 64 << 20 {
        return err("llm.max_request_body_bytes", "at most 64 MiB");
    }
    Ok(Llm { model: raw.model.clone(), request_body, default_reserve_tokens: raw.default_reserve_tokens.unwrap_or(0), max_request_body_bytes, prices: Prices::new(prices) })
}
