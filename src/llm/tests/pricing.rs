//! Prices and model patterns.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

// ---------------------------------------------------------------------------------------
// Prices and model patterns.

fn spec_prices() -> Prices {
    Prices::new([
        ("gpt-4o", Price { input: 2_500_000, output: 10_000_000 }),
        ("gpt-4o-mini", Price { input: 150_000, output: 600_000 }),
        ("claude-*", Price { input: 3_000_000, output: 15_000_000 }),
        ("claude-opus-*", Price { input: 15_000_000, output: 75_000_000 }),
    ])
}

#[test]
fn price_lookup_exact_then_longest_pattern() {
    let p = spec_prices();
    assert_eq!(p.get(Some("gpt-4o")), Some(Price { input: 2_500_000, output: 10_000_000 }));
    assert_eq!(p.get(Some("gpt-4o-mini")), Some(Price { input: 150_000, output: 600_000 }));
    assert_eq!(p.get(Some("gpt-4o-2024-08-06")), None, "no pattern covers it");
    assert_eq!(p.get(Some("claude-sonnet-4-5")), Some(Price { input: 3_000_000, output: 15_000_000 }));
    assert_eq!(p.get(Some("claude-opus-4-1")), Some(Price { input: 15_000_000, output: 75_000_000 }));
    assert_eq!(p.get(Some("claude-")), Some(Price { input: 3_000_000, output: 15_000_000 }), "`*` matches an empty suffix");
    assert_eq!(p.get(Some("claude")), None);
    assert_eq!(p.get(None), None, "an unknown model is unpriced without `*`");
    // `*` prices everything, known or not, below every longer match.
    let mut entries = vec![("*".to_owned(), Price { input: 1, output: 2 })];
    entries.push(("gpt-*".to_owned(), Price { input: 3, output: 4 }));
    entries.push(("gpt-4o".to_owned(), Price { input: 5, output: 6 }));
    let p = Prices::new(entries);
    assert_eq!(p.get(None), Some(Price { input: 1, output: 2 }));
    assert_eq!(p.get(Some("llama-3")), Some(Price { input: 1, output: 2 }));
    assert_eq!(p.get(Some("gpt-4o-mini")), Some(Price { input: 3, output: 4 }));
    assert_eq!(p.get(Some("gpt-4o")), Some(Price { input: 5, output: 6 }));
    // A `*` elsewhere is literal; a name given twice keeps its last price.
    let p = Prices::new([("a*b", Price { input: 1, output: 1 }), ("x", Price { input: 1, output: 1 }), ("x", Price { input: 2, output: 2 })]);
    assert_eq!(p.get(Some("a-b")), None);
    assert_eq!(p.get(Some("a*b")), Some(Price { input: 1, output: 1 }));
    assert_eq!(p.get(Some("x")), Some(Price { input: 2, output: 2 }));
    assert!(Prices::default().is_empty() && !p.is_empty());
}

#[test]
fn cost_rounds_up_and_never_overflows() {
    let gpt4o = Price { input: 2_500_000, output: 10_000_000 };
    // 1000 * 2.5 + 500 * 10 = 7500 micro-USD.
    assert_eq!(cost(Usage { input: 1000, output: 500 }, gpt4o), 7500);
    let mini = Price { input: 150_000, output: 600_000 };
    // 1 * 0.15 = 0.15 -> 1; 10 * 0.15 + 0 = 1.5 -> 2; exact multiples stay.
    assert_eq!(cost(Usage { input: 1, output: 0 }, mini), 1);
    assert_eq!(cost(Usage { input: 10, output: 0 }, mini), 2);
    assert_eq!(cost(Usage { input: 20, output: 0 }, mini), 3);
    assert_eq!(cost(Usage { input: 0, output: 5 }, Price { input: 0, output: 200_000 }), 1);
    assert_eq!(cost(Usage { input: 0, output: 0 }, gpt4o), 0);
    assert_eq!(cost(Usage { input: 7, output: 9 }, Price::default()), 0);
    // u64 * u64 overflows u64, not u128: exact result.
    assert_eq!(cost(Usage { input: u64::MAX, output: 0 }, Price { input: 1_000_000, output: 0 }), u64::MAX);
    assert_eq!(cost(Usage { input: 1 << 40, output: 1 << 40 }, Price { input: 1 << 40, output: 1 << 40 }), ((1u128 << 81) / 1_000_000 + 1) as u64);
    // Beyond u64 (or even u128): saturates.
    assert_eq!(cost(Usage { input: u64::MAX, output: u64::MAX }, Price { input: u64::MAX, output: u64::MAX }), u64::MAX);
}

proptest! {
    #![proptest_config(pt(512))]

    #[test]
    fn cost_is_the_exact_ceiling(i in any::<u32>(), o in any::<u32>(), pi in 0..100_000_000u64, po in 0..100_000_000u64) {
        let c = cost(Usage { input: i.into(), output: o.into() }, Price { input: pi, output: po });
        let exact = u128::from(i) * u128::from(pi) + u128::from(o) * u128::from(po);
        prop_assert!(u128::from(c) * 1_000_000 >= exact);
        prop_assert!(exact + 1_000_000 > u128::from(c) * 1_000_000);
    }
}

#[test]
fn match_models_patterns() {
    let models = ["gpt-4o", "gpt-4o-2024-*"];
    assert!(matches_any(&models, Some("gpt-4o")));
    assert!(matches_any(&models, Some("gpt-4o-2024-08-06")));
    assert!(matches_any(&models, Some("gpt-4o-2024-")));
    assert!(!matches_any(&models, Some("gpt-4o-mini")));
    assert!(!matches_any(&models, Some("GPT-4o")));
    assert!(!matches_any(&models, None), "an unknown model matches nothing");
    assert!(matches_any(&["*"], Some("anything")));
    assert!(!matches_any(&["*"], None));
    assert!(!matches_any::<&str>(&[], Some("gpt-4o")));
    assert!(model_matches("claude-*", "claude-3-haiku"));
    assert!(!model_matches("claude-*", "claud"));
    assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    assert!(!model_matches("g*o", "gpt-4o"), "only a trailing `*` is a pattern");
}
