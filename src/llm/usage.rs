//! Token usage read from an LLM response body while it streams through, chunk by chunk.
//!
//! [`UsageParser`] is built from the response's `content-type`, fed every body chunk as the
//! host hands it over ([`UsageParser::feed`]; chunks are cut at arbitrary bytes, even inside a
//! `\r\n`), and finished at end of stream ([`UsageParser::finish`]). Memory is bounded by
//! [`UsageLimits`] whatever the upstream sends; when a bound is hit the usage is reported
//! missing (or read from the events that fit) and the skip is counted in [`UsageStats`].
//!
//! Shapes read (SPEC section 5):
//! - JSON bodies: the top-level `usage` object. OpenAI Chat/Completions `prompt_tokens`,
//!   `completion_tokens`; OpenAI Responses `input_tokens`, `output_tokens`; Anthropic
//!   Messages `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens`,
//!   `output_tokens`.
//! - `text/event-stream`: events per the WHATWG SSE rules (lines end in `\n`, `\r\n` or
//!   `\r`; `data:` lines of one event joined with `\n`; a blank line dispatches). An event's
//!   `usage` object at the top level (OpenAI chunks with a non-null `usage`, Anthropic
//!   `message_delta`), under `message` (Anthropic `message_start`) or under `response`
//!   (Responses `response.completed`, also `response.incomplete` / `response.failed`, whose
//!   `usage` is non-null; the earlier `response.*` events carry `"usage": null`).
//!   Each count is kept per field and the last value seen wins: Anthropic's `output_tokens`
//!   is cumulative (never summed), and a `message_delta` that repeats the input counts (as
//!   newer Anthropic versions and some compatible backends do) replaces them.
//!
//! Hot path: an event is handed to the JSON parser only when its text has a `"usage"` key
//! whose value is an object (`"usage": {`). OpenAI chunks sent with `include_usage` carry
//! `"usage": null` on every delta and are not parsed; a generated text that mentions
//! `"usage"` is escaped (`\"usage\"`) and does not match.

use super::json::{next, next_obj, Fields, Obj};
use serde::de::MapAccess;

/// Default bound on a buffered JSON response body (1 MiB).
pub const DEFAULT_MAX_JSON_BYTES: usize = 1 << 20;
/// Default bound on one SSE event's joined `data` (64 KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 << 10;

/// Tokens of one response. Anthropic's cache writes and reads count as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    /// `input + output`, saturating.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
    /// The tokens a budget of this kind counts.
    pub fn tokens(self, kind: crate::core::budget::TokenKind) -> u64 {
        use crate::core::budget::TokenKind;
        match kind {
            TokenKind::Input => self.input,
            TokenKind::Output => self.output,
            TokenKind::Total => self.total(),
        }
    }
}

/// How a response body is read, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`, any `*/json` or `*+json`, or no `content-type` at all: buffered
    /// (bounded) and parsed at end of stream.
    Json,
    /// `text/event-stream`: parsed event by event.
    EventStream,
    /// Anything else: not read (usage missing).
    Other,
}

impl BodyFormat {
    /// The format for a `content-type` header value (media type compared case-insensitively,
    /// parameters such as `charset` ignored).
    pub fn from_content_type(content_type: Option<&str>) -> BodyFormat {
        let Some(ct) = content_type else { return BodyFormat::Json };
        let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if media == "text/event-stream" {
            BodyFormat::EventStream
        } else if media.is_empty() || media.ends_with("/json") || media.ends_with("+json") {
            BodyFormat::Json
        } else {
            BodyFormat::Other
        }
    }
}

/// Memory bounds of one [`UsageParser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLimits {
    /// A JSON body longer than this is not buffered further: usage missing,
    /// [`UsageStats::json_over_limit`] set.
    pub max_json_bytes: usize,
    /// An SSE event whose joined `data` is longer than this is skipped: what was buffered
    /// is dropped, the rest of the event discarded up to the next blank line, and it counts
    /// in [`UsageStats::skipped_events`].
    pub max_event_bytes: usize,
}

impl Default for UsageLimits {
    fn default() -> Self {
        UsageLimits { max_json_bytes: DEFAULT_MAX_JSON_BYTES, max_event_bytes: DEFAULT_MAX_EVENT_BYTES }
    }
}

