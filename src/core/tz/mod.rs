//! Time zones of billing cycles (`"time_zone"`): POSIX TZ strings (POSIX.1-2024 `TZ`, the
//! form of a TZif v3 file's footer), parsed into a small `Copy` value and evaluated at any
//! instant. IANA names are looked up in [`zones`], a generated table of each name's
//! footer ([`table`] reads it): the zone's rules from its last listed transition on. A zone
//! whose Time Zone Database lists transitions from 2026-01-01 on (America/Havana until 2027,
//! Asia/Gaza until 2086, ...) also carries them, and its offsets come from them before the
//! last one: the table is exact from 2026-01-01 on (earlier instants get the offset in
//! effect at 2026-01-01 or the footer's; cycles are computed for now and later).
//!
//! Times here are Unix seconds (`i64`; the callers convert from milliseconds), offsets are
//! seconds east of UTC. Every function is total: no input panics or overflows for Unix times
//! up to `u64::MAX` milliseconds.

pub mod zones;

#[cfg(test)]
pub mod tzif;

#[cfg(test)]
mod tests;

use std::fmt;

const DAY: i64 = 86_400;

/// A time zone: its standard offset and, if it has daylight saving time, the DST offset and
/// the yearly rules that start and end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// UTC offset of standard time (seconds east of UTC).
    std: i32,
    dst: Option<Dst>,
    /// 1 + the index of the zone's IANA name in the [`table`]; 0 for a POSIX string.
    name: u16,
    /// 1 + the index of the zone's listed transitions ([`table::run`]); 0 for none.
    run: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dst {
    /// UTC offset while DST is in effect (seconds east of UTC).
    offset: i32,
    /// When DST starts, in standard (local) time.
    start: Rule,
    /// When DST ends, in DST (local) time.
    end: Rule,
}

/// A yearly instant in local time: a day of the year and a time of that day (seconds, which
/// POSIX.1-2024 lets be negative or past 24 h: -167 h to 167 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    date: RuleDate,
    time: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleDate {
    /// `Jn`: day n of 1..=365, February 29 never counted (day 60 is always March 1).
    Julian1(u16),
    /// `n`: day n of 0..=365, February 29 counted in leap years.
    Julian0(u16),
    /// `Mm.w.d`: weekday d (0 Sunday) of week w (1..=5, 5 the last) of month m.
    Mwd { month: u8, week: u8, weekday: u8 },
}

impl Zone {
    /// Coordinated Universal Time.
    pub const UTC: Zone = Zone { std: 0, dst: None, name: 0, run: 0 };

    /// A zone by IANA name (exact spelling, as in the Time Zone Database), from the table.
    pub fn named(name: &str) -> Option<Zone> {
        let i = table::find(name)?;
        let zone = Zone::parse(table::entry(i)?.1).ok()?;
        let run = table::run_of(i).and_then(|r| u8::try_from(r + 1).ok()).unwrap_or(0);
        Some(Zone { name: u16::try_from(i + 1).unwrap_or(0), run, ..zone })
    }

    /// An IANA name from the table, else a POSIX TZ string; the refusal says why neither.
    pub fn resolve(s: &str) -> Result<Zone, String> {
        if let Some(z) = Zone::named(s) {
            return Ok(z);
        }
        Zone::parse(s).map_err(|e| {
            if s.contains('/') {
                format!("unknown time zone `{s}`: not an IANA zone name of the Time Zone Database {} (names are case-sensitive, e.g. `America/New_York`)", zones::VERSION)
            } else {
                format!("`{s}` is neither an IANA zone name nor a POSIX TZ string ({e})")
            }
        })
    }

    /// A POSIX TZ string: `std offset [dst [offset] ,start[/time],end[/time]]`, e.g.
    /// `EST5EDT,M3.2.0,M11.1.0`, `<+0530>-5:30`, `<-04>4<-03>,M9.1.6/24,M4.1.6/24`.
    /// Offsets are west of UTC (`EST5` is UTC-5) and may carry minutes and seconds; a DST
    /// name without an offset is one hour ahead of standard time. A DST name needs its rules
    /// (POSIX leaves the default to each system).
    pub fn parse(s: &str) -> Result<Zone, String> {
        let mut p = Parser { s: s.as_bytes(), at: 0 };
        p.name("standard time name")?;
        let std = -p.offset(24, "standard time offset")?;
        if p.done() {
            return Ok(Zone { std, dst: None, name: 0, run: 0 });
        }
        p.name("DST name")?;
        let offset = if p.done() || p.peek() == Some(b',') { std + 3600 } else { -p.offset(24, "DST offset")? };
        if p.done() {
            return Err("a DST name needs its rules: `,start[/time],end[/time]`".into());
        }
        p.expect(b',', "`,` before the DST start rule")?;
        let start = p.rule()?;
        p.expect(b',', "`,` before the DST end rule")?;
        let end = p.rule()?;
        if !p.done() {
            return Err(p.unexpected("the end of the string"));
        }
        Ok(Zone { std, dst: Some(Dst { offset, start, end }), name: 0, run: 0 })
    }

