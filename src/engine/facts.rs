//! What the engine reads of a request, and the parsers of header values.

use crate::config::{Config, Counts, ModelSource, Priority};
use crate::core::Millis;

/// A request's headers as the host shows them. The filter reads the facts a configuration
/// needs through it once, before the decision; the engine itself never reads headers.
pub trait Headers {
    /// `f` of a request header's value (lower-case name, pseudo-headers included), if present.
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R>;
}

/// Which request headers a configuration reads. Computed in one pass over the budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// `x-tenant-quota-priority` (only saturation uses it).
    pub priority: bool,
    pub method: bool,
    pub path: bool,
    /// The model header, for LLM budgets or budgets matched by model.
    pub model: bool,
    pub content_length: bool,
    /// Budgets counting a request header's value.
    pub cost_headers: usize,
}

impl Needs {
    pub fn of(cfg: &Config) -> Needs {
        let mut n = Needs { priority: cfg.saturation.is_some(), ..Needs::default() };
        let mut llm = false;
        for b in &cfg.budgets {
            n.method |= !b.matcher.methods.is_empty();
            n.path |= b.matcher.path_prefix.is_some();
            llm |= b.counts.is_llm() || !b.matcher.models.is_empty();
            n.content_length |= b.counts == Counts::RequestBytes;
            n.cost_headers += usize::from(matches!(b.counts, Counts::RequestHeader(_)));
        }
        n.model = llm && matches!(cfg.llm.model, Some(ModelSource::Header(_)));
        n
    }
}

/// What the engine uses of a request, read by the filter once ([`RequestFacts::read`]) and
/// handed over as data. Kept as is while the request waits in a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The tenant id as read from the header or property (None: absent).
    pub tenant: Option<Vec<u8>>,
    /// Each scope's id as read (by scope index; None: absent). Empty without scopes.
    pub scope_ids: Vec<Option<Vec<u8>>>,
    /// The request has no body (headers carried end_of_stream).
    pub end_of_stream: bool,
    /// The priority the request asks for (read only under saturation).
    pub priority: Option<Priority>,
    /// `:method` and `:path`, read only when some budget matches on them (else empty).
    pub method: String,
    pub path: String,
    /// The model header's value, when the model comes from a header and a budget needs it.
    pub model: Option<String>,
    /// `content-length`, read only for `request_bytes` budgets (None: absent or invalid).
    pub content_length: Option<u64>,
    /// The value of each `request_header` budget's header, by budget index, in config order.
    pub costs: Vec<(usize, HeaderUnits)>,
    /// What the JSON request body said, when it was read before admission (SPEC 5).
    pub llm_body: Option<LlmBody>,
    /// Set when the request was sent to a fallback: decided again, once, without the budget
    /// that sent it there.
    pub rerouted: Option<Rerouted>,
}

/// A request sent to a fallback (a budget's, or a cooling provider's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rerouted {
    /// The budget whose `on_exceed: fallback` sent it (None: its provider was cooling). It
    /// neither decides nor counts the rerouted request.
    pub budget: Option<usize>,
    /// The `x-tenant-quota-fallback` response header's value.
    pub header: String,
}

/// A cost header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderUnits {
    Absent,
    Units(u64),
    /// Present but not a non-negative decimal integer.
    Invalid,
}

impl RequestFacts {
    /// Read the facts `cfg` needs from `h`; the tenant and scope ids are read by the filter
    /// (a header or a property).
    pub fn read(cfg: &Config, h: &mut impl Headers, tenant: Option<Vec<u8>>, scope_ids: Vec<Option<Vec<u8>>>, end_of_stream: bool) -> RequestFacts {
        RequestFacts::read_needing(cfg, Needs::of(cfg), h, tenant, scope_ids, end_of_stream)
    }

    /// [`RequestFacts::read`] with the configuration's [`Needs`] already known.
    pub fn read_needing(cfg: &Config, needs: Needs, h: &mut impl Headers, tenant: Option<Vec<u8>>, scope_ids: Vec<Option<Vec<u8>>>, end_of_stream: bool) -> RequestFacts {
        let mut text = |name: &str| h.with(name, |v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let method = if needs.method { text(":method") } else { String::new() };
        let path = if needs.path { text(":path") } else { String::new() };
        let priority = if needs.priority { h.with("x-tenant-quota-priority", |v| parse_priority(trim(v))).flatten() } else { None };
        let model = match &cfg.llm.model {
            Some(ModelSource::Header(name)) if needs.model => h.with(name, |v| String::from_utf8(trim(v).to_vec()).ok()).flatten().filter(|m| !m.is_empty()),
            _ => None,
        };
        let content_length = if needs.content_length { h.with("content-length", parse_units).flatten() } else { None };
        let mut costs = Vec::new();
        if needs.cost_headers > 0 {
            for (i, b) in cfg.budgets.iter().enumerate() {
                if let Counts::RequestHeader(name) = &b.counts {
                    let units = h.with(name, |v| parse_units(v).map_or(HeaderUnits::Invalid, HeaderUnits::Units));
                    costs.push((i, units.unwrap_or(HeaderUnits::Absent)));
                }
            }
        }
        RequestFacts { tenant, scope_ids, end_of_stream, priority, method, path, model, content_length, costs, llm_body: None, rerouted: None }
    }

    /// A `request_header` budget's units.
    pub fn cost(&self, budget: usize) -> HeaderUnits {
        self.costs.iter().find(|(b, _)| *b == budget).map_or(HeaderUnits::Absent, |(_, u)| *u)
    }
}

/// What the host says about the moment of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    pub now: Millis,
    /// Current saturation level (0 normal, 1 elevated, 2 critical).
    pub level: u8,
    /// The rate limit service has not answered for long enough (SPEC 8).
    pub global_degraded: bool,
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
