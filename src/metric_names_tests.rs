#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

/// Two named tenants (one with characters a label cannot hold), a scope with a named id,
/// two budgets.
fn config() -> Config {
    Config::parse(
        br#"{
        "scopes": { "team": { "header": "x-team", "ids": { "blue.1": {} } } },
        "budgets": {
            "rpm": { "counts": "requests", "window_ms": 60000, "limit": 10 },
            "tpm": { "counts": "requests", "window_ms": 60000, "limit": 10, "scope": "team" }
        },
        "tenants": { "acme": {}, "b.c/d": {} }
    }"#,
    )
    .unwrap()
}

fn all_names(cfg: &Config, l: &Labels, label: usize, budget: usize) -> Vec<(u32, String)> {
    use Kind::*;
    [
        Allowed, Rejected, ShadowRejected, ThrottleExceeded, ThrottleBurst, ThrottleSaturation, BurstUsed, Remaining, Warned, QueueWaiting,
        QueuedAdmitted, QueuedTimeout, QueuedFull, QueuedCancelled,
    ]
    .into_iter()
    .map(|k| l.name(cfg, label, budget, k))
    .collect()
}

#[test]
fn names_are_pinned_byte_for_byte() {
    let cfg = config();
    let l = Labels::new(&cfg);
    let acme = l.label_index(None, "acme");
    let names: Vec<(u32, String)> = all_names(&cfg, &l, acme, 0);
    let want: Vec<(u32, &str)> = vec![
        (COUNTER, "quota_checks_total.tenant_id.acme.resource.rpm.result.allowed"),
        (COUNTER, "quota_checks_total.tenant_id.acme.resource.rpm.result.rejected"),
        (COUNTER, "quota_checks_total.tenant_id.acme.resource.rpm.result.shadow_rejected"),
        (COUNTER, "quota_throttles_total.tenant_id.acme.resource.rpm.reason.rpm_exceeded"),
        (COUNTER, "quota_throttles_total.tenant_id.acme.resource.rpm.reason.burst_exhausted"),
        (COUNTER, "quota_throttles_total.tenant_id.acme.resource.rpm.reason.saturation_throttle"),
        (COUNTER, "burst_credits_used_total.tenant_id.acme.resource.rpm"),
        (GAUGE, "quota_remaining.tenant_id.acme.resource.rpm"),
        (COUNTER, "quota_checks_total.tenant_id.acme.resource.rpm.result.warned"),
        (GAUGE, "quota_queue_waiting.tenant_id.acme.resource.rpm"),
        (COUNTER, "quota_queued_total.tenant_id.acme.resource.rpm.result.admitted"),
        (COUNTER, "quota_queued_total.tenant_id.acme.resource.rpm.result.timeout"),
        (COUNTER, "quota_queued_total.tenant_id.acme.resource.rpm.result.full"),
        (COUNTER, "quota_queued_total.tenant_id.acme.resource.rpm.result.cancelled"),
    ];
    let want: Vec<(u32, String)> = want.into_iter().map(|(t, n)| (t, n.to_string())).collect();
    assert_eq!(names, want);

    // Everyone unnamed is `other`; a named id's unsafe characters become `_`.
    let other = l.label_index(None, "someone-else");
    assert_eq!(l.name(&cfg, other, 1, Kind::Allowed).1, "quota_checks_total.tenant_id.other.resource.tpm.result.allowed");
    let bcd = l.label_index(None, "b.c/d");
    assert_eq!(l.name(&cfg, bcd, 0, Kind::Remaining).1, "quota_remaining.tenant_id.b_c_d.resource.rpm");

    // A scope's named id and its `other`.
    let blue = l.label_index(Some(0), "blue.1");
    assert_eq!(l.name(&cfg, blue, 1, Kind::Rejected).1, "quota_checks_total.scope.team.scope_id.blue_1.resource.tpm.result.rejected");
    let team_other = l.label_index(Some(0), "green");
    assert_eq!(l.name(&cfg, team_other, 1, Kind::QueueWaiting), (GAUGE, "quota_queue_waiting.scope.team.scope_id.other.resource.tpm".to_string()));

    assert_eq!(l.llm_tokens(acme, "input"), "quota_llm_tokens_total.tenant_id.acme.kind.input");
    assert_eq!(l.llm_tokens(other, "output"), "quota_llm_tokens_total.tenant_id.other.kind.output");
    assert_eq!(l.threshold_crossing(&cfg, acme, 0, 80), "quota_threshold_crossings_total.tenant_id.acme.resource.rpm.threshold.80");
    assert_eq!(l.threshold_crossing(&cfg, blue, 1, 100), "quota_threshold_crossings_total.scope.team.scope_id.blue_1.resource.tpm.threshold.100");
    assert_eq!(saturation_gauge("cpu_load"), "saturation_cpu_load");
}

