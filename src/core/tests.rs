#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::config::Config;

fn cfg(json: &str) -> Config {
    Config::parse(json.as_bytes()).unwrap()
}

struct Case {
    c: Config,
    st: TenantState,
    usage: Vec<Usage>,
}

impl Case {
    fn new(json: &str) -> Case {
        Case { c: cfg(json), st: TenantState::default(), usage: Vec::new() }
    }
    fn ask(&mut self, tenant: &str, now: Millis, demands: &[Demand], keep: f64) -> Result<(), Rejection> {
        let p = self.c.policy(tenant).clone();
        let pol = Policy { budgets: &self.c.budgets, limits: &p.limits, keep, saturation_retry_after_s: 7, global: crate::core::GlobalView::Remote };
        decide(&pol, &mut self.st, now, demands, &mut self.usage)
    }
}

const RPM: &str = r#"{"budgets":{"rpm":{"counts":"requests","window_ms":60000,"limit":3,"burst_credits":2}}}"#;
const REQ: Demand = Demand { budget: 0, units: 1, admit: Admit::Reserve };

#[test]
fn exactly_limit_plus_burst_then_burst_exhausted() {
    let mut k = Case::new(RPM);
    let t0 = 1_700_000_040_000 + 40_000; // 40 s into a minute
    let clock = FakeClock::new(t0);
    for i in 0..5 {
        k.ask("x", clock.now_ms(), &[REQ], 1.0).unwrap_or_else(|r| panic!("request {i} rejected: {r:?}"));
    }
    assert_eq!(k.usage[0].burst_taken, 1);
    assert_eq!(k.usage[0].burst_remaining(), 0);
    let r = k.ask("x", clock.now_ms(), &[REQ], 1.0).unwrap_err();
    assert_eq!(r.reason, Reason::BurstExhausted);
    assert_eq!(r.retry_after_s, 20);
    assert_eq!(r.limit, 3);
    clock.advance(19_500);
    assert_eq!(k.ask("x", clock.now_ms(), &[REQ], 1.0).unwrap_err().retry_after_s, 1);
    clock.advance(500); // the window resets at the minute
    k.ask("x", clock.now_ms(), &[REQ], 1.0).unwrap();
    assert_eq!(k.usage[0].remaining(), 2);
}

#[test]
fn without_burst_the_reason_names_the_budget() {
    let mut k = Case::new(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1}}}"#);
    k.ask("x", 0, &[REQ], 1.0).unwrap();
    let r = k.ask("x", 0, &[REQ], 1.0).unwrap_err();
    assert_eq!(r.reason, Reason::Exceeded);
    assert_eq!(r.reason.header_value("rpm"), "rpm_exceeded");
}

