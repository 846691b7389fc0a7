//! What a decision looks like on the wire (SPEC 2): the 429 and the other error replies with
//! their problem bodies and RateLimit headers, and the headers of admitted responses.

use super::Admitted;
use crate::config::{Config, TenantPolicy};
use crate::core::budget::Counts;
use crate::core::Window;
use crate::core::{Reason, Rejection};

/// The LLM API a request path belongs to (SPEC 2): its SDKs read the body's `error` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmApi {
    /// Paths ending in `/chat/completions`, `/completions`, `/responses` or `/embeddings`.
    OpenAi,
    /// Paths ending in `/messages`.
    Anthropic,
}

impl LlmApi {
    /// The API of a request's `:path` (query string ignored), if it is an LLM API path.
    pub fn of_path(path: &[u8]) -> Option<LlmApi> {
        let end = path.iter().position(|c| *c == b'?' || *c == b'#').unwrap_or(path.len());
        let p = path[..end].strip_suffix(b"/").unwrap_or(&path[..end]);
        const OPENAI: [&[u8]; 4] = [b"/chat/completions", b"/completions", b"/responses", b"/embeddings"];
        if OPENAI.iter().any(|s| p.ends_with(s)) {
            Some(LlmApi::OpenAi)
        } else if p.ends_with(b"/messages") {
            Some(LlmApi::Anthropic)
        } else {
            None
        }
    }
}

/// A reply's error in the providers' terms: OpenAI's `message`, `type` and `code` (Anthropic
/// reads `message`, and a type of its own from the status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderError {
    pub message: String,
    /// OpenAI `code`: `rate_limit_exceeded`, `insufficient_quota` or the reply's reason.
    pub code: String,
    /// OpenAI `type`: `tokens` or `requests` when `code` is `rate_limit_exceeded`, else `code`.
    pub kind: String,
}

impl Reply {
    /// The body with its `error` member as `api`'s SDKs read it (SPEC 2); every other member
    /// stays. The body is ours: its `"error":"<code>"` member appears once, before any value
    /// a client chose (those are escaped, so cannot hold an unescaped quote).
    pub fn provider_body(&self, api: LlmApi) -> String {
        let Some(at) = self.body.find("\"error\":\"") else { return self.body.clone() };
        let value_start = at + "\"error\":".len();
        let Some(len) = self.body[value_start + 1..].find('"') else { return self.body.clone() };
        let value_end = value_start + 1 + len + 1;
        let p = &self.provider;
        let object = match api {
            LlmApi::OpenAi => format!(
                "{{\"message\":\"{}\",\"type\":\"{}\",\"param\":null,\"code\":\"{}\"}}",
                json_escape(&p.message),
                json_escape(&p.kind),
                json_escape(&p.code)
            ),
            LlmApi::Anthropic => format!("{{\"type\":\"{}\",\"message\":\"{}\"}}", anthropic_type(self.status), json_escape(&p.message)),
        };
        format!("{}{}{}", &self.body[..value_start], object, &self.body[value_end..])
    }
}

/// Anthropic's error type for a status (its SDK maps them to exception classes).
fn anthropic_type(status: u32) -> &'static str {
    match status {
        429 => "rate_limit_error",
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        _ => "api_error",
    }
}

/// What a budget counts, in a sentence: "tokens", "requests", ...
fn unit_words(c: &Counts) -> &'static str {
    match c {
        Counts::Requests => "requests",
        Counts::RequestBytes => "bytes",
        Counts::RequestHeader(_) | Counts::ResponseHeader(_) => "cost units",
        Counts::InFlight => "concurrent requests",
        Counts::LlmTokens(_) => "tokens",
        Counts::LlmCost => "cost units",
    }
}

