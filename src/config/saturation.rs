//! `saturation` (SPEC 1): the upstream's load signals, their thresholds, and how much of each
//! priority's traffic each level keeps.

use super::error::{err, ConfigError};
use super::raw::RawSaturation;
use super::{valid_header_name, valid_name};
use crate::core::budget::{Saturation, Signal, SignalSource};

pub(super) fn compile(raw: &RawSaturation) -> Result<Saturation, ConfigError> {
    let mut signals = Vec::new();
    for (name, s) in &raw.signals {
        let p = format!("saturation.signals.{name}");
        if !valid_name(name) {
            return err(&p, "signal names are 1-64 characters of [A-Za-z0-9_-]");
        }
        let source = signal_source(&format!("{p}.from"), &s.from)?;
        if !s.elevated.is_finite() || !s.critical.is_finite() || s.elevated < 0.0 {
            return err(&p, "thresholds must be finite, non-negative numbers");
        }
        if s.elevated > s.critical {
            return err(format!("{p}.elevated"), "elevated must not exceed critical");
        }
        signals.push(Signal { name: name.clone(), source, elevated: s.elevated, critical: s.critical });
    }
    let stale_after_ms = match raw.stale_after_ms {
        None => 10_000,
        Some(v) if v > 0 => v as u64,
        Some(v) => return err("saturation.stale_after_ms", format!("must be positive, got {v}")),
    };
    let mut keep = [[1.0f64; 3]; 3];
    for (level, per) in &raw.keep {
        for (prio, k) in per {
            if !(0.0..=1.0).contains(k) {
                return err(format!("saturation.keep.{level:?}.{prio:?}").to_lowercase(), "keep factors lie in [0, 1]");
            }
            keep[*level as usize][*prio as usize] = *k;
        }
    }
    let retry_after_s = raw.retry_after_s.unwrap_or(5).max(1);
    Ok(Saturation { signals, stale_after_ms, keep, retry_after_s, expose_signal_headers: raw.expose_signal_headers.unwrap_or(false) })
}

fn signal_source(path: &str, from: &str) -> Result<SignalSource, ConfigError> {
    let s = if let Some(m) = from.strip_prefix("orca:") {
        let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return err(path, format!("bad ORCA metric name in `{from}`"));
        }
        SignalSource::Orca(m.to_string())
    } else if let Some(h) = from.strip_prefix("response_header:") {
        if !valid_header_name(h) {
            return err(path, format!("bad header name in `{from}`"));
        }
        SignalSource::ResponseHeader(h.to_ascii_lowercase())
    } else {
        match from {
            "in_flight" => SignalSource::InFlight,
            "upstream_latency_ms" => SignalSource::UpstreamLatencyMs,
            "operator" | "admin" => SignalSource::Operator,
            _ => return err(path, format!("unknown signal source `{from}`, expected `orca:<metric>`, `response_header:<name>`, `in_flight`, `upstream_latency_ms` or `operator`")),
        }
    };
    Ok(s)
}
