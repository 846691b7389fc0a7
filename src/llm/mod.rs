//! LLM usage budgets (SPEC section 5), the pure part: usage read from response bodies fed
//! chunk by chunk ([`usage`]), prices and model patterns ([`price`]), request fields, the
//! reserve estimate and the `include_usage` rewrite ([`request`]), and UTC calendar months
//! ([`month`]). Nothing here touches the host; `filter/` feeds it bytes and headers.
//!
//! Every reader is bounded (JSON bodies, SSE events, request bodies) and total: malformed,
//! oversized or unexpected input gives "no usage" / "no fields", counted, never an error or
//! a panic.

mod json;
pub mod price;
pub mod request;
mod scan;
pub mod usage;

pub use price::{cost, matches_any, model_matches, Price, Prices};
pub use request::{inspect, Inspected, LlmRequest};
pub use usage::{BodyFormat, Usage, UsageLimits, UsageParser, UsageStats};

#[cfg(test)]
mod tests;
