//! Every shared-data key the filter uses, built and parsed here and nowhere else.
//!
//! All keys start with the layout version `tq1|` ([`VERSION`]). Keys are never freed (the ABI
//! has no remove), so every layout below is bounded by the configuration or by
//! `max_tracked`, and none holds a timestamp. A running fleet upgrades in place only while
//! these strings stay byte for byte what they are: a new layout takes a new version.
//!
//! | Key | Value |
//! |---|---|
//! | `tq1\|t\|<tenant>`, `tq1\|overflow` | a tenant's state (`core::TenantState`) |
//! | `tq1\|s\|<scope>\|<id>`, `tq1\|so\|<scope>` | a scope id's state |
//! | `tq1\|registry`, `tq1\|sreg\|<scope>` | tracked count and creation lock (`store::Registry`) |
//! | `tq1\|vms`, `tq1\|vm\|<n>`, `tq1\|vm\|<n>\|<shard hex>` | in-flight ledgers (`store::ledger`) |
//! | `tq1\|qw\|<budget id 08x>\|<state key>` | requests waiting on a (subject, budget) |
//! | `tq1\|sig\|<signal>`, `tq1\|inflight` | saturation readings, all-tenant in-flight count |
//! | `tq1\|overrides`, `tq1\|operator` | admin API: runtime overrides, operator signal values |
//! | `tq1\|glease`, `tq1\|ghealth`, `tq1\|gdirty`, `tq1\|gtrap` | global budgets' sync loop |
//! | `tq1\|bodyoff` | whether the host can pause for a request body |
//!
//! Scope names have no `|` (config: `[A-Za-z0-9_-]`); tenant and scope ids may, which is
//! why an id is always the last part of a key.

use crate::core::id::OVERFLOW;
use crate::core::Subject;

/// The layout version every key starts with.
pub const VERSION: &str = "tq1";

/// A key that does not vary: `tq1|<name>`.
macro_rules! fixed {
    ($name:literal) => {
        concat!("tq1|", $name)
    };
}

pub const REGISTRY: &str = fixed!("registry");
pub const OVERRIDES: &str = fixed!("overrides");
pub const OPERATOR: &str = fixed!("operator");
pub const LEASE: &str = fixed!("glease");
pub const HEALTH: &str = fixed!("ghealth");
pub const DIRTY: &str = fixed!("gdirty");
pub const GLOBAL_TRAP: &str = fixed!("gtrap");
pub const LEDGER_PLACES: &str = fixed!("vms");
pub const IN_FLIGHT: &str = fixed!("inflight");
pub const BODY_OFF: &str = fixed!("bodyoff");
/// Providers cooling after a 429/503 (`crate::providers`).
pub const COOLING: &str = fixed!("cooling");

const TENANT: &str = fixed!("t|");
const TENANT_OVERFLOW: &str = fixed!("overflow");
const SCOPE: &str = fixed!("s|");
const SCOPE_OVERFLOW: &str = fixed!("so|");
const SCOPE_REGISTRY: &str = fixed!("sreg|");
const LEDGER_PLACE: &str = fixed!("vm|");
const SIGNAL: &str = fixed!("sig|");
const QUEUE_PLACES: &str = fixed!("qw|");

/// The key of a subject's state, into `out`. `overflow` has a key no other id can produce
/// in its space.
pub fn state(who: Subject<'_>, out: &mut String) {
    out.clear();
    match who {
        Subject::Tenant(id) if id == OVERFLOW => out.push_str(TENANT_OVERFLOW),
        Subject::Tenant(id) => {
            out.push_str(TENANT);
            out.push_str(id);
        }
        Subject::Scope { name, id, .. } if id == OVERFLOW => {
            out.push_str(SCOPE_OVERFLOW);
            out.push_str(name);
        }
        Subject::Scope { name, id, .. } => {
            out.push_str(SCOPE);
            out.push_str(name);
            out.push('|');
            out.push_str(id);
        }
    }
}

/// [`state`] into a new string.
pub fn state_key(who: Subject<'_>) -> String {
    let mut k = String::new();
    state(who, &mut k);
    k
}

