//! What the engine reads of a request, and the parsers of header values.

use crate::config::Priority;
use crate::core::Millis;

/// What the engine needs to know about a request's headers.
pub trait RequestHeaders {
    /// The value of a request header (lower-case name, pseudo-headers included).
    fn get(&mut self, name: &str) -> Option<Vec<u8>>;
}

/// Inputs from the host for one request.
pub struct RequestInput<'h, H: RequestHeaders> {
    pub headers: &'h mut H,
    /// The tenant id as read from the header or property (None: absent).
    pub tenant: Option<Vec<u8>>,
    /// The request has no body (headers carried end_of_stream).
    pub end_of_stream: bool,
    /// Current saturation level (0 normal, 1 elevated, 2 critical).
    pub level: u8,
    pub now: Millis,
    /// The rate limit service has not answered for long enough (SPEC 8).
    pub global_degraded: bool,
    /// Each scope's id as read (by scope index; None: absent). Empty without scopes.
    pub scope_ids: Vec<Option<Vec<u8>>>,
    /// What the JSON request body said, when it was read before admission (SPEC 5).
    pub llm_body: Option<LlmBody>,
}

/// The fields of an LLM request body that admission uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmBody {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    /// The client's body size (before any rewrite).
    pub bytes: u64,
}

pub fn parse_priority(v: &[u8]) -> Option<Priority> {
    if v.eq_ignore_ascii_case(b"low") {
        Some(Priority::Low)
    } else if v.eq_ignore_ascii_case(b"normal") {
        Some(Priority::Normal)
    } else if v.eq_ignore_ascii_case(b"vip") {
        Some(Priority::Vip)
    } else {
        None
    }
}

/// A non-negative decimal integer, at most 19 digits; `None` for anything else.
pub fn parse_units(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in v {
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

pub(super) fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &v[s..e]
}
