//! Property tests (issue 10), with `proptest`: random operation sequences against the quota
//! core with a fake clock, the state encoding, determinism, and "never panics" fuzzing of
//! every parser that sees bytes from outside (configuration, request and response headers,
//! stored state, RLS answers, the host's header map).
//!
//! Case counts are modest (256 per property, 1024 for the parse-only ones; sequences of
//! up to 60 operations) so that `cargo test --lib` stays fast; set
//! `PROPTEST_CASES` for a longer run. Failure persistence is off: a failure prints its
//! minimal case and no `proptest-regressions` file is written into the source tree.
//!
//! Runs natively and on wasm32-unknown-unknown under Node (getrandom's `wasm_js` backend
//! seeds the RNG there). On wasm32 a panic aborts instead of unwinding, so the properties use
//! `prop_assert!` (which shrinks everywhere); a panic in the code under test is still a
//! failure on wasm32, only without shrinking.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use crate::config::{self, Config};
use crate::core::{self, saturation, Admit, Answer, Clock, Demand, FakeClock, GlobalView, Millis, Policy, Slot, TenantState, Usage};
use crate::engine::{self, Conditions, RequestFacts, RuntimePolicies, Verdict, Worker};
use crate::store::{self, MemStore, Scratch, SharedStore};
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;
use std::collections::{BTreeMap, HashMap};

fn pt(cases: u32) -> PtConfig {
    let d = PtConfig::default();
    // PROPTEST_CASES, when set, wins (longer runs by hand).
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { d.cases } else { cases };
    PtConfig { cases, failure_persistence: None, ..d }
}

const T0: Millis = 1_700_000_000_000;

/// Budgets sort by name: conc (0), cost (1), fixed (2), glob (3), slide (4).
const CFG: &str = r#"{
  "budgets": {
    "fixed": {"counts": "requests", "window_ms": 1000, "limit": 5, "burst_credits": 2},
    "slide": {"counts": "requests", "window_ms": 1000, "limit": 4, "burst_credits": 1, "algorithm": "sliding"},
    "conc":  {"counts": "in_flight", "limit": 3, "burst_credits": 1},
    "cost":  {"counts": {"request_header": "x-cost"}, "window_ms": 2000, "limit": 40, "burst_credits": 10},
    "glob":  {"counts": "requests", "window_ms": 1000, "limit": 6, "burst_credits": 2, "global": "sync"}
  },
  "global": {"cluster": "rls"}
}"#;
const CONC: usize = 0;
const GLOB: usize = 3;
const SLIDE: usize = 4;
const NB: usize = 5;

fn cfg() -> Config {
    let c = Config::parse(CFG.as_bytes()).expect("test config parses");
    let names: Vec<&str> = c.budgets.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["conc", "cost", "fixed", "glob", "slide"]);
    c
}

fn cap(c: &Config, b: usize) -> u64 {
    let l = &c.default_policy.limits[b];
    l.limit + l.burst_credits
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn units() -> impl Strategy<Value = u64> {
    prop_oneof![12 => 0..=8u64, 1 => any::<u64>()]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => (0..=20u64).prop_map(Answer::Total),
        1 => (0..=20u64).prop_map(|cap| Answer::Over { cap }),
        1 => any::<u64>().prop_map(Answer::Total),
    ]
}

/// Demands on distinct budgets, in config order (as `engine::evaluate` builds them).
fn demands() -> impl Strategy<Value = Vec<Demand>> {
    prop::collection::btree_map(0..NB, (units(), prop::bool::weighted(0.2)), 0..=NB).prop_map(|m| {
        m.into_iter()
            .map(|(budget, (units, probe))| Demand { budget, units, admit: if probe { Admit::Probe } else { Admit::Reserve } })
            .collect()
    })
}

fn keep() -> impl Strategy<Value = f64> {
    prop_oneof![8 => Just(1.0), 1 => Just(0.5), 1 => Just(0.0), 1 => 0.0..=1.0f64]
}

fn view() -> impl Strategy<Value = GlobalView> {
    prop_oneof![6 => Just(GlobalView::Remote), 1 => (1..=3u64).prop_map(GlobalView::LocalShare)]
}

