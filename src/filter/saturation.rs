//! Saturation signals in shared data, so every worker throttles on the same view.
//! Readings from responses (ORCA, plain headers, measured latency) are published under
//! `tq1|sig|<name>`; the filter's own in-flight count across workers is a CAS counter
//! (`store::counter`); operator values come from the admin API. Each worker recomputes
//! the level at most every [`RECOMPUTE_MS`] and lowers it only after [`HOLD_MS`].

use super::host::{self, map, HostStore};
use super::metrics::Metrics;
use crate::admin;
use crate::config::{Config, Saturation, SignalSource};
use crate::core::saturation::{self as sat, Hysteresis, Reading};
use crate::core::Millis;
use crate::store::{counter, SharedStore, StoreError};

/// A worker re-reads the shared signals (one shared-data get each, ~10k instructions) at
/// most this often; its own readings it sees at once.
pub const RECOMPUTE_MS: u64 = 25;
pub const HOLD_MS: u64 = 1000;
/// A worker republishes an unchanged reading at most this often.
const REPUBLISH_MS: u64 = 100;
/// A worker reads the upstream's load headers at most this often (they are stripped always).
const SAMPLE_MS: u64 = 20;
/// A worker folds its in-flight changes into the shared count at most this often (and on tick).
pub const FLUSH_MS: u64 = 5;
const ORCA_HEADER: &str = "endpoint-load-metrics";

fn signal_key(name: &str) -> String {
    crate::store::keys::signal(name)
}

#[derive(Default)]
pub struct SaturationState {
    next_recompute: Millis,
    hysteresis: Hysteresis,
    pub level: u8,
    /// Last values seen (for status), per signal.
    pub readings: Vec<Option<Reading>>,
    /// Last value this worker published, and when, per signal.
    published: Vec<Option<Reading>>,
    latency_ewma: Option<f64>,
    keys: Vec<String>,
    /// Whether any signal counts in-flight requests.
    pub counts_in_flight: bool,
    /// This worker's in-flight changes not yet folded into the shared count.
    pub pending_in_flight: i64,
    next_flush: Millis,
    next_sample: Millis,
    /// `saturation_<signal>` gauge names, and the values last recorded (gauges, then the
    /// level): an unchanged gauge costs no host call.
    gauge_names: Vec<String>,
    recorded: Vec<Option<u64>>,
}

impl SaturationState {
    pub fn new(cfg: &Config) -> SaturationState {
        let Some(s) = &cfg.saturation else { return SaturationState::default() };
        SaturationState {
            readings: vec![None; s.signals.len()],
            published: vec![None; s.signals.len()],
            keys: s.signals.iter().map(|g| signal_key(&g.name)).collect(),
            counts_in_flight: s.signals.iter().any(|g| g.source == SignalSource::InFlight),
            gauge_names: s.signals.iter().map(|g| crate::metric_names::saturation_gauge(&g.name)).collect(),
            recorded: vec![None; s.signals.len() + 1],
            ..SaturationState::default()
        }
    }

    /// The current level (0 normal, 1 elevated, 2 critical).
    pub fn level(&mut self, cfg: &Config, now: Millis, metrics: &mut Metrics) -> u8 {
        let Some(s) = &cfg.saturation else { return sat::NORMAL };
        self.flush(now, false);
        if now < self.next_recompute {
            return self.level;
        }
        self.next_recompute = now.saturating_add(RECOMPUTE_MS);
        let operator = if cfg.admin.is_some() { admin::operator_values(&HostStore, now) } else { Vec::new() };
        let mut buf = Vec::new();
        for (i, g) in s.signals.iter().enumerate() {
            let source = match g.source {
                SignalSource::InFlight => counter::read_in_flight(&HostStore, &mut buf).map(|v| Reading { value: v as f64, at_ms: now }),
                SignalSource::Operator => None,
                _ => match HostStore.get(&self.keys[i], &mut buf) {
                    Ok(Some(_)) => sat::decode_reading(&buf),
                    _ => None,
                },
            };
            let op = operator.iter().find(|(k, _)| k == &g.name).map(|(_, v)| Reading { value: *v, at_ms: now });
            self.readings[i] = sat::combine(source, op, now, s.stale_after_ms);
        }
        let raw = sat::raw_level(s, &self.readings, now);
        self.level = self.hysteresis.next(raw, now, HOLD_MS);
        self.record_gauges(s, metrics);
        self.level
    }

    /// Fold this worker's in-flight changes into the shared all-tenant count: one CAS per
    /// [`FLUSH_MS`] instead of two per request. `force` flushes now (tick).
    pub fn flush(&mut self, now: Millis, force: bool) {
        if self.pending_in_flight == 0 || (!force && now < self.next_flush) {
            return;
        }
        self.next_flush = now.saturating_add(FLUSH_MS);
        if counter::add_in_flight(&HostStore, self.pending_in_flight).is_ok() {
            self.pending_in_flight = 0;
        }
    }