    /// The IANA name the zone was looked up by (None for a POSIX string).
    pub fn iana_name(self) -> Option<&'static str> {
        table::entry(usize::from(self.name).checked_sub(1)?).map(|(n, _)| n)
    }

    /// Whether the zone ever changes its offset (from 2026 on, for a zone of the table).
    pub fn has_dst(self) -> bool {
        self.dst.is_some() || self.listed().is_some()
    }

    /// How far local time jumps at a change of offset at most (0 without DST), in seconds.
    pub fn shift(self) -> i64 {
        let rules = self.dst.map_or(0, |d| (i64::from(d.offset) - i64::from(self.std)).abs());
        self.listed().map_or(rules, |l| rules.max(i64::from(l.jump)))
    }

    /// The zone's listed transitions (zones of the table whose database lists some from 2026 on).
    fn listed(self) -> Option<table::Run> {
        table::run(usize::from(self.run).checked_sub(1)?)
    }

    /// The UTC offset in effect at Unix second `t`.
    pub fn offset_at(self, t: i64) -> i32 {
        self.offset_in(&mut Memo::default(), t)
    }

    /// Local time (seconds since 1970-01-01T00:00 local) at Unix second `t`.
    pub fn local(self, t: i64) -> i64 {
        self.local_in(&mut Memo::default(), t)
    }

    /// The first instant of local day `day` (days since 1970-01-01): the earliest instant
    /// whose local time is that day's 00:00 or later. A midnight that does not exist (a
    /// spring-forward gap over 00:00) gives the first instant after the gap; a midnight that
    /// happens twice (a fall-back fold) the earlier one.
    pub fn day_start(self, day: i64) -> i64 {
        self.day_start_in(&mut Memo::default(), day)
    }

    /// [`Zone::offset_at`], reusing the year's rule changes `memo` holds.
    pub(crate) fn offset_in(self, memo: &mut Memo, t: i64) -> i32 {
        if let Some(o) = self.listed().and_then(|l| l.offset_at(t)) {
            return o;
        }
        match self.dst {
            None => self.std,
            Some(d) => memo.changes(self, d, year_of(local_day(t, self.std))).offset_at(t),
        }
    }

    /// [`Zone::local`], reusing `memo`.
    pub(crate) fn local_in(self, memo: &mut Memo, t: i64) -> i64 {
        t.saturating_add(i64::from(self.offset_in(memo, t)))
    }

    /// [`Zone::day_start`], reusing `memo`.
    pub(crate) fn day_start_in(self, memo: &mut Memo, day: i64) -> i64 {
        let m = day.saturating_mul(DAY);
        if let Some(t) = self.listed().and_then(|l| self.listed_day_start(memo, l, m)) {
            return t;
        }
        let Some(d) = self.dst else { return m.saturating_sub(i64::from(self.std)) };
        let ch = memo.changes(self, d, year_of(day));
        // The earliest instant with local time >= m lies where local time equals m (one of
        // the two offsets, if in effect there) or at a change that jumps over m.
        let mut best = i64::MAX;
        for o in [self.std, d.offset] {
            let t = m.saturating_sub(i64::from(o));
            if ch.offset_at(t) == o {
                best = best.min(t);
            }
        }
        for &(t, _) in &ch.list {
            if t < best && t.saturating_add(i64::from(ch.offset_at(t))) >= m {
                best = t;
            }
        }
        if best == i64::MAX {
            m.saturating_sub(i64::from(self.std))
        } else {
            best
        }
    }

    /// [`Zone::day_start`] of local midnight `m` (seconds) near the zone's listed transitions:
    /// None when `m` is two days or more past the last one (the footer's rules alone decide
    /// there). The earliest instant whose local time is `m` or later is a change of offset or
    /// `m` less the offset in effect there: it is the earliest, of every change and `m` less
    /// every offset within two days of `m` (listed ones, and the footer's past the last
    /// listed), whose local time is `m` or later.
    fn listed_day_start(self, memo: &mut Memo, l: table::Run, m: i64) -> Option<i64> {
        let (lo, hi) = (m.saturating_sub(2 * DAY), m.saturating_add(2 * DAY));
        if lo >= l.last() {
            return None;
        }
        let mut best = i64::MAX;
        let mut check = |memo: &mut Memo, t: i64| {
            if t < best && self.local_in(memo, t) >= m {
                best = t;
            }
        };
        let i = l.list.partition_point(|&(at, _)| i64::from(at) < lo);
        let before = i.checked_sub(1).and_then(|i| l.list.get(i)).map_or(l.before, |c| c.1);
        check(memo, m.saturating_sub(i64::from(before)));
        for &(at, o) in l.list.get(i..).unwrap_or(&[]).iter().take_while(|c| i64::from(c.0) <= hi) {
            check(memo, i64::from(at));
            check(memo, m.saturating_sub(i64::from(o)));
        }
        if hi >= l.last() {
            // The footer's rules from the last listed transition on.
            check(memo, m.saturating_sub(i64::from(self.std)));
            if let Some(d) = self.dst {
                check(memo, m.saturating_sub(i64::from(d.offset)));
                let changes = memo.changes(self, d, year_of(m.div_euclid(DAY))).list;
                for (t, _) in changes {
                    check(memo, t);
                }
            }
        }
        Some(if best == i64::MAX { m.saturating_sub(i64::from(before)) } else { best })
    }
}