#[derive(Debug, Clone)]
enum Op {
    Decide { demands: Vec<Demand>, keep: f64, view: GlobalView },
    /// After-the-fact charge of a windowed budget (never `conc`).
    Charge { budget: usize, units: u64 },
    Release { units: u64 },
    Reset { budget: usize },
    /// `which`: 0 the slot's window, 1 now's, 2 the next, 3 the previous. `sent`: `None`
    /// sends what `unsent` says (the sync loop), `Some` an arbitrary count.
    ApplyAnswer { which: u8, sent: Option<u64>, answer: Answer },
    RecordExact { units: u64, answer: Answer },
    /// Undo an earlier admitted decide (picked modulo the pending ones).
    Unreserve { pick: usize },
    Forward(u64),
    Back(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (demands(), keep(), view()).prop_map(|(demands, keep, view)| Op::Decide { demands, keep, view }),
        2 => ((1..NB), units()).prop_map(|(budget, units)| Op::Charge { budget, units }),
        2 => (1..=2u64).prop_map(|units| Op::Release { units }),
        1 => (0..NB).prop_map(|budget| Op::Reset { budget }),
        2 => (0..4u8, prop::option::of(0..=10u64), answer()).prop_map(|(which, sent, answer)| Op::ApplyAnswer { which, sent, answer }),
        1 => (0..=4u64, answer()).prop_map(|(units, answer)| Op::RecordExact { units, answer }),
        1 => any::<usize>().prop_map(|pick| Op::Unreserve { pick }),
        4 => prop_oneof![3 => 0..=300u64, 1 => 0..=5_000u64].prop_map(Op::Forward),
        1 => prop_oneof![0..=300u64, 0..=3_000u64].prop_map(Op::Back),
    ]
}

// ---------------------------------------------------------------------------------------
// Property 1 (+3 and 4 inline): operation sequences through `store::transact` over a
// MemStore, mirrored on a plain TenantState.

/// What the test remembers of the operations so far.
#[derive(Default)]
struct Model {
    /// Per windowed budget: bumped by every reset of it (a reset legitimately frees units).
    epoch: [u32; NB],
    /// (budget, epoch, slot window start) -> units `decide` admitted with `Reserve` into that
    /// window, minus units `unreserve` gave back from it.
    net: BTreeMap<(usize, u32, Millis), u64>,
    /// `conc` slots held: admitted (`Reserve`) minus released/unreserved, floored at 0.
    held: u64,
    /// Every `conc` unit ever admitted (an upper bound on `used`: no wrap-around).
    conc_admitted: u64,
    /// Admitted decides that may still be unreserved: (decide time, demands).
    pending: Vec<(Millis, Vec<Demand>)>,
    /// The clock stepped back, or an answer came for a window after now's. Until then a
    /// slot's window is the one containing now, so the windows above are wall-clock windows.
    skewed: bool,
    /// Sliding budget: the last `used` seen in each window of its slot.
    slide_used: BTreeMap<Millis, u64>,
}

struct Harness {
    c: Config,
    store: MemStore,
    scratch: Scratch,
    direct: TenantState,
    clock: FakeClock,
    m: Model,
}

impl Harness {
    fn new(start: Millis) -> Harness {
        let store = MemStore::new();
        let mut scratch = Scratch::default();
        store::keys::state(crate::core::Subject::Tenant("t"), &mut scratch.key);
        store.set(&scratch.key, &TenantState::default().encode(), 0).expect("mem store set");
        Harness { c: cfg(), store, scratch, direct: TenantState::default(), clock: FakeClock::new(start), m: Model::default() }
    }

