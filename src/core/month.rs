//! UTC calendar months over Unix milliseconds, for `"window": "calendar_month"` (SPEC
//! section 5): a window starts at 00:00 UTC on the 1st and lasts the month's length
//! (28 to 31 days; February has 29 in Gregorian leap years: divisible by 4 and not by
//! 100, or by 400).
//!
//! Days and civil dates convert with Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (400-year eras of 146 097 days), in unsigned arithmetic since Unix time here is never
//! before 1970. Defined for every `u64`; results that would pass `u64::MAX` saturate.

use super::Millis;

/// Milliseconds in a day (UTC has no leap seconds in Unix time).
pub const DAY_MS: u64 = 86_400_000;

/// Days from 1970-01-01 to 0000-03-01 in the proleptic Gregorian calendar.
const EPOCH_SHIFT: u64 = 719_468;

/// Start (Unix ms) of the UTC calendar month containing `now_ms`.
pub fn month_start(now_ms: Millis) -> Millis {
    let days = now_ms / DAY_MS;
    let (_, _, day) = civil_from_days(days);
    days.saturating_sub(u64::from(day).saturating_sub(1)) * DAY_MS
}

/// Start (Unix ms) of the UTC calendar month after the one containing `now_ms`
/// (saturating at `u64::MAX` past the representable range).
pub fn next_month_start(now_ms: Millis) -> Millis {
    let (year, month, _) = civil_from_days(now_ms / DAY_MS);
    let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    days_from_civil(year, month, 1).saturating_mul(DAY_MS)
}

/// Length in milliseconds of the UTC calendar month containing `now_ms`.
pub fn month_len_ms(now_ms: Millis) -> u64 {
    next_month_start(now_ms).saturating_sub(month_start(now_ms))
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days.saturating_add(EPOCH_SHIFT);
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to `year-month-day` (for valid dates from 1970 on; other inputs give
/// some value without panicking).
pub fn days_from_civil(year: u64, month: u32, day: u32) -> u64 {
    let y = year.saturating_sub(u64::from(month <= 2));
    let era = y / 400;
    let yoe = y % 400;
    let m = u64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + u64::from(day).saturating_sub(1);
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.saturating_mul(146_097).saturating_add(doe).saturating_sub(EPOCH_SHIFT)
}

#[cfg(test)]
#[path = "month_tests.rs"]
mod tests;