/// The rule changes around the last year asked for, kept for the next question about the
/// same year: a cycle's start and end ask several times about one year.
#[derive(Default)]
pub(crate) struct Memo {
    held: Option<(i64, Changes)>,
}

impl Memo {
    fn changes(&mut self, z: Zone, d: Dst, year: i64) -> &Changes {
        if !matches!(self.held, Some((y, _)) if y == year) {
            self.held = None;
        }
        &self.held.get_or_insert_with(|| (year, Changes::around(z, d, year))).1
    }
}

/// The generated zone table ([`zones`]): names in one string, each with its rule's index;
/// the listed transitions from 2026 on of the few zones that have some.
pub mod table {
    use super::zones::{NAMES, RULES, RULE_OF, RUNS, RUN_OF, STARTS, TRANSITIONS};

    /// A zone's listed transitions from 2026-01-01 on: `(Unix second, offset from then on)`,
    /// ascending and never empty, the offset before the first, the largest change.
    #[derive(Debug, Clone, Copy)]
    pub struct Run {
        pub list: &'static [(u32, i32)],
        pub before: i32,
        pub jump: u16,
    }

    impl Run {
        /// The last listed transition: the footer's rules from then on.
        pub fn last(self) -> i64 {
            self.list.last().map_or(i64::MIN, |c| i64::from(c.0))
        }

        /// The offset at Unix second `t`, if before the last listed transition.
        pub fn offset_at(self, t: i64) -> Option<i32> {
            if t >= self.last() {
                return None;
            }
            let i = self.list.partition_point(|&(at, _)| i64::from(at) <= t);
            Some(i.checked_sub(1).and_then(|i| self.list.get(i)).map_or(self.before, |c| c.1))
        }
    }

    /// Run `r` of the listed transitions.
    pub fn run(r: usize) -> Option<Run> {
        let &(end, before, jump) = RUNS.get(r)?;
        let start = r.checked_sub(1).and_then(|p| RUNS.get(p)).map_or(0, |p| usize::from(p.0));
        let list = TRANSITIONS.get(start..usize::from(end)).filter(|l| !l.is_empty())?;
        Some(Run { list, before, jump })
    }

    /// The run of listed transitions of name `i`, if it has one.
    pub fn run_of(i: usize) -> Option<usize> {
        let k = RUN_OF.binary_search_by_key(&i, |&(n, _)| usize::from(n)).ok()?;
        Some(usize::from(RUN_OF.get(k)?.1))
    }

    /// How many names.
    pub fn len() -> usize {
        STARTS.len()
    }

    /// Name `i` (sorted order) and its POSIX TZ string.
    pub fn entry(i: usize) -> Option<(&'static str, &'static str)> {
        let start = usize::from(*STARTS.get(i)?);
        let end = STARTS.get(i + 1).map_or(NAMES.len(), |&e| usize::from(e)).saturating_sub(1);
        Some((NAMES.get(start..end)?, RULES.get(usize::from(*RULE_OF.get(i)?))?))
    }