    /// Run `f` on the direct state and through `transact` on the store; they must agree.
    fn both<R: PartialEq + std::fmt::Debug>(&mut self, f: impl Fn(&mut TenantState) -> (bool, R)) -> Result<R, TestCaseError> {
        let (write, r) = f(&mut self.direct);
        let r2 = store::transact(&self.store, &mut self.scratch, &f).map_err(|e| TestCaseError::fail(format!("transact: {e:?}")))?;
        prop_assert_eq!(&r, &r2);
        let stored = TenantState::decode(&self.store.raw(&self.scratch.key).unwrap_or_default());
        if write {
            prop_assert_eq!(stored.as_ref(), Ok(&self.direct), "store and direct state differ");
        }
        Ok(r)
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.clock.now_ms();
        let c = self.c.clone();
        let limits = c.default_policy.limits.clone();
        match op {
            Op::Decide { demands, keep, view } => {
                let pol = Policy { budgets: &c.budgets, limits: &limits, keep: *keep, saturation_retry_after_s: 3, global: *view };
                // 3: deterministic; 4: a rejection changes nothing.
                let before = self.direct.clone();
                let mut outs = Vec::new();
                for _ in 0..2 {
                    let (mut st, mut usage) = (before.clone(), Vec::new());
                    let r = core::decide(&pol, &mut st, now, demands, &mut usage);
                    outs.push((r, st, usage));
                }
                prop_assert_eq!(&outs[0], &outs[1], "decide is not deterministic");
                if outs[0].0.is_err() {
                    prop_assert_eq!(&outs[0].1, &before, "a rejected decide changed the state");
                }
                let r = self.both(|st| {
                    let mut usage = Vec::new();
                    match core::decide(&pol, st, now, demands, &mut usage) {
                        Ok(()) => (true, Ok(usage)),
                        Err(r) => (false, Err(r)),
                    }
                })?;
                prop_assert_eq!(&self.direct, &outs[0].1);
                if r.is_ok() {
                    for d in demands.iter().filter(|d| d.admit == Admit::Reserve) {
                        if d.budget == CONC {
                            self.m.held = self.m.held.saturating_add(d.units);
                            self.m.conc_admitted = self.m.conc_admitted.saturating_add(d.units);
                        } else {
                            let ws = self.slot(d.budget).window_start;
                            if !self.m.skewed {
                                prop_assert_eq!(ws, limits[d.budget].window.start(now));
                            }
                            let e = self.m.net.entry((d.budget, self.m.epoch[d.budget], ws)).or_default();
                            *e = e.saturating_add(d.units);
                        }
                    }
                    self.m.pending.push((now, demands.clone()));
                    // Sliding: what the window holds plus the previous window's count,
                    // weighted by the share of it still inside the sliding window (ceil),
                    // stays within the cap after a reservation.
                    if demands.iter().any(|d| d.budget == SLIDE && d.admit == Admit::Reserve && d.units > 0) {
                        let (s, w) = (self.slot(SLIDE), limits[SLIDE].window.fixed_ms().unwrap_or(1));
                        let left = w - now.saturating_sub(s.window_start).min(w);
                        let carried = (u128::from(s.prev) * u128::from(left)).div_ceil(u128::from(w));
                        prop_assert!(u128::from(s.used) + carried <= u128::from(cap(&c, SLIDE)), "sliding: used {} + carried {} > cap", s.used, carried);
                    }
                }
            }
            Op::Charge { budget, units } => {
                let pol = Policy { budgets: &c.budgets, limits: &limits, keep: 1.0, saturation_retry_after_s: 3, global: GlobalView::Remote };
                self.both(|st| (true, core::charge(&pol, st, now, *budget, *units)))?;
            }
            Op::Release { units } => {
                let id = c.budgets[CONC].id;
                self.both(|st| {
                    core::release(st, id, *units);
                    (true, ())
                })?;
                self.m.held = self.m.held.saturating_sub(*units);
            }
            Op::Reset { budget } => {
                let id = c.budgets[*budget].id;
                self.both(|st| {
                    core::reset(st, id);
                    (true, ())
                })?;
                self.m.epoch[*budget] += 1;
                if *budget == CONC {
                    self.m.held = 0;
                }
                // Undoing a decide from before a reset is outside the contract (see below).
                self.m.pending.clear();
            }
            Op::ApplyAnswer { which, sent, answer } => {
                let (id, window) = (c.budgets[GLOB].id, limits[GLOB].window);
                let w = window.fixed_ms().unwrap_or(0);
                let cur = window.start(now);
                let (ws, n) = match (which, sent) {
                    (_, None) => core::unsent(&self.direct, id, window, now).unwrap_or((cur, 0)),
                    (0, Some(n)) => (self.direct.slot(id).map_or(cur, |s| s.window_start), *n),
                    (1, Some(n)) => (cur, *n),
                    (2, Some(n)) => (cur + w, *n),
                    (_, Some(n)) => (cur.saturating_sub(w), *n),
                };
                self.m.skewed |= ws > cur;
                self.both(|st| {
                    let changed = core::apply_answer(st, id, window, ws, now, n, *answer);
                    (changed, changed)
                })?;
            }
            Op::RecordExact { units, answer } => {
                let (id, w) = (c.budgets[GLOB].id, limits[GLOB].window);
                self.both(|st| {
                    core::record_exact(st, id, w, now, *units, *answer);
                    (true, ())
                })?;
            }
            Op::Unreserve { pick } => {
                if self.m.pending.is_empty() {
                    return Ok(());
                }
                let (at, ds) = self.m.pending.remove(pick % self.m.pending.len());
                // Which windows still hold the request's units (before the call).
                let mut gives_back = Vec::new();
                for d in ds.iter().filter(|d| d.admit == Admit::Reserve && d.units > 0) {
                    let s = self.slot(d.budget);
                    let w = limits[d.budget].window;
                    if w.is_none() || s.window_start == w.start(at) {
                        gives_back.push((d.budget, s.window_start, d.units));
                    }
                }
                self.both(|st| {
                    core::unreserve(st, &c.budgets, &limits, at, &ds);
                    (true, ())
                })?;
                for (b, ws, u) in gives_back {
                    if b == CONC {
                        self.m.held = self.m.held.saturating_sub(u);
                    } else {
                        let e = self.m.net.entry((b, self.m.epoch[b], ws)).or_default();
                        prop_assert!(*e >= u, "unreserve gives back units window {} of budget {} never admitted", ws, b);
                        *e -= u;
                    }
                }
            }
            Op::Forward(ms) => self.clock.advance(*ms),
            Op::Back(ms) => {
                self.clock.set(now.saturating_sub(*ms));
                self.m.skewed = true;
            }
        }
        self.check()
    }

