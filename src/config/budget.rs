//! `budgets`: what each budget counts, over which window, up to which limit, for which
//! requests, and what a request that does not fit gets. The rules that tie one budget's keys
//! together are here; those that tie budgets to other blocks are in `rules`.

use super::error::{err, ConfigError};
use super::global::GLOBAL_WINDOWS_MS;
use super::raw::{RawBudget, RawMatch, RawQueue, RawScope, RawWindow};
use super::{valid_name, visible_ascii};
use crate::core::budget::{Algorithm, Budget, Counts, GlobalMode, Limits, Match, OnExceed, Queue};
use crate::core::Window;
use crate::core::id::{fnv1a, MAX_BUDGETS};
use std::collections::BTreeMap;

/// Budgets sorted by name, each `scope` resolved to its index in the (sorted) `scopes`.
pub(super) fn compile_all(raw: &BTreeMap<String, RawBudget>, scopes: &BTreeMap<String, RawScope>) -> Result<Vec<Budget>, ConfigError> {
    if raw.len() > MAX_BUDGETS {
        return err("budgets", format!("at most {MAX_BUDGETS} budgets, got {}", raw.len()));
    }
    let mut budgets = Vec::new();
    for (name, b) in raw {
        budgets.push(compile(name, b)?);
    }
    // Budget ids must be distinct, or two budgets would share stored state.
    for (i, a) in budgets.iter().enumerate() {
        if budgets[..i].iter().any(|b| b.id == a.id) {
            return err(format!("budgets.{}", a.name), "budget name collides with another budget's id; rename it");
        }
    }
    for (b, rb) in budgets.iter_mut().zip(raw.values()) {
        let Some(sname) = &rb.scope else { continue };
        let Some(i) = scopes.keys().position(|n| n == sname) else {
            return err(format!("budgets.{}.scope", b.name), format!("unknown scope `{sname}` (not in `scopes`)"));
        };
        b.scope = Some(i);
    }
    Ok(budgets)
}

fn compile(name: &str, raw: &RawBudget) -> Result<Budget, ConfigError> {
    let p = format!("budgets.{name}");
    if !valid_name(name) {
        return err(&p, "budget names are 1-64 characters of [A-Za-z0-9_-]");
    }
    let counts = raw.counts.clone();
    let window = window(&p, &counts, raw)?;
    let algorithm = raw.algorithm.unwrap_or_default();
    if counts == Counts::InFlight && algorithm == Algorithm::Sliding {
        return err(format!("{p}.algorithm"), "in_flight budgets have no window to slide");
    }
    if window == Window::CalendarMonth && algorithm == Algorithm::Sliding {
        return err(format!("{p}.algorithm"), "calendar months cannot slide");
    }
    if window.cycle().is_some() && algorithm == Algorithm::Sliding {
        return err(format!("{p}.algorithm"), "billing cycles cannot slide");
    }
    let matcher = raw.match_.as_ref().map_or(Ok(Match::default()), |m| matcher(&p, m))?;
    let limits = Limits { limit: raw.limit, burst_credits: raw.burst_credits.unwrap_or(0), window, unlimited: false };
    if raw.global.is_some() {
        global(&p, name, &counts, algorithm, &limits)?;
    }
    let on_exceed = raw.on_exceed.unwrap_or_default();
    let queue = queue(&p, on_exceed, raw.queue.as_ref())?;
    if on_exceed == OnExceed::Queue && raw.global == Some(GlobalMode::Exact) {
        return err(format!("{p}.on_exceed"), "an `exact` global budget cannot queue (its answer comes from the rate limit service)");
    }
    let fallback = match (on_exceed, &raw.fallback) {
        (OnExceed::Fallback, Some(t)) => Some(super::providers::target(&format!("{p}.fallback"), t)?),
        (OnExceed::Fallback, None) => return err(format!("{p}.fallback"), "`\"on_exceed\": \"fallback\"` needs `fallback`: where the request goes instead (`model`, `upstream`)"),
        (_, Some(_)) => return err(format!("{p}.fallback"), "`fallback` needs `\"on_exceed\": \"fallback\"`"),
        (_, None) => None,
    };
    if on_exceed == OnExceed::Fallback && raw.global == Some(GlobalMode::Exact) {
        return err(format!("{p}.on_exceed"), "an `exact` global budget cannot fall back (its answer comes from the rate limit service, after the route is chosen)");
    }
    let alerts = alerts(&p, window, raw.alerts.as_deref())?;
    Ok(Budget { name: name.to_string(), id: fnv1a(name.as_bytes()), counts, algorithm, limits, matcher, global: raw.global, scope: None, on_exceed, queue, fallback, alerts })
}

/// The window: none for `in_flight`, `window_ms`, `"window": "calendar_month"` or a billing
/// cycle for the rest.
fn window(p: &str, counts: &Counts, raw: &RawBudget) -> Result<Window, ConfigError> {
    match (counts, raw.window_ms, raw.window.as_ref()) {
        // A window on an in_flight budget means nothing; it is accepted and ignored.
        (Counts::InFlight, _, _) => Ok(Window::None),
        (_, Some(_), Some(_)) => err(format!("{p}.window"), "set either `window_ms` or `window`, not both"),
        (_, None, Some(RawWindow::Named(w))) if w == "calendar_month" => Ok(Window::CalendarMonth),
        (_, None, Some(RawWindow::Named(w))) => err(format!("{p}.window"), format!("unknown window `{w}`, expected `calendar_month` or a billing cycle {{\"cycle\": \"monthly\" | \"daily\", ...}}")),
        (_, None, Some(RawWindow::Cycle(c))) => super::cycle::window(p, c),
        (_, None, None) => err(format!("{p}.window_ms"), "missing window_ms (required for every kind but in_flight)"),
        (_, Some(w), None) => positive_window(&format!("{p}.window_ms"), w),
    }
}

