//! Unit tests for the pure upstream-semantics functions (no Redis).

use super::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::google::protobuf::UInt64Value;

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn limit(n: u32, unit: Unit) -> RateLimit {
    RateLimit {
        name: String::new(),
        requests_per_unit: n,
        unit: unit as i32,
    }
}

#[test]
fn key_layout_matches_cache_key_go() {
    let d = desc(&[("tenant", "acme"), ("route", "r1")]);
    assert_eq!(
        cache_key("tenant-quota", &d, 60, 1_700_000_059),
        "tenant-quota_tenant_acme_route_r1_1700000040"
    );
    assert_eq!(cache_key("d", &desc(&[("k", "")]), 1, 7), "d_k__7");
    assert_eq!(
        cache_key("d", &desc(&[("k", "v")]), 3600, 7199),
        "d_k_v_3600"
    );
}

#[test]
fn units_match_unit_to_divider() {
    let expect = [
        (Unit::Second, 1),
        (Unit::Minute, 60),
        (Unit::Hour, 3600),
        (Unit::Day, 86_400),
    ];
    for (u, s) in expect {
        assert_eq!(unit_seconds(u as i32), Some(s));
    }
    assert_eq!(unit_seconds(Unit::Week as i32), Some(604_800));
    assert_eq!(unit_seconds(Unit::Month as i32), Some(2_592_000));
    assert_eq!(unit_seconds(Unit::Year as i32), Some(31_536_000));
    assert_eq!(unit_seconds(Unit::Unknown as i32), None);
    assert_eq!(unit_seconds(99), None);
}

#[test]
fn hits_addend_rules() {
    let mut d = desc(&[("k", "v")]);
    assert_eq!(hits_addend(&d, 0), 1);
    assert_eq!(hits_addend(&d, 3), 3);
    d.hits_addend = Some(UInt64Value { value: 0 });
    assert_eq!(hits_addend(&d, 3), 0);
    d.hits_addend = Some(UInt64Value { value: 7 });
    assert_eq!(hits_addend(&d, 3), 7);
}

#[test]
fn status_rules() {
    let l = limit(5, Unit::Minute);
    let s = limited_status(&l, 60, 3, 125);
    assert_eq!((s.code, s.limit_remaining), (Code::Ok as i32, 2));
    assert_eq!(s.duration_until_reset.unwrap().seconds, 55);
    assert_eq!(s.current_limit, Some(l.clone()));
    let s = limited_status(&l, 60, 5, 120);
    assert_eq!((s.code, s.limit_remaining), (Code::Ok as i32, 0));
    assert_eq!(s.duration_until_reset.unwrap().seconds, 60);
    let s = limited_status(&l, 60, 6, 120);
    assert_eq!((s.code, s.limit_remaining), (Code::OverLimit as i32, 0));
    let u = unlimited_status();
    assert_eq!(
        (
            u.code,
            u.limit_remaining,
            u.current_limit,
            u.duration_until_reset
        ),
        (Code::Ok as i32, 0, None, None)
    );
}

#[test]
fn limit_lookup() {
    let rule = LimitRule {
        domain: "tq".into(),
        key: "tenant".into(),
        requests_per_unit: 600,
        unit: "MINUTE".into(),
    };
    let config = Config {
        domains: ["tq".to_string()].into(),
        rules: vec![(rule, Unit::Minute as i32)],
    };
    assert_eq!(
        config.limit_for("tq", &desc(&[("tenant", "a")])),
        Some(limit(600, Unit::Minute))
    );
    assert_eq!(config.limit_for("tq", &desc(&[("other", "a")])), None);
    // Like an upstream one-level rule: a deeper descriptor does not match it.
    assert_eq!(
        config.limit_for("tq", &desc(&[("tenant", "a"), ("x", "y")])),
        None
    );
    assert_eq!(config.limit_for("other", &desc(&[("tenant", "a")])), None);
    let mut d = desc(&[("any", "x")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 5,
        unit: Unit::Second as i32,
    });
    assert_eq!(config.limit_for("tq", &d), Some(limit(5, Unit::Second)));
    assert_eq!(config.limit_for("unknown", &d), None);
}