    fn slot(&self, b: usize) -> Slot {
        let id = self.c.budgets[b].id;
        self.direct.slot(id).copied().unwrap_or(Slot { budget: id, ..Slot::default() })
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        // Windowed budgets: what `decide` admitted with Reserve into one window (net of
        // unreserve, since the budget's last reset) never passes limit + burst_credits.
        for (&(b, epoch, ws), &n) in &self.m.net {
            prop_assert!(n <= cap(&self.c, b), "budget {} admitted {} > cap {} in window {}", self.c.budgets[b].name, n, cap(&self.c, b), ws);
            let s = self.slot(b);
            if epoch == self.m.epoch[b] && s.window_start == ws {
                // The slot counts at least what decide admitted into its window.
                prop_assert!(s.used >= n, "budget {} used {} < admitted {}", self.c.budgets[b].name, s.used, n);
            }
        }
        // Sliding: `prev` is the count the previous window ended with.
        let s = self.slot(SLIDE);
        if s.prev != 0 {
            let w = self.c.default_policy.limits[SLIDE].window.fixed_ms().unwrap_or(0);
            prop_assert_eq!(self.m.slide_used.get(&s.window_start.saturating_sub(w)), Some(&s.prev), "sliding prev is not the previous window's count");
        }
        // in_flight: exactly admitted minus released, floored at 0 (never wraps), within cap.
        let conc = self.slot(CONC);
        prop_assert_eq!(conc.used, self.m.held, "in_flight used != admitted - released");
        prop_assert!(conc.used <= self.m.conc_admitted);
        prop_assert!(conc.used <= cap(&self.c, CONC));
        // Global slots: acked <= used.
        for s in &self.direct.slots {
            prop_assert!(s.acked <= s.used, "acked {} > used {} in {:?}", s.acked, s.used, s);
        }
        let s = self.slot(SLIDE);
        self.m.slide_used.insert(s.window_start, s.used);
        Ok(())
    }
}

proptest! {
    #![proptest_config(pt(256))]

    /// Property 1. Invariants checked after every operation:
    /// - a windowed budget (fixed, sliding, request_header cost, global sync): units admitted
    ///   by `decide` with `Admit::Reserve` into one window of its slot (the window the slot is
    ///   in after the commit; while the clock has only gone forward and no answer came for a
    ///   later window, asserted to be the window containing now; after a step back, the
    ///   stored, later window keeps counting),
    ///   minus units `unreserve` gave back from that window, since the budget's last `reset`,
    ///   are <= limit + burst_credits. Exempt, since they are after-the-fact: Probe admits'
    ///   real units, `charge`, `record_exact`. They only raise `used`, so they can only make
    ///   decide stricter; `remote` (from `apply_answer`) likewise. Whenever the slot is in that
    ///   window, `used` >= that net count. Keep factors < 1 and LocalShare only lower the cap.
    /// - sliding: after a reservation, `used + ceil(prev * share of the previous window still
    ///   inside the sliding window) <= cap`, and `prev` is the count the previous window ended
    ///   with.
    /// - in_flight: `used` == admitted - released (release/unreserve floored at 0, reset to 0
    ///   by a reset of it), <= every unit ever admitted (no underflow/wrap), <= cap.
    /// - every slot: `acked <= used`.
    /// - the store path (`transact`, i.e. encode/decode on each op) and the plain state agree.
    /// - 3 and 4 on every decide: the same inputs give the same result, state and usage, and a
    ///   rejection leaves the state as it was.
    ///
    /// Contract assumed: demands name distinct budgets (evaluate builds one per budget), and
    /// `unreserve` undoes a decide at most once and not across a reset of its budget.
    #[test]
    fn op_sequences_keep_the_invariants(start in 0..10_000u64, ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new(T0 + start);
        for op in &ops {
            h.step(op)?;
        }
    }
}

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
    prop::collection::vec(slot(ids), 0..8).prop_map(|slots| TenantState { slots })
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

// ---------------------------------------------------------------------------------------
// Property 5: parsers never panic.

const KEYS: &[&str] = &[
    "mode", "tenant", "header", "metadata", "fallback", "max_tracked", "budgets", "tenants", "saturation", "admin",
    "on_error", "global", "test_hooks", "trap_sync_leader_path", "counts", "window_ms", "limit", "burst_credits",
    "algorithm", "match", "path_prefix", "methods", "priority", "unlimited", "signals", "stale_after_ms", "keep",
    "retry_after_s", "expose_signal_headers", "from", "elevated", "critical", "normal", "low", "vip", "token_sha256",
    "cluster", "domain", "sync_period_ms", "timeout_ms", "on_unavailable", "local_share", "request_header",
    "response_header", "rpm", "x", "", "bad name", "ü",
];