/// A `window_ms` as a fixed window.
pub(super) fn positive_window(path: &str, w: i64) -> Result<Window, ConfigError> {
    match u64::try_from(w).ok().and_then(std::num::NonZeroU64::new) {
        Some(ms) => Ok(Window::Fixed(ms)),
        None => err(path, format!("window_ms must be a positive number of milliseconds, got {w}")),
    }
}

fn matcher(p: &str, m: &RawMatch) -> Result<Match, ConfigError> {
    let mut matcher = Match::default();
    if let Some(pp) = &m.path_prefix {
        if !pp.starts_with('/') {
            return err(format!("{p}.match.path_prefix"), "must start with `/`");
        }
        matcher.path_prefix = Some(pp.clone());
    }
    for (i, model) in m.models.iter().flatten().enumerate() {
        if model.is_empty() || model.len() > 256 || !visible_ascii(model) {
            return err(format!("{p}.match.models[{i}]"), "model patterns are 1-256 bytes of visible ASCII (a trailing `*` matches any suffix)");
        }
        matcher.models.push(model.clone());
    }
    for (i, meth) in m.methods.iter().flatten().enumerate() {
        if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_alphabetic()) {
            return err(format!("{p}.match.methods[{i}]"), format!("`{meth}` is not an HTTP method"));
        }
        matcher.methods.push(meth.to_ascii_uppercase());
    }
    Ok(matcher)
}

/// What a budget with `global` must be for the rate limit service to count it.
fn global(p: &str, name: &str, counts: &Counts, algorithm: Algorithm, limits: &Limits) -> Result<(), ConfigError> {
    let gp = format!("{p}.global");
    if *counts == Counts::InFlight {
        return err(gp, "in_flight budgets cannot be global (a global concurrency count needs a call per request start and end)");
    }
    if algorithm == Algorithm::Sliding {
        return err(gp, "sliding windows cannot be global (the rate limit service counts fixed windows)");
    }
    check_global_limits(p, limits)?;
    check_global_name(p, name)
}

/// A global budget's window must be a unit of the rate limit service, and its cap fit the
/// service's 32-bit `requests_per_unit`.
pub(super) fn check_global_limits(path: &str, l: &Limits) -> Result<(), ConfigError> {
    let fits = match l.window {
        Window::Fixed(ms) => GLOBAL_WINDOWS_MS.contains(&ms.get()),
        Window::CalendarMonth | Window::Cycle(_) => true,
        Window::None => false,
    };
    if !fits {
        return err(
            format!("{path}.window_ms"),
            format!(
                "a global budget's window must be 1000, 60000, 3600000 or 86400000 ms (the rate limit service's units), \"window\": \"calendar_month\" or a billing cycle, got {}",
                l.window.fixed_ms().unwrap_or(0)
            ),
        );
    }
    Ok(())
}

/// envoyproxy/ratelimit keys a descriptor by joining its entries with `_`
/// (`<domain>_tenant_<id>_budget_<name>[_month_<YYYY-MM> | _cycle_<YYYY-MM-DD>]`, research
/// note D9), and tenant ids are anyone's: a global budget's name must not let two (id, name)
/// pairs join to one key. With names that neither contain `_budget_`, `_month_` or `_cycle_`
/// nor begin with `budget_`, the key splits back one way only.
fn check_global_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.contains("_budget_") || name.contains("_month_") || name.contains("_cycle_") || name.starts_with("budget_") {
        return err(
            format!("{path}.global"),
            format!("a global budget's name may not contain `_budget_`, `_month_` or `_cycle_` nor begin with `budget_` (the rate limit service joins descriptor entries with `_`, so `{name}` could share a counter with another tenant's budget)"),
        );
    }
    Ok(())
}

/// `queue` settings, which only a budget with `"on_exceed": "queue"` may have.
fn queue(p: &str, on_exceed: OnExceed, raw: Option<&RawQueue>) -> Result<Queue, ConfigError> {
    let mut queue = Queue::default();
    let Some(q) = raw else { return Ok(queue) };
    if on_exceed != OnExceed::Queue {
        return err(format!("{p}.queue"), "`queue` settings need `\"on_exceed\": \"queue\"`");
    }
    if let Some(t) = q.timeout_ms {
        if !(0..=300_000).contains(&t) {
            return err(format!("{p}.queue.timeout_ms"), format!("must be between 0 and 300000 ms, got {t}"));
        }
        queue.timeout_ms = t as u64;
    }
    if let Some(m) = q.max_waiting {
        if m == 0 || m > 100_000 {
            return err(format!("{p}.queue.max_waiting"), format!("must be between 1 and 100000, got {m}"));
        }
        queue.max_waiting = m;
    }
    Ok(queue)
}

/// Alert thresholds in percent of the limit, sorted and distinct; 80, 90, 95 by default, none
/// for `in_flight` (it has no window to cross them in).
fn alerts(p: &str, window: Window, raw: Option<&[u64]>) -> Result<Vec<u64>, ConfigError> {
    match raw {
        None if window.is_none() => Ok(Vec::new()),
        None => Ok(vec![80, 90, 95]),
        Some(_) if window.is_none() => err(format!("{p}.alerts"), "alerts are for windowed budgets (not in_flight)"),
        Some(list) => {
            if let Some(bad) = list.iter().find(|&&x| x == 0 || x > 1000) {
                return err(format!("{p}.alerts"), format!("alert thresholds are percentages of the limit, 1 to 1000, got {bad}"));
            }
            let mut v = list.to_vec();
            v.sort_unstable();
            v.dedup();
            Ok(v)
        }
    }
}
