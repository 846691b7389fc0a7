#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::store::{init_registry, MemStore};

// sha256("secret")
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
const NOW: u64 = 1_700_000_000_000;

fn cfg() -> Config {
    Config::parse(
        format!(
            r#"{{"budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":10,"burst_credits":2}},"conc":{{"counts":"in_flight","limit":3}}}},
               "tenants":{{"acme":{{"priority":"vip","budgets":{{"rpm":{{"limit":20}}}}}}}},
               "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn setup() -> (Config, MemStore) {
    setup_with(cfg())
}

/// A store ready for the admin API under `c`.
fn setup_with(c: Config) -> (Config, MemStore) {
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    init(&s).unwrap();
    (c, s)
}

/// A config of `budgets` (JSON members) with the admin API on.
fn admin_cfg(extra: &str, budgets: &str) -> Config {
    Config::parse(format!(r#"{{{extra}"budgets":{{{budgets}}},"admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#).as_bytes()).unwrap()
}

fn call(c: &Config, s: &MemStore, o: &mut Overrides, method: &str, path: &str, body: &str) -> (u32, Value) {
    o.next_check = 0;
    o.refresh(c, s, NOW);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let r = handle(c, s, o, &Request { method, path, query, body: body.as_bytes() }, NOW, || StatusExtra { totals: json!({}), saturation: json!(null), global: json!(null) });
    (r.status, serde_json::from_str(&r.body).unwrap())
}

#[test]
fn bearer_token_is_checked() {
    let a = cfg().admin.unwrap();
    assert!(authorized(&a, Some(b"Bearer secret")));
    assert!(authorized(&a, Some(b"bearer secret")));
    assert!(!authorized(&a, None));
    assert!(!authorized(&a, Some(b"Bearer secreT")));
    assert!(!authorized(&a, Some(b"Bearer ")));
    assert!(!authorized(&a, Some(b"Basic secret")));
    assert!(!authorized(&a, Some(HASH.as_bytes())));
}

#[test]
fn admin_paths() {
    assert!(is_admin_path("/.quota", "/.quota/status"));
    assert!(is_admin_path("/.quota", "/.quota"));
    assert!(is_admin_path("/.quota", "/.quota?x=1"));
    assert!(!is_admin_path("/.quota", "/.quotas/status"));
    assert!(!is_admin_path("/.quota", "/api"));
}

#[test]
fn overrides_put_get_delete() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let (st, v) = call(&c, &s, &mut o, "GET", "/tenants/acme", "");
    assert_eq!(st, 200);
    assert_eq!(v["budgets"]["rpm"]["limit"], 20);
    assert_eq!(v["priority"], "vip");
    assert_eq!(v["tracked"], false);
    let (st, _) = call(&c, &s, &mut o, "PUT", "/tenants/acme/overrides", r#"{"budgets":{"rpm":{"burst_credits":7}}}"#);
    assert_eq!(st, 200);
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/acme", "");
    // On top of the configured entry: limit 20 stays, burst becomes 7, priority stays vip.
    assert_eq!((v["budgets"]["rpm"]["limit"].clone(), v["budgets"]["rpm"]["burst_credits"].clone()), (json!(20), json!(7)));
    assert_eq!(v["priority"], "vip");
    assert_eq!(v["override"]["budgets"]["rpm"]["burst_credits"], 7);
    assert_eq!(o.get("acme").unwrap().limits[c.budget_index("rpm").unwrap()].burst_credits, 7);
    let (st, _) = call(&c, &s, &mut o, "DELETE", "/tenants/acme/overrides", "");
    assert_eq!(st, 200);
    assert!(o.get("acme").is_none() || { o.next_check = 0; o.refresh(&c, &s, NOW); o.get("acme").is_none() });
    let (st, _) = call(&c, &s, &mut o, "DELETE", "/tenants/acme/overrides", "");
    assert_eq!(st, 404);
}

#[test]
fn bad_overrides_are_refused_with_the_key() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let (st, v) = call(&c, &s, &mut o, "PUT", "/tenants/x/overrides", r#"{"budgets":{"nope":{"limit":1}}}"#);
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let (st, v) = call(&c, &s, &mut o, "PUT", "/tenants/x/overrides", r#"{"priority":"gold"}"#);
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("priority"), "{v}");
    let (st, _) = call(&c, &s, &mut o, "PUT", "/tenants/x/overrides", "not json");
    assert_eq!(st, 400);
}

#[test]
fn reset_clears_counts_but_not_in_flight() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let mut sc = Scratch::default();
    store::resolve(&s, crate::core::Subject::Tenant("t"), store::TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
    let (rpm, conc) = (c.budgets[c.budget_index("rpm").unwrap()].id, c.budgets[c.budget_index("conc").unwrap()].id);
    store::transact(&s, &mut sc, |st| {
        *st.slot_mut(rpm) = core::Slot { budget: rpm, window_start: NOW - NOW % 60000, used: 9, prev: 0, ..Default::default() };
        st.slot_mut(conc).used = 2;
        (true, ())
    })
    .unwrap();
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/t", "");
    assert_eq!((v["budgets"]["rpm"]["used"].clone(), v["budgets"]["rpm"]["remaining"].clone()), (json!(9), json!(1)));
    assert_eq!(v["budgets"]["conc"]["used"], 2);
    assert_eq!(v["tracked"], true);
    let (st, _) = call(&c, &s, &mut o, "POST", "/tenants/t/reset", "");
    assert_eq!(st, 200);
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/t", "");
    assert_eq!(v["budgets"]["rpm"]["used"], 0);
    assert_eq!(v["budgets"]["conc"]["used"], 2);
    // Explicitly asked, in_flight slots are zeroed too (slots a trapped VM cannot release).
    let (st, v) = call(&c, &s, &mut o, "POST", "/tenants/t/reset?in_flight=true", "");
    assert_eq!((st, v["in_flight_reset"].clone()), (200, json!(true)));
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/t", "");
    assert_eq!(v["budgets"]["conc"]["used"], 0);
}

#[test]
fn saturation_values_expire() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let (st, _) = call(&c, &s, &mut o, "PUT", "/saturation", r#"{"cpu_load":0.95,"ttl_ms":1000}"#);
    assert_eq!(st, 200);
    assert_eq!(operator_values(&s, NOW + 999), vec![("cpu_load".to_string(), 0.95)]);
    assert!(operator_values(&s, NOW + 1000).is_empty());
    assert_eq!(call(&c, &s, &mut o, "PUT", "/saturation", r#"{"cpu_load":"hot"}"#).0, 400);
    assert_eq!(call(&c, &s, &mut o, "PUT", "/saturation", r#"{"ttl_ms":5}"#).0, 400);
}

#[test]
fn status_and_routing() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let (st, v) = call(&c, &s, &mut o, "GET", "/status", "");
    assert_eq!(st, 200);
    assert_eq!(v["tracked_tenants"], 0);
    assert_eq!(v["mode"], "enforce");
    assert_eq!(call(&c, &s, &mut o, "GET", "/nope", "").0, 404);
    assert_eq!(call(&c, &s, &mut o, "DELETE", "/status", "").0, 405);
    assert_eq!(call(&c, &s, &mut o, "GET", "/tenants/bad%20id", "").0, 200);
    assert_eq!(call(&c, &s, &mut o, "GET", &format!("/tenants/{}", "x".repeat(300)), "").0, 400);
}

#[test]
fn reset_repairs_an_undecodable_state() {
    let (c, s) = setup();
    let mut o = Overrides::default();
    let mut sc = Scratch::default();
    store::resolve(&s, crate::core::Subject::Tenant("t"), store::TenantKind::Dynamic, 10, NOW, 1, &mut sc).unwrap();
    let mut buf = Vec::new();
    let cas = s.get(&sc.key, &mut buf).unwrap().unwrap();
    s.set(&sc.key, b"\x09garbage", cas).unwrap();
    let (st, v) = call(&c, &s, &mut o, "GET", "/tenants/t", "");
    assert_ne!(st, 200, "{v}");
    let (st, v) = call(&c, &s, &mut o, "POST", "/tenants/t/reset", "");
    assert_eq!((st, v["repaired"].clone()), (200, json!(true)), "{v}");
    let (st, v) = call(&c, &s, &mut o, "GET", "/tenants/t", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["budgets"]["rpm"]["used"], 0);
    // A healthy state is reset without "repaired".
    let (_, v) = call(&c, &s, &mut o, "POST", "/tenants/t/reset", "");
    assert_eq!((v["reset"].clone(), v["repaired"].clone()), (json!(true), Value::Null));
}

#[test]
fn allowed_sources_match_v4_v6_and_refuse_unreadable_addresses() {
    let c = Config::parse(
        br#"{"admin":{"path_prefix":"/.quota","token_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
             "allowed_sources":["10.0.0.0/8","192.168.1.7","fd00::/8","127.0.0.1/32"]}}"#,
    )
    .unwrap();
    let a = c.admin.as_ref().unwrap();
    for (src, ok) in [
        ("10.1.2.3:5000", true),
        ("11.1.2.3:5000", false),
        ("192.168.1.7:1", true),
        ("192.168.1.8:1", false),
        ("[fd12::1]:80", true),
        ("[fe80::1]:80", false),
        ("127.0.0.1:4444", true),
        ("[::ffff:10.0.0.1]:80", true),
        ("garbage", false),
    ] {
        assert_eq!(source_allowed(a, Some(src.as_bytes())), ok, "{src}");
    }
    assert!(!source_allowed(a, None));
    let any = Config::parse(br#"{"admin":{"path_prefix":"/.quota","token_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#).unwrap();
    assert!(source_allowed(any.admin.as_ref().unwrap(), None));
    for (bad, path) in [(r#"["10.0.0.0/33"]"#, "admin.allowed_sources[0]"), (r#"["x"]"#, "admin.allowed_sources[0]"), ("[]", "admin.allowed_sources")] {
        let j = format!(r#"{{"admin":{{"path_prefix":"/.quota","token_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","allowed_sources":{bad}}}}}"#);
        assert_eq!(Config::parse(j.as_bytes()).unwrap_err().path, path);
    }
}

#[test]
fn a_calendar_month_budget_is_reported_as_such_never_as_a_sentinel_window() {
    let (c, s) = setup_with(admin_cfg("", r#""monthly":{"counts":"requests","window":"calendar_month","limit":1000},"rpm":{"counts":"requests","window_ms":60000,"limit":10}"#));
    let mut o = Overrides::default();
    let (st, v) = call(&c, &s, &mut o, "GET", "/tenants/m", "");
    assert_eq!(st, 200, "{v}");
    let m = &v["budgets"]["monthly"];
    assert_eq!((m["window"].clone(), m["window_ms"].clone()), (json!("calendar_month"), Value::Null), "{v}");
    assert_eq!(v["budgets"]["rpm"]["window_ms"], 60000);
    // It resets at the next UTC month start, within 31 days.
    let r = m["resets_in_ms"].as_u64().unwrap();
    assert!(r > 0 && r <= 31 * 86_400_000, "{v}");
}

/// SPEC 8: a global budget's report splits `used` into this Envoy's units and the others',
/// with the age of the others' figure; a budget that is not global has no such block.
#[test]
fn a_global_budgets_usage_shows_local_remote_and_age() {
    let (c, s) = setup_with(admin_cfg(r#""global":{"cluster":"rls"},"#, r#""g":{"counts":"requests","window_ms":60000,"limit":100,"global":"sync"},"l":{"counts":"requests","window_ms":60000,"limit":5}"#));
    let mut o = Overrides::default();
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/acme", "");
    assert_eq!(v["budgets"]["g"]["global"], json!({"mode": "sync", "local": 0, "remote": 0, "remote_age_ms": null}));
    assert_eq!(v["budgets"]["l"].get("global"), None);
    // 7 used here, 5 of them acknowledged; the service counted 12: the others used 7.
    let ws = NOW - NOW % 60_000;
    let mut st = TenantState::default();
    st.slot_mut(c.budgets[0].id).window_start = ws;
    st.slot_mut(c.budgets[0].id).used = 7;
    assert!(core::apply_answer(&mut st, c.budgets[0].id, crate::core::Window::from_ms(60_000), ws, NOW - 1500, 5, core::Answer::Total(12)));
    let mut sc = Scratch::default();
    store::resolve(&s, crate::core::Subject::Tenant("acme"), store::TenantKind::Dynamic, 100, NOW, 1, &mut sc).unwrap();
    let cas = s.get(&sc.key, &mut sc.buf).unwrap().unwrap();
    s.set(&sc.key, &st.encode(), cas).unwrap();
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/acme", "");
    assert_eq!(v["budgets"]["g"]["used"], 14);
    assert_eq!(v["budgets"]["g"]["global"], json!({"mode": "sync", "local": 7, "remote": 7, "remote_age_ms": 1500}));
}

/// A billing cycle budget is reported in the configuration's spelling, with the subject's
/// own anchor (a `tenants` entry's, a runtime override's) and the cycle's bounds.
#[test]
fn a_billing_cycle_is_reported_with_the_subjects_anchor_and_bounds() {
    let c = Config::parse(
        format!(
            r#"{{"budgets":{{"spend":{{"counts":"requests","window":{{"cycle":"monthly","day":15,"time_zone":"America/New_York"}},"limit":1000}},
                            "daily":{{"counts":"requests","window":{{"cycle":"daily","time_zone":"<+0530>-5:30"}},"limit":10}},
                            "rpm":{{"counts":"requests","window_ms":60000,"limit":10}}}},
                "tenants":{{"berlin":{{"billing":{{"day":"last","time_zone":"Europe/Berlin"}}}}}},
                "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let (c, s) = setup_with(c);
    let mut o = Overrides::default();
    let bounds = |v: &Value, b: &str| (v["budgets"][b]["window_start_ms"].as_u64().unwrap(), v["budgets"][b]["window_end_ms"].as_u64().unwrap());
    let (st, v) = call(&c, &s, &mut o, "GET", "/tenants/someone", "");
    assert_eq!(st, 200, "{v}");
    let spend = &v["budgets"]["spend"];
    assert_eq!(spend["window"], json!({"cycle": "monthly", "day": 15, "time_zone": "America/New_York"}), "{v}");
    assert_eq!(spend["window_ms"], Value::Null);
    let ny = Window::Cycle(crate::core::Cycle::monthly(15, crate::core::tz::Zone::named("America/New_York").unwrap()).unwrap());
    let (start, end) = bounds(&v, "spend");
    assert_eq!((start, end), (ny.start(NOW), ny.end(ny.start(NOW))));
    assert!(start <= NOW && NOW < end, "{v}");
    assert_eq!(spend["resets_in_ms"].as_u64().unwrap(), end - NOW);
    assert_eq!(v["budgets"]["daily"]["window"], json!({"cycle": "daily", "time_zone": "<+0530>-5:30"}));
    let (ds, de) = bounds(&v, "daily");
    assert_eq!(((ds / 1000 + 19_800) % 86_400, de - ds), (0, 86_400_000), "midnight at +05:30");
    // Fixed windows get their bounds too.
    let (rs, re) = bounds(&v, "rpm");
    assert_eq!((rs % 60_000, re - rs), (0, 60_000));
    // A tenant's billing anchor, then a runtime override's.
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/berlin", "");
    assert_eq!(v["budgets"]["spend"]["window"], json!({"cycle": "monthly", "day": 31, "time_zone": "Europe/Berlin"}), "{v}");
    assert_eq!(v["budgets"]["daily"]["window"]["time_zone"], "Europe/Berlin");
    let (st, v) = call(&c, &s, &mut o, "PUT", "/tenants/berlin/overrides", r#"{"billing":{"day":3}}"#);
    assert_eq!(st, 200, "{v}");
    let (_, v) = call(&c, &s, &mut o, "GET", "/tenants/berlin", "");
    assert_eq!(v["budgets"]["spend"]["window"], json!({"cycle": "monthly", "day": 3, "time_zone": "Europe/Berlin"}), "{v}");
    let (st, v) = call(&c, &s, &mut o, "PUT", "/tenants/berlin/overrides", r#"{"billing":{"time_zone":"Moon/Base"}}"#);
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("billing.time_zone"), "{v}");
}