/// The provider-shaped error of a 429 (SPEC 2): a sentence naming the budget (and scope id),
/// its limit and window and when it resets; `insufficient_quota` where retrying soon cannot
/// help (windows over an hour, calendar months, money).
fn rejection_error(cfg: &Config, window: Window, r: &Rejection, scope: Option<(&str, &str)>) -> ProviderError {
    let b = &cfg.budgets[r.budget];
    if r.reason == Reason::SaturationThrottle {
        let message = format!("Tenant throttled while the service is saturated: retry in {} s.", r.retry_after_s);
        return ProviderError { message, code: "rate_limit_exceeded".into(), kind: "requests".into() };
    }
    let whose = match scope {
        Some((sn, id)) => format!("Quota {} of {sn} {id}", b.name),
        None => format!("Tenant quota {}", b.name),
    };
    let per = match window {
        Window::None => String::new(),
        Window::CalendarMonth => " per calendar month".to_string(),
        Window::Cycle(c) => format!(" per {} billing cycle", if c.period == crate::core::cycle::Period::Daily { "daily" } else { "monthly" }),
        Window::Fixed(w) => format!(" per {} s", w.get() / 1000),
    };
    let when = if window.is_none() { format!("retry in {} s", r.retry_after_s) } else { format!("resets in {} s", r.reset_s.max(1)) };
    let message = format!("{whose} exceeded: limit {} {}{per}, {when}.", r.limit, unit_words(&b.counts));
    let long = match window {
        Window::None => false,
        Window::Fixed(w) => w.get() > 3_600_000,
        Window::CalendarMonth | Window::Cycle(_) => true,
    } || b.counts == Counts::LlmCost;
    let (code, kind) = match (long, &b.counts) {
        (true, _) => ("insufficient_quota", "insufficient_quota"),
        (false, Counts::LlmTokens(_)) => ("rate_limit_exceeded", "tokens"),
        (false, _) => ("rate_limit_exceeded", "requests"),
    };
    ProviderError { message, code: code.into(), kind: kind.into() }
}

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    /// `x-tenant-quota-reason`, also used as Envoy's response code details.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The tenant the reply is for, when it is known (access-log fields).
    pub tenant: Option<String>,
    /// The error as an LLM provider's SDK reads it, for replies on LLM API paths (SPEC 2).
    pub provider: Box<ProviderError>,
}

fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// A 400/401/503 reply without a budget.
pub fn plain_reply(status: u32, reason: &str, title: &str, tenant: Option<&str>) -> Reply {
    let tenant_json = tenant.map_or("null".to_string(), |t| format!("\"{}\"", json_escape(t)));
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"{}\",\"status\":{},\"error\":\"{}\",\"reason\":\"{}\",\"tenant\":{}}}",
        json_escape(title),
        status,
        reason,
        reason,
        tenant_json
    );
    Reply {
        status,
        reason: reason.to_string(),
        headers: vec![
            ("content-type".into(), "application/problem+json".into()),
            ("x-tenant-quota-reason".into(), reason.to_string()),
        ],
        body,
        tenant: tenant.map(str::to_string),
        provider: Box::new(ProviderError { message: format!("{title}."), code: reason.to_string(), kind: reason.to_string() }),
    }
}

/// `ratelimit-policy` value for a budget (IETF httpapi RateLimit fields, draft 10).
pub fn policy_header(cfg: &Config, budget: usize, limit: u64, window_s: u64) -> String {
    let b = &cfg.budgets[budget];
    let mut s = format!("\"{}\";q={}", b.name, limit);
    if window_s > 0 {
        s.push_str(&format!(";w={window_s}"));
    }
    if let Some(qu) = b.counts.quota_unit() {
        s.push_str(&format!(";qu=\"{qu}\""));
    }
    s
}

/// `ratelimit` value: remaining units and seconds until they reset.
pub fn ratelimit_header(cfg: &Config, budget: usize, remaining: u64, reset_s: u64) -> String {
    format!("\"{}\";r={};t={}", cfg.budgets[budget].name, remaining, reset_s)
}

/// The 429 for a rejection.
pub fn reject_reply(cfg: &Config, policy: &TenantPolicy, tenant: &str, r: &Rejection) -> Reply {
    reject_reply_in(cfg, policy, tenant, r, None)
}

