//! Billing cycles on a fake clock: DST both ways (a northern, a European and a southern zone),
//! midnights in a gap and in a fold, short months and the 31st, half- and quarter-hour and
//! seconds offsets. Times are written as the UTC instant of the local wall clock they stand for.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::core::{Clock, FakeClock, Window};

const H: u64 = 3_600_000;
const DAY: u64 = 24 * H;

/// Unix ms of a UTC date and time.
fn utc(y: i64, mo: u32, d: u32, h: u64, mi: u64) -> Millis {
    days_from_civil(y, mo, d) as u64 * DAY + h * H + mi * 60_000
}

fn zone(s: &str) -> Zone {
    Zone::resolve(s).unwrap()
}

fn daily(z: &str) -> Window {
    Window::Cycle(Cycle::daily(zone(z)))
}

fn monthly(day: u8, z: &str) -> Window {
    Window::Cycle(Cycle::monthly(day, zone(z)).unwrap())
}

/// (start, end, len_s) of the window containing `t`.
fn span(w: Window, t: Millis) -> (Millis, Millis, u64) {
    let s = w.start(t);
    (s, w.end(s), w.len_s(t))
}

#[test]
fn new_york_days_are_23_and_25_hours_at_the_changes() {
    let w = daily("America/New_York");
    // 2027-03-14: DST starts at 02:00 EST. The day runs from 00:00 EST to 00:00 EDT.
    let clock = FakeClock::new(utc(2027, 3, 14, 16, 0));
    assert_eq!(span(w, clock.now_ms()), (utc(2027, 3, 14, 5, 0), utc(2027, 3, 15, 4, 0), 23 * 3600));
    // 2027-11-07: DST ends at 02:00 EDT, a 25-hour day.
    clock.set(utc(2027, 11, 7, 12, 0));
    assert_eq!(span(w, clock.now_ms()), (utc(2027, 11, 7, 4, 0), utc(2027, 11, 8, 5, 0), 25 * 3600));
    // The last millisecond of a day is in it; the next starts the next cycle.
    clock.set(utc(2027, 11, 8, 5, 0) - 1);
    assert_eq!(w.start(clock.now_ms()), utc(2027, 11, 7, 4, 0));
    clock.advance(1);
    assert_eq!(w.start(clock.now_ms()), utc(2027, 11, 8, 5, 0));
    // Monthly on the 10th: March 10 00:00 EST to April 10 00:00 EDT, 31 days less an hour.
    let m = monthly(10, "America/New_York");
    assert_eq!(span(m, utc(2027, 3, 20, 0, 0)), (utc(2027, 3, 10, 5, 0), utc(2027, 4, 10, 4, 0), 31 * 86_400 - 3600));
}

#[test]
fn berlin_days_follow_central_european_summer_time() {
    let w = daily("Europe/Berlin");
    // 2027-03-28 (last Sunday of March): 00:00 CET = 23:00Z the day before, 23 hours long.
    assert_eq!(span(w, utc(2027, 3, 28, 12, 0)), (utc(2027, 3, 27, 23, 0), utc(2027, 3, 28, 22, 0), 23 * 3600));
    // 2027-10-31 (last Sunday of October): 25 hours.
    assert_eq!(span(w, utc(2027, 10, 31, 12, 0)), (utc(2027, 10, 30, 22, 0), utc(2027, 10, 31, 23, 0), 25 * 3600));
    // A cycle on the 1st starts at 00:00 local: 23:00Z in winter, 22:00Z in summer.
    let m = monthly(1, "Europe/Berlin");
    assert_eq!(m.start(utc(2027, 11, 15, 0, 0)), utc(2027, 10, 31, 23, 0));
    assert_eq!(m.start(utc(2027, 7, 15, 0, 0)), utc(2027, 6, 30, 22, 0));
    // 30 minutes before local midnight on Oct 31 (UTC), the cycle is still October's.
    assert_eq!(m.start(utc(2027, 10, 31, 22, 59)), utc(2027, 9, 30, 22, 0));
}

#[test]
fn sydney_changes_the_other_way_round() {
    let w = daily("Australia/Sydney");
    // DST ends 2027-04-04 03:00 AEDT: that day is 25 hours; starts 2027-10-03: 23 hours.
    assert_eq!(span(w, utc(2027, 4, 4, 0, 0)), (utc(2027, 4, 3, 13, 0), utc(2027, 4, 4, 14, 0), 25 * 3600));
    assert_eq!(span(w, utc(2027, 10, 3, 0, 0)), (utc(2027, 10, 2, 14, 0), utc(2027, 10, 3, 13, 0), 23 * 3600));
    // Monthly on the 15th across the April change: 31 days and an hour.
    let m = monthly(15, "Australia/Sydney");
    assert_eq!(span(m, utc(2027, 4, 1, 0, 0)), (utc(2027, 3, 14, 13, 0), utc(2027, 4, 14, 14, 0), 31 * 86_400 + 3600));
    // New Year's Eve in summer time.
    assert_eq!(w.start(utc(2027, 12, 31, 13, 30)), utc(2027, 12, 31, 13, 0));
}