/// What the parser saw, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageStats {
    /// SSE events dispatched with a `data` field (skipped ones included).
    pub events: u64,
    /// Documents handed to the JSON parser: SSE events with a `"usage": {` key, or the JSON
    /// body at end of stream.
    pub parsed: u64,
    /// SSE events skipped for being over `max_event_bytes`.
    pub skipped_events: u64,
    /// Body bytes dropped unread because of a bound (a skipped event's `data` bytes; the
    /// whole body of a JSON response over `max_json_bytes`).
    pub skipped_bytes: u64,
    /// The JSON body was over `max_json_bytes`.
    pub json_over_limit: bool,
}

/// Reads [`Usage`] from a response body fed in chunks; see the module docs.
#[derive(Debug)]
pub struct UsageParser {
    format: BodyFormat,
    limits: UsageLimits,
    tally: Tally,
    stats: UsageStats,
    finished: bool,
    /// The JSON body so far (JSON format only), at most `max_json_bytes`.
    json: Vec<u8>,
    sse: Sse,
}

impl UsageParser {
    /// A parser for a response with this `content-type`, with the default limits.
    pub fn new(content_type: Option<&str>) -> UsageParser {
        UsageParser::with_limits(BodyFormat::from_content_type(content_type), UsageLimits::default())
    }

    pub fn with_limits(format: BodyFormat, limits: UsageLimits) -> UsageParser {
        UsageParser {
            format,
            limits,
            tally: Tally::default(),
            stats: UsageStats::default(),
            finished: false,
            json: Vec::new(),
            sse: Sse { first_line: true, ..Sse::default() },
        }
    }

    pub fn format(&self) -> BodyFormat {
        self.format
    }