    /// The index of an exact name.
    pub fn find(name: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match entry(mid)?.0.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Every (name, POSIX TZ string), sorted by name.
    pub fn iter() -> impl Iterator<Item = (&'static str, &'static str)> {
        (0..len()).filter_map(entry)
    }
}

/// The DST starts and ends of the years around one year, as `(Unix second, starts DST)`.
struct Changes {
    list: [(i64, bool); 6],
    std: i32,
    dst: i32,
}

impl Changes {
    fn around(z: Zone, d: Dst, year: i64) -> Changes {
        let mut list = [(0, false); 6];
        for (i, y) in (year - 1..=year + 1).enumerate() {
            let start = rule_day(d.start.date, y).saturating_mul(DAY).saturating_add(i64::from(d.start.time)).saturating_sub(i64::from(z.std));
            let end = rule_day(d.end.date, y).saturating_mul(DAY).saturating_add(i64::from(d.end.time)).saturating_sub(i64::from(d.offset));
            list[2 * i] = (start, true);
            list[2 * i + 1] = (end, false);
        }
        Changes { list, std: z.std, dst: d.offset }
    }

    /// The offset set by the latest change at or before `t` (a start and an end at the same
    /// instant leave DST on: POSIX's way to write DST all year). Before every change listed,
    /// the opposite of the earliest one.
    fn offset_at(&self, t: i64) -> i32 {
        let mut latest: Option<(i64, bool)> = None;
        let mut earliest = self.list[0];
        for &c in &self.list {
            if c.0 <= t && latest.is_none_or(|l| c > l) {
                latest = Some(c);
            }
            if c < earliest {
                earliest = c;
            }
        }
        let on = latest.map_or(!earliest.1, |l| l.1);
        if on {
            self.dst
        } else {
            self.std
        }
    }
}

/// The local day (days since 1970-01-01) of Unix second `t` at a fixed offset.
fn local_day(t: i64, offset: i32) -> i64 {
    t.saturating_add(i64::from(offset)).div_euclid(DAY)
}

/// Day (since 1970-01-01) that a rule names in `year`.
fn rule_day(date: RuleDate, year: i64) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    match date {
        RuleDate::Julian1(n) => {
            let n = i64::from(n);
            jan1 + n - 1 + i64::from(is_leap(year) && n >= 60)
        }
        RuleDate::Julian0(n) => jan1 + i64::from(n),
        RuleDate::Mwd { month, week, weekday } => {
            let first = days_from_civil(year, u32::from(month), 1);
            let mut day = first + (i64::from(weekday) - weekday_of(first)).rem_euclid(7) + 7 * (i64::from(week) - 1);
            let next = first + i64::from(month_len(year, u32::from(month)));
            while day >= next {
                day -= 7;
            }
            day
        }
    }
}

/// 0 Sunday .. 6 Saturday (1970-01-01 was a Thursday).
fn weekday_of(day: i64) -> i64 {
    (day + 4).rem_euclid(7)
}

pub fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Days in `month` (1..=12) of `year`.
pub fn month_len(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian; Howard Hinnant's
/// `days_from_civil` in signed arithmetic, any year).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + i64::from(month <= 2), month, day)
}