#[test]
fn a_midnight_in_a_gap_starts_the_cycle_after_the_gap() {
    // Havana's rules (CST5CDT,M3.2.0/0,M11.1.0/1): 2028-03-12 00:00 CST jumps to 01:00 CDT.
    let w = daily("CST5CDT,M3.2.0/0,M11.1.0/1");
    let gap_end = utc(2028, 3, 12, 5, 0); // 01:00 CDT, the first instant of March 12
    assert_eq!(span(w, gap_end + 1), (gap_end, utc(2028, 3, 13, 4, 0), 23 * 3600));
    assert_eq!(w.end(w.start(gap_end - 1)), gap_end, "March 11 ends where the gap does");
    // Santiago (M9.1.6/24): Saturday 24:00 becomes Sunday 01:00; the Sunday starts then.
    let s = daily("America/Santiago");
    assert_eq!(span(s, utc(2027, 9, 5, 12, 0)), (utc(2027, 9, 5, 4, 0), utc(2027, 9, 6, 3, 0), 23 * 3600));
    // Beirut (M3.5.0/0): Sunday 2027-03-28 starts at 01:00 EEST = 22:00Z on the 27th.
    let b = daily("Asia/Beirut");
    assert_eq!(b.start(utc(2027, 3, 28, 0, 0)), utc(2027, 3, 27, 22, 0));
    // A monthly anchor on a gap day starts after the gap too.
    let m = monthly(12, "CST5CDT,M3.2.0/0,M11.1.0/1");
    assert_eq!(m.start(utc(2028, 3, 20, 0, 0)), gap_end);
}

#[test]
fn a_repeated_midnight_starts_the_cycle_at_the_earlier_instant() {
    // Havana's rules: 2028-11-05 01:00 CDT goes back to 00:00 CST, so 00:00-01:00 happens twice.
    let w = daily("CST5CDT,M3.2.0/0,M11.1.0/1");
    let first = utc(2028, 11, 5, 4, 0); // 00:00 CDT
    assert_eq!(span(w, first), (first, utc(2028, 11, 6, 5, 0), 25 * 3600));
    // 00:30 the second time (CST) is in the same cycle; the day before ended at the first.
    assert_eq!(w.start(utc(2028, 11, 5, 6, 30)), first);
    assert_eq!(w.end(w.start(first - 1)), first);
    // Beirut goes back from Sunday 00:00 EEST to Saturday 23:00 EET: Saturday is 25 hours,
    // and Sunday starts at 00:00 EET.
    let b = daily("Asia/Beirut");
    assert_eq!(span(b, utc(2027, 10, 30, 21, 30)), (utc(2027, 10, 29, 21, 0), utc(2027, 10, 30, 22, 0), 25 * 3600));
}

#[test]
fn short_months_start_on_their_last_day() {
    let w31 = monthly(31, "UTC");
    // Anchored on the 31st: Jan 31, Feb 28 (2027) or 29 (2028), Mar 31, Apr 30.
    assert_eq!(w31.start(utc(2027, 2, 10, 0, 0)), utc(2027, 1, 31, 0, 0));
    assert_eq!(w31.end(utc(2027, 1, 31, 0, 0)), utc(2027, 2, 28, 0, 0));
    assert_eq!(w31.end(utc(2027, 2, 28, 0, 0)), utc(2027, 3, 31, 0, 0));
    assert_eq!(w31.end(utc(2027, 3, 31, 0, 0)), utc(2027, 4, 30, 0, 0));
    assert_eq!(w31.end(utc(2027, 4, 30, 0, 0)), utc(2027, 5, 31, 0, 0));
    assert_eq!(w31.end(utc(2028, 1, 31, 0, 0)), utc(2028, 2, 29, 0, 0));
    assert_eq!(w31.len_s(utc(2027, 3, 1, 0, 0)), 31 * 86_400, "Feb 28 to Mar 31");
    // On the 29th and 30th: February's cycle starts on its last day, March's on the day.
    let w29 = monthly(29, "UTC");
    assert_eq!(w29.start(utc(2027, 3, 5, 0, 0)), utc(2027, 2, 28, 0, 0));
    assert_eq!(w29.start(utc(2028, 3, 5, 0, 0)), utc(2028, 2, 29, 0, 0));
    assert_eq!(w29.end(utc(2028, 2, 29, 0, 0)), utc(2028, 3, 29, 0, 0));
    let w30 = monthly(30, "UTC");
    assert_eq!(w30.start(utc(2028, 3, 1, 0, 0)), utc(2028, 2, 29, 0, 0));
    assert_eq!(w30.end(utc(2028, 2, 29, 0, 0)), utc(2028, 3, 30, 0, 0));
    assert_eq!(w30.start(utc(2027, 1, 29, 0, 0)), utc(2026, 12, 30, 0, 0));
    // The first of the month in UTC is the calendar month.
    let w1 = monthly(1, "UTC");
    for t in [utc(2027, 2, 14, 3, 0), utc(2028, 2, 29, 23, 59), utc(2027, 12, 31, 23, 59)] {
        assert_eq!(span(w1, t), span(Window::CalendarMonth, t));
    }
}

