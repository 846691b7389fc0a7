//! Providers that push back (issue: fallback instead of refusal). An upstream answer of 429
//! or 503 cools its provider (the route's cluster, or the model) until its `retry-after`
//! (or `providers.cooldown_s`) has passed; while it cools, requests that would go there take
//! the provider's fallback. The cooling providers are one shared value (`tq1|cooling`), so
//! every worker sees a mark: it merges marks under CAS, and each worker reads it on its tick.
//!
//! The value is text, one line per provider: `<until, Unix ms> <id>\n`. Ids are 1-256 bytes
//! of visible ASCII (others are never marked: a model name is the client's input), at most
//! [`MAX_COOLING`] of them (the soonest to end is dropped first), and ended ones are dropped
//! at every write.

use crate::store::{self, keys, Absent, SharedStore, Step, StoreError};

/// How many providers may cool at once.
pub const MAX_COOLING: usize = 256;

/// The providers cooling, and until when (Unix ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cooling {
    entries: Vec<(String, u64)>,
}

/// Whether `id` can be marked: 1-256 bytes of visible ASCII.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl Cooling {
    /// The stored value (lines that do not parse are skipped).
    pub fn decode(b: &[u8]) -> Cooling {
        let text = String::from_utf8_lossy(b);
        let entries = text
            .lines()
            .filter_map(|l| {
                let (until, id) = l.split_once(' ')?;
                Some((id.to_string(), until.parse().ok()?)).filter(|(id, _)| valid_id(id))
            })
            .collect();
        Cooling { entries }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        for (id, until) in &self.entries {
            out.extend_from_slice(format!("{until} {id}\n").as_bytes());
        }
    }

    /// Until when `id` cools, if it still does at `now`.
    pub fn until(&self, id: &str, now: u64) -> Option<u64> {
        self.entries.iter().find(|(i, u)| i == id && *u > now).map(|(_, u)| *u)
    }

    /// Whether any provider cools at `now` (requests look a provider up only then).
    pub fn any(&self, now: u64) -> bool {
        self.entries.iter().any(|(_, u)| *u > now)
    }

    /// `id` cools until at least `until`; ended entries are dropped. Whether it changed.
    pub fn mark(&mut self, id: &str, until: u64, now: u64) -> bool {
        if !valid_id(id) || until <= now {
            return false;
        }
        let before = self.entries.len();
        self.entries.retain(|(_, u)| *u > now);
        let mut changed = self.entries.len() != before;
        match self.entries.iter_mut().find(|(i, _)| i == id) {
            Some((_, u)) if *u >= until => {}
            Some((_, u)) => {
                *u = until;
                changed = true;
            }
            None => {
                if self.entries.len() >= MAX_COOLING {
                    let soonest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].1).unwrap_or(0);
                    self.entries.swap_remove(soonest);
                }
                self.entries.push((id.to_string(), until));
                changed = true;
            }
        }
        changed
    }
}

/// Merge a mark into the shared value; the merged list. The first write of the key is blind
/// (CAS 0): two workers creating it at once may lose one mark (one more request reaches that
/// provider before another answer marks it again).
pub fn mark<S: SharedStore>(s: &S, id: &str, until: u64, now: u64) -> Result<Cooling, StoreError> {
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    store::update(s, keys::COOLING, Absent::InsertBlind, &mut buf, &mut out, |b, out| {
        let mut c = Cooling::decode(b);
        if c.mark(id, until, now) {
            c.encode(out);
            Ok(Step::Write(c))
        } else {
            Ok(Step::Keep(c))
        }
    })
}

/// The shared value as it is (empty when absent or unreadable).
pub fn read<S: SharedStore>(s: &S, buf: &mut Vec<u8>) -> Cooling {
    match s.get(keys::COOLING, buf) {
        Ok(Some(_)) => Cooling::decode(buf),
        _ => Cooling::default(),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::store::MemStore;

    #[test]
    fn marks_merge_expire_and_stay_bounded() {
        let mut c = Cooling::default();
        assert!(c.mark("openai", 5_000, 1_000));
        assert!(!c.mark("openai", 4_000, 1_000), "a shorter mark keeps the longer one");
        assert!(c.mark("openai", 9_000, 1_000));
        assert_eq!((c.until("openai", 1_000), c.until("openai", 9_000), c.until("other", 0)), (Some(9_000), None, None));
        assert!(c.any(8_999) && !c.any(9_000));
        assert!(!c.mark("bad id", 9_000, 0) && !c.mark("", 9_000, 0) && !c.mark("x\n1 y", 9_000, 0), "ids are visible ASCII");
        assert!(!c.mark("late", 500, 1_000), "a mark that already ended");
        // Ended entries go at the next write.
        assert!(c.mark("b", 20_000, 10_000));
        assert_eq!(c.entries.len(), 1);
        for i in 0..MAX_COOLING + 10 {
            c.mark(&format!("m{i}"), 30_000 + i as u64, 10_000);
        }
        assert_eq!(c.entries.len(), MAX_COOLING);
        assert_eq!(c.until("b", 10_000), None, "the soonest to end went first");
        assert!(c.until(&format!("m{}", MAX_COOLING + 9), 10_000).is_some());
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(Cooling::decode(&out), c);
        assert_eq!(Cooling::decode(b"12 a\ngarbage\nx y\n7 \n9 b c\n").entries, vec![("a".to_string(), 12)]);
    }

    #[test]
    fn every_worker_sees_a_mark() {
        let s = MemStore::new();
        let mut buf = Vec::new();
        assert_eq!(read(&s, &mut buf), Cooling::default());
        mark(&s, "primary", 61_000, 1_000).unwrap();
        mark(&s, "other", 5_000, 1_000).unwrap();
        let seen = read(&s, &mut buf);
        assert_eq!((seen.until("primary", 2_000), seen.until("other", 2_000)), (Some(61_000), Some(5_000)));
        // A later mark by another worker with a shorter cooldown does not shorten it.
        let merged = mark(&s, "primary", 30_000, 2_000).unwrap();
        assert_eq!(merged.until("primary", 2_000), Some(61_000));
    }
}
