//! The domain's nouns: what a budget counts, its window and limits, how it acts when it is
//! over, and the saturation signals. `config` compiles the operator's JSON into these; nothing
//! here knows about JSON beyond the serde names of the enums the configuration spells.

use super::Window;
use serde::Deserialize;

/// What a budget counts (SPEC 1, `counts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counts {
    Requests,
    RequestBytes,
    /// Cost read from this request header (lower-case name) before admission.
    RequestHeader(String),
    /// Cost read from this upstream response header, charged after the fact.
    ResponseHeader(String),
    InFlight,
    /// LLM tokens read from the response body (SPEC 5).
    LlmTokens(TokenKind),
    /// Cost units of the LLM usage, priced per model (SPEC 5).
    LlmCost,
}

/// Which tokens an `llm_tokens` budget counts (SPEC 5).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Input,
    Output,
    Total,
}


impl Counts {
    pub fn is_llm(&self) -> bool {
        matches!(self, Counts::LlmTokens(_) | Counts::LlmCost)
    }

    /// The IETF RateLimit `qu` parameter for this kind, if not the default "requests".
    pub fn quota_unit(&self) -> Option<&'static str> {
        match self {
            Counts::RequestBytes => Some("content-bytes"),
            Counts::InFlight => Some("concurrent-requests"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub path_prefix: Option<String>,
    /// Upper-case method names; empty means any method.
    pub methods: Vec<String>,
    /// Model patterns (SPEC 5); empty means any model. A budget with models does not apply
    /// to a request whose model is unknown.
    pub models: Vec<String>,
}

impl Match {
    /// No path or method condition (models are checked separately, per request).
    pub fn is_any(&self) -> bool {
        self.path_prefix.is_none() && self.methods.is_empty()
    }
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if let Some(p) = &self.path_prefix {
            if !path.starts_with(p.as_str()) {
                return false;
            }
        }
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Limits of one budget for one tenant, after overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub limit: u64,
    pub burst_credits: u64,
    /// When the counts start again ([`Window::None`] for `in_flight`).
    pub window: Window,
    pub unlimited: bool,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub name: String,
    /// Stable identity of the budget inside a tenant's stored state (FNV-1a of the name).
    pub id: u32,
    pub counts: Counts,
    pub algorithm: Algorithm,
    pub limits: Limits,
    pub matcher: Match,
    /// `Some` for a global budget (SPEC 8).
    pub global: Option<GlobalMode>,
    /// `Some(i)`: counted per id of `Config::scopes[i]` (SPEC 7); `None`: per tenant.
    pub scope: Option<usize>,
    /// SPEC 6.
    pub on_exceed: OnExceed,
    /// For `on_exceed: queue`: how long a request may wait, and how many may wait per tenant
    /// (or scope id) and budget in one Envoy.
    pub queue: Queue,
    /// For `on_exceed: fallback`: where the request goes instead.
    pub fallback: Option<Target>,
    /// Alert thresholds in percent of `limit`, ascending (SPEC 5; default 80, 90, 95).
    pub alerts: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub timeout_ms: u64,
    pub max_waiting: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { timeout_ms: 1000, max_waiting: 100 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalSource {
    Orca(String),
    ResponseHeader(String),
    InFlight,
    UpstreamLatencyMs,
    Operator,
}

#[derive(Debug, Clone)]
pub struct Signal {
    pub name: String,
    pub source: SignalSource,
    pub elevated: f64,
    pub critical: f64,
}

#[derive(Debug, Clone)]
pub struct Saturation {
    pub signals: Vec<Signal>,
    pub stale_after_ms: u64,
    /// keep[level][priority], level 0..=2 (normal, elevated, critical), priority low, normal, vip.
    pub keep: [[f64; 3]; 3],
    pub retry_after_s: u64,
    pub expose_signal_headers: bool,
}

/// How a budget holds across Envoys (SPEC 8).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GlobalMode {
    /// Decided locally, synced with the service in the background.
    Sync,
    /// Every request waits for one `ShouldRateLimit`.
    Exact,
}

/// SPEC 6 violation actions.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    #[default]
    Reject,
    /// Admit and charge anyway, marking the response (soft limits).
    Warn,
    /// Hold the request in the filter until the budget has room, up to a timeout.
    Queue,
    /// Send the request elsewhere (`Budget::fallback`: another model, another upstream),
    /// where the request's budgets are decided again without this one.
    Fallback,
}

/// Where a rerouted request goes (a budget's `fallback`, a cooling provider's): another
/// model, another upstream (the value of the route header), or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub model: Option<String>,
    pub upstream: Option<String>,
    /// The cluster the route for `upstream` goes to, for per-provider scopes (ids from
    /// `xds.cluster_name`, which Envoy leaves on the first route); default: `upstream`.
    pub cluster: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Fixed,
    Sliding,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    Vip,
}
