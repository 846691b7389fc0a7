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

// One file per subject: operation sequences against the core (`ops`), the state encoding
// (`state`), and parsers and the engine fed outside input (`inputs`).
mod inputs;
mod ops;
mod state;
