//! UTC calendar months: known dates, and every day from 1970 to 2500 against a day-by-day walk.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::{civil_from_days, days_from_civil, month_len_ms, month_start, next_month_start, DAY_MS};
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;

fn pt(cases: u32) -> PtConfig {
    let d = PtConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { d.cases } else { cases };
    PtConfig { cases, failure_persistence: None, ..d }
}
// ---------------------------------------------------------------------------------------
// Calendar months.

const fn ymd_ms(days: u64) -> u64 {
    days * DAY_MS
}

#[test]
fn months_of_known_dates() {
    // 2024-02-15T12:34:56.789Z: a leap February.
    let t = 1_708_000_496_789;
    assert_eq!(civil_from_days(t / DAY_MS), (2024, 2, 15));
    assert_eq!(month_start(t), 1_706_745_600_000); // 2024-02-01
    assert_eq!(next_month_start(t), 1_709_251_200_000); // 2024-03-01
    assert_eq!(month_len_ms(t), 29 * DAY_MS);
    // 2023-02: 28 days; 2000-02: 29 (divisible by 400); 2100-02: 28 (by 100).
    assert_eq!(month_len_ms(ymd_ms(days_from_civil(2023, 2, 10))), 28 * DAY_MS);
    assert_eq!(month_len_ms(ymd_ms(days_from_civil(2000, 2, 29))), 29 * DAY_MS);
    assert_eq!(month_len_ms(ymd_ms(days_from_civil(2100, 2, 1))), 28 * DAY_MS);
    assert_eq!(month_len_ms(ymd_ms(days_from_civil(2400, 2, 1))), 29 * DAY_MS);
    // December rolls into the next year; the last millisecond of a month stays in it.
    let dec31 = ymd_ms(days_from_civil(2025, 12, 31)) + DAY_MS - 1;
    assert_eq!(month_start(dec31), ymd_ms(days_from_civil(2025, 12, 1)));
    assert_eq!(next_month_start(dec31), ymd_ms(days_from_civil(2026, 1, 1)));
    assert_eq!(next_month_start(dec31), 1_767_225_600_000);
    assert_eq!(month_start(dec31 + 1), dec31 + 1);
    // The epoch.
    assert_eq!((month_start(0), next_month_start(0), month_len_ms(0)), (0, 31 * DAY_MS, 31 * DAY_MS));
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    // The far end: no panic, saturating.
    assert_eq!(next_month_start(u64::MAX), u64::MAX);
    assert!(month_len_ms(u64::MAX) < 31 * DAY_MS && month_start(u64::MAX).is_multiple_of(DAY_MS));
    let _ = (days_from_civil(0, 0, 0), days_from_civil(u64::MAX, u32::MAX, u32::MAX), civil_from_days(u64::MAX));
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// Month starts (in days since 1970-01-01) from 1970-01 to `until_year`, by walking day by day.
fn reference_month_starts(until_year: u64) -> Vec<u64> {
    let lens = |y: u64, m: u32| match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (1970u64, 1u32, 1u32);
    let mut starts = Vec::new();
    let mut day = 0u64;
    while y < until_year {
        if d == 1 {
            starts.push(day);
        }
        day += 1;
        d += 1;
        if d > lens(y, m) {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
    starts.push(day);
    starts
}

#[test]
fn every_day_from_1970_to_2500_against_a_day_by_day_walk() {
    let starts = reference_month_starts(2500);
    let mut month = 0;
    for day in 0..*starts.last().unwrap() {
        if day == starts[month + 1] {
            month += 1;
        }
        let (s, n) = (starts[month] * DAY_MS, starts[month + 1] * DAY_MS);
        for t in [day * DAY_MS, day * DAY_MS + DAY_MS - 1] {
            assert_eq!((month_start(t), next_month_start(t), month_len_ms(t)), (s, n, n - s), "day {day}");
        }
    }
    assert_eq!(starts.len(), 530 * 12 + 1);
}

proptest! {
    #![proptest_config(pt(1024))]

    /// Random instants up to the year 3000 against the day-by-day walk.
    #[test]
    fn random_instants_match_the_walk(t in 0..32_503_680_000_000u64) {
        thread_local!(static STARTS: Vec<u64> = reference_month_starts(3001));
        let day = t / DAY_MS;
        let (s, n) = STARTS.with(|st| {
            let i = st.partition_point(|&d| d <= day) - 1;
            (st[i] * DAY_MS, st[i + 1] * DAY_MS)
        });
        prop_assert_eq!(month_start(t), s);
        prop_assert_eq!(next_month_start(t), n);
        prop_assert!(month_len_ms(t) >= 28 * DAY_MS && month_len_ms(t) <= 31 * DAY_MS);
    }

    /// Any u64: the month contains the instant (the next start saturates at the far end).
    #[test]
    fn any_instant_is_inside_its_month(t in any::<u64>()) {
        let (s, n) = (month_start(t), next_month_start(t));
        prop_assert!(s <= t && (t < n || n == u64::MAX));
        prop_assert!(s.is_multiple_of(DAY_MS));
        let (_, _, d) = civil_from_days(s / DAY_MS);
        prop_assert_eq!(d, 1);
    }
}