/// The 429 for a rejection; `scope` (name, id) when a scoped budget refused (SPEC 7).
pub fn reject_reply_in(cfg: &Config, policy: &TenantPolicy, tenant: &str, r: &Rejection, scope: Option<(&str, &str)>) -> Reply {
    let b = &cfg.budgets[r.budget];
    let reason = r.reason.header_value(&b.name);
    let window = policy.limits[r.budget].window;
    let reset_s = if r.reason == Reason::SaturationThrottle { r.retry_after_s } else { r.reset_s.max(if window.is_none() { 1 } else { 0 }) };
    let title = match r.reason {
        Reason::SaturationThrottle => "Tenant throttled while the service is saturated",
        _ => "Tenant quota exceeded",
    };
    let scope_json = scope.map_or(String::new(), |(sn, id)| format!(",\"scope\":\"{}\",\"scope_id\":\"{}\"", json_escape(sn), json_escape(id)));
    let body = format!(
        "{{\"type\":\"urn:tenant-quota:{}\",\"title\":\"{}\",\"status\":429,\"violated-policies\":[\"{}\"],\"error\":\"quota_exceeded\",\"reason\":\"{}\",\"budget\":\"{}\",\"tenant\":\"{}\",\"retry_after_s\":{}{}}}",
        reason,
        title,
        b.name,
        reason,
        b.name,
        json_escape(tenant),
        r.retry_after_s,
        scope_json
    );
    let mut reply = Reply {
        status: 429,
        reason: reason.clone(),
        headers: vec![
            ("retry-after".into(), r.retry_after_s.to_string()),
            ("x-tenant-quota-reason".into(), reason),
            ("x-tenant-quota-budget".into(), b.name.clone()),
            ("x-tenant-quota-limit".into(), r.limit.to_string()),
            ("x-tenant-quota-remaining".into(), "0".into()),
            ("ratelimit-policy".into(), policy_header(cfg, r.budget, r.limit, if window.is_none() { 0 } else { r.window_s })),
            ("ratelimit".into(), ratelimit_header(cfg, r.budget, 0, reset_s)),
            ("content-type".into(), "application/problem+json".into()),
        ],
        body,
        tenant: Some(tenant.to_string()),
        provider: Box::new(rejection_error(cfg, window, r, scope)),
    };
    if let Some((sn, id)) = scope {
        reply.headers.push(("x-tenant-quota-scope".into(), sn.to_string()));
        reply.headers.push(("x-tenant-quota-scope-id".into(), id.to_string()));
    }
    reply
}