const WORDS: &[&str] = &[
    "requests", "request_bytes", "in_flight", "fixed", "sliding", "sync", "exact", "enforce", "shadow", "off", "allow",
    "deny", "local", "low", "normal", "vip", "orca:cpu_utilization", "orca:", "orca:a b", "response_header:x-load",
    "response_header:", "upstream_latency_ms", "operator", "admin", "/", "/api", "/admin/", "api", "GET", "get", "G3T",
    "x-tenant-id", "X-Cost", "bad header", "", " ", "a\u{7f}", "rls", "anonymous", "overflow",
    TOKEN_SHA, BAD_SHA,
];
const TOKEN_SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const BAD_SHA: &str = "zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn number() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        4 => prop::sample::select(vec![0i64, 1, -1, 2, 10, 1000, 60_000, 3_600_000, 86_400_000, 4_294_967_295, 4_294_967_296, i64::MAX, i64::MIN]).prop_map(|n| json!(n)),
        1 => Just(json!(u64::MAX)),
        1 => prop::sample::select(vec![0.0f64, 0.5, 1.0, 1.5, -0.5, 1e308, -1e308, 5e-324]).prop_map(|f| json!(f)),
        1 => any::<i64>().prop_map(|n| json!(n)),
    ]
}

fn leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        4 => prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_string())),
        1 => prop::sample::select(KEYS).prop_map(|s| Value::String(s.to_string())),
        1 => "[ -~]{0,300}".prop_map(Value::String),
    ]
}

/// JSON built from the configuration's vocabulary: objects keyed by its keys.
fn json_ish() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            4 => prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Mostly one of `good`; sometimes one of `bad`, or any vocabulary leaf.
fn pick(good: &'static [&'static str], bad: &'static [&'static str]) -> BoxedStrategy<serde_json::Value> {
    prop_oneof![
        16 => prop::sample::select(good).prop_map(serde_json::Value::from),
        1 => prop::sample::select(bad).prop_map(serde_json::Value::from),
        1 => leaf(),
    ]
    .boxed()
}

/// Mostly one of `good`; sometimes any vocabulary number.
fn num(good: &'static [i64]) -> BoxedStrategy<serde_json::Value> {
    prop_oneof![16 => prop::sample::select(good).prop_map(serde_json::Value::from), 1 => number()].boxed()
}

