//! Billing cycles in the configuration: what loads, what each subject's anchor becomes, and
//! every refusal with the key path it names.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use crate::config::tests::{parse, refused};
use crate::config::Config;
use crate::core::cycle::Period;
use crate::core::tz::Zone;
use crate::core::{Cycle, Subject, Window};

/// A config with budget `b` whose window is `window` (JSON), and `rest` top-level keys.
fn with_window(window: &str, rest: &str) -> String {
    format!(r#"{{"budgets":{{"b":{{"counts":"requests","window":{window},"limit":10}}}}{rest}}}"#)
}

fn cycle(c: &Config, who: Subject, budget: &str) -> Cycle {
    let i = c.budget_index(budget).unwrap();
    c.configured_policy(who).limits[i].window.cycle().unwrap()
}

#[test]
fn cycles_load_with_their_defaults() {
    let c = parse(&with_window(r#"{"cycle":"monthly","day":15,"time_zone":"America/New_York"}"#, "")).unwrap();
    let ny = Zone::named("America/New_York").unwrap();
    assert_eq!(c.budgets[0].limits.window, Window::Cycle(Cycle::monthly(15, ny).unwrap()));
    let c = parse(&with_window(r#"{"cycle":"monthly"}"#, "")).unwrap();
    assert_eq!(c.budgets[0].limits.window, Window::Cycle(Cycle::monthly(1, Zone::UTC).unwrap()), "day 1, UTC");
    let c = parse(&with_window(r#"{"cycle":"monthly","day":"last"}"#, "")).unwrap();
    assert_eq!(c.budgets[0].limits.window.cycle().unwrap().period, Period::Monthly(31));
    let c = parse(&with_window(r#"{"cycle":"daily","time_zone":"Asia/Tokyo"}"#, "")).unwrap();
    assert_eq!(c.budgets[0].limits.window, Window::Cycle(Cycle::daily(Zone::named("Asia/Tokyo").unwrap())));
    for posix in ["<+0530>-5:30", "EST5EDT,M3.2.0,M11.1.0", "<-01>1:02:03", "<-04>4<-03>,M9.1.6/24,M4.1.6/24"] {
        let c = parse(&with_window(&format!(r#"{{"cycle":"daily","time_zone":"{posix}"}}"#), "")).unwrap_or_else(|e| panic!("{posix}: {e}"));
        assert_eq!(c.budgets[0].limits.window.cycle().unwrap().zone, Zone::parse(posix).unwrap());
    }
    // Calendar months are unchanged.
    assert_eq!(parse(&with_window(r#""calendar_month""#, "")).unwrap().budgets[0].limits.window, Window::CalendarMonth);
}

#[test]
fn a_tenant_or_scope_id_anchors_its_own_cycles() {
    let c = parse(
        r#"{"scopes":{"team":{"header":"x-team","ids":{"blue":{"billing":{"time_zone":"Asia/Kolkata"}}}}},
            "budgets":{"m":{"counts":"requests","window":{"cycle":"monthly","day":15,"time_zone":"America/New_York"},"limit":10},
                       "d":{"counts":"requests","window":{"cycle":"daily"},"limit":10},
                       "rpm":{"counts":"requests","window_ms":60000,"limit":10},
                       "team_m":{"counts":"requests","window":{"cycle":"monthly","day":"last"},"limit":10,"scope":"team"}},
            "tenants":{"acme":{"billing":{"day":3,"time_zone":"Europe/Berlin"}},
                       "daily_only":{"billing":{"day":20}},
                       "fixed":{"billing":{"day":3},"budgets":{"m":{"window_ms":86400000}}}}}"#,
    )
    .unwrap();
    let (ny, berlin, kolkata) = (Zone::named("America/New_York").unwrap(), Zone::named("Europe/Berlin").unwrap(), Zone::named("Asia/Kolkata").unwrap());
    let acme = Subject::Tenant("acme");
    assert_eq!(cycle(&c, acme, "m"), Cycle::monthly(3, berlin).unwrap());
    assert_eq!(cycle(&c, acme, "d"), Cycle::daily(berlin), "the zone moves daily cycles; the day does not");
    assert_eq!(c.configured_policy(acme).limits[c.budget_index("rpm").unwrap()].window, Window::from_ms(60_000));
    // A missing key falls back to the budget's.
    assert_eq!(cycle(&c, Subject::Tenant("daily_only"), "m"), Cycle::monthly(20, ny).unwrap());
    assert_eq!(cycle(&c, Subject::Tenant("daily_only"), "d"), Cycle::daily(Zone::UTC));
    // A window_ms override replaces the cycle; billing leaves it alone.
    assert_eq!(c.configured_policy(Subject::Tenant("fixed")).limits[c.budget_index("m").unwrap()].window, Window::from_ms(86_400_000));
    // Others keep the budget's anchor.
    assert_eq!(cycle(&c, Subject::Tenant("someone"), "m"), Cycle::monthly(15, ny).unwrap());
    // A scope id anchors its scope's budgets only; a tenant's billing does not reach them.
    let blue = c.scope_subject("team", "blue").unwrap();
    assert_eq!(cycle(&c, blue, "team_m"), Cycle::monthly(31, kolkata).unwrap());
    assert_eq!(cycle(&c, blue, "m"), Cycle::monthly(15, ny).unwrap());
    assert_eq!(cycle(&c, acme, "team_m"), Cycle::monthly(31, Zone::UTC).unwrap());
}

#[test]
fn wrong_cycles_are_refused_with_the_key_path() {
    for (window, path, words) in [
        (r#"{"cycle":"monthly","time_zone":"Mars/Olympus_Mons"}"#, "budgets.b.window.time_zone", "unknown time zone `Mars/Olympus_Mons`"),
        (r#"{"cycle":"monthly","time_zone":"EST5EDT4"}"#, "budgets.b.window.time_zone", "neither an IANA zone name nor a POSIX TZ string"),
        (r#"{"cycle":"daily","time_zone":"<+05>-5<+06>"}"#, "budgets.b.window.time_zone", "needs its rules"),
        (r#"{"cycle":"daily","time_zone":"XYZ-25"}"#, "budgets.b.window.time_zone", "hours 0 to 24"),
        (r#"{"cycle":"monthly","day":0}"#, "budgets.b.window.day", "from 1 to 31 or \"last\", got 0"),
        (r#"{"cycle":"monthly","day":32}"#, "budgets.b.window.day", "got 32"),
        (r#"{"cycle":"monthly","day":-1}"#, "budgets.b.window.day", "got -1"),
        (r#"{"cycle":"monthly","day":"first"}"#, "budgets.b.window.day", "got \"first\""),
        (r#"{"cycle":"monthly","day":1.5}"#, "budgets.b.window.day", "got 1.5"),
        (r#"{"cycle":"daily","day":1}"#, "budgets.b.window.day", "a daily cycle has no `day`"),
        (r#"{"cycle":"weekly"}"#, "budgets.b.window.cycle", "unknown variant `weekly`"),
        (r#"{"day":3}"#, "budgets.b.window", "missing field `cycle`"),
        (r#"{"cycle":"monthly","days":3}"#, "budgets.b.window", "unknown field `days`"),
        (r#"{"cycle":"monthly","time_zone":5}"#, "budgets.b.window.time_zone", "invalid type"),
        (r#"5"#, "budgets.b.window", "expected \"calendar_month\" or a billing cycle"),
        (r#""fortnight""#, "budgets.b.window", "unknown window `fortnight`"),
    ] {
        let e = refused(&with_window(window, ""));
        assert!(e.path.starts_with(path) && e.message.contains(words), "{window}: {e}");
        if !window.contains("days") {
            assert_eq!(e.path, path, "{window}: {e}");
        }
    }
    // A cycle with window_ms, or sliding.
    let e = refused(r#"{"budgets":{"b":{"counts":"requests","window_ms":60000,"window":{"cycle":"daily"},"limit":1}}}"#);
    assert_eq!(e.path, "budgets.b.window", "{e}");
    assert!(e.message.contains("not both"), "{e}");
    let e = refused(r#"{"budgets":{"b":{"counts":"requests","window":{"cycle":"daily"},"algorithm":"sliding","limit":1}}}"#);
    assert_eq!((e.path.as_str(), e.message.as_str()), ("budgets.b.algorithm", "billing cycles cannot slide"));
}

#[test]
fn wrong_billing_entries_are_refused_with_the_key_path() {
    let budgets = r#""budgets":{"m":{"counts":"requests","window":{"cycle":"monthly"},"limit":10},"t":{"counts":"requests","window":{"cycle":"monthly"},"limit":10,"scope":"team"}}"#;
    for (entry, path, words) in [
        (r#""tenants":{"acme":{"billing":{"day":0}}}"#, "tenants.acme.billing.day", "got 0"),
        (r#""tenants":{"acme":{"billing":{"day":32}}}"#, "tenants.acme.billing.day", "got 32"),
        (r#""tenants":{"acme":{"billing":{"time_zone":"Europe/Atlantis"}}}"#, "tenants.acme.billing.time_zone", "unknown time zone"),
        (r#""tenants":{"acme":{"billing":{"zone":"UTC"}}}"#, "tenants.acme.billing", "unknown field `zone`"),
        (r#""tenants":{"acme":{"billing":"UTC"}}"#, "tenants.acme.billing", "invalid type"),
        (r#""scopes":{"team":{"header":"x-team","ids":{"blue":{"billing":{"time_zone":"nope"}}}}}"#, "scopes.team.ids.blue.billing.time_zone", "neither"),
        (r#""scopes":{"team":{"header":"x-team","ids":{"blue":{"billing":{"day":"last-but-one"}}}}}"#, "scopes.team.ids.blue.billing.day", "\"last\""),
    ] {
        let rest = if entry.contains("scopes") { String::new() } else { r#","scopes":{"team":{"header":"x-team"}}"#.to_string() };
        let e = refused(&format!("{{{budgets},{entry}{rest}}}"));
        assert!(e.path.starts_with(path) && e.message.contains(words), "{entry}: {e}");
    }
}

#[test]
fn cycles_may_be_global_but_their_names_stay_splittable() {
    let g = r#","global":{"cluster":"rls"}"#;
    let c = parse(r#"{"global":{"cluster":"rls"},"budgets":{"b":{"counts":"llm_cost","window":{"cycle":"daily","time_zone":"Asia/Tokyo"},"limit":10,"global":"sync"}},"llm":{"prices":{"*":{"input":1,"output":1}}}}"#);
    assert!(c.is_ok(), "{:?}", c.err());
    let e = refused(&format!(r#"{{"budgets":{{"x_cycle_y":{{"counts":"requests","window":{{"cycle":"monthly"}},"limit":1,"global":"exact"}}}}{g}}}"#));
    assert_eq!(e.path, "budgets.x_cycle_y.global", "{e}");
    assert!(e.message.contains("`_cycle_`"), "{e}");
}