    /// Reads the next body chunk (any length, cut anywhere). Ignored after [`finish`](Self::finish).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.finished || chunk.is_empty() {
            return;
        }
        match self.format {
            BodyFormat::Json => self.feed_json(chunk),
            BodyFormat::EventStream => self.feed_sse(chunk),
            BodyFormat::Other => {}
        }
    }

    /// Ends the body: parses a buffered JSON body, dispatches an SSE event left without its
    /// closing blank line (a stream cut short may still have reported usage), frees the
    /// buffers, and returns the usage (`None`: missing). Calling it again returns the same.
    pub fn finish(&mut self) -> Option<Usage> {
        if !self.finished {
            self.finished = true;
            match self.format {
                BodyFormat::Json => {
                    let body = std::mem::take(&mut self.json);
                    if !self.stats.json_over_limit && !body.is_empty() {
                        self.stats.parsed += 1;
                        if let Ok(Obj(Some(doc))) = serde_json::from_slice::<Obj<Doc>>(&body) {
                            // A JSON body's usage is its top-level `usage` only.
                            self.tally.apply(doc.usage.as_ref());
                        }
                    }
                }
                BodyFormat::EventStream => {
                    self.sse.after_cr = false;
                    self.end_line();
                    self.dispatch();
                    self.sse.data = Vec::new();
                }
                BodyFormat::Other => {}
            }
        }
        self.usage()
    }

    /// The usage read so far (an SSE stream's is known before its end; a JSON body's only
    /// after [`finish`](Self::finish)). `None` until some count was seen.
    pub fn usage(&self) -> Option<Usage> {
        self.tally.usage()
    }

    /// Whether some usage count was seen.
    pub fn found(&self) -> bool {
        self.usage().is_some()
    }

    pub fn stats(&self) -> UsageStats {
        self.stats
    }

    /// Bytes of buffer memory held (capacity), at most `max_json_bytes` for a JSON body and
    /// `max_event_bytes` for an event stream.
    pub fn retained_bytes(&self) -> usize {
        self.json.capacity() + self.sse.data.capacity()
    }

    fn feed_json(&mut self, chunk: &[u8]) {
        if self.stats.json_over_limit {
            self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(chunk.len() as u64);
            return;
        }
        let len = self.json.len().saturating_add(chunk.len());
        if len > self.limits.max_json_bytes {
            self.stats.json_over_limit = true;
            self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(len as u64);
            self.json = Vec::new();
            return;
        }
        extend_bounded(&mut self.json, chunk, self.limits.max_json_bytes);
    }

    fn feed_sse(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            if self.sse.after_cr {
                self.sse.after_cr = false;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                self.sse.after_cr = b == b'\r';
                self.end_line();
                i += 1;
                continue;
            }
            match self.sse.line {
                Line::Field if self.sse.name_len == 0 && starts_with(chunk.get(i..).unwrap_or_default(), b"data:") => {
                    // The usual line start, whole in this chunk: what reading `data`, its
                    // colon (and the one space after it) byte by byte does.
                    self.sse.name[..4].copy_from_slice(b"data");
                    self.sse.name_len = 4;
                    self.begin_data_line();
                    i += 5;
                    if chunk.get(i) == Some(&b' ') {
                        i += 1;
                        self.sse.line = Line::Data;
                    } else {
                        self.sse.line = Line::DataStart;
                    }
                }
                Line::Field => {
                    if b == b':' {
                        self.begin_value();
                    } else {
                        self.sse.push_name(b);
                    }
                    i += 1;
                }
                Line::DataStart => {
                    // One space after the colon belongs to the syntax, not the value.
                    self.sse.line = Line::Data;
                    if b == b' ' {
                        i += 1;
                    }
                }
                Line::Data | Line::Ignore => {
                    let rest = chunk.get(i..).unwrap_or_default();
                    let end = super::scan::find2(rest, b'\n', b'\r').unwrap_or(rest.len());
                    if self.sse.line == Line::Data {
                        self.push_data(rest.get(..end).unwrap_or_default());
                    }
                    i += end;
                }
            }
        }
    }

    /// After a field name and its colon.
    fn begin_value(&mut self) {
        if self.sse.field_is_data() {
            self.begin_data_line();
            self.sse.line = Line::DataStart;
        } else {
            // `event`, `id`, `retry`, comments (empty name) and unknown fields: the event
            // type is not needed, every shape read says what it is in its JSON.
            self.sse.line = Line::Ignore;
        }
    }

    fn begin_data_line(&mut self) {
        if self.sse.has_data {
            self.push_data(b"\n");
        }
        self.sse.has_data = true;
    }

    fn end_line(&mut self) {
        if self.sse.line == Line::Field {
            if self.sse.name_len == 0 {
                self.dispatch();
            } else if self.sse.field_is_data() {
                // `data` without a colon: an empty data line.
                self.begin_data_line();
            }
        }
        self.sse.line = Line::Field;
        self.sse.name_len = 0;
        self.sse.first_line = false;
    }

    fn push_data(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let sse = &mut self.sse;
        if sse.oversized {
            self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(bytes.len() as u64);
            return;
        }
        let len = sse.data.len().saturating_add(bytes.len());
        if len > self.limits.max_event_bytes {
            sse.oversized = true;
            sse.data.clear();
            self.stats.skipped_events += 1;
            self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(len as u64);
            return;
        }
        extend_bounded(&mut sse.data, bytes, self.limits.max_event_bytes);
    }

    fn dispatch(&mut self) {
        if self.sse.has_data {
            self.stats.events += 1;
            if !self.sse.oversized && has_usage_object(&self.sse.data) {
                self.stats.parsed += 1;
                if let Ok(Obj(Some(doc))) = serde_json::from_slice::<Obj<Doc>>(&self.sse.data) {
                    self.tally.apply(doc.usage.as_ref());
                    self.tally.apply(doc.message.as_ref().and_then(|m| m.usage.as_ref()));
                    self.tally.apply(doc.response.as_ref().and_then(|r| r.usage.as_ref()));
                }
            }
        }
        self.sse.data.clear();
        self.sse.has_data = false;
        self.sse.oversized = false;
    }
}

/// Appends `bytes` (the caller checked `v.len() + bytes.len() <= max`) growing the capacity
/// by doubling but never past `max`.
fn extend_bounded(v: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let need = v.len() + bytes.len();
    if need > v.capacity() {
        let target = v.capacity().saturating_mul(2).max(need).max(256).min(max).max(need);
        v.reserve_exact(target - v.len());
    }
    v.extend_from_slice(bytes);
}

