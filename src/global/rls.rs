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

/// The service's unit for a window (config refuses other windows for global budgets).
pub fn unit(window_ms: u64) -> i32 {
    match window_ms {
        1000 => 1,
        60_000 => 2,
        3_600_000 => 3,
        _ => 4,
    }
}

/// One (tenant, budget) descriptor: entries `tenant`, `budget`, and `window`, the index of
/// the epoch-aligned window the units belong to. With envoyproxy/ratelimit's key layout
/// (`domain_tenant_<id>_budget_<name>_window_<index>_<window start>`) units sent late, or
/// read back across a window edge by a skewed clock, land in a key that no other window
/// reads, instead of being charged to the next window.
pub fn descriptor(tenant: &str, budget: &str, window_ms: u64, window_start: u64, cap: u64, hits: u64) -> RateLimitDescriptor {
    let index = window_start / window_ms.max(1);
    RateLimitDescriptor {
        entries: vec![
            Entry { key: "tenant".into(), value: tenant.into() },
            Entry { key: "budget".into(), value: budget.into() },
            Entry { key: "window".into(), value: index.to_string() },
        ],
        limit: Some(RateLimitOverride { requests_per_unit: cap.min(u64::from(u32::MAX)) as u32, unit: unit(window_ms) }),
        hits_addend: Some(UInt64Value { value: hits }),
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

/// Decode an answer to `sent` descriptors into one [`Answer`] each, in order. Any doubt is
/// an error, never "at the limit".
pub fn decode(bytes: &[u8], sent: usize) -> Result<Vec<Answer>, AnswerError> {
    let r: RateLimitResponse = prost::Message::decode(bytes).map_err(|_| AnswerError::Undecodable)?;
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