/// An object of the fields that are present.
fn obj<const N: usize>(fields: [(&str, Option<serde_json::Value>); N]) -> serde_json::Value {
    serde_json::Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

fn opt(s: BoxedStrategy<serde_json::Value>) -> BoxedStrategy<Option<serde_json::Value>> {
    prop::option::weighted(0.5, s).boxed()
}

/// A mostly well-formed configuration with here and there a field wrong, so that
/// `compile`'s checks (not only serde's) are reached, and about a third parse.
fn near_config() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let counts = prop_oneof![
        6 => pick(&["requests", "request_bytes", "in_flight"], &["bytes", "Requests"]),
        2 => (prop::sample::select(vec!["request_header", "response_header"]), pick(&["x-cost", "X-Cost"], &["", "bad header"]))
            .prop_map(|(k, h)| json!({ k: h })),
    ];
    let window = || prop::option::weighted(0.85, prop_oneof![12 => num(&[1, 1000, 60_000, 3_600_000, 86_400_000]), 1 => Just(Value::from(0))]).boxed();
    let small = || num(&[0, 1, 2, 3, 5, 100, 4_294_967_295]);
    let matcher = prop_oneof![Just(json!({"path_prefix": "/api"})), Just(json!({"methods": ["GET", "post"]})), Just(json!({"path_prefix": "api"})), Just(json!({"methods": ["G3T"]}))];
    let budget = (
        counts,
        window(),
        small(),
        opt(small()),
        opt(pick(&["fixed", "sliding"], &["bogus"])),
        prop::option::weighted(0.3, pick(&["sync", "exact"], &["both"])),
        prop::option::weighted(0.2, matcher),
    )
        .prop_map(|(counts, w, limit, burst, alg, global, m)| {
            obj([("counts", Some(counts)), ("window_ms", w), ("limit", Some(limit)), ("burst_credits", burst), ("algorithm", alg), ("global", global), ("match", m)])
        });
    let budgets = prop::collection::btree_map(pick(&["a", "b", "rpm"], &["bad name", ""]).prop_map(|v| v.as_str().unwrap_or("x").to_string()), budget, 0..4);
    let over = (opt(small()), opt(small()), opt(window().prop_map(|w| w.unwrap_or(Value::from(-5))).boxed()), opt(any::<bool>().prop_map(Value::from).boxed()))
        .prop_map(|(l, b, w, u)| obj([("limit", l), ("burst_credits", b), ("window_ms", w), ("unlimited", u)]));
    let tenant = (
        opt(pick(&["low", "normal", "vip"], &["boss"])),
        prop::option::weighted(0.2, any::<bool>().prop_map(Value::from)),
        opt(prop::collection::btree_map(prop::sample::select(vec!["a", "b", "rpm", "zzz"]), over, 0..3).prop_map(|m| json!(m)).boxed()),
    )
        .prop_map(|(p, u, b)| obj([("priority", p), ("unlimited", u), ("budgets", b)]));
    let tenants = prop::collection::btree_map(pick(&["acme", "t"], &["", "a b"]).prop_map(|v| v.as_str().unwrap_or("x").to_string()), tenant, 0..3);
    let factor = prop_oneof![12 => (0.0..=1.0f64).prop_map(Value::from), 1 => number()];
    let keep = prop::collection::btree_map(
        prop::sample::select(vec!["normal", "elevated", "critical"]),
        prop::collection::btree_map(prop::sample::select(vec!["low", "normal", "vip"]), factor, 0..3),
        0..3,
    );
    let threshold = || prop_oneof![8 => (0.0..100.0f64).prop_map(Value::from), 1 => number()];
    let source = pick(&["orca:cpu_utilization", "orca:named_metrics.q", "response_header:x-load", "in_flight", "upstream_latency_ms", "operator"], &["orca:", "orca:a b", "response_header:", "disk"]);
    let signal = (source, threshold(), threshold()).prop_map(|(f, e, c)| json!({"from": f, "elevated": e, "critical": c}));
    let saturation = (prop::collection::btree_map(pick(&["cpu", "q"], &["bad name"]).prop_map(|v| v.as_str().unwrap_or("x").to_string()), signal, 0..3), keep, opt(num(&[1, 1000])), opt(num(&[0, 1, 5])))
        .prop_map(|(s, k, st, ra)| obj([("signals", Some(json!(s))), ("keep", Some(json!(k))), ("stale_after_ms", st), ("retry_after_s", ra)]));
    let on_unavailable = prop_oneof![pick(&["local", "deny"], &["maybe"]), (0..4u64).prop_map(|n| json!({"local_share": n}))];
    let global = (pick(&["rls"], &["", "a b"]), opt(num(&[10, 200, 60_000])), opt(num(&[1, 100])), opt(on_unavailable.boxed()))
        .prop_map(|(c, sp, to, ou)| obj([("cluster", Some(c)), ("sync_period_ms", sp), ("timeout_ms", to), ("on_unavailable", ou)]));
    let tenant_src = (
        opt(pick(&["x-tenant-id", "X-Org"], &["bad header"])),
        prop::option::weighted(0.1, prop::collection::vec(pick(&["jwt", "sub"], &[""]), 0..3).prop_map(Value::from)),
        opt(prop_oneof![pick(&["anonymous", "acme"], &["a b", ""]), Just(Value::Null)].boxed()),
        opt(num(&[1, 2, 100_000])),
    )
        .prop_map(|(h, m, f, mt)| obj([("header", h), ("metadata", m), ("fallback", f), ("max_tracked", mt)]));
    let admin = (pick(&["/quota", "/admin"], &["/", "/x/", "x"]), pick(&[TOKEN_SHA], &[BAD_SHA, "00"]))
        .prop_map(|(p, t)| json!({"path_prefix": p, "token_sha256": t}));
    (
        budgets,
        tenants,
        prop::option::weighted(0.3, saturation),
        // Budgets with `global` need this block.
        prop::option::weighted(0.7, global),
        opt(tenant_src.boxed()),
        opt(pick(&["enforce", "shadow", "off"], &["loud"])),
        prop::option::weighted(0.2, admin),
        opt(pick(&["allow", "deny"], &["panic"])),
    )
        .prop_map(|(b, t, s, g, ts, mode, admin, on_error)| {
            obj([
                ("budgets", Some(json!(b))),
                ("tenants", Some(json!(t))),
                ("saturation", s),
                ("global", g),
                ("tenant", ts),
                ("mode", mode),
                ("admin", admin),
                ("on_error", on_error),
            ])
        })
}

/// Bytes from outside: arbitrary, printable ASCII (also around the 256-byte tenant id
/// bound), padded numbers, ORCA-like text.
fn bytes_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => "[ -\\x7f]{250,260}".prop_map(String::into_bytes),
        1 => "[ \t]{0,2}[0-9]{1,22}[ \t\n]{0,2}".prop_map(String::into_bytes),
        1 => "TEXT ?([a-z_.]{0,10}=[-+0-9.eE]{0,8},? ?){0,4}".prop_map(String::into_bytes),
    ]
}