/// Headers for an admitted response (enforce and shadow): the three SPEC headers for the
/// budget closest to exhaustion, and the shadow reason, handed to `add` one by one. Each
/// header is a host call, so admitted responses carry no more than these (429s carry the
/// full set); numbers are formatted on the stack, so nothing is allocated per header.
pub fn admitted_headers(a: &Admitted, mut add: impl FnMut(&'static str, &str)) {
    if let Some(u) = &a.headline {
        let mut buf = [0u8; 20];
        add("x-tenant-quota-limit", crate::wire::fmt_u64(u.limit, &mut buf));
        add("x-tenant-quota-remaining", crate::wire::fmt_u64(u.remaining(), &mut buf));
        add("x-tenant-quota-burst-remaining", crate::wire::fmt_u64(u.burst_remaining(), &mut buf));
    }
    if let Some(s) = &a.shadow {
        add("x-tenant-quota-shadow", s);
    }
    if let Some(f) = &a.fallback {
        add("x-tenant-quota-fallback", f);
    }
    if !a.warnings.is_empty() {
        add("x-tenant-quota-warning", &a.warnings.join(","));
    }
    if let Some(ms) = a.queued_ms {
        let mut buf = [0u8; 20];
        add("x-tenant-quota-queued-ms", crate::wire::fmt_u64(ms, &mut buf));
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::{json, Value};

    fn cfg() -> Config {
        Config::parse(
            br#"{"llm":{"model":{"header":"x-model"},"prices":{"m":{"input":1,"output":1}}},
                 "scopes":{"team":{"header":"x-team-id"}},
                 "budgets":{"tokens_per_minute":{"counts":{"llm_tokens":"total"},"window_ms":60000,"limit":100000},
                            "rpm":{"counts":"requests","window_ms":60000,"limit":10},
                            "per_day":{"counts":"requests","window_ms":86400000,"limit":10},
                            "spend":{"counts":"llm_cost","window":"calendar_month","limit":500},
                            "team_rpm":{"counts":"requests","window_ms":60000,"limit":6,"scope":"team"},
                            "slots":{"counts":"in_flight","limit":3}}}"#,
        )
        .unwrap()
    }

    fn refused(c: &Config, budget: &str, reset_s: u64, scope: Option<(&str, &str)>) -> Reply {
        let b = c.budget_index(budget).unwrap();
        let p = c.policy("acme");
        let window_s = p.limits[b].window.fixed_ms().unwrap_or(0) / 1000;
        let r = Rejection { budget: b, reason: Reason::Exceeded, retry_after_s: reset_s.max(1), limit: p.limits[b].limit, reset_s, queue: false, fallback: false, window_s };
        reject_reply_in(c, p, "acme", &r, scope)
    }

    fn error_of(r: &Reply, api: LlmApi) -> Value {
        let v: Value = serde_json::from_str(&r.provider_body(api)).unwrap();
        // Every other member stays as on other paths.
        let plain: Value = serde_json::from_str(&r.body).unwrap();
        for (k, x) in plain.as_object().unwrap() {
            if k != "error" {
                assert_eq!(&v[k], x, "{k}");
            }
        }
        v["error"].clone()
    }

    #[test]
    fn llm_api_paths() {
        for p in ["/v1/chat/completions", "/v1/completions", "/openai/v1/responses?x=1", "/v1/embeddings/", "/chat/completions"] {
            assert_eq!(LlmApi::of_path(p.as_bytes()), Some(LlmApi::OpenAi), "{p}");
        }
        assert_eq!(LlmApi::of_path(b"/v1/messages"), Some(LlmApi::Anthropic));
        for p in ["/", "/v1/models", "/v1/messages/batches", "/completions-old", "/v1/chat/completions/x", ""] {
            assert_eq!(LlmApi::of_path(p.as_bytes()), None, "{p}");
        }
    }

    #[test]
    fn a_token_budget_refuses_as_openai_and_anthropic_sdks_read_it() {
        let c = cfg();
        let r = refused(&c, "tokens_per_minute", 48, None);
        let msg = "Tenant quota tokens_per_minute exceeded: limit 100000 tokens per 60 s, resets in 48 s.";
        assert_eq!(error_of(&r, LlmApi::OpenAi), json!({"message": msg, "type": "tokens", "param": null, "code": "rate_limit_exceeded"}));
        assert_eq!(error_of(&r, LlmApi::Anthropic), json!({"type": "rate_limit_error", "message": msg}));
        // Elsewhere the body is unchanged.
        assert!(r.body.contains(r#""error":"quota_exceeded""#));
    }

    #[test]
    fn codes_say_whether_a_retry_soon_can_help() {
        let c = cfg();
        let e = error_of(&refused(&c, "rpm", 12, None), LlmApi::OpenAi);
        assert_eq!((e["code"].as_str(), e["type"].as_str()), (Some("rate_limit_exceeded"), Some("requests")));
        for (budget, words) in [("per_day", "10 requests per 86400 s"), ("spend", "500 cost units per calendar month")] {
            let e = error_of(&refused(&c, budget, 3600, None), LlmApi::OpenAi);
            assert_eq!((e["code"].as_str(), e["type"].as_str()), (Some("insufficient_quota"), Some("insufficient_quota")), "{budget}");
            assert!(e["message"].as_str().unwrap().contains(words), "{e}");
        }
        let e = error_of(&refused(&c, "team_rpm", 5, Some(("team", "blue"))), LlmApi::OpenAi);
        assert_eq!(e["message"], "Quota team_rpm of team blue exceeded: limit 6 requests per 60 s, resets in 5 s.");
        let e = error_of(&refused(&c, "slots", 0, None), LlmApi::OpenAi);
        assert_eq!(e["message"], "Tenant quota slots exceeded: limit 3 concurrent requests, retry in 1 s.");
    }

    #[test]
    fn other_statuses_carry_their_reason() {
        let r = plain_reply(400, "invalid_tenant", "Invalid tenant id", None);
        assert_eq!(error_of(&r, LlmApi::OpenAi), json!({"message": "Invalid tenant id.", "type": "invalid_tenant", "param": null, "code": "invalid_tenant"}));
        assert_eq!(error_of(&r, LlmApi::Anthropic)["type"], "invalid_request_error");
        let r = plain_reply(503, "quota_unavailable", "Global quota service unavailable", Some("a\"b"));
        assert_eq!(error_of(&r, LlmApi::Anthropic), json!({"type": "api_error", "message": "Global quota service unavailable."}));
        assert_eq!(error_of(&plain_reply(401, "missing_tenant", "Missing tenant", None), LlmApi::Anthropic)["type"], "authentication_error");
    }
}
