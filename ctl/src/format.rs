//! Text output: the admin API's JSON (SPEC 4) and `top`'s rows, for a terminal.

use crate::prom::Row;
use serde_json::{Map, Value};
use std::fmt::Write;

const BAR: usize = 20;

/// `used` of `limit` as a bar of [`BAR`] cells; past the limit (burst credits) the bar is full
/// and marked with `!`.
pub fn bar(used: u64, limit: u64) -> String {
    let filled = if limit == 0 {
        if used == 0 { 0 } else { BAR }
    } else {
        ((used.min(limit) as u128 * BAR as u128 + limit as u128 / 2) / limit as u128) as usize
    };
    let mut s = String::with_capacity(BAR + 2);
    s.push('[');
    s.push_str(&"#".repeat(filled));
    s.push_str(&"-".repeat(BAR - filled));
    s.push(if used > limit { '!' } else { ']' });
    s
}

/// `used / limit` in percent with one decimal ("-" without a limit).
pub fn percent(used: u64, limit: u64) -> String {
    if limit == 0 {
        return if used == 0 { "0.0%".into() } else { "-".into() };
    }
    format!("{:.1}%", used as f64 * 100.0 / limit as f64)
}

/// A duration in milliseconds for people: `850ms`, `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

fn counts(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}:{}", v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect::<Vec<_>>().join(","),
        _ => String::new(),
    }
}

/// Who a usage report is about: `tenant acme` or `team blue`.
pub fn subject(v: &Value) -> String {
    match (v.get("tenant").and_then(Value::as_str), v.get("scope").and_then(Value::as_str), v.get("id").and_then(Value::as_str)) {
        (Some(t), _, _) => format!("tenant {t}"),
        (None, Some(s), Some(id)) => format!("{s} {id}"),
        _ => "?".into(),
    }
}

/// `GET {prefix}/tenants/{id}` (or a scope id's): a header line, then a line per budget.
/// The caller has checked that `budgets` is an object.
pub fn usage(v: &Value) -> String {
    let mut out = String::new();
    let mut head = vec![subject(v)];
    if let Some(p) = v.get("priority").and_then(Value::as_str) {
        head.push(format!("priority {p}"));
    }
    head.push(if v.get("configured") == Some(&Value::Bool(true)) { "named in the configuration".into() } else { "not named in the configuration".into() });
    head.push(if v.get("tracked") == Some(&Value::Bool(true)) { "tracked".into() } else { "no traffic yet".into() });
    let _ = writeln!(out, "{}", head.join(", "));
    match v.get("override") {
        None | Some(Value::Null) => {}
        Some(o) => {
            let _ = writeln!(out, "runtime override: {o}");
        }
    }
    let empty = Map::new();
    let budgets = v.get("budgets").and_then(Value::as_object).unwrap_or(&empty);
    if budgets.is_empty() {
        let _ = writeln!(out, "(no budgets count this subject)");
        return out;
    }
    let w = budgets.keys().map(String::len).max().unwrap_or(0);
    let rows: Vec<(String, String, String, String, String)> = budgets
        .iter()
        .map(|(name, b)| {
            let used = u(b, "used").unwrap_or(0);
            let limit = u(b, "limit").unwrap_or(0);
            let burst = u(b, "burst_credits").unwrap_or(0);
            let (bar_s, pct) = if b.get("unlimited") == Some(&Value::Bool(true)) {
                (format!("[{:^width$}]", "unlimited", width = BAR), "-".to_string())
            } else {
                (bar(used, limit), percent(used, limit))
            };
            let amount = format!("{used}/{limit}");
            let mut extra = Vec::new();
            if burst > 0 {
                extra.push(format!("burst {}/{burst}", u(b, "burst_used").unwrap_or(0)));
            }
            match u(b, "resets_in_ms") {
                Some(ms) => extra.push(format!("resets in {}", duration(ms))),
                None => extra.push("in flight now (no window)".into()),
            }
            (format!("{name:<w$}"), bar_s, amount, pct, format!("{}  ({})", extra.join(", "), counts(b.get("counts").unwrap_or(&Value::Null))))
        })
        .collect();
    let aw = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    for (name, bar_s, amount, pct, extra) in rows {
        let _ = writeln!(out, "  {name}  {bar_s} {amount:>aw$} {pct:>6}  {extra}");
    }
    out
}