/// Request headers from a map; any header not in it is absent.
struct Headers(HashMap<String, Vec<u8>>);

impl engine::Headers for Headers {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.0.get(name).map(|v| f(v))
    }
}

/// Header bytes: numbers (good and bad), priorities, and arbitrary bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        2 => (0..30u64).prop_map(|n| format!(" {n}\t").into_bytes()),
        1 => prop::sample::select(vec!["", "-1", "+1", "1e3", "0x10", "99999999999999999999", "9999999999999999999", "١٢", "LOW", " vip ", "normal", "GET", "/api/x"])
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn headers() -> impl Strategy<Value = HashMap<String, Vec<u8>>> {
    let names = prop::sample::select(vec!["x-cost", "content-length", "x-tenant-quota-priority", ":method", ":path", "x-tenant-id"]);
    prop::collection::hash_map(names.prop_map(str::to_string), header_value(), 0..6)
}

fn tenant_id() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            3 => prop::sample::select(vec!["acme", "t", "overflow", "anonymous", "x|y"]).prop_map(|s| s.as_bytes().to_vec()),
            1 => "[!-~]{1,300}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..20),
        ],
    )
}

/// One request: tenant, headers, end_of_stream, saturation level, degraded, time step.
type Request = (Option<Vec<u8>>, HashMap<String, Vec<u8>>, bool, u8, bool, u64);

fn request() -> impl Strategy<Value = Request> {
    (tenant_id(), headers(), any::<bool>(), 0..=3u8, prop::bool::weighted(0.2), 0..2_000u64)
}

/// Drive `engine::evaluate` (and the after-the-fact calls an admitted request makes) on a
/// MemStore; every call must return, never panic.
fn drive(c: &Config, reqs: &[Request]) -> Result<(), TestCaseError> {
    let store = MemStore::new();
    store::init_registry(&store, None).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let mut w = Worker::new(7);
    let mut now = T0;
    for (tenant, h, eos, level, degraded, step) in reqs {
        now += step;
        let mut headers = Headers(h.clone());
        let facts = RequestFacts::read(c, &mut headers, tenant.clone(), Vec::new(), *eos);
        let at = Conditions { now, level: *level, global_degraded: *degraded };
        match engine::evaluate(c, &store, &mut w, &facts, at, &RuntimePolicies::new()) {
            Verdict::Admit(mut a) => {
                let policy = c.policy(&a.tenant).clone();
                for ac in a.after.clone() {
                    let units = h.get("content-length").and_then(|v| engine::parse_units(v)).unwrap_or(3);
                    let _ = engine::charge(c, &store, &mut w, &a, &policy, ac.budget, units, now);
                }
                if !a.exact.is_empty() {
                    let _ = engine::exact_request(c, &policy, &a);
                    let answers: Vec<Answer> = a.exact.iter().map(|_| if *level == 3 { Answer::Over { cap: 1 } } else { Answer::Total(1) }).collect();
                    let _ = engine::exact_finish(c, &store, &mut w, &mut a, &policy, if *degraded { None } else { Some(&answers) }, now);
                }
                let _ = engine::release(c, &store, &mut w, &a, &a.in_flight);
                let mut n = 0;
                engine::admitted_headers(&a, |_, _| n += 1);
            }
            Verdict::Reject { reply, .. } => prop_assert!(reply.status >= 400),
            Verdict::Wait(w) => prop_assert_eq!(w.reply.status, 429),
            Verdict::Pass { .. } => {}
        }
    }
    Ok(())
}

const EVAL_CFG: &str = r#"{
  "budgets": {
    "rpm":   {"counts": "requests", "window_ms": 1000, "limit": 3, "burst_credits": 1},
    "slide": {"counts": "requests", "window_ms": 1000, "limit": 4, "algorithm": "sliding"},
    "bytes": {"counts": "request_bytes", "window_ms": 1000, "limit": 1000},
    "cost":  {"counts": {"request_header": "x-cost"}, "window_ms": 1000, "limit": 50, "burst_credits": 5},
    "resp":  {"counts": {"response_header": "x-used"}, "window_ms": 1000, "limit": 50},
    "conc":  {"counts": "in_flight", "limit": 2},
    "api":   {"counts": "requests", "window_ms": 1000, "limit": 2, "match": {"path_prefix": "/api", "methods": ["GET"]}},
    "gsync": {"counts": "requests", "window_ms": 1000, "limit": 4, "global": "sync"},
    "gexact":{"counts": "requests", "window_ms": 1000, "limit": 4, "global": "exact"}
  },
  "tenants": {"acme": {"priority": "vip", "budgets": {"rpm": {"limit": 1}}}, "t": {"unlimited": true}},
  "saturation": {"signals": {"cpu": {"from": "orca:cpu_utilization", "elevated": 0.5, "critical": 0.9}},
                 "keep": {"elevated": {"low": 0.5}, "critical": {"low": 0.0, "normal": 0.5}}},
  "global": {"cluster": "rls", "on_unavailable": {"local_share": 2}},
  "tenant": {"max_tracked": 3}
}"#;