/// Whose state a key holds: `(None, tenant id)` or `(Some(scope name), scope id)`; `None` for
/// a key that is not a state key.
pub fn parse_state(key: &str) -> Option<(Option<&str>, &str)> {
    if key == TENANT_OVERFLOW {
        return Some((None, OVERFLOW));
    }
    if let Some(id) = key.strip_prefix(TENANT) {
        return Some((None, id));
    }
    if let Some(name) = key.strip_prefix(SCOPE_OVERFLOW) {
        return Some((Some(name), OVERFLOW));
    }
    let (name, id) = key.strip_prefix(SCOPE)?.split_once('|')?;
    Some((Some(name), id))
}

/// The tenant id a key holds the state of (None for any other key).
pub fn tenant_of(key: &str) -> Option<&str> {
    match parse_state(key)? {
        (None, id) => Some(id),
        (Some(_), _) => None,
    }
}

/// Whether a state key is its space's `overflow` subject.
pub fn is_overflow(key: &str) -> bool {
    // Asked of every subject a request commits: every overflow key starts with `tq1|so|` or
    // ends with `overflow`, which rules out most keys without parsing them.
    (key.starts_with(SCOPE_OVERFLOW) || key.ends_with(OVERFLOW)) && parse_state(key).is_some_and(|(_, id)| id == OVERFLOW)
}

/// The registry (tracked count, creation lock) of a space: the tenants' (`scope` None) or a
/// scope's.
pub fn registry(scope: Option<&str>) -> String {
    match scope {
        None => REGISTRY.to_string(),
        Some(name) => format!("{SCOPE_REGISTRY}{name}"),
    }
}

pub fn parse_registry(key: &str) -> Option<Option<&str>> {
    if key == REGISTRY {
        return Some(None);
    }
    key.strip_prefix(SCOPE_REGISTRY).map(Some)
}

/// A ledger place: its owner and heartbeat.
pub fn ledger_place(n: usize) -> String {
    format!("{LEDGER_PLACE}{n}")
}

/// One shard of a ledger place's slots.
pub fn ledger_shard(n: usize, shard: usize) -> String {
    format!("{LEDGER_PLACE}{n}|{shard:x}")
}

/// `(place, Some(shard))` of a ledger shard key, `(place, None)` of a place key.
pub fn parse_ledger(key: &str) -> Option<(usize, Option<usize>)> {
    let rest = key.strip_prefix(LEDGER_PLACE)?;
    match rest.split_once('|') {
        None => Some((rest.parse().ok()?, None)),
        Some((n, s)) => Some((n.parse().ok()?, Some(usize::from_str_radix(s, 16).ok()?))),
    }
}

/// A saturation signal's latest reading.
pub fn signal(name: &str) -> String {
    format!("{SIGNAL}{name}")
}

pub fn parse_signal(key: &str) -> Option<&str> {
    key.strip_prefix(SIGNAL)
}

/// The count of requests waiting on a budget of the subject whose state key is `state_key`.
pub fn queue_places(state_key: &str, budget_id: u32) -> String {
    format!("{QUEUE_PLACES}{budget_id:08x}|{state_key}")
}

/// `(budget id, state key)` of a queue places key.
pub fn parse_queue_places(key: &str) -> Option<(u32, &str)> {
    let (id, state) = key.strip_prefix(QUEUE_PLACES)?.split_once('|')?;
    (id.len() == 8).then_some(())?;
    Some((u32::from_str_radix(id, 16).ok()?, state))
}

/// The entry of a runtime override in the [`OVERRIDES`] map: the tenant id, or
/// `"<scope> <id>"` (ids and scope names have no spaces, so the two cannot collide).
pub fn override_entry(who: Subject<'_>) -> String {
    match who {
        Subject::Tenant(id) => id.to_string(),
        Subject::Scope { name, id, .. } => format!("{name} {id}"),
    }
}

