//! POSIX TZ strings: what parses, what is refused and why, how offsets and rules evaluate,
//! and the embedded table.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

/// Unix seconds of a UTC date and time.
fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
    days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + s
}

#[test]
fn fixed_offsets_with_minutes_and_seconds() {
    let z = Zone::parse("<+0530>-5:30").unwrap();
    assert_eq!(z.offset_at(0), 5 * 3600 + 30 * 60);
    assert!(!z.has_dst());
    assert_eq!(Zone::parse("<-03>3").unwrap().offset_at(0), -3 * 3600);
    assert_eq!(Zone::parse("<+010203>-1:02:03").unwrap().offset_at(0), 3723);
    assert_eq!(Zone::parse("ABC+24").unwrap().offset_at(0), -24 * 3600);
    assert_eq!(Zone::parse("UTC0").unwrap(), Zone::UTC);
}

#[test]
fn dst_rules_in_every_form() {
    let ny = Zone::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
    // 2027: DST from March 14 02:00 EST (07:00Z) to November 7 02:00 EDT (06:00Z).
    assert_eq!(ny.offset_at(utc(2027, 3, 14, 6, 59, 59)), -5 * 3600);
    assert_eq!(ny.offset_at(utc(2027, 3, 14, 7, 0, 0)), -4 * 3600);
    assert_eq!(ny.offset_at(utc(2027, 11, 7, 5, 59, 59)), -4 * 3600);
    assert_eq!(ny.offset_at(utc(2027, 11, 7, 6, 0, 0)), -5 * 3600);
    // The DST offset defaults to one hour ahead; an explicit one may differ (Lord Howe: 30 min).
    let lh = Zone::parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0").unwrap();
    assert_eq!(lh.offset_at(utc(2027, 1, 1, 0, 0, 0)), 11 * 3600);
    assert_eq!(lh.offset_at(utc(2027, 6, 1, 0, 0, 0)), 10 * 3600 + 1800);
    // Jn never counts February 29 (J60 is March 1), n does (day 59 is February 29 in 2028).
    let j = Zone::parse("AAA0BBB,J60/0,J300/0").unwrap();
    assert_eq!(j.offset_at(utc(2028, 3, 1, 0, 0, 0)), 3600);
    assert_eq!(j.offset_at(utc(2028, 2, 29, 23, 59, 59)), 0);
    let n = Zone::parse("AAA0BBB,59/0,300/0").unwrap();
    assert_eq!(n.offset_at(utc(2028, 2, 29, 0, 0, 0)), 3600);
    assert_eq!(n.offset_at(utc(2027, 3, 1, 0, 0, 0)), 3600, "day 59 of 2027 is March 1");
    assert_eq!(n.offset_at(utc(2027, 2, 28, 23, 59, 59)), 0);
}

#[test]
fn rule_times_may_be_negative_or_past_24_hours() {
    // Nuuk: DST starts the last Sunday of March at -1:00 (Saturday 23:00 local, 01:00Z).
    let nuuk = Zone::parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0").unwrap();
    assert_eq!(nuuk.offset_at(utc(2027, 3, 28, 0, 59, 59)), -2 * 3600);
    assert_eq!(nuuk.offset_at(utc(2027, 3, 28, 1, 0, 0)), -3600);
    // Jerusalem: the Thursday before the last Sunday of March... at 26:00 (Friday 02:00).
    let jer = Zone::parse("IST-2IDT,M3.4.4/26,M10.5.0").unwrap();
    // 2027-03-25 is the fourth Thursday; Friday 26th 02:00 IST = 00:00Z.
    assert_eq!(jer.offset_at(utc(2027, 3, 25, 23, 59, 59)), 2 * 3600);
    assert_eq!(jer.offset_at(utc(2027, 3, 26, 0, 0, 0)), 3 * 3600);
    // DST all year, POSIX's way: from January 1 00:00 to December 31 25:00.
    let all = Zone::parse("EST5EDT,0/0,J365/25").unwrap();
    for t in [utc(2027, 1, 1, 5, 0, 0), utc(2027, 7, 1, 0, 0, 0), utc(2027, 12, 31, 23, 0, 0), utc(2028, 1, 1, 5, 0, 0)] {
        assert_eq!(all.offset_at(t), -4 * 3600, "at {t}");
    }
    assert!(Zone::parse("AAA0BBB,M3.2.0/167,M11.1.0/-167").unwrap().has_dst());
}

