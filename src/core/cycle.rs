//! Billing cycles (`"window": {"cycle": ...}`): windows that start every day at 00:00, or
//! every month on a given day at 00:00, local time in a time zone ([`Zone`]).
//!
//! A cycle's boundaries are the first instants of local days ([`Zone::day_start`]: a
//! midnight inside a spring-forward gap starts the cycle at the first instant after the gap,
//! a repeated midnight at the earlier instant), so cycles last 23 or 25 hours around DST
//! changes and months their real lengths. A monthly cycle anchored on a day a month does not
//! have starts on that month's last day (the 31st: February 28 or 29, March 31, April 30).
//!
//! Times are Unix milliseconds, as for every [`super::Window`]; boundaries fall on whole
//! seconds (offsets are whole seconds). Defined for every `u64`; results past it saturate.

use super::tz::{civil_from_days, days_from_civil, month_len, Memo, Zone};
use super::Millis;

/// How often a cycle starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Every day at 00:00 local time.
    Daily,
    /// Every month on this day (1..=31; 31 is every month's last day) at 00:00 local time.
    Monthly(u8),
}

/// A billing cycle: its period and the time zone of its midnights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub period: Period,
    pub zone: Zone,
}

impl Cycle {
    /// Daily cycles in `zone`.
    pub const fn daily(zone: Zone) -> Cycle {
        Cycle { period: Period::Daily, zone }
    }

    /// Monthly cycles on `day` (1..=31, 31 standing for the last day) in `zone`; None for
    /// another day.
    pub fn monthly(day: u8, zone: Zone) -> Option<Cycle> {
        (1..=31).contains(&day).then_some(Cycle { period: Period::Monthly(day), zone })
    }

    /// The same cycle anchored on a subject's own day and zone (SPEC billing overrides):
    /// `day` only changes monthly cycles.
    pub fn anchored(self, day: Option<u8>, zone: Option<Zone>) -> Cycle {
        let period = match (self.period, day) {
            (Period::Monthly(_), Some(d)) if (1..=31).contains(&d) => Period::Monthly(d),
            (p, _) => p,
        };
        Cycle { period, zone: zone.unwrap_or(self.zone) }
    }

    /// Start of the cycle containing `now`. (Not inlined: every caller of `Window::start`
    /// would carry a copy of the zone arithmetic, some 50 kB of wasm.)
    #[inline(never)]
    pub fn start(self, now: Millis) -> Millis {
        to_ms(self.start_s(secs(now)))
    }

    /// End of the cycle that starts at `start`: the first boundary after it.
    #[inline(never)]
    pub fn end(self, start: Millis) -> Millis {
        to_ms(self.end_s(secs(start)))
    }

    /// The local calendar date (year, month, day) of the instant `at`, e.g. a cycle's start.
    pub fn local_date(self, at: Millis) -> (i64, u32, u32) {
        civil_from_days(self.zone.local(secs(at)).div_euclid(86_400))
    }

    /// The boundary of cycle `k` (a local day, or a month counted as `year * 12 + month - 1`).
    fn boundary(self, memo: &mut Memo, k: i64) -> i64 {
        match self.period {
            Period::Daily => self.zone.day_start_in(memo, k),
            Period::Monthly(day) => {
                let (y, m) = (k.div_euclid(12), k.rem_euclid(12) as u32 + 1);
                self.zone.day_start_in(memo, days_from_civil(y, m, u32::from(day).min(month_len(y, m))))
            }
        }
    }

    /// The cycle index of a local time (seconds since 1970-01-01T00:00 local).
    fn index(self, local: i64) -> i64 {
        let day = local.div_euclid(86_400);
        match self.period {
            Period::Daily => day,
            Period::Monthly(_) => {
                let (y, m, _) = civil_from_days(day);
                y * 12 + i64::from(m) - 1
            }
        }
    }

    /// The last boundary at or before `t` (Unix seconds).
    fn start_s(self, t: i64) -> i64 {
        let memo = &mut Memo::default();
        let local = self.zone.local_in(memo, t);
        let i = self.index(local);
        // A boundary of the next local day or month can already be past when a fold (local
        // time going back) straddles it: only then is it looked at.
        let ahead = self.index(local.saturating_add(self.zone.shift()));
        if ahead > i {
            let b = self.boundary(memo, ahead);
            if b <= t {
                return b;
            }
        }
        let b = self.boundary(memo, i);
        if b <= t {
            b
        } else {
            self.boundary(memo, i - 1)
        }
    }

    /// The first boundary after `s` (Unix seconds).
    fn end_s(self, s: i64) -> i64 {
        let memo = &mut Memo::default();
        let i = self.index(self.zone.local_in(memo, s));
        let first = match self.period {
            // A local day's own boundary is never after its instants.
            Period::Daily => i + 1,
            Period::Monthly(_) => i,
        };
        for k in first..first + 3 {
            let b = self.boundary(memo, k);
            if b > s {
                return b;
            }
        }
        self.boundary(memo, first + 3)
    }
}

fn secs(ms: Millis) -> i64 {
    (ms / 1000) as i64
}

fn to_ms(s: i64) -> Millis {
    u64::try_from(s).map_or(0, |s| s.saturating_mul(1000))
}

#[cfg(test)]
#[path = "cycle_tests.rs"]
mod tests;

#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "cycle_jiff_tests.rs"]
mod jiff_tests;
