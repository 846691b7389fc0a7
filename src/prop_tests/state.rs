//! Properties 2-4 on arbitrary states: encoding round trips, decoding never panics, decide is deterministic and a rejection is free.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

// ---------------------------------------------------------------------------------------
// Properties 2-4 on arbitrary states.

fn field() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..=10u64, 2 => (T0 - 5_000)..(T0 + 5_000), 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn slot(ids: Vec<u32>) -> impl Strategy<Value = Slot> {
    let id = prop_oneof![3 => prop::sample::select(ids), 1 => any::<u32>()];
    let global = prop_oneof![2 => Just((0, 0)), 1 => (field(), field())];
    // When `remote` was learned: never, or in the slot's window (as `learn` sets it).
    let age = prop_oneof![3 => Just(None), 1 => (0..100_000u64).prop_map(Some)];
    (id, field(), field(), field(), global, age).prop_map(|(budget, window_start, used, prev, (acked, remote), age)| Slot {
        budget,
        window_start,
        used,
        prev,
        acked,
        remote,
        remote_at: age.map_or(0, |d| window_start.saturating_add(d).max(1)),
    })
}

fn state() -> impl Strategy<Value = TenantState> {
    let ids = cfg().budgets.iter().map(|b| b.id).collect::<Vec<_>>();
    prop::collection::vec(slot(ids), 0..12).prop_map(|slots| TenantState { slots })
}

proptest! {
    #![proptest_config(pt(256))]

    /// Property 2: encode/decode round-trips; version 4 exactly when some slot has
    /// remote_at, else 3 when some slot has acked or remote, else 2.
    #[test]
    fn state_encoding_round_trips(st in state()) {
        let b = st.encode();
        let v4 = st.slots.iter().any(|s| s.remote_at != 0);
        let v3 = st.slots.iter().any(|s| s.acked != 0 || s.remote != 0);
        prop_assert_eq!(b[0], if v4 { 4 } else if v3 { 3 } else { 2 });
        prop_assert_eq!(b[1] as usize, st.slots.len());
        prop_assert_eq!(TenantState::decode(&b), Ok(st.clone()));
        // The stack-buffer encoding (at most 8 slots) writes what the byte-by-byte one does.
        let mut long = Vec::new();
        st.encode_long(&mut long);
        prop_assert_eq!(&long, &b);
        // decode_from reuses a dirty value and leaves the same.
        let mut reused = TenantState { slots: vec![Slot { budget: 9, used: 9, ..Slot::default() }] };
        prop_assert!(reused.decode_from(&b).is_ok());
        prop_assert_eq!(&reused, &st);
        // Any proper prefix is refused, never misread.
        for cut in 0..b.len() {
            prop_assert!(TenantState::decode(&b[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        }
    }

    /// Property 2, version 1 (still decoded): fixed 28-byte slots.
    #[test]
    fn state_v1_decodes(st in state()) {
        let mut b = vec![1u8, st.slots.len() as u8];
        for s in &st.slots {
            b.extend_from_slice(&s.budget.to_le_bytes());
            for v in [s.window_start, s.used, s.prev] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let want = TenantState { slots: st.slots.iter().map(|s| Slot { acked: 0, remote: 0, remote_at: 0, ..*s }).collect() };
        prop_assert_eq!(TenantState::decode(&b), Ok(want));
    }

    /// Property 2: arbitrary bytes (and bytes that start like a state) decode or are refused,
    /// never panic; whatever decodes re-encodes to the same state.
    #[test]
    fn state_decode_never_panics(
        head in prop_oneof![Just(vec![]), (0..=5u8, 0..=4u8).prop_map(|(v, n)| vec![v, n])],
        tail in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut b = head;
        b.extend_from_slice(&tail);
        let mut reused = TenantState::default();
        let r = reused.decode_from(&b);
        match TenantState::decode(&b) {
            Ok(st) => {
                prop_assert_eq!(&reused, &st);
                prop_assert_eq!(TenantState::decode(&st.encode()), Ok(st));
            }
            Err(_) => {
                prop_assert!(r.is_err());
                prop_assert!(reused.slots.is_empty(), "a refused decode left slots behind");
            }
        }
    }

    /// Properties 3 and 4 on arbitrary (also absurd) states, times, keep factors and views.
    #[test]
    fn decide_is_deterministic_and_rejection_is_free(
        st in state(),
        now in field(),
        demands in demands(),
        keep in keep(),
        view in view(),
    ) {
        let c = cfg();
        let pol = Policy { budgets: &c.budgets, limits: &c.default_policy.limits, keep, saturation_retry_after_s: 3, global: view };
        let run = || {
            let (mut s, mut u) = (st.clone(), Vec::<Usage>::new());
            let r = core::decide(&pol, &mut s, now, &demands, &mut u);
            (r, s, u)
        };
        let (a, b) = (run(), run());
        prop_assert_eq!(&a, &b);
        match &a.0 {
            Err(rej) => {
                prop_assert_eq!(&a.1, &st, "rejected decide changed the state");
                prop_assert!(rej.retry_after_s >= 1);
                prop_assert!(demands.iter().any(|d| d.budget == rej.budget));
            }
            Ok(()) => prop_assert_eq!(a.2.len(), demands.len()),
        }
    }
}