#[test]
fn southern_hemisphere_dst_spans_the_new_year() {
    let syd = Zone::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
    assert_eq!(syd.offset_at(utc(2027, 1, 15, 0, 0, 0)), 11 * 3600);
    assert_eq!(syd.offset_at(utc(2027, 7, 1, 0, 0, 0)), 10 * 3600);
    assert_eq!(syd.offset_at(utc(2027, 12, 31, 23, 0, 0)), 11 * 3600);
    // Ends Sunday 2027-04-04 03:00 AEDT (16:00Z the day before).
    assert_eq!(syd.offset_at(utc(2027, 4, 3, 15, 59, 59)), 11 * 3600);
    assert_eq!(syd.offset_at(utc(2027, 4, 3, 16, 0, 0)), 10 * 3600);
}

#[test]
fn wrong_strings_are_refused_with_the_reason() {
    for (s, why) in [
        ("", "standard time name"),
        ("E5", "standard time name"),
        ("<+05-5", "closed by `>`"),
        ("EST", "standard time offset"),
        ("EST25", "hours 0 to 24"),
        ("EST5:60", "standard time offset"),
        ("EST5EDT", "needs its rules"),
        ("EST5EDT,M3.2.0", "end rule"),
        ("EST5EDT,M13.2.0,M11.1.0", "month 1-12"),
        ("EST5EDT,M3.6.0,M11.1.0", "week 1-5"),
        ("EST5EDT,M3.2.7,M11.1.0", "weekday 0-6"),
        ("EST5EDT,J0,J100", "1 to 365"),
        ("EST5EDT,366,J100", "0 to 365"),
        ("EST5EDT,M3.2.0/168,M11.1.0", "hours 0 to 167"),
        ("EST5EDT,M3.2.0,M11.1.0x", "the end of the string"),
        ("EST5 EDT", "DST name"),
    ] {
        let e = Zone::parse(s).unwrap_err();
        assert!(e.contains(why), "{s:?}: {e}");
    }
}

#[test]
fn names_come_from_the_table_and_unknown_ones_are_refused() {
    let ny = Zone::named("America/New_York").unwrap();
    assert_eq!(ny.iana_name(), Some("America/New_York"));
    assert_eq!(ny.to_string(), "America/New_York");
    assert_eq!(Zone { name: 0, run: 0, ..ny }, Zone::parse("EST5EDT,M3.2.0,M11.1.0").unwrap());
    assert_eq!(Zone::resolve("UTC").unwrap().offset_at(0), 0);
    assert!(Zone::named("america/new_york").is_none(), "names are exact");
    let e = Zone::resolve("Mars/Olympus_Mons").unwrap_err();
    assert!(e.contains("unknown time zone `Mars/Olympus_Mons`"), "{e}");
    let e = Zone::resolve("Nowhere").unwrap_err();
    assert!(e.contains("neither an IANA zone name nor a POSIX TZ string"), "{e}");
    // A POSIX string is shown in a canonical form that parses back to the same zone.
    for s in ["<+0530>-5:30", "<-04>4<-03>,M9.1.6/24,M4.1.6/24", "<+010203>-1:02:03", "EST5EDT,0/0,J365/25", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"] {
        let z = Zone::parse(s).unwrap();
        assert_eq!(Zone::parse(&z.to_string()).unwrap(), z, "{s} shown as {z}");
    }
}

#[test]
fn the_table_is_sorted_and_every_entry_parses() {
    assert!(table::len() > 500);
    let all: Vec<_> = table::iter().collect();
    assert_eq!(all.len(), table::len());
    for w in all.windows(2) {
        assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
    }
    for (i, (name, footer)) in all.iter().enumerate() {
        assert!(!name.is_empty() && !name.contains('\n'));
        assert_eq!(table::find(name), Some(i));
        let z = Zone::named(name).unwrap_or_else(|| panic!("{name}: `{footer}` does not parse"));
        assert_eq!(z.iana_name(), Some(*name));
    }
    assert_eq!(table::entry(0), Some(("Africa/Abidjan", "GMT0")));
    assert_eq!(table::find("America/New_York").and_then(table::entry), Some(("America/New_York", "EST5EDT,M3.2.0,M11.1.0")));
    assert_eq!(table::find("Zulu").and_then(table::entry).map(|e| e.1), Some("UTC0"), "the last name");
    assert_eq!((table::find("A"), table::find("Zz"), table::find("")), (None, None, None));
    assert_eq!(table::entry(table::len()), None);
}