/// Whether `data` has a `"usage"` key whose value is an object: `"usage"`, JSON whitespace,
/// `:`, whitespace, `{`. Inside a JSON string a quote is escaped, so generated text cannot
/// produce this sequence.
fn has_usage_object(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    // Scan for the key's `g` (rare in the keys of every shape read, and in most text), then
    // look around it.
    const G: usize = 4; // KEY[G] == b'g'
    let mut from = G;
    while let Some(rest) = data.get(from..) {
        let Some(g) = super::scan::find(rest, b'g') else { return false };
        let at = from + g - G;
        if starts_with(data.get(at..).unwrap_or_default(), KEY) {
            let after = data.get(at + KEY.len()..).unwrap_or_default();
            let mut it = after.iter().copied().filter(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
            if it.next() == Some(b':') && it.next() == Some(b'{') {
                return true;
            }
        }
        from = from + g + 1;
    }
    false
}

/// `s` starts with the short `prefix`, compared byte by byte (a slice comparison is a call
/// to `memcmp` on wasm32, dearer than a few compares).
#[inline]
fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Where the parser is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Line {
    /// Reading the field name (up to a colon or the end of the line).
    #[default]
    Field,
    /// Just after `data:`: a single leading space is dropped.
    DataStart,
    /// Inside a data value: bytes go to the event's data.
    Data,
    /// Inside any other field's value or a comment: discarded.
    Ignore,
}

/// The event-stream state carried between chunks: a few flags, a short field-name buffer
/// and the current event's data (at most `max_event_bytes`). No line is buffered: data
/// values are appended to the event as they arrive, everything else is dropped.
#[derive(Debug, Default)]
struct Sse {
    line: Line,
    /// The first bytes of the current field name (enough for a BOM and `data`).
    name: [u8; 8],
    /// The field name's full length so far (may exceed `name.len()`).
    name_len: usize,
    /// The last byte seen was `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    /// Still on the stream's first line (where a UTF-8 BOM is dropped).
    first_line: bool,
    /// The current event's data lines joined with `\n`.
    data: Vec<u8>,
    /// The current event has a data line (possibly empty).
    has_data: bool,
    /// The current event went over the bound: its data is discarded until it ends.
    oversized: bool,
}

impl Sse {
    fn push_name(&mut self, b: u8) {
        if let Some(slot) = self.name.get_mut(self.name_len) {
            *slot = b;
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn field_is_data(&self) -> bool {
        let Some(name) = self.name.get(..self.name_len) else { return false };
        let name = if self.first_line { name.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(name) } else { name };
        name == b"data"
    }
}

/// Token counts seen so far, per field; the last value of each wins.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

impl Tally {
    fn apply(&mut self, counts: Option<&Counts>) {
        let Some(c) = counts else { return };
        if let Some(v) = c.prompt_tokens.or(c.input_tokens) {
            self.input = Some(v);
        }
        if let Some(v) = c.cache_creation_input_tokens {
            self.cache_creation = Some(v);
        }
        if let Some(v) = c.cache_read_input_tokens {
            self.cache_read = Some(v);
        }
        if let Some(v) = c.completion_tokens.or(c.output_tokens) {
            self.output = Some(v);
        }
    }

    fn usage(&self) -> Option<Usage> {
        let Tally { input, cache_creation, cache_read, output } = *self;
        if input.is_none() && cache_creation.is_none() && cache_read.is_none() && output.is_none() {
            return None;
        }
        let input = input.unwrap_or(0).saturating_add(cache_creation.unwrap_or(0)).saturating_add(cache_read.unwrap_or(0));
        Some(Usage { input, output: output.unwrap_or(0) })
    }
}

/// The parts of a JSON body or SSE event that can carry usage.
#[derive(Default)]
struct Doc {
    usage: Option<Counts>,
    /// Anthropic `message_start`: `message.usage`.
    message: Option<Holder>,
    /// OpenAI Responses `response.*`: `response.usage`.
    response: Option<Holder>,
}

impl Fields for Doc {
    const KEYS: &'static [&'static str] = &["usage", "message", "response"];
    fn set<'de, A: MapAccess<'de>>(&mut self, key: usize, map: &mut A) -> Result<(), A::Error> {
        match key {
            0 => self.usage = next_obj(map)?,
            1 => self.message = next_obj(map)?,
            _ => self.response = next_obj(map)?,
        }
        Ok(())
    }
}

/// An object with a `usage` member.
#[derive(Default)]
struct Holder {
    usage: Option<Counts>,
}

impl Fields for Holder {
    const KEYS: &'static [&'static str] = &["usage"];
    fn set<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.usage = next_obj(map)?;
        Ok(())
    }
}

/// A `usage` object: the union of the three APIs' count fields (each must be a non-negative
/// integer; anything else reads as absent).
#[derive(Default)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl Fields for Counts {
    const KEYS: &'static [&'static str] = &[
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ];
    fn set<'de, A: MapAccess<'de>>(&mut self, key: usize, map: &mut A) -> Result<(), A::Error> {
        let v = next::<A, u64>(map)?;
        match key {
            0 => self.prompt_tokens = v,
            1 => self.completion_tokens = v,
            2 => self.input_tokens = v,
            3 => self.output_tokens = v,
            4 => self.cache_creation_input_tokens = v,
            _ => self.cache_read_input_tokens = v,
        }
        Ok(())
    }
}
