//! Prices per model and the cost of a response (SPEC section 5, "Cost").
//!
//! Prices are cost units per million tokens (with micro-USD as the unit, `2500000` is
//! USD 2.50 per million). A model's price is its exact entry, else the entry of the longest
//! matching pattern: a name ending in `*` matches every model that starts with the part
//! before the `*` (so `"*"` matches every model, and also prices a request whose model is
//! unknown). A `*` anywhere else is an ordinary character.

use super::usage::Usage;
use std::collections::BTreeMap;

/// Cost units per million input and output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub output: u64,
}

/// The `llm.prices` table, compiled for lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prices {
    exact: BTreeMap<String, Price>,
    /// Patterns as (prefix before the `*`, price), longest prefix first.
    patterns: Vec<(String, Price)>,
}

impl Prices {
    /// Builds the table; a name given twice keeps its last price.
    pub fn new<I, S>(entries: I) -> Prices
    where
        I: IntoIterator<Item = (S, Price)>,
        S: Into<String>,
    {
        let mut exact = BTreeMap::new();
        let mut patterns = BTreeMap::new();
        for (name, price) in entries {
            let name: String = name.into();
            match name.strip_suffix('*') {
                Some(prefix) => patterns.insert(prefix.to_owned(), price),
                None => exact.insert(name, price),
            };
        }
        let mut patterns: Vec<(String, Price)> = patterns.into_iter().collect();
        patterns.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Prices { exact, patterns }
    }

    /// The price of `model` (`None`: the request's model is unknown, which only `"*"` prices).
    pub fn get(&self, model: Option<&str>) -> Option<Price> {
        match model {
            Some(m) => self
                .exact
                .get(m)
                .copied()
                .or_else(|| self.patterns.iter().find(|(prefix, _)| m.starts_with(prefix.as_str())).map(|(_, p)| *p)),
            None => self.patterns.iter().find(|(prefix, _)| prefix.is_empty()).map(|(_, p)| *p),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }
}

/// `ceil((input * price.input + output * price.output) / 1_000_000)` in cost units, computed
/// in u128 (saturating) and saturated to `u64::MAX`.
pub fn cost(usage: Usage, price: Price) -> u64 {
    let units = u128::from(usage.input)
        .saturating_mul(u128::from(price.input))
        .saturating_add(u128::from(usage.output).saturating_mul(u128::from(price.output)));
    let whole = units / 1_000_000 + u128::from(units % 1_000_000 != 0);
    u64::try_from(whole).unwrap_or(u64::MAX)
}

/// Whether `model` matches a `match.models` entry: equal, or, for an entry ending in `*`,
/// starting with the part before the `*`.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

/// Whether a request's model matches any entry of `match.models`; an unknown model
/// (`None`) matches none (SPEC: such a budget does not apply).
pub fn matches_any<S: AsRef<str>>(patterns: &[S], model: Option<&str>) -> bool {
    model.is_some_and(|m| patterns.iter().any(|p| model_matches(p.as_ref(), m)))
}