    /// Read the upstream's load reports from response headers (sampled) and publish them;
    /// strip them from the client's response unless configured to keep them.
    pub fn observe_response(&mut self, cfg: &Config, now: Millis, latency_ms: Option<u64>) {
        let Some(s) = &cfg.saturation else { return };
        if now < self.next_sample {
            if !s.expose_signal_headers {
                strip(s);
            }
            return;
        }
        self.next_sample = now.saturating_add(SAMPLE_MS);
        let mut orca: Option<Option<Vec<u8>>> = None;
        for (i, g) in s.signals.iter().enumerate() {
            let value = match &g.source {
                SignalSource::Orca(m) => {
                    let h = orca.get_or_insert_with(|| host::header(map::RESPONSE_HEADERS, ORCA_HEADER));
                    h.as_deref().and_then(|h| sat::parse_orca(h, m))
                }
                SignalSource::ResponseHeader(h) => {
                    let v = host::header(map::RESPONSE_HEADERS, h).and_then(|v| sat::parse_number(&v));
                    if !s.expose_signal_headers {
                        host::remove_header(map::RESPONSE_HEADERS, h);
                    }
                    v
                }
                SignalSource::UpstreamLatencyMs => latency_ms.map(|l| {
                    let e = self.latency_ewma.map_or(l as f64, |e| 0.8 * e + 0.2 * l as f64);
                    self.latency_ewma = Some(e);
                    e
                }),
                SignalSource::InFlight | SignalSource::Operator => None,
            };
            if let Some(v) = value {
                self.publish(g, i, Reading { value: v, at_ms: now });
            }
        }
        if orca.is_some() && !s.expose_signal_headers {
            host::remove_header(map::RESPONSE_HEADERS, ORCA_HEADER);
        }
    }

    fn publish(&mut self, g: &crate::config::Signal, i: usize, r: Reading) {
        let band = |v: f64| u8::from(v >= g.elevated) + u8::from(v >= g.critical);
        let due = match self.published[i] {
            None => true,
            Some(p) => band(p.value) != band(r.value) || r.at_ms.saturating_sub(p.at_ms) >= REPUBLISH_MS,
        };
        if due && HostStore.set(&self.keys[i], &sat::encode_reading(r), 0).is_ok() {
            self.published[i] = Some(r);
            // Seen by this worker at once; the others within RECOMPUTE_MS.
            self.next_recompute = 0;
        }
    }
}

/// Remove the signal headers from the client's response.
fn strip(s: &Saturation) {
    let mut orca = false;
    for g in &s.signals {
        match &g.source {
            SignalSource::Orca(_) => orca = true,
            SignalSource::ResponseHeader(h) => {
                host::remove_header(map::RESPONSE_HEADERS, h);
            }
            _ => {}
        }
    }
    if orca {
        host::remove_header(map::RESPONSE_HEADERS, ORCA_HEADER);
    }
}

/// Create the in-flight counter if missing (configure time, before traffic).
pub fn init(cfg: &Config) -> Result<(), StoreError> {
    if !cfg.saturation.as_ref().is_some_and(|s| s.signals.iter().any(|g| g.source == SignalSource::InFlight)) {
        return Ok(());
    }
    counter::init_in_flight(&HostStore)
}

impl SaturationState {
    /// `saturation_<signal>` gauges: fractional signals (critical threshold ≤ 1, such as ORCA
    /// utilization) in percent, others in their own unit, rounded; `saturation_level` 0-2.
    /// Only values that changed since this worker last recorded them are written.
    fn record_gauges(&mut self, s: &Saturation, metrics: &mut Metrics) {
        let n = s.signals.len();
        for (i, (g, r)) in s.signals.iter().zip(&self.readings).enumerate() {
            let v = r.map_or(0.0, |r| r.value);
            let v = if g.critical <= 1.0 { v * 100.0 } else { v };
            let v = v.round().max(0.0) as u64;
            if self.recorded[i] != Some(v) {
                metrics.gauge_named(&self.gauge_names[i], v);
                self.recorded[i] = Some(v);
            }
        }
        let level = u64::from(self.level);
        if self.recorded[n] != Some(level) {
            metrics.gauge_named(crate::metric_names::SATURATION_LEVEL, level);
            self.recorded[n] = Some(level);
        }
    }
}

/// The status view of saturation.
pub fn status(cfg: &Config, st: &SaturationState) -> serde_json::Value {
    let Some(s) = &cfg.saturation else {
        return serde_json::json!({ "level": "normal", "configured": false, "signals": {} });
    };
    let mut signals = serde_json::Map::new();
    for (g, r) in s.signals.iter().zip(&st.readings) {
        signals.insert(
            g.name.clone(),
            serde_json::json!({
                "value": r.map(|r| r.value),
                "observed_at_ms": r.map(|r| r.at_ms),
                "elevated": g.elevated,
                "critical": g.critical,
                "level": sat::level_name(sat::signal_level(g, *r, host::now_ms(), s.stale_after_ms)),
            }),
        );
    }
    serde_json::json!({ "level": sat::level_name(st.level), "level_value": st.level, "configured": true, "signals": signals })
}