#[test]
fn fixed_names_are_pinned() {
    assert_eq!(
        [ERRORS, ALERT_WEBHOOK_ERRORS, LLM_USAGE_MISSING, IN_FLIGHT_RECLAIMED, ADMIN_AUTH_FAILURES, SATURATION_LEVEL],
        [
            "quota_errors_total",
            "quota_alert_webhook_errors_total",
            "quota_llm_usage_missing_total",
            "quota_in_flight_reclaimed_total",
            "quota_admin_auth_failures_total",
            "saturation_level"
        ]
    );
    assert_eq!(
        [GLOBAL_SYNCS_OK, GLOBAL_SYNCS_ERROR, GLOBAL_CHECKS_OK, GLOBAL_CHECKS_OVER, GLOBAL_CHECKS_ERROR],
        [
            "quota_global_syncs_total.result.ok",
            "quota_global_syncs_total.result.error",
            "quota_global_checks_total.result.ok",
            "quota_global_checks_total.result.over_limit",
            "quota_global_checks_total.result.error"
        ]
    );
    assert_eq!(
        [GLOBAL_DEGRADED, GLOBAL_PENDING_UNITS, GLOBAL_LAST_ANSWER_AGE],
        ["quota_global_degraded", "quota_global_pending_units", "quota_global_last_answer_age_ms"]
    );
}

#[test]
fn label_sets_are_bounded_by_the_configuration() {
    let cfg = config();
    let l = Labels::new(&cfg);
    // acme, b c/d, other; team's blue.1 and other.
    assert_eq!(l.len(), 5);
    assert_eq!(l.slots(), 5 * 2 * KINDS);
    for id in ["x", "y", "z", "acme2"] {
        assert_eq!(l.label_index(None, id), 2);
        assert_eq!(l.label_index(Some(0), id), 4);
    }
    // An unknown scope index reads as a tenant.
    assert_eq!(l.label_index(Some(9), "acme"), l.tenant_index("acme"));
}

#[test]
fn slots_map_back_to_their_label_set_and_budget() {
    let cfg = config();
    let l = Labels::new(&cfg);
    let mut seen = std::collections::HashSet::new();
    for label in 0..l.len() {
        for budget in 0..l.budgets() {
            for k in [Kind::Allowed, Kind::Remaining, Kind::QueuedCancelled] {
                let s = l.slot(label, budget, k);
                assert!(s < l.slots());
                assert!(seen.insert(s));
                assert_eq!(l.of_slot(s), (label, budget));
            }
        }
    }
}

#[test]
fn label_index_finds_named_ids_of_any_length_and_sends_the_rest_to_other() {
    let long = "t".repeat(70);
    let json = format!(
        r#"{{"budgets":{{"rpm":{{"counts":"requests","window_ms":60000,"limit":1}},"team_rpm":{{"counts":"requests","window_ms":60000,"limit":1,"scope":"team"}}}},
            "tenants":{{"acme":{{}},"{long}":{{}}}},"scopes":{{"team":{{"header":"x-team-id","ids":{{"blue":{{}}}}}}}}}}"#
    );
    let cfg = Config::parse(json.as_bytes()).unwrap();
    let l = Labels::new(&cfg);
    let (acme, long_ix, other) = (l.tenant_index("acme"), l.tenant_index(&long), l.tenant_index("nobody"));
    assert_ne!(acme, long_ix);
    assert_eq!(other, 2);
    assert!(acme < 2 && long_ix < 2);
    assert_eq!(l.tenant_index("acmf"), other);
    assert_eq!(l.tenant_index(&"t".repeat(71)), other);
    assert_eq!(l.tenant_index(""), other);
    let blue = l.label_index(Some(0), "blue");
    assert_ne!(blue, l.label_index(Some(0), "bluf"));
    assert_eq!(l.label_index(Some(0), "red"), l.label_index(Some(0), "bluf"));
}