proptest! {
    // Parsing alone is cheap: more cases.
    #![proptest_config(pt(1024))]

    #[test]
    fn config_parse_random_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Config::parse(&b);
    }

    #[test]
    fn config_parse_json_ish(v in json_ish(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let s = v.to_string();
        let _ = Config::parse(s.as_bytes());
        // And the same text with one byte replaced.
        let mut b = s.into_bytes();
        if !b.is_empty() {
            let i = cut.index(b.len());
            b[i] = byte;
            let _ = Config::parse(&b);
        }
    }

    #[test]
    fn config_parse_near_valid(v in near_config()) {
        let _ = Config::parse(v.to_string().as_bytes());
    }

    #[test]
    fn header_parsers_never_panic(b in bytes_input(), metric in "[a-z_.]{0,20}") {
        let _ = engine::parse_priority(&b);
        let _ = saturation::parse_number(&b);
        let _ = saturation::parse_orca(&b, &metric);
        let _ = saturation::decode_reading(&b);
        let _ = crate::wire::pairs_get(&b, ":path");
        let _ = crate::global::rls::decode(&b, 1);
        let _ = crate::global::rls::decode_check(&b, 2);
        let _ = store::Registry::decode(&b);
        let _ = crate::global::Lease::decode(&b);
        // parse_units: None, or the trimmed input is 1-19 digits and that number.
        if let Some(n) = engine::parse_units(&b) {
            let t = std::str::from_utf8(&b).map(|s| s.trim_matches(|c: char| c.is_ascii_whitespace()));
            prop_assert_eq!(t.ok().and_then(|t| t.parse::<u64>().ok()), Some(n));
        }
        // valid_tenant_id is exactly 1-256 bytes of visible ASCII.
        let want = !b.is_empty() && b.len() <= config::MAX_TENANT_ID_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c));
        prop_assert_eq!(config::valid_tenant_id(&b), want);
    }
}

proptest! {
    #![proptest_config(pt(256))]

    /// A configuration that parses must also survive requests.
    #[test]
    fn parsed_configs_evaluate(v in near_config(), reqs in prop::collection::vec(request(), 1..6)) {
        if let Ok(c) = Config::parse(v.to_string().as_bytes()) {
            prop_assert_eq!(c.default_policy.limits.len(), c.budgets.len());
            drive(&c, &reqs)?;
        }
    }

    /// `evaluate` with random tenant ids, cost, content-length, priority, method and path
    /// headers, saturation levels and degraded global state returns a verdict.
    #[test]
    fn evaluate_never_panics(reqs in prop::collection::vec(request(), 1..12)) {
        let c = Config::parse(EVAL_CFG.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        drive(&c, &reqs)?;
    }

    #[test]
    fn orca_text_parses_its_metrics(
        pairs in prop::collection::vec(("[a-z_]{1,12}(\\.[a-z_]{1,8})?", -1e6..1e6f64), 1..5),
        pick in any::<prop::sample::Index>(),
        junk in "[ -~]{0,30}",
    ) {
        let text = format!("TEXT {}, {junk}", pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
        let (k, _) = &pairs[pick.index(pairs.len())];
        // The first pair with that name wins.
        let first = pairs.iter().find(|(k2, _)| k2 == k).map(|(_, v)| *v);
        prop_assert_eq!(saturation::parse_orca(text.as_bytes(), k), first);
        let _ = saturation::parse_orca(&text.as_bytes()[..pick.index(text.len())], k);
    }

    #[test]
    fn parse_units_reads_decimal(n in 0..10_000_000_000_000_000_000u64, pre in "[ \t]{0,3}", post in "[ \t]{0,3}") {
        prop_assert_eq!(engine::parse_units(format!("{pre}{n}{post}").as_bytes()), Some(n));
        prop_assert_eq!(engine::parse_units(format!("{pre}-{n}{post}").as_bytes()), None);
    }

    #[test]
    fn pairs_get_reads_what_serialize_pairs_wrote(map in prop::collection::vec(("[:a-z-]{1,10}", "[ -~]{0,20}"), 0..6), cut in any::<prop::sample::Index>()) {
        let b = crate::wire::serialize_pairs(&map);
        for (k, _) in &map {
            let first = map.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_bytes());
            prop_assert_eq!(crate::wire::pairs_get(&b, k), first);
        }
        let _ = crate::wire::pairs_get(&b[..cut.index(b.len().max(1)).min(b.len())], "x");
    }
}