fn year_of(day: i64) -> i64 {
    civil_from_days(day).0
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }
    fn unexpected(&self, wanted: &str) -> String {
        match self.s.get(self.at..).filter(|r| !r.is_empty()) {
            Some(rest) => format!("expected {wanted} at `{}`", String::from_utf8_lossy(rest)),
            None => format!("expected {wanted} at the end"),
        }
    }
    fn expect(&mut self, b: u8, wanted: &str) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(wanted))
        }
    }

    /// `<...>` (letters, digits, `+`, `-`) or letters, 3 or more.
    fn name(&mut self, what: &str) -> Result<(), String> {
        let start = self.at;
        let (ok, quoted): (fn(u8) -> bool, bool) = if self.peek() == Some(b'<') {
            self.at += 1;
            (|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-', true)
        } else {
            (|b| b.is_ascii_alphabetic(), false)
        };
        let from = self.at;
        while self.peek().is_some_and(ok) {
            self.at += 1;
        }
        let len = self.at - from;
        if quoted {
            if self.peek() != Some(b'>') {
                self.at = start;
                return Err(self.unexpected(&format!("a {what} `<...>` of letters, digits, `+` or `-`, closed by `>`")));
            }
            self.at += 1;
        }
        if len < 3 {
            self.at = start;
            return Err(self.unexpected(&format!("a {what} (3 or more letters, or `<...>`)")));
        }
        Ok(())
    }

    /// `[+-]h[h][:mm[:ss]]` with hours up to `max_h`, in seconds (POSIX sign: west positive).
    fn offset(&mut self, max_h: i64, what: &str) -> Result<i32, String> {
        let start = self.at;
        let sign = match self.peek() {
            Some(b'-') => {
                self.at += 1;
                -1
            }
            Some(b'+') => {
                self.at += 1;
                1
            }
            _ => 1,
        };
        let bad = |p: &mut Self| {
            p.at = start;
            Err(p.unexpected(&format!("a {what} `[+-]hh[:mm[:ss]]` (hours 0 to {max_h})")))
        };
        let Some(h) = self.number(3) else { return bad(self) };
        let mut secs = h * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(b':') {
                break;
            }
            self.at += 1;
            match self.number(2) {
                Some(v) if v < 60 => secs += v * unit,
                _ => return bad(self),
            }
        }
        if h > max_h {
            return bad(self);
        }
        Ok((sign * secs) as i32)
    }

    /// 1 to `max` decimal digits.
    fn number(&mut self, max: usize) -> Option<i64> {
        let from = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) && self.at - from < max {
            self.at += 1;
        }
        if self.at == from || self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return None;
        }
        std::str::from_utf8(&self.s[from..self.at]).ok()?.parse().ok()
    }

    /// `Jn`, `n` or `Mm.w.d`, then `/time` (default 02:00).
    fn rule(&mut self) -> Result<Rule, String> {
        let start = self.at;
        let bad = |p: &mut Self, wanted: &str| {
            p.at = start;
            Err(p.unexpected(wanted))
        };
        let date = match self.peek() {
            Some(b'J') => {
                self.at += 1;
                match self.number(3) {
                    Some(n) if (1..=365).contains(&n) => RuleDate::Julian1(n as u16),
                    _ => return bad(self, "a rule `Jn` with n from 1 to 365"),
                }
            }
            Some(b'M') => {
                self.at += 1;
                let m = self.number(2);
                let w = if self.peek() == Some(b'.') { self.at += 1; self.number(1) } else { None };
                let d = if self.peek() == Some(b'.') { self.at += 1; self.number(1) } else { None };
                match (m, w, d) {
                    (Some(m @ 1..=12), Some(w @ 1..=5), Some(d @ 0..=6)) => RuleDate::Mwd { month: m as u8, week: w as u8, weekday: d as u8 },
                    _ => return bad(self, "a rule `Mm.w.d` (month 1-12, week 1-5, weekday 0-6)"),
                }
            }
            Some(b'0'..=b'9') => match self.number(3) {
                Some(n) if n <= 365 => RuleDate::Julian0(n as u16),
                _ => return bad(self, "a rule `n` with n from 0 to 365"),
            },
            _ => return bad(self, "a rule (`Mm.w.d`, `Jn` or `n`)"),
        };
        let time = if self.peek() == Some(b'/') {
            self.at += 1;
            // A rule's time is local and written with the usual sign (not west-positive).
            self.offset(167, "rule time")?
        } else {
            7200
        };
        Ok(Rule { date, time })
    }
}

impl fmt::Display for Zone {
    /// The IANA name, or the POSIX string in a canonical form (numeric names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.iana_name() {
            return f.write_str(n);
        }
        fn hms(secs: i64) -> String {
            let a = secs.abs();
            let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
            let sign = if secs < 0 { "-" } else { "" };
            match (m, s) {
                (0, 0) => format!("{sign}{h}"),
                (_, 0) => format!("{sign}{h}:{m:02}"),
                _ => format!("{sign}{h}:{m:02}:{s:02}"),
            }
        }
        fn abbr(east: i32) -> String {
            let a = east.unsigned_abs();
            let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
            let sign = if east < 0 { '-' } else { '+' };
            match (m, s) {
                (0, 0) => format!("<{sign}{h:02}>"),
                (_, 0) => format!("<{sign}{h:02}{m:02}>"),
                _ => format!("<{sign}{h:02}{m:02}{s:02}>"),
            }
        }
        fn rule(r: &Rule) -> String {
            let d = match r.date {
                RuleDate::Julian1(n) => format!("J{n}"),
                RuleDate::Julian0(n) => format!("{n}"),
                RuleDate::Mwd { month, week, weekday } => format!("M{month}.{week}.{weekday}"),
            };
            if r.time == 7200 {
                d
            } else {
                format!("{d}/{}", hms(i64::from(r.time)))
            }
        }
        write!(f, "{}{}", abbr(self.std), hms(-i64::from(self.std)))?;
        if let Some(d) = self.dst {
            write!(f, "{}", abbr(d.offset))?;
            if d.offset != self.std + 3600 {
                write!(f, "{}", hms(-i64::from(d.offset)))?;
            }
            write!(f, ",{},{}", rule(&d.start), rule(&d.end))?;
        }
        Ok(())
    }
}