/// `(None, tenant id)` or `(Some(scope name), id)` of an override entry.
pub fn parse_override_entry(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once(' ') {
        None => (None, entry),
        Some((name, id)) => (Some(name), id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 7] = ["acme", "a|b", "|", "||x|", "overflow|", "t|x", "so|team"];

    fn scope(id: &str) -> Subject<'_> {
        Subject::Scope { ix: 0, name: "team", id }
    }

    #[test]
    fn every_key_starts_with_the_version() {
        let keys = [
            REGISTRY, OVERRIDES, OPERATOR, LEASE, HEALTH, DIRTY, GLOBAL_TRAP, LEDGER_PLACES, IN_FLIGHT, BODY_OFF,
        ];
        for k in keys.iter().map(|k| k.to_string()).chain([state_key(Subject::Tenant("a")), state_key(scope("a")), registry(Some("team")), ledger_place(3), ledger_shard(3, 11), signal("cpu"), queue_places("tq1|t|a", 7)]) {
            assert!(k.starts_with(VERSION) && k.as_bytes()[VERSION.len()] == b'|', "{k}");
        }
    }

    #[test]
    fn the_layouts_a_running_fleet_has_stay_byte_identical() {
        assert_eq!(state_key(Subject::Tenant("acme")), "tq1|t|acme");
        assert_eq!(state_key(Subject::Tenant(OVERFLOW)), "tq1|overflow");
        assert_eq!(state_key(scope("blue")), "tq1|s|team|blue");
        assert_eq!(state_key(scope(OVERFLOW)), "tq1|so|team");
        assert_eq!(registry(None), "tq1|registry");
        assert_eq!(registry(Some("team")), "tq1|sreg|team");
        assert_eq!(ledger_place(2), "tq1|vm|2");
        assert_eq!(ledger_shard(2, 15), "tq1|vm|2|f");
        assert_eq!(signal("cpu_load"), "tq1|sig|cpu_load");
        assert_eq!(queue_places("tq1|t|acme", 0xab), "tq1|qw|000000ab|tq1|t|acme");
        assert_eq!(override_entry(scope("blue")), "team blue");
        let fixed = [REGISTRY, OVERRIDES, OPERATOR, LEASE, HEALTH, DIRTY, GLOBAL_TRAP, LEDGER_PLACES, IN_FLIGHT, BODY_OFF];
        let spelt = ["tq1|registry", "tq1|overrides", "tq1|operator", "tq1|glease", "tq1|ghealth", "tq1|gdirty", "tq1|gtrap", "tq1|vms", "tq1|inflight", "tq1|bodyoff"];
        assert_eq!(fixed, spelt);
    }

    #[test]
    fn state_keys_round_trip_hostile_ids() {
        for id in IDS.iter().copied().chain([OVERFLOW]) {
            assert_eq!(parse_state(&state_key(Subject::Tenant(id))), Some((None, id)), "{id}");
            assert_eq!(parse_state(&state_key(scope(id))), Some((Some("team"), id)), "{id}");
            assert_eq!(tenant_of(&state_key(Subject::Tenant(id))), Some(id));
            assert_eq!(tenant_of(&state_key(scope(id))), None);
            assert_eq!(is_overflow(&state_key(scope(id))), id == OVERFLOW);
            assert_eq!(is_overflow(&state_key(Subject::Tenant(id))), id == OVERFLOW);
        }
        for other in [REGISTRY, LEASE, "tq1|sreg|team", "tq1|vm|1", "tq1|s|team"] {
            assert_eq!(parse_state(other), None, "{other}");
        }
    }

    #[test]
    fn the_other_layouts_round_trip() {
        assert_eq!(parse_registry(&registry(None)), Some(None));
        assert_eq!(parse_registry(&registry(Some("team"))), Some(Some("team")));
        for n in [0, 7, 1000] {
            assert_eq!(parse_ledger(&ledger_place(n)), Some((n, None)));
            for s in 0..16 {
                assert_eq!(parse_ledger(&ledger_shard(n, s)), Some((n, Some(s))));
            }
        }
        assert_eq!(parse_signal(&signal("cpu-load_1")), Some("cpu-load_1"));
        for id in IDS {
            for who in [Subject::Tenant(id), scope(id)] {
                let k = state_key(who);
                for b in [0, 1, 0xdead_beef, u32::MAX] {
                    let q = queue_places(&k, b);
                    assert_eq!(parse_queue_places(&q), Some((b, k.as_str())));
                    assert_eq!(parse_state(parse_queue_places(&q).map_or("", |x| x.1)), parse_state(&k));
                }
            }
            assert_eq!(parse_override_entry(&override_entry(Subject::Tenant(id))), (None, id));
            assert_eq!(parse_override_entry(&override_entry(scope(id))), (Some("team"), id));
        }
    }
}
