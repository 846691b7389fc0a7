//! Property 1: random operation sequences through the real store transaction, mirrored on a plain state.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