#[test]
fn half_and_quarter_hour_and_seconds_offsets() {
    // Kolkata +05:30: days start at 18:30Z; Kathmandu +05:45: at 18:15Z.
    assert_eq!(daily("Asia/Kolkata").start(utc(2027, 5, 1, 18, 29)), utc(2027, 4, 30, 18, 30));
    assert_eq!(daily("Asia/Kolkata").start(utc(2027, 5, 1, 18, 30)), utc(2027, 5, 1, 18, 30));
    assert_eq!(span(monthly(15, "Asia/Kathmandu"), utc(2027, 5, 14, 18, 15)), (utc(2027, 5, 14, 18, 15), utc(2027, 6, 14, 18, 15), 31 * 86_400));
    assert_eq!(monthly(15, "Asia/Kathmandu").start(utc(2027, 5, 14, 18, 14)), utc(2027, 4, 14, 18, 15));
    // +01:02:03: midnight is 22:57:57Z.
    let w = daily("<+010203>-1:02:03");
    let mid = utc(2027, 5, 1, 22, 57) + 57_000;
    assert_eq!(span(w, mid - 1), (mid - DAY, mid, 86_400));
    assert_eq!(w.start(mid), mid);
    // -09:30 (Marquesas): days start at 09:30Z.
    assert_eq!(daily("Pacific/Marquesas").start(utc(2027, 5, 1, 9, 0)), utc(2027, 4, 30, 9, 30));
}

#[test]
fn anchors_move_with_the_subject() {
    let base = Cycle::monthly(1, Zone::UTC).unwrap();
    let ny = zone("America/New_York");
    let c = base.anchored(Some(15), Some(ny));
    assert_eq!(c, Cycle::monthly(15, ny).unwrap());
    assert_eq!(base.anchored(None, Some(ny)), Cycle::monthly(1, ny).unwrap());
    assert_eq!(base.anchored(Some(20), None), Cycle::monthly(20, Zone::UTC).unwrap());
    // A day only anchors monthly cycles.
    assert_eq!(Cycle::daily(Zone::UTC).anchored(Some(15), Some(ny)), Cycle::daily(ny));
    assert_eq!(Cycle::monthly(0, Zone::UTC), None);
    assert_eq!(Cycle::monthly(32, Zone::UTC), None);
    assert_eq!(c.local_date(utc(2027, 3, 15, 4, 0)), (2027, 3, 15), "00:00 EDT");
    assert_eq!(c.local_date(utc(2027, 3, 15, 3, 59)), (2027, 3, 14));
}

#[test]
fn every_instant_is_defined() {
    for w in [daily("America/New_York"), monthly(31, "Australia/Lord_Howe"), daily("<+14>-14"), monthly(1, "<-12>12")] {
        assert_eq!(w.start(0), 0, "before the first boundary after the epoch");
        assert!(w.end(0) > 0);
        let s = w.start(u64::MAX);
        assert!(w.end(s) >= s);
        let _ = w.len_s(u64::MAX);
        // start <= now < end at a spread of instants.
        let mut t = 1_000_000_000_000u64;
        while t < 4_000_000_000_000 {
            let s = w.start(t);
            assert!(s <= t && t < w.end(s), "{w:?} at {t}");
            t += 7_777_777_777;
        }
    }
}

#[test]
fn a_window_stays_small_enough_to_copy() {
    // Limits (one per budget per subject) carry the window by value.
    assert!(std::mem::size_of::<Window>() <= 40, "{}", std::mem::size_of::<Window>());
}