fn num(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `GET {prefix}/status`.
pub fn status(v: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, val: String| {
        let _ = writeln!(out, "{k:<18} {val}");
    };
    line("mode", v.get("mode").and_then(Value::as_str).unwrap_or("?").to_string());
    line("tracked tenants", format!("{} of at most {} (not counting the {} named in the configuration)", num(v.get("tracked_tenants")), num(v.get("max_tracked")), num(v.get("named_tenants"))));
    line("runtime overrides", num(v.get("runtime_overrides")));
    if let Some(b) = v.get("budgets").and_then(Value::as_array) {
        line("budgets", b.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    }
    if let Some(t) = v.get("totals").filter(|t| t.is_object()) {
        line("checks", format!("{} allowed, {} rejected, {} shadow-rejected", num(t.get("allowed")), num(t.get("rejected")), num(t.get("shadow_rejected"))));
    }
    if let Some(s) = v.get("saturation").filter(|s| s.is_object()) {
        let configured = s.get("configured") != Some(&Value::Bool(false));
        let level = s.get("level").and_then(Value::as_str).unwrap_or("?");
        line("saturation", if configured { level.to_string() } else { format!("{level} (not configured)") });
        if let Some(sig) = s.get("signals").and_then(Value::as_object) {
            let w = sig.keys().map(String::len).max().unwrap_or(0);
            for (name, g) in sig {
                let _ = writeln!(
                    out,
                    "  {name:<w$}  {:<8} value {:<8} elevated {:<6} critical {}",
                    g.get("level").and_then(Value::as_str).unwrap_or("?"),
                    num(g.get("value")),
                    num(g.get("elevated")),
                    num(g.get("critical")),
                );
            }
        }
    }
    match v.get("global") {
        None | Some(Value::Null) => {
            let _ = writeln!(out, "{:<18} not configured", "global");
        }
        Some(g) => {
            let age = match g.get("last_answer_age_ms").and_then(Value::as_u64) {
                Some(ms) => format!("last answer {} ago", duration(ms)),
                None => "no answer yet".into(),
            };
            let _ = writeln!(out, "{:<18} {} ({age}, {} errors)", "global", g.get("state").and_then(Value::as_str).unwrap_or("?"), num(g.get("errors")));
        }
    }
    out
}

/// `top`'s table. `scope`: the rows are ids of that scope.
pub fn top(rows: &[Row], scope: Option<&str>) -> String {
    let mut out = String::new();
    let who = scope.map_or_else(|| "TENANT".to_string(), |s| s.to_uppercase());
    let w = rows.iter().map(|r| r.subject.len()).max().unwrap_or(0).max(who.len());
    let _ = writeln!(out, "{who:<w$}  {:>9}  {:>9}  {:>9}  MOST REJECTED BY", "REJECTED", "ALLOWED", "REJECTED%");
    for r in rows {
        let by = r.rejected_by.iter().take(3).map(|(b, n)| format!("{b} ({n})")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "{:<w$}  {:>9}  {:>9}  {:>8.1}%  {}", r.subject, r.rejected, r.allowed, r.rejected_pct(), if by.is_empty() { "-" } else { &by });
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no quota_checks_total series yet: no request has been checked)");
    }
    if rows.iter().any(|r| r.subject == "other") {
        let _ = writeln!(out, "other: every {} not named in the configuration (metrics count them together)", if scope.is_some() { "id" } else { "tenant" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bars_and_percentages() {
        assert_eq!(bar(0, 10), "[--------------------]");
        assert_eq!(bar(5, 10), "[##########----------]");
        assert_eq!(bar(10, 10), "[####################]");
        assert_eq!(bar(12, 10), "[####################!");
        assert_eq!(bar(1, 1_048_576), "[--------------------]");
        assert_eq!(bar(0, 0), "[--------------------]");
        assert_eq!(bar(u64::MAX, u64::MAX), "[####################]");
        assert_eq!(percent(5, 10), "50.0%");
        assert_eq!(percent(12, 10), "120.0%");
        assert_eq!(percent(0, 0), "0.0%");
        assert_eq!(percent(3, 0), "-");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1000), "1s");
        assert_eq!(duration(41_200), "42s");
        assert_eq!(duration(303_000), "5m03s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(86_400_000 * 3 + 3_600_000 * 4), "3d04h");
    }

    #[test]
    fn usage_report() {
        let v = json!({
            "tenant": "acme", "tracked": true, "configured": true, "priority": "vip",
            "override": {"budgets": {"rpm": {"limit": 50}}},
            "budgets": {
                "rpm": {"counts": "requests", "used": 12, "limit": 10, "burst_credits": 5, "remaining": 0, "burst_used": 2,
                        "burst_remaining": 3, "unlimited": false, "window_ms": 60000, "resets_in_ms": 41200},
                "export": {"counts": "in_flight", "used": 1, "limit": 2, "burst_credits": 0, "remaining": 1, "burst_used": 0,
                           "burst_remaining": 0, "unlimited": false, "resets_in_ms": null},
                "bytes": {"counts": {"request_header": "x-cost"}, "used": 7, "limit": 0, "burst_credits": 0, "remaining": 0, "burst_used": 0,
                          "burst_remaining": 0, "unlimited": true, "window_ms": 86400000, "resets_in_ms": 3600000}
            }
        });
        let text = usage(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "tenant acme, priority vip, named in the configuration, tracked");
        assert_eq!(lines[1], r#"runtime override: {"budgets":{"rpm":{"limit":50}}}"#);
        // serde_json keeps keys sorted: bytes, export, rpm.
        assert_eq!(lines[2], "  bytes   [     unlimited      ]   7/0      -  resets in 1h00m  (request_header:x-cost)");
        assert_eq!(lines[3], "  export  [##########----------]   1/2  50.0%  in flight now (no window)  (in_flight)");
        assert_eq!(lines[4], "  rpm     [####################! 12/10 120.0%  burst 2/5, resets in 42s  (requests)");
        let scope = usage(&json!({"scope": "team", "id": "blue", "tracked": false, "configured": true, "override": null, "budgets": {}}));
        assert_eq!(scope, "team blue, named in the configuration, no traffic yet\n(no budgets count this subject)\n");
    }

    #[test]
    fn status_report() {
        let v = json!({
            "mode": "enforce", "tracked_tenants": 3, "max_tracked": 100000, "named_tenants": 2, "runtime_overrides": 1,
            "budgets": ["rpm", "export"], "totals": {"allowed": 12, "rejected": 3, "shadow_rejected": 0},
            "saturation": {"level": "normal", "level_value": 0, "configured": true,
                "signals": {"cpu_load": {"value": null, "observed_at_ms": null, "elevated": 0.75, "critical": 0.9, "level": "normal"}}},
            "global": null
        });
        let want = "\
mode               enforce
tracked tenants    3 of at most 100000 (not counting the 2 named in the configuration)
runtime overrides  1
budgets            rpm, export
checks             12 allowed, 3 rejected, 0 shadow-rejected
saturation         normal
  cpu_load  normal   value -        elevated 0.75   critical 0.9
global             not configured
";
        assert_eq!(status(&v), want);
        let g = status(&json!({"mode": "shadow", "global": {"state": "degraded", "last_answer_age_ms": 2500, "errors": 4}}));
        assert!(g.ends_with("global             degraded (last answer 3s ago, 4 errors)\n"), "{g}");
    }

    #[test]
    fn top_table() {
        let rows = vec![
            Row { subject: "acme".into(), rejected: 4, allowed: 12, rejected_by: vec![("rph".into(), 3), ("cost".into(), 1)], ..Row::default() },
            Row { subject: "other".into(), rejected: 0, allowed: 40, ..Row::default() },
        ];
        let want = "\
TENANT   REJECTED    ALLOWED  REJECTED%  MOST REJECTED BY
acme            4         12      25.0%  rph (3), cost (1)
other           0         40       0.0%  -
other: every tenant not named in the configuration (metrics count them together)
";
        assert_eq!(top(&rows, None), want);
        assert!(top(&[], Some("team")).contains("no quota_checks_total series"));
    }
}
