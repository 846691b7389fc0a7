#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::rls::{self, DescriptorStatus, RateLimit, RateLimitResponse};
use super::*;
use crate::config::Config;
use crate::core::{decide, Admit, Demand, GlobalView, Policy, Slot};
use crate::store::MemStore;

const MIN: u64 = 60_000;
const T0: u64 = 1_795_622_400_000 + 10_000; // 10 s into a minute

fn cfg(extra: &str) -> Config {
    Config::parse(
        format!(
            r#"{{"global":{{"cluster":"rls","sync_period_ms":200,"timeout_ms":100{extra}}},
               "budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":10,"burst_credits":2,"global":"sync"}},
                          "wire":{{"counts":"requests","window_ms":1000,"limit":3,"global":"exact"}},
                          "local":{{"counts":"requests","window_ms":60000,"limit":100}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn answer(statuses: Vec<(i32, Option<u32>, u32)>) -> Vec<u8> {
    let r = RateLimitResponse {
        overall_code: 1,
        statuses: statuses
            .into_iter()
            .map(|(code, limit, remaining)| DescriptorStatus {
                code,
                current_limit: limit.map(|l| RateLimit { requests_per_unit: l, unit: 2, name: String::new() }),
                limit_remaining: remaining,
                duration_until_reset: None,
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&r)
}

#[test]
fn descriptor_carries_subject_budget_override_and_hits_and_no_window() {
    let acme = rls::Subject::Tenant("acme");
    let d = rls::descriptor(acme, "rpm", Window::from_ms(MIN), T0 - T0 % MIN, 12, 0);
    let e: Vec<(&str, &str)> = d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(e, vec![("tenant", "acme"), ("budget", "rpm")]);
    assert_eq!(d.limit.as_ref().map(|l| (l.requests_per_unit, l.unit)), Some((12, 2)));
    // 0 hits is expressible (a read), unlike the request-level field.
    assert_eq!(d.hits_addend.as_ref().map(|h| h.value), Some(0));
    let bytes = rls::encode("tenant-quota", vec![d.clone()]);
    let back: rls::RateLimitRequest = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(back.domain, "tenant-quota");
    assert_eq!(back.descriptors, vec![d.clone()]);
    // D1: the next window, a day or a year later, sends the very same entries.
    for later in [MIN, 86_400_000, 400 * 86_400_000] {
        let ws = T0 + later - (T0 + later) % MIN;
        assert_eq!(rls::descriptor(acme, "rpm", Window::from_ms(MIN), ws, 12, 3).entries, d.entries);
    }
    // A scope id's descriptor begins with (<scope>, id).
    let blue = rls::descriptor(rls::Subject::Scope { ix: 0, name: "team", id: "blue" }, "team_day", Window::from_ms(86_400_000), 0, 5, 1);
    let e: Vec<(&str, &str)> = blue.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(e, vec![("team", "blue"), ("budget", "team_day")]);
    assert_eq!(blue.limit.as_ref().map(|l| l.unit), Some(4));
}

#[test]
fn calendar_months_have_a_month_entry_and_the_service_year() {
    // 2026-12-01 00:00 UTC.
    let dec = crate::core::month::month_start(T0 + 100 * 86_400_000);
    let d = rls::descriptor(rls::Subject::Tenant("acme"), "spend", Window::CalendarMonth, dec, 1000, 7);
    let e: Vec<(&str, &str)> = d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    let (y, m, _) = crate::core::month::civil_from_days(dec / 86_400_000);
    let month = format!("{y:04}-{m:02}");
    assert_eq!(e, vec![("tenant", "acme"), ("budget", "spend"), ("month", month.as_str())]);
    assert_eq!(d.limit.as_ref().map(|l| (l.requests_per_unit, l.unit)), Some((1000, rls::UNIT_YEAR)));
}

#[test]
fn caps_past_32_bits_are_scaled_down_and_hits_up() {
    let cap = 10_000_000_000u64; // 10^10, e.g. $10,000 in micro-dollars
    assert_eq!(rls::scale(u64::from(u32::MAX)), 1);
    assert_eq!(rls::scale(u64::from(u32::MAX) + 1), 2);
    let k = rls::scale(cap);
    assert_eq!(k, 3);
    let d = rls::descriptor(rls::Subject::Tenant("a"), "usd", Window::from_ms(86_400_000), 0, cap, 4);
    let sent_cap = u64::from(d.limit.unwrap().requests_per_unit);
    // The service's cap never admits more than ours, and hits never count less than sent.
    assert!(sent_cap * k <= cap && (sent_cap + 1) * k > cap, "{sent_cap}");
    assert_eq!(d.hits_addend.unwrap().value, 2);
    assert_eq!(rls::unscale(Answer::Total(5), cap), Answer::Total(15));
    assert_eq!(rls::unscale(Answer::Over { cap: sent_cap }, cap), Answer::Over { cap: sent_cap * 3 });
    assert_eq!(rls::unscale(Answer::Total(5), 100), Answer::Total(5));
}

#[test]
fn an_answer_counted_in_another_window_is_not_applied() {
    let w = Window::from_ms(MIN);
    let ws = T0 - T0 % MIN;
    // Answered 20 s before the window's end, reset in 20 s: the same window.
    assert!(same_window(w, ws, ws + 40_000, Some(20_000)));
    // The service counts whole seconds (processed at ws + 40.5 s, it says 20 s), and its
    // clock or the answer's time may be off by some: still this window.
    assert!(same_window(w, ws, ws + 40_510, Some(20_000)));
    assert!(same_window(w, ws, ws + 39_995, Some(19_000)), "our clock read a moment before the service's second");
    assert!(same_window(w, ws, ws + 41_200, Some(20_000)), "answered 1.2 s after the service's second");
    // Sent 10 ms before the end, processed after it: the service counted it in the next window.
    assert!(!same_window(w, ws, ws + MIN + 100, Some(60_000)));
    assert!(!same_window(w, ws, ws + MIN - 300, Some(60_000)), "the service's clock is ahead");
    // No duration said: applied (an older service).
    assert!(same_window(w, ws, ws + MIN + 100, None));
    // 1 s windows: the service always says 1 s (whole seconds), which tells nothing: applied,
    // so units are never sent twice (with a half-window tolerance, answers in the second
    // half of a second were dropped and their units sent again).
    let s = T0 - T0 % 1000;
    for at in [s + 10, s + 499, s + 501, s + 990, s + 1010] {
        assert!(same_window(Window::from_ms(1000), s, at, Some(1000)), "{at}");
    }
}

#[test]
fn subjects_are_read_back_from_state_keys() {
    let c = Config::parse(
        br#"{"global":{"cluster":"rls"},"scopes":{"team":{"header":"x-team"}},
             "budgets":{"team_day":{"counts":"requests","window_ms":86400000,"limit":5,"scope":"team","global":"sync"}}}"#,
    )
    .unwrap();
    let team = |id| Some(Subject::Scope { ix: 0, name: "team", id });
    assert_eq!(subject_of(&c, "tq1|t|acme|x"), Some(Subject::Tenant("acme|x")));
    assert_eq!(subject_of(&c, "tq1|overflow"), Some(Subject::Tenant(crate::core::id::OVERFLOW)));
    assert_eq!(subject_of(&c, "tq1|s|team|blue|1"), team("blue|1"));
    assert_eq!(subject_of(&c, "tq1|so|team"), team(crate::core::id::OVERFLOW));
    assert_eq!(subject_of(&c, "tq1|s|nosuch|blue"), None);
    assert_eq!(subject_of(&c, "tq1|registry"), None);
}

#[test]
fn answers_decode_and_doubts_are_errors() {
    let ok = answer(vec![(rls::CODE_OK, Some(12), 5), (rls::CODE_OVER_LIMIT, Some(3), 0)]);
    assert_eq!(rls::decode(&ok, 2), Ok(vec![Answer::Total(7), Answer::Over { cap: 3 }]));
    // No current_limit: the service did not apply our override (unknown domain).
    assert_eq!(rls::decode(&answer(vec![(rls::CODE_OK, None, 0)]), 1), Err(rls::AnswerError::NoLimit(0)));
    // Limitador answers without statuses.
    assert_eq!(rls::decode(&answer(vec![]), 1), Err(rls::AnswerError::Statuses { sent: 1, got: 0 }));
    assert_eq!(rls::decode(&[0xff, 0xff], 1), Err(rls::AnswerError::Undecodable));
    assert_eq!(rls::decode(&answer(vec![(0, Some(3), 0)]), 1), Err(rls::AnswerError::UnknownCode(0, 0)));
    // An exact check reads Limitador's status-less answer from its overall code.
    let mut over = RateLimitResponse { overall_code: rls::CODE_OVER_LIMIT, statuses: vec![] };
    assert_eq!(rls::decode_check(&prost::Message::encode_to_vec(&over), 1), Ok(vec![Answer::Over { cap: 0 }]));
    over.overall_code = rls::CODE_OK;
    assert_eq!(rls::decode_check(&prost::Message::encode_to_vec(&over), 2), Ok(vec![Answer::Total(0); 2]));
    over.overall_code = 0;
    assert!(rls::decode_check(&prost::Message::encode_to_vec(&over), 1).is_err());
}

fn put(store: &MemStore, key: &str, st: &TenantState) {
    store.set(key, &st.encode(), 0).unwrap();
}

fn get(store: &MemStore, key: &str) -> TenantState {
    let mut b = Vec::new();
    store.get(key, &mut b).unwrap().unwrap();
    TenantState::decode(&b).unwrap()
}

#[test]
fn sync_sends_unacknowledged_units_and_learns_remote() {
    let c = cfg("");
    let store = MemStore::new();
    let rpm = c.budgets[c.budget_index("rpm").unwrap()].id;
    let mut st = TenantState::default();
    *st.slot_mut(rpm) = Slot { budget: rpm, window_start: T0 - T0 % MIN, used: 5, ..Slot::default() };
    put(&store, "tq1|t|acme", &st);
    let mut sl = SyncLoop::default();
    let g = c.global.as_ref().unwrap();
    sl.watch(g, vec!["tq1|t|acme".into()], T0);
    let (body, items) = sl.next_call(&c, &store, &|_| None, T0, false, false).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].units, 5);
    let req: rls::RateLimitRequest = prost::Message::decode(body.as_slice()).unwrap();
    assert_eq!(req.descriptors[0].hits_addend.as_ref().unwrap().value, 5);
    assert_eq!(req.descriptors[0].limit.as_ref().unwrap().requests_per_unit, 12);
    sl.sent(7, T0, items);
    // A second call waits for the first (one in flight), and for the period.
    assert!(sl.next_call(&c, &store, &|_| None, T0 + 1, true, false).is_none());
    // The service counted 9 after our 5: the others used 4.
    assert_eq!(sl.answered(&c, &store, &[rls::Status { answer: Answer::Total(9), reset_ms: None }], T0 + 3), 0);
    let s = *get(&store, "tq1|t|acme").slot(rpm).unwrap();
    assert_eq!((s.used, s.acked, s.remote), (5, 5, 4));
    // Decisions count remote: 9 used of 12, so 3 more fit, the 4th does not.
    let mut st = get(&store, "tq1|t|acme");
    let p = c.policy("acme").clone();
    let pol = Policy { budgets: &c.budgets, limits: &p.limits, keep: 1.0, saturation_retry_after_s: 1, global: GlobalView::Remote };
    let i = c.budget_index("rpm").unwrap();
    let d = [Demand { budget: i, units: 1, admit: Admit::Reserve }];
    let mut usage = Vec::new();
    for _ in 0..3 {
        decide(&pol, &mut st, T0 + 2, &d, &mut usage).unwrap();
    }
    assert_eq!(usage[0].used, 12);
    assert!(decide(&pol, &mut st, T0 + 2, &d, &mut usage).is_err());
    // local_share of 3: floor(12 / 3) = 4 on local counts (8 here): refused too; of 1: 12 local.
    let share = Policy { global: GlobalView::LocalShare(3), ..pol };
    assert!(decide(&share, &mut st, T0 + 2, &d, &mut usage).is_err());
    // Next round after the period: the 3 new units only.
    put(&store, "tq1|t|acme", &st);
    let (_, items) = sl.next_call(&c, &store, &|_| None, T0 + 250, false, false).unwrap();
    assert_eq!(items[0].units, 3);
}

#[test]
fn failed_calls_keep_units_for_the_next_round_and_windows_never_mix() {
    let c = cfg("");
    let store = MemStore::new();
    let rpm = c.budgets[c.budget_index("rpm").unwrap()].id;
    let ws = T0 - T0 % MIN;
    let mut st = TenantState::default();
    *st.slot_mut(rpm) = Slot { budget: rpm, window_start: ws, used: 4, ..Slot::default() };
    put(&store, "tq1|t|a", &st);
    let mut sl = SyncLoop::default();
    sl.watch(c.global.as_ref().unwrap(), vec!["tq1|t|a".into()], T0);
    let (_, items) = sl.next_call(&c, &store, &|_| None, T0, false, false).unwrap();
    sl.sent(1, T0, items);
    sl.failed();
    // Past the watch horizon, a failing loop still keeps the tenant: its units are unsent.
    let later = T0 + 3000;
    let (_, items) = sl.next_call(&c, &store, &|_| None, later, false, false).unwrap();
    assert_eq!(items[0].units, 4);
    // An answer for the window is applied to it...
    let mut s2 = get(&store, "tq1|t|a");
    assert!(core::apply_answer(&mut s2, rpm, Window::from_ms(MIN), ws, T0, 4, Answer::Total(10)));
    assert_eq!(s2.slot(rpm).unwrap().remote, 6);
    // ... one for an older window is dropped ...
    assert!(!core::apply_answer(&mut s2, rpm, Window::from_ms(MIN), ws - MIN, T0, 4, Answer::Total(50)));
    assert_eq!(s2.slot(rpm).unwrap().remote, 6);
    // ... and one for the next window starts it: nothing of this window's units carries over.
    assert!(core::apply_answer(&mut s2, rpm, Window::from_ms(MIN), ws + MIN, T0, 0, Answer::Total(3)));
    let s = *s2.slot(rpm).unwrap();
    assert_eq!((s.window_start, s.used, s.acked, s.remote), (ws + MIN, 0, 0, 3));
    // Once the window has rolled, old unsent units are not sent: a read of the new window.
    assert_eq!(core::unsent(&st, rpm, Window::from_ms(MIN), ws + MIN + 5), Some((ws + MIN, 0)));
    // OVER_LIMIT: the count exceeds the cap, whatever we knew.
    let mut s3 = st.clone();
    core::apply_answer(&mut s3, rpm, Window::from_ms(MIN), ws, T0, 4, Answer::Over { cap: 12 });
    assert_eq!(s3.slot(rpm).unwrap().remote, 9);
}

#[test]
fn exact_units_are_recorded_acknowledged_and_undone_on_refusal() {
    let c = cfg("");
    let wire = c.budget_index("wire").unwrap();
    let local = c.budget_index("local").unwrap();
    let p = c.policy("x").clone();
    let mut st = TenantState::default();
    let pol = Policy { budgets: &c.budgets, limits: &p.limits, keep: 1.0, saturation_retry_after_s: 1, global: GlobalView::Remote };
    let d = [Demand { budget: local, units: 1, admit: Admit::Reserve }];
    let mut usage = Vec::new();
    decide(&pol, &mut st, T0, &d, &mut usage).unwrap();
    core::record_exact(&mut st, c.budgets[wire].id, Window::from_ms(1000), T0, 1, Answer::Total(3));
    let s = *st.slot(c.budgets[wire].id).unwrap();
    assert_eq!((s.used, s.acked, s.remote), (1, 1, 2));
    // Acknowledged units are not sent again by the sync loop.
    let mut out = Vec::new();
    plan(&c, &p, None, "tq1|t|x", &st, T0, &mut out);
    assert!(out.iter().all(|x| x.budget != wire));
    core::unreserve(&mut st, &c.budgets, &p.limits, T0, &d);
    assert_eq!(st.slot(c.budgets[local].id).unwrap().used, 0);
}

#[test]
fn lease_is_exclusive_until_its_deadline() {
    let store = MemStore::new();
    init(&store).unwrap();
    let mut b = Vec::new();
    assert!(hold_lease(&store, 11, T0, 500, &mut b).unwrap());
    assert!(!hold_lease(&store, 22, T0 + 499, 500, &mut b).unwrap());
    assert!(hold_lease(&store, 11, T0 + 300, 500, &mut b).unwrap()); // renewed to T0 + 800
    assert!(!hold_lease(&store, 22, T0 + 700, 500, &mut b).unwrap());
    // The holder stops renewing (its VM trapped): another worker takes over.
    assert!(hold_lease(&store, 22, T0 + 800, 500, &mut b).unwrap());
    assert!(!hold_lease(&store, 11, T0 + 801, 500, &mut b).unwrap());
}

#[test]
fn degraded_after_two_periods_plus_timeout_without_answer_and_back_at_the_first() {
    let c = cfg("");
    let g = c.global.as_ref().unwrap();
    let store = MemStore::new();
    init(&store).unwrap();
    let mut b = Vec::new();
    record_answer(&store, T0, &mut b).unwrap();
    let h = record_failure(&store, T0 + 100, &mut b).unwrap();
    let h2 = record_failure(&store, T0 + 300, &mut b).unwrap();
    assert_eq!(h2.first_unanswered, h.first_unanswered);
    assert!(!h2.degraded(g, T0 + 100 + 499));
    assert!(h2.degraded(g, T0 + 100 + 500));
    assert_eq!(h2.errors, 2);
    let h3 = record_answer(&store, T0 + 900, &mut b).unwrap();
    assert!(!h3.degraded(g, T0 + 901));
}

#[test]
fn dirty_list_round_trips_and_is_bounded() {
    let store = MemStore::new();
    init(&store).unwrap();
    let mut b = Vec::new();
    let mut keys = vec!["tq1|t|a".to_string(), "tq1|overflow".to_string()];
    publish_dirty(&store, &mut keys, true, &mut b).unwrap();
    assert!(keys.is_empty());
    let (got, urgent) = take_dirty(&store, &mut b).unwrap();
    assert_eq!(got, vec!["tq1|t|a", "tq1|overflow"]);
    assert!(urgent);
    assert_eq!(take_dirty(&store, &mut b).unwrap(), (Vec::new(), false));
    let mut many: Vec<String> = (0..40_000).map(|i| format!("tq1|t|tenant-{i:08}")).collect();
    publish_dirty(&store, &mut many, false, &mut b).unwrap();
    assert!(!many.is_empty(), "the list stops at its bound; the rest waits");
    assert_eq!(keys::tenant_of("tq1|overflow"), Some("overflow"));
    assert_eq!(keys::tenant_of("tq1|t|a|b"), Some("a|b"));
}

/// A calendar month's service key changes when the service's 365-day year ends, possibly in
/// mid-month: the month's units are then all sent again, to the new key.
#[test]
fn a_month_crossing_the_service_year_sends_its_units_again() {
    let year = 365 * 86_400_000u64;
    // The first service-year boundary after T0, and the month around it.
    let boundary = (core::service_year(T0) + 1) * year;
    let month = Window::CalendarMonth.start(boundary);
    assert!(month < boundary, "the boundary is inside its month");
    let id = 77;
    let mut st = TenantState::default();
    *st.slot_mut(id) = Slot { budget: id, window_start: month, used: 10, ..Slot::default() };
    // Before the boundary: 10 sent, the service counts 25 (15 by others).
    let before = boundary - 1000;
    assert_eq!(core::unsent(&st, id, Window::CalendarMonth, before), Some((month, 10)));
    assert!(core::apply_answer(&mut st, id, Window::CalendarMonth, month, before, 10, Answer::Total(25)));
    assert_eq!(core::unsent(&st, id, Window::CalendarMonth, before), Some((month, 0)));
    assert_eq!(st.slot(id).unwrap().remote, 15);
    // After it the key is new and empty: everything this Envoy counted goes again.
    let after = boundary + 1000;
    assert_eq!(core::unsent(&st, id, Window::CalendarMonth, after), Some((month, 10)));
    // The others sent theirs again too: the new key holds 25 + 10 = 35 after ours.
    assert!(core::apply_answer(&mut st, id, Window::CalendarMonth, month, after, 10, Answer::Total(35)));
    let s = *st.slot(id).unwrap();
    assert_eq!((s.used, s.acked, s.remote), (10, 10, 25));
    assert_eq!(core::unsent(&st, id, Window::CalendarMonth, after), Some((month, 0)));
    // Fixed windows are not affected: their acknowledged units stay acknowledged.
    let mut st = TenantState::default();
    *st.slot_mut(id) = Slot { budget: id, window_start: boundary - boundary % 86_400_000, used: 4, acked: 4, ..Slot::default() };
    assert_eq!(core::unsent(&st, id, Window::from_ms(86_400_000), after), Some((boundary - boundary % 86_400_000, 0)));
}

/// A billing cycle's descriptor names the local date its cycle starts on (in the cycle's own
/// zone, not UTC), in the service's YEAR.
#[test]
fn billing_cycles_have_a_cycle_entry_of_their_local_start_date() {
    use crate::core::tz::{days_from_civil, Zone};
    use crate::core::Cycle;
    let entries = |d: &rls::RateLimitDescriptor| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect::<Vec<_>>();
    // Monthly on the 15th in New York: 2027-03-15 00:00 EDT is 04:00Z.
    let ny = Window::Cycle(Cycle::monthly(15, Zone::named("America/New_York").unwrap()).unwrap());
    let start = ny.start(days_from_civil(2027, 3, 20) as u64 * 86_400_000);
    assert_eq!(start, days_from_civil(2027, 3, 15) as u64 * 86_400_000 + 4 * 3_600_000);
    let d = rls::descriptor(rls::Subject::Tenant("acme"), "spend", ny, start, 1000, 7);
    let want = |v: &str| vec![("tenant".to_string(), "acme".to_string()), ("budget".to_string(), "spend".to_string()), ("cycle".to_string(), v.to_string())];
    assert_eq!(entries(&d), want("2027-03-15"));
    assert_eq!(d.limit.as_ref().map(|l| (l.requests_per_unit, l.unit)), Some((1000, rls::UNIT_YEAR)));
    // Daily in Tokyo: the day that starts at 15:00Z on March 1 is March 2 there.
    let tokyo = Window::Cycle(Cycle::daily(Zone::named("Asia/Tokyo").unwrap()));
    let start = tokyo.start(days_from_civil(2027, 3, 1) as u64 * 86_400_000 + 16 * 3_600_000);
    let d = rls::descriptor(rls::Subject::Scope { ix: 0, name: "team", id: "blue" }, "tokens", tokyo, start, 5, 0);
    assert_eq!(entries(&d)[2], ("cycle".to_string(), "2027-03-02".to_string()));
    assert_eq!(entries(&d)[0], ("team".to_string(), "blue".to_string()));
    // A monthly cycle on the 31st starts on February 28 in 2027.
    let last = Window::Cycle(Cycle::monthly(31, Zone::UTC).unwrap());
    let start = last.start(days_from_civil(2027, 3, 10) as u64 * 86_400_000);
    assert_eq!(entries(&rls::descriptor(rls::Subject::Tenant("a"), "b", last, start, 1, 0))[2].1, "2027-02-28");
    // Answers are never dropped for their reset (the cycle is in the descriptor).
    assert!(same_window(ny, start, start + 5_000, Some(123_000)));
}

/// A billing cycle crossing the service's year sends its units again, like a calendar month.
#[test]
fn a_cycle_crossing_the_service_year_sends_its_units_again() {
    use crate::core::tz::Zone;
    use crate::core::Cycle;
    let year = 365 * 86_400_000u64;
    let boundary = (core::service_year(T0) + 1) * year;
    let w = Window::Cycle(Cycle::monthly(20, Zone::named("Europe/Berlin").unwrap()).unwrap());
    let ws = w.start(boundary);
    assert!(ws < boundary && w.end(ws) > boundary, "the boundary is inside the cycle");
    let id = 78;
    let mut st = TenantState::default();
    *st.slot_mut(id) = Slot { budget: id, window_start: ws, used: 10, ..Slot::default() };
    assert!(core::apply_answer(&mut st, id, w, ws, boundary - 1000, 10, Answer::Total(25)));
    assert_eq!(core::unsent(&st, id, w, boundary - 1000), Some((ws, 0)));
    assert_eq!(core::unsent(&st, id, w, boundary + 1000), Some((ws, 10)), "the new year's key is empty");
    assert!(core::apply_answer(&mut st, id, w, ws, boundary + 1000, 10, Answer::Total(35)));
    let s = *st.slot(id).unwrap();
    assert_eq!((s.used, s.acked, s.remote), (10, 10, 25));
}