#[test]
fn rejection_consumes_nothing_of_any_budget() {
    let mut k = Case::new(r#"{"budgets":{"a":{"counts":"requests","window_ms":60000,"limit":10},"b":{"counts":"request_bytes","window_ms":60000,"limit":100}}}"#);
    let ask = |units| [Demand { budget: 0, units: 1, admit: Admit::Reserve }, Demand { budget: 1, units, admit: Admit::Reserve }];
    k.ask("x", 0, &ask(60), 1.0).unwrap();
    let before = k.st.clone();
    let r = k.ask("x", 0, &ask(41), 1.0).unwrap_err();
    assert_eq!(r.budget, 1);
    assert_eq!(k.st, before);
    k.ask("x", 0, &ask(40), 1.0).unwrap();
    assert_eq!(k.st.slot(k.c.budgets[0].id).unwrap().used, 2);
}

#[test]
fn overrides_and_unlimited() {
    let mut k = Case::new(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":60000,"limit":1}},
        "tenants":{"big":{"budgets":{"rpm":{"limit":3}}},"free":{"unlimited":true}}}"#);
    for _ in 0..3 {
        k.ask("big", 0, &[REQ], 1.0).unwrap();
    }
    assert!(k.ask("big", 0, &[REQ], 1.0).is_err());
    k.st = TenantState::default();
    for _ in 0..100 {
        k.ask("free", 0, &[REQ], 1.0).unwrap();
    }
}

#[test]
fn in_flight_slots_release() {
    let mut k = Case::new(r#"{"budgets":{"conc":{"counts":"in_flight","limit":1,"burst_credits":1}}}"#);
    k.ask("x", 5, &[REQ], 1.0).unwrap();
    k.ask("x", 5, &[REQ], 1.0).unwrap();
    let r = k.ask("x", 5, &[REQ], 1.0).unwrap_err();
    assert_eq!((r.reason, r.retry_after_s), (Reason::BurstExhausted, 1));
    let id = k.c.budgets[0].id;
    release(&mut k.st, id, 1);
    k.ask("x", 99_999_999, &[REQ], 1.0).unwrap();
    release(&mut k.st, id, 1);
    release(&mut k.st, id, 1);
    release(&mut k.st, id, 1); // never below zero
    assert_eq!(k.st.slot(id).unwrap().used, 0);
}

#[test]
fn probe_admits_while_below_cap_and_charge_crosses() {
    let mut k = Case::new(r#"{"budgets":{"tok":{"counts":{"response_header":"x-cost"},"window_ms":60000,"limit":100}}}"#);
    let probe = [Demand { budget: 0, units: 0, admit: Admit::Probe }];
    k.ask("x", 0, &probe, 1.0).unwrap();
    let p = k.c.policy("x").clone();
    let pol = Policy { budgets: &k.c.budgets, limits: &p.limits, keep: 1.0, saturation_retry_after_s: 1, global: crate::core::GlobalView::Remote };
    let u = charge(&pol, &mut k.st, 0, 0, 150).unwrap();
    assert_eq!((u.used, u.remaining()), (150, 0));
    assert_eq!(k.ask("x", 0, &probe, 1.0).unwrap_err().reason, Reason::Exceeded);
}

#[test]
fn zero_unit_demands_always_fit() {
    let mut k = Case::new(r#"{"budgets":{"cost":{"counts":{"request_header":"x-cost"},"window_ms":60000,"limit":10}}}"#);
    k.ask("x", 0, &[Demand { budget: 0, units: 10, admit: Admit::Reserve }], 1.0).unwrap();
    assert!(k.ask("x", 0, &[Demand { budget: 0, units: 1, admit: Admit::Reserve }], 1.0).is_err());
    k.ask("x", 0, &[Demand { budget: 0, units: 0, admit: Admit::Reserve }], 1.0).unwrap();
}

#[test]
fn saturation_keep_reduces_limits_with_its_own_reason() {
    let mut k = Case::new(RPM);
    // keep 0.5: limit 1, burst 1.
    k.ask("x", 0, &[REQ], 0.5).unwrap();
    k.ask("x", 0, &[REQ], 0.5).unwrap();
    let r = k.ask("x", 0, &[REQ], 0.5).unwrap_err();
    assert_eq!((r.reason, r.retry_after_s, r.limit), (Reason::SaturationThrottle, 7, 1));
    for _ in 0..3 {
        k.ask("x", 0, &[REQ], 1.0).unwrap();
    }
    // Exhausted at full limits: the budget's own reason, not saturation.
    assert_eq!(k.ask("x", 0, &[REQ], 0.5).unwrap_err().reason, Reason::BurstExhausted);
}

#[test]
fn sliding_window_carries_the_previous_window() {
    let mut k = Case::new(r#"{"budgets":{"s":{"counts":"requests","window_ms":1000,"limit":10,"algorithm":"sliding"}}}"#);
    for _ in 0..10 {
        k.ask("x", 0, &[REQ], 1.0).unwrap();
    }
    // 25% into the next window, 75% of the previous 10 still weigh: 8 (ceil 7.5), room for 2.
    k.ask("x", 1250, &[REQ], 1.0).unwrap();
    k.ask("x", 1250, &[REQ], 1.0).unwrap();
    assert!(k.ask("x", 1250, &[REQ], 1.0).is_err());
    // Two windows later nothing carries.
    for _ in 0..10 {
        k.ask("x", 3000, &[REQ], 1.0).unwrap();
    }
}

#[test]
fn clock_stepping_back_does_not_refill() {
    let mut k = Case::new(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1}}}"#);
    k.ask("x", 5_000, &[REQ], 1.0).unwrap();
    let r = k.ask("x", 4_100, &[REQ], 1.0).unwrap_err();
    assert_eq!(r.reason, Reason::Exceeded);
    assert!(r.retry_after_s >= 1);
}

#[test]
fn huge_numbers_saturate() {
    let mut k = Case::new(r#"{"budgets":{"b":{"counts":"request_bytes","window_ms":1000,"limit":18446744073709551615,"burst_credits":18446744073709551615}}}"#);
    k.ask("x", 0, &[Demand { budget: 0, units: u64::MAX, admit: Admit::Reserve }], 1.0).unwrap();
    k.ask("x", 0, &[Demand { budget: 0, units: u64::MAX, admit: Admit::Reserve }], 1.0).unwrap();
}

#[test]
fn state_encoding_round_trips_and_rejects_garbage() {
    let mut s = TenantState::default();
    s.slot_mut(7).used = 42;
    s.slot_mut(9).window_start = 1_700_000_000_000;
    s.slot_mut(11).used = u64::MAX;
    s.slot_mut(11).prev = u64::MAX;
    let enc = s.encode();
    assert_eq!(TenantState::decode(&enc).unwrap(), s);
    assert_eq!(TenantState::decode(&[2, 0]).unwrap(), TenantState::default());
    assert!(TenantState::decode(&[]).is_err());
    assert!(TenantState::decode(&[5, 0]).is_err());
    assert!(TenantState::decode(&[1, 1]).is_err());
    // Version 3 (global budgets' acked and remote) round-trips; without them, version 2.
    assert_eq!(enc[0], 2);
    let mut g = s.clone();
    g.slot_mut(9).acked = 3;
    g.slot_mut(9).remote = 1 << 40;
    let genc = g.encode();
    assert_eq!(genc[0], 3);
    // Version 4: when remote was learned, as an offset from the window's start.
    let mut a = g.clone();
    a.slot_mut(9).remote_at = 1_700_000_000_000 + 1234;
    let aenc = a.encode();
    assert_eq!(aenc[0], 4);
    assert_eq!(TenantState::decode(&aenc).unwrap(), a);
    assert_eq!(aenc.len(), genc.len() + 2 + 2, "two slots with a 1-byte 0, one with 1235 in 2 bytes");
    assert_eq!(TenantState::decode(&genc).unwrap(), g);
    for cut in 0..genc.len() {
        assert!(TenantState::decode(&genc[..cut]).is_err(), "v3 truncated at {cut}");
    }
    for cut in 0..enc.len() {
        assert!(TenantState::decode(&enc[..cut]).is_err(), "truncated at {cut}");
    }
    let mut long = enc.clone();
    long.push(0);
    assert!(TenantState::decode(&long).is_err(), "trailing byte");
    // Overlong and overflowing varints.
    assert!(TenantState::decode(&[2, 1, 7, 0, 0, 0, 0x80, 0x00, 0, 0]).is_err());
    assert!(TenantState::decode(&[2, 1, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0]).is_err());
    // Garbage never panics.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let len = (x % 40) as usize;
        let b: Vec<u8> = (0..len).map(|i| { x = x.wrapping_mul(1_103_515_245).wrapping_add(12345); (x >> 16) as u8 ^ i as u8 }).collect();
        let _ = TenantState::decode(&[&[2u8, (x % 4) as u8][..], &b].concat());
    }
}

#[test]
fn one_budget_state_fits_inline_in_envoy_and_version_1_still_decodes() {
    // A one-budget state with realistic numbers stays within 22 bytes, the inline-string
    // capacity of the standard library Envoy 1.40 is built with (libc++; measured here: 19-byte
    // keys cost no memory beyond the entry), so Envoy stores it without a heap block.
    let mut s = TenantState::default();
    *s.slot_mut(0x9e37_79b9) = Slot { budget: 0x9e37_79b9, window_start: 1_795_622_400_000, used: 1_000_000, prev: 999_999, ..Default::default() };
    assert!(s.encode().len() <= 22, "{} bytes", s.encode().len());
    // Version 1 (fixed 28-byte slots), as an earlier build wrote it, keeps its counts.
    let mut v1 = vec![1u8, 1];
    v1.extend_from_slice(&0x9e37_79b9u32.to_le_bytes());
    v1.extend_from_slice(&1_795_622_400_000u64.to_le_bytes());
    v1.extend_from_slice(&1_000_000u64.to_le_bytes());
    v1.extend_from_slice(&999_999u64.to_le_bytes());
    assert_eq!(TenantState::decode(&v1).unwrap(), s);
}

#[test]
fn closest_to_exhaustion_picks_smallest_share_left() {
    let u = |budget, limit, used| Usage { budget, limit, burst_credits: 0, used, burst_taken: 0, used_before: 0, resets_in_ms: 1, window_start: 0, warned: None };
    let all = [u(0, 100, 50), u(1, 10, 8), u(2, 1000, 100)];
    assert_eq!(closest_to_exhaustion(&all).unwrap().budget, 1);
}

#[test]
fn saturation_levels_staleness_and_hysteresis() {
    use saturation::*;
    let c = cfg(r#"{"saturation":{"signals":{"cpu":{"from":"orca:cpu_utilization","elevated":0.75,"critical":0.9}},"stale_after_ms":1000}}"#);
    let s = c.saturation.as_ref().unwrap();
    let r = |v, at| Some(Reading { value: v, at_ms: at });
    assert_eq!(raw_level(s, &[r(0.95, 0)], 500), CRITICAL);
    assert_eq!(raw_level(s, &[r(0.8, 0)], 500), ELEVATED);
    assert_eq!(raw_level(s, &[r(0.95, 0)], 1001), NORMAL); // stale
    assert_eq!(raw_level(s, &[None], 0), NORMAL);
    let mut h = Hysteresis::default();
    assert_eq!(h.next(CRITICAL, 0, 100), CRITICAL);
    assert_eq!(h.next(NORMAL, 50, 100), CRITICAL);
    assert_eq!(h.next(NORMAL, 150, 100), NORMAL);
}

#[test]
fn thresholds_are_crossed_once() {
    let u = |before, used| Usage { budget: 0, limit: 100, burst_credits: 0, used, burst_taken: 0, used_before: before, resets_in_ms: 1, window_start: 0, warned: None };
    const T: [u64; 3] = [80, 90, 95];
    assert_eq!(crossed(&u(79, 80), &T).collect::<Vec<_>>(), vec![80]);
    assert_eq!(crossed(&u(80, 81), &T).count(), 0);
    assert_eq!(crossed(&u(10, 96), &T).collect::<Vec<_>>(), vec![80, 90, 95]);
    assert_eq!(crossed(&u(94, 95), &T).collect::<Vec<_>>(), vec![95]);
    // Past 100 %: into the burst credits.
    assert_eq!(crossed(&u(99, 120), &[50, 100, 110]).collect::<Vec<_>>(), vec![100, 110]);
    let zero = Usage { limit: 0, ..u(0, 5) };
    assert_eq!(crossed(&zero, &T).count(), 0);
}

#[test]
fn orca_text_and_numbers_parse() {
    use saturation::*;
    let h = b"TEXT cpu_utilization=0.93, mem_utilization=0.5, rps_fractional=120, named_metrics.queue=17";
    assert_eq!(parse_orca(h, "cpu_utilization"), Some(0.93));
    assert_eq!(parse_orca(h, "named_metrics.queue"), Some(17.0));
    assert_eq!(parse_orca(h, "rps_fractional"), Some(120.0));
    assert_eq!(parse_orca(h, "application_utilization"), None);
    assert_eq!(parse_orca(b"JSON {\"cpu_utilization\":0.9}", "cpu_utilization"), None);
    assert_eq!(parse_orca(b"TEXT cpu_utilization=NaN", "cpu_utilization"), None);
    assert_eq!(parse_number(b" 1200 "), Some(1200.0));
    assert_eq!(parse_number(b"slow"), None);
    let r = Reading { value: 0.5, at_ms: 42 };
    assert_eq!(decode_reading(&encode_reading(r)), Some(r));
    assert_eq!(decode_reading(b"short"), None);
}

#[test]
fn readings_combine_fresh_and_high() {
    use saturation::*;
    let a = Some(Reading { value: 0.2, at_ms: 1000 });
    let b = Some(Reading { value: 0.9, at_ms: 0 });
    assert_eq!(combine(a, b, 1000, 5000).unwrap().value, 0.9);
    assert_eq!(combine(a, b, 6000, 5000).unwrap().value, 0.2);
    assert_eq!(combine(a, b, 7000, 5000), None);
}

#[test]
fn keep_factors_by_level_and_priority() {
    use crate::config::Priority;
    use saturation::*;
    let c = cfg(r#"{"saturation":{"keep":{"elevated":{"normal":0.8,"low":0.5},"critical":{"vip":1.0,"normal":0.5,"low":0.0}}}}"#);
    let s = c.saturation.as_ref();
    assert_eq!(keep(s, NORMAL, Priority::Low), 1.0);
    assert_eq!(keep(s, ELEVATED, Priority::Vip), 1.0);
    assert_eq!(keep(s, ELEVATED, Priority::Normal), 0.8);
    assert_eq!(keep(s, CRITICAL, Priority::Low), 0.0);
    assert_eq!(keep(None, CRITICAL, Priority::Low), 1.0);
}

#[test]
fn slots_of_removed_budgets_are_dropped_when_they_crowd_the_state() {
    let mut k = Case::new(RPM);
    // 300 slots left by budgets of earlier configurations.
    for id in 0..300u32 {
        k.st.slot_mut(id.wrapping_mul(7919).wrapping_add(1)).used = 1;
    }
    let t = 1_700_000_040_000;
    k.ask("x", t, &[REQ], 1.0).unwrap();
    assert_eq!(k.st.slots.len(), 1);
    for _ in 0..4 {
        k.ask("x", t, &[REQ], 1.0).unwrap();
    }
    assert!(k.ask("x", t, &[REQ], 1.0).is_err(), "the current budget still holds after an encode round trip");
    let back = TenantState::decode(&k.st.encode()).unwrap();
    assert_eq!(back, k.st);
}

#[test]
fn warn_admits_past_the_cap_and_queue_refuses_only_when_no_reject_budget_does() {
    let mut k = Case::new(
        r#"{"budgets":{"soft":{"counts":"requests","window_ms":60000,"limit":2,"on_exceed":"warn"},
                       "wait":{"counts":"requests","window_ms":60000,"limit":3,"on_exceed":"queue"},
                       "hard":{"counts":"requests","window_ms":60000,"limit":4}}}"#,
    );
    let (hard, soft, wait) = (k.c.budget_index("hard").unwrap(), k.c.budget_index("soft").unwrap(), k.c.budget_index("wait").unwrap());
    let all = [hard, soft, wait].map(|budget| Demand { budget, units: 1, admit: Admit::Reserve });
    let t = 1_700_000_040_000;
    for i in 0..3 {
        k.ask("x", t, &all, 1.0).unwrap();
        let s = k.usage.iter().find(|u| u.budget == soft).unwrap();
        assert_eq!(s.warned.is_some(), i >= 2, "request {i}");
    }
    // The 4th: `wait` (limit 3) refuses; only a queue budget refuses, so it may wait.
    let r = k.ask("x", t, &all, 1.0).unwrap_err();
    assert_eq!((r.budget, r.queue), (wait, true));
    // Without `wait`, `soft` warns and `hard` admits its 4th, then refuses the 5th.
    let two = [all[0], all[1]];
    k.ask("x", t, &two, 1.0).unwrap();
    assert_eq!(k.st.slot(k.c.budgets[soft].id).unwrap().used, 4, "warned units are charged");
    let r = k.ask("x", t, &all, 1.0).unwrap_err();
    assert_eq!((r.budget, r.queue), (hard, false), "a reject budget wins over a queue one");
}

#[test]
fn mul_wide_is_the_u128_product() {
    let vals = [0u64, 1, 2, 0xffff_ffff, 0x1_0000_0000, 4_000_000_020, 1_000_000_000_000_000, u64::MAX / 3, u64::MAX - 1, u64::MAX];
    for &a in &vals {
        for &b in &vals {
            let p = u128::from(a) * u128::from(b);
            assert_eq!(super::mul_wide(a, b), ((p >> 64) as u64, p as u64), "{a} * {b}");
        }
    }
}
