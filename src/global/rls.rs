//! The RLS v3 messages tenant-quota sends and reads, hand-written with `prost` (the
//! `envoy-types` crate does not build for wasm32). Field tags are those of
//! `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`; fields we never use are left out
//! (protobuf decoders skip unknown fields).

use super::Answer;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Request-level hits; 0 means 1 on the wire (proto3), so we use the per-descriptor one.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `RateLimitUnit`: SECOND 1, MINUTE 2, HOUR 3, DAY 4.
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.UInt64Value`: lets a descriptor say "0 hits" (a read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    /// UNKNOWN 0, OK 1, OVER_LIMIT 2.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
    #[prost(string, tag = "3")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

/// `RateLimitUnit` YEAR: 365 days from the epoch (envoyproxy/ratelimit's divider).
pub const UNIT_YEAR: i32 = 5;
const YEAR_MS: u64 = 365 * 86_400_000;

/// The service's unit for a window (config refuses other windows for global budgets). A
/// calendar month or a billing cycle is counted in the service's YEAR with the month or the
/// cycle in an entry of its own.
pub fn unit(window: Window) -> i32 {
    match window.fixed_ms() {
        Some(1000) => 1,
        Some(60_000) => 2,
        Some(3_600_000) => 3,
        Some(86_400_000) => 4,
        _ => UNIT_YEAR,
    }
}

/// The service's epoch-aligned YEAR (365 days) that `now` falls in: a calendar month's key
/// changes when one ends (see `core::global_slot`).
pub fn epoch_year(now: u64) -> u64 {
    now / YEAR_MS
}

/// The scale of a cap: 1 while it fits the protocol's 32-bit `requests_per_unit`, else the
/// smallest whole number of units per service unit that makes it fit (SPEC 8). The override
/// is sent rounded down and every `hits_addend` rounded up, so the service never counts less
/// than was admitted and never admits more than the cap.
pub fn scale(cap: u64) -> u64 {
    cap.div_ceil(u64::from(u32::MAX)).max(1)
}

pub use crate::core::Subject;
use crate::core::Window;

/// One (subject, budget) descriptor: entries `(tenant|<scope>, id)` ([`Subject::entry`]), `("budget", name)`, and
/// for a calendar month `("month", "YYYY-MM")`, for a billing cycle `("cycle", "YYYY-MM-DD")`
/// (the local date the cycle starts on). No entry of a fixed window changes with the window
/// (the service keys its counters by window itself, and keeps a set of stats counters for
/// every distinct descriptor for the life of its process: research note D1), so what the
/// service holds per subject and budget is one descriptor, or one per month for calendar
/// months and monthly cycles, one per day for daily cycles.
pub fn descriptor(who: Subject<'_>, budget: &str, window: Window, window_start: u64, cap: u64, hits: u64) -> RateLimitDescriptor {
    let mut entries = vec![Entry { key: who.entry().into(), value: who.id().into() }, Entry { key: "budget".into(), value: budget.into() }];
    match window {
        Window::CalendarMonth => {
            let (y, m, _) = crate::core::month::civil_from_days(window_start / 86_400_000);
            entries.push(Entry { key: "month".into(), value: format!("{y:04}-{m:02}") });
        }
        Window::Cycle(c) => {
            let (y, m, d) = c.local_date(window_start);
            entries.push(Entry { key: "cycle".into(), value: format!("{y:04}-{m:02}-{d:02}") });
        }
        _ => {}
    }
    let k = scale(cap);
    RateLimitDescriptor {
        entries,
        limit: Some(RateLimitOverride { requests_per_unit: (cap / k).min(u64::from(u32::MAX)) as u32, unit: unit(window) }),
        hits_addend: Some(UInt64Value { value: hits.div_ceil(k) }),
    }
}

/// An answer in the service's (scaled) units, back in the budget's units.
pub fn unscale(a: Answer, cap: u64) -> Answer {
    let k = scale(cap);
    match a {
        Answer::Total(t) => Answer::Total(t.saturating_mul(k)),
        Answer::Over { cap } => Answer::Over { cap: cap.saturating_mul(k) },
    }
}

pub fn encode(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> Vec<u8> {
    prost::Message::encode_to_vec(&RateLimitRequest { domain: domain.to_string(), descriptors, hits_addend: 0 })
}

/// Why an answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    Undecodable,
    /// The answer has a different number of statuses than descriptors sent (Limitador
    /// answers with none at all).
    Statuses { sent: usize, got: usize },
    /// A status without `current_limit`: the service did not apply our limit override
    /// (envoyproxy/ratelimit does that for a domain it is not configured with).
    NoLimit(usize),
    UnknownCode(usize, i32),
}

/// One status of an answer: the verdict and, when the service said, the time until its
/// window resets (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub answer: Answer,
    pub reset_ms: Option<u64>,
}

/// Like [`decode`], with each status's `duration_until_reset`.
pub fn decode_statuses(bytes: &[u8], sent: usize) -> Result<Vec<Status>, AnswerError> {
    let r: RateLimitResponse = prost::Message::decode(bytes).map_err(|_| AnswerError::Undecodable)?;
    let answers = answers_of(&r, sent)?;
    Ok(answers
        .into_iter()
        .zip(&r.statuses)
        .map(|(answer, s)| Status {
            answer,
            reset_ms: s.duration_until_reset.as_ref().map(|d| (d.seconds.max(0) as u64).saturating_mul(1000).saturating_add((d.nanos.max(0) as u64) / 1_000_000)),
        })
        .collect())
}

/// Decode an answer to `sent` descriptors into one [`Answer`] each, in order. Any doubt is
/// an error, never "at the limit".
pub fn decode(bytes: &[u8], sent: usize) -> Result<Vec<Answer>, AnswerError> {
    let r: RateLimitResponse = prost::Message::decode(bytes).map_err(|_| AnswerError::Undecodable)?;
    answers_of(&r, sent)
}

fn answers_of(r: &RateLimitResponse, sent: usize) -> Result<Vec<Answer>, AnswerError> {
    if r.statuses.len() != sent {
        return Err(AnswerError::Statuses { sent, got: r.statuses.len() });
    }
    r.statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(cl) = &s.current_limit else { return Err(AnswerError::NoLimit(i)) };
            // The count is read against the limit the service applied (normally our override).
            let limit = u64::from(cl.requests_per_unit);
            match s.code {
                CODE_OK => Ok(Answer::Total(limit.saturating_sub(u64::from(s.limit_remaining)))),
                CODE_OVER_LIMIT => Ok(Answer::Over { cap: limit }),
                c => Err(AnswerError::UnknownCode(i, c)),
            }
        })
        .collect()
}

/// Like [`decode`], for an `exact` check: an answer without statuses (Limitador's) is read
/// from its `overall_code` alone, since the request's admission needs nothing more; the
/// service's count then stays unknown (`remote` is not learned).
pub fn decode_check(bytes: &[u8], sent: usize) -> Result<Vec<Answer>, AnswerError> {
    match decode(bytes, sent) {
        Err(AnswerError::Statuses { got: 0, .. }) => {
            let r: RateLimitResponse = prost::Message::decode(bytes).map_err(|_| AnswerError::Undecodable)?;
            match r.overall_code {
                CODE_OK => Ok(vec![Answer::Total(0); sent]),
                CODE_OVER_LIMIT => Ok(vec![Answer::Over { cap: 0 }; sent]),
                c => Err(AnswerError::UnknownCode(0, c)),
            }
        }
        other => other,
    }
}