#[test]
fn day_starts_at_the_end_of_a_gap_and_the_first_of_a_fold() {
    // Havana: DST from the second Sunday of March at 00:00 (no midnight that day), back on
    // the first Sunday of November at 01:00 CDT (midnight twice).
    let hav = Zone::parse("CST5CDT,M3.2.0/0,M11.1.0/1").unwrap();
    assert_eq!(hav.day_start(days_from_civil(2028, 3, 12)), utc(2028, 3, 12, 5, 0, 0), "the instant the gap ends");
    assert_eq!(hav.day_start(days_from_civil(2028, 11, 5)), utc(2028, 11, 5, 4, 0, 0), "00:00 CDT, not 00:00 CST");
    assert_eq!(hav.day_start(days_from_civil(2028, 11, 6)), utc(2028, 11, 6, 5, 0, 0));
    // A gap that swallows midnight from 23:30: the day starts at the gap's end (00:30).
    let odd = Zone::parse("AAA0BBB,M3.2.0/23:30,M11.1.0").unwrap();
    // 2028-03-12 23:30 AAA (UTC) becomes 00:30 BBB on the 13th.
    assert_eq!(odd.day_start(days_from_civil(2028, 3, 13)), utc(2028, 3, 12, 23, 30, 0));
    // Very large and early days do not overflow or panic.
    let _ = hav.day_start(i64::MAX / DAY);
    let _ = hav.day_start(-1);
    let _ = hav.offset_at(i64::MAX);
}

#[test]
fn listed_transitions_come_before_the_footer() {
    // Havana (and its link Cuba): the database keeps DST from 2026-03-08 to 2027-11-07, which
    // the footer (`CST5CDT,M3.2.0/0,M11.1.0/1`) would end on 2026-11-01.
    for name in ["America/Havana", "Cuba"] {
        let hav = Zone::named(name).unwrap();
        assert!(hav.has_dst());
        assert_eq!(hav.offset_at(utc(2026, 1, 1, 0, 0, 0)), -5 * 3600, "{name}");
        assert_eq!(hav.offset_at(utc(2026, 12, 1, 0, 0, 0)), -4 * 3600, "{name}: DST all winter");
        assert_eq!(hav.offset_at(utc(2027, 11, 7, 4, 59, 59)), -4 * 3600, "{name}");
        assert_eq!(hav.offset_at(utc(2027, 11, 7, 5, 0, 0)), -5 * 3600, "{name}: the last listed transition");
        // The footer from then on: DST again from 2028-03-12 00:00 CST, so no midnight that day.
        assert_eq!(hav.offset_at(utc(2028, 3, 12, 6, 0, 0)), -4 * 3600, "{name}");
        assert_eq!(hav.day_start(days_from_civil(2028, 3, 12)), utc(2028, 3, 12, 5, 0, 0), "{name}");
        // No fall-back fold on 2026-11-01: one midnight, in CDT.
        assert_eq!(hav.day_start(days_from_civil(2026, 11, 1)), utc(2026, 11, 1, 4, 0, 0), "{name}");
        assert_eq!(hav.day_start(days_from_civil(2026, 11, 2)), utc(2026, 11, 2, 4, 0, 0), "{name}");
    }
    // A POSIX string never has listed transitions; a zone without any keeps its footer.
    assert_eq!(Zone::parse("CST5CDT,M3.2.0/0,M11.1.0/1").unwrap().offset_at(utc(2026, 12, 1, 0, 0, 0)), -5 * 3600);
    let ny = Zone::named("America/New_York").unwrap();
    assert_eq!(ny.shift(), 3600);
    assert_eq!(Zone::named("Asia/Gaza").unwrap().shift(), 3600);
}
