#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

pub(super) fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s.as_bytes())
}

pub(super) fn refused(s: &str) -> ConfigError {
    match parse(s) {
        Ok(_) => panic!("config was accepted: {s}"),
        Err(e) => e,
    }
}

const SPEC_EXAMPLE: &str = r#"{
  "mode": "enforce",
  "tenant": { "header": "x-tenant-id", "fallback": "anonymous", "max_tracked": 100000 },
  "budgets": {
    "requests_per_minute":   { "counts": "requests",      "window_ms": 60000,    "limit": 100,         "burst_credits": 20 },
    "ingest_bytes_per_day":  { "counts": "request_bytes", "window_ms": 86400000, "limit": 10737418240, "burst_credits": 536870912 },
    "query_cost_per_minute": { "counts": { "request_header": "x-query-cost" }, "window_ms": 60000, "limit": 20000, "burst_credits": 2000 },
    "export_concurrency":    { "counts": "in_flight", "limit": 10, "burst_credits": 2, "match": { "path_prefix": "/export" } }
  },
  "tenants": {
    "acme":    { "priority": "vip", "budgets": { "requests_per_minute": { "limit": 200, "burst_credits": 25 } } },
    "batchco": { "priority": "low" }
  },
  "saturation": {
    "signals": {
      "cpu_load":      { "from": "orca:cpu_utilization",             "elevated": 0.75, "critical": 0.9 },
      "queue_depth":   { "from": "in_flight",                        "elevated": 200,  "critical": 500 },
      "db_latency_ms": { "from": "response_header:x-db-latency-ms",  "elevated": 250,  "critical": 1000 }
    },
    "stale_after_ms": 10000,
    "keep": {
      "elevated": { "vip": 1.0, "normal": 0.8, "low": 0.5 },
      "critical": { "vip": 1.0, "normal": 0.5, "low": 0.0 }
    },
    "retry_after_s": 5
  },
  "admin": { "path_prefix": "/.quota", "token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" },
  "on_error": "allow"
}"#;

#[test]
fn spec_example_loads() {
    let c = parse(SPEC_EXAMPLE).unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.budgets.len(), 4);
    let rpm = c.budget_index("requests_per_minute").unwrap();
    assert_eq!(c.policy("acme").limits[rpm].limit, 200);
    assert_eq!(c.policy("acme").limits[rpm].burst_credits, 25);
    assert_eq!(c.policy("acme").priority, Priority::Vip);
    assert_eq!(c.policy("batchco").priority, Priority::Low);
    assert_eq!(c.policy("someone").limits[rpm].limit, 100);
    let exp = c.budget_index("export_concurrency").unwrap();
    assert_eq!(c.budgets[exp].counts, Counts::InFlight);
    assert!(c.budgets[exp].matcher.matches("GET", "/export/x"));
    assert!(!c.budgets[exp].matcher.matches("GET", "/other"));
    let sat = c.saturation.unwrap();
    assert_eq!(sat.keep[2][Priority::Low as usize], 0.0);
    assert_eq!(sat.keep[1][Priority::Normal as usize], 0.8);
    assert_eq!(sat.keep[0][Priority::Normal as usize], 1.0);
    assert!(c.admin.is_some());
    assert!(c.needs_match);
}

#[test]
fn defaults() {
    let c = parse("{}").unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.tenant_source, TenantSource::Header("x-tenant-id".into()));
    assert_eq!(c.fallback.as_deref(), Some("anonymous"));
    assert_eq!(c.max_tracked, DEFAULT_MAX_TRACKED);
    assert_eq!(c.on_error, OnError::Allow);
}

#[test]
fn null_fallback_and_metadata_source() {
    let c = parse(r#"{"tenant":{"metadata":["metadata","filter_metadata","jwt","tenant"],"fallback":null}}"#).unwrap();
    assert_eq!(c.fallback, None);
    assert!(matches!(c.tenant_source, TenantSource::Metadata(ref p) if p.len() == 4));
}

#[test]
fn unknown_keys_are_refused_and_named() {
    let e = refused(r#"{"mode":"enforce","bogus":1}"#);
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1,"brust_credits":2}}}"#);
    assert!(e.to_string().contains("brust_credits"), "{e}");
    assert!(e.path.contains("budgets.rpm"), "{e}");
    let e = refused(r#"{"tenant":{"heder":"x"}}"#);
    assert!(e.to_string().contains("heder"), "{e}");
}

#[test]
fn wrong_types_are_refused() {
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":"ten"}}}"#);
    assert_eq!(e.path, "budgets.rpm.limit", "{e}");
    let e = refused(r#"{"mode":"loud"}"#);
    assert_eq!(e.path, "mode");
    let e = refused(r#"{"budgets":{"rpm":{"counts":"sockets","window_ms":1000,"limit":1}}}"#);
    assert_eq!(e.path, "budgets.rpm.counts");
    let e = refused(r#"{"budgets":{"rpm":{"counts":{"request_body":"x"},"window_ms":1000,"limit":1}}}"#);
    assert!(e.path.starts_with("budgets.rpm.counts"), "{e}");
}

#[test]
fn zero_and_negative_windows_are_refused() {
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":0,"limit":1}}}"#);
    assert_eq!(e.path, "budgets.rpm.window_ms");
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":-5,"limit":1}}}"#);
    assert_eq!(e.path, "budgets.rpm.window_ms");
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","limit":1}}}"#);
    assert_eq!(e.path, "budgets.rpm.window_ms");
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1}},"tenants":{"a":{"budgets":{"rpm":{"window_ms":0}}}}}"#);
    assert_eq!(e.path, "tenants.a.budgets.rpm.window_ms");
}

#[test]
fn overrides_of_unknown_budgets_are_refused() {
    let e = refused(r#"{"budgets":{"rpm":{"counts":"requests","window_ms":1000,"limit":1}},"tenants":{"acme":{"budgets":{"rph":{"limit":3}}}}}"#);
    assert_eq!(e.path, "tenants.acme.budgets.rph");
    assert!(e.message.contains("unknown budget"));
}

#[test]
fn unknown_priorities_and_levels_are_refused() {
    let e = refused(r#"{"tenants":{"acme":{"priority":"gold"}}}"#);
    assert_eq!(e.path, "tenants.acme.priority", "{e}");
    let e = refused(r#"{"saturation":{"keep":{"meltdown":{"vip":1.0}}}}"#);
    assert!(e.to_string().contains("meltdown"), "{e}");
    let e = refused(r#"{"saturation":{"keep":{"critical":{"gold":1.0}}}}"#);
    assert!(e.to_string().contains("gold"), "{e}");
    let e = refused(r#"{"saturation":{"keep":{"critical":{"low":1.5}}}}"#);
    assert!(e.path.contains("keep"), "{e}");
}

#[test]
fn bad_saturation_and_admin_are_refused() {
    let e = refused(r#"{"saturation":{"signals":{"cpu":{"from":"telepathy","elevated":1,"critical":2}}}}"#);
    assert_eq!(e.path, "saturation.signals.cpu.from");
    let e = refused(r#"{"saturation":{"signals":{"cpu":{"from":"in_flight","elevated":3,"critical":2}}}}"#);
    assert!(e.path.contains("saturation.signals.cpu"));
    let e = refused(r#"{"admin":{"path_prefix":"/.quota","token_sha256":"abc"}}"#);
    assert_eq!(e.path, "admin.token_sha256");
    let e = refused(r#"{"admin":{"path_prefix":"quota","token_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}"#);
    assert_eq!(e.path, "admin.path_prefix");
}

#[test]
fn bad_tenant_settings_are_refused() {
    assert_eq!(refused(r#"{"tenant":{"fallback":"has space"}}"#).path, "tenant.fallback");
    assert_eq!(refused(r#"{"tenant":{"max_tracked":0}}"#).path, "tenant.max_tracked");
    assert_eq!(refused(r#"{"tenant":{"header":"x","metadata":["a"]}}"#).path, "tenant");
    assert_eq!(refused(r#"{"on_error":"panic"}"#).path, "on_error");
    assert!(refused("not json").to_string().contains("invalid configuration"));
}

#[test]
fn unlimited_overrides() {
    let c = parse(r#"{"budgets":{"a":{"counts":"requests","window_ms":1000,"limit":1},"b":{"counts":"requests","window_ms":1000,"limit":1}},
        "tenants":{"all":{"unlimited":true},"one":{"budgets":{"b":{"unlimited":true}}}}}"#).unwrap();
    assert!(c.policy("all").limits.iter().all(|l| l.unlimited));
    assert_eq!(c.policy("one").limits.iter().map(|l| l.unlimited).collect::<Vec<_>>(), vec![false, true]);
}

#[test]
fn valid_tenant_ids() {
    assert!(valid_tenant_id(b"acme-1_x.y"));
    assert!(!valid_tenant_id(b""));
    assert!(!valid_tenant_id(b"a b"));
    assert!(!valid_tenant_id(b"a\x01"));
    assert!(!valid_tenant_id(b"caf\xc3\xa9"));
    assert!(valid_tenant_id(&[b'a'; 256]));
    assert!(!valid_tenant_id(&[b'a'; 257]));
}

#[test]
fn shipped_envoy_config_loads() {
    // The JSON inside envoy/envoy.yaml must stay valid.
    let yaml = include_str!("../../envoy/envoy.yaml");
    let start = yaml.find("value: |").unwrap();
    let json: String = yaml[start + 8..].lines().take_while(|l| !l.trim_start().starts_with("- name:")).collect::<Vec<_>>().join("\n");
    parse(&json).unwrap();
}

#[test]
fn more_budgets_than_a_state_can_hold_are_refused() {
    let many: Vec<String> = (0..65).map(|i| format!(r#""b{i:03}":{{"counts":"requests","window_ms":60000,"limit":1}}"#)).collect();
    let e = Config::parse(format!(r#"{{"budgets":{{{}}}}}"#, many.join(",")).as_bytes()).unwrap_err();
    assert_eq!(e.path, "budgets");
    let ok: Vec<String> = (0..64).map(|i| format!(r#""b{i:03}":{{"counts":"requests","window_ms":60000,"limit":1}}"#)).collect();
    assert!(Config::parse(format!(r#"{{"budgets":{{{}}}}}"#, ok.join(",")).as_bytes()).is_ok());
}

#[test]
fn scopes_are_checked_with_the_key_named() {
    let b = r#""team_rpm":{"counts":"requests","window_ms":60000,"limit":5,"scope":"team"},"rpm":{"counts":"requests","window_ms":60000,"limit":5}"#;
    for (json, path) in [
        (format!(r#"{{"budgets":{{{b}}}}}"#), "budgets.team_rpm.scope"),
        (format!(r#"{{"scopes":{{"team":{{}}}},"budgets":{{{b}}}}}"#), "scopes.team"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","metadata":["a"]}}}},"budgets":{{{b}}}}}"#), "scopes.team"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x team"}}}},"budgets":{{{b}}}}}"#), "scopes.team.header"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","max_tracked":0}}}},"budgets":{{{b}}}}}"#), "scopes.team.max_tracked"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","ids":{{"overflow":{{}}}}}}}}}},"budgets":{{{b}}}}}"#), "scopes.team.ids.overflow"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","ids":{{"blue":{{"budgets":{{"rpm":{{"limit":1}}}}}}}}}}}},"budgets":{{{b}}}}}"#), "scopes.team.ids.blue.budgets.rpm"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","ids":{{"blue":{{"priority":"vip"}}}}}}}},"budgets":{{{b}}}}}"#), "scopes.team.ids.blue"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team"}}}},"tenants":{{"a":{{"budgets":{{"team_rpm":{{"limit":1}}}}}}}},"budgets":{{{b}}}}}"#), "tenants.a.budgets.team_rpm"),
        (format!(r#"{{"scopes":{{"team":{{"header":"x-team","oops":1}}}},"budgets":{{{b}}}}}"#), "scopes.team"),
    ] {
        let e = Config::parse(json.as_bytes()).unwrap_err();
        assert!(e.path == path || e.path.starts_with(path), "{json}: got `{}`: {}", e.path, e.message);
    }
    let ok = Config::parse(
        format!(r#"{{"scopes":{{"team":{{"header":"X-Team","ids":{{"blue":{{"budgets":{{"team_rpm":{{"limit":9}}}}}}}}}},"project":{{"metadata":["m","p"]}}}},"budgets":{{{b}}}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(ok.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["project", "team"]);
    let i = ok.budget_index("team_rpm").unwrap();
    assert_eq!(ok.budgets[i].scope, Some(1));
    assert_eq!(ok.scopes[1].policy("blue").limits[i].limit, 9);
    assert_eq!(ok.scopes[1].policy("red").limits[i].limit, 5);
    assert_eq!(ok.scopes[1].source, TenantSource::Header("x-team".into()));
}

#[test]
fn violation_actions_are_checked() {
    let e = refused(r#"{"budgets":{"r":{"counts":"requests","window_ms":1000,"limit":1,"queue":{"timeout_ms":10}}}}"#);
    assert_eq!(e.path, "budgets.r.queue");
    let e = refused(r#"{"budgets":{"r":{"counts":"requests","window_ms":1000,"limit":1,"on_exceed":"queue","queue":{"max_waiting":0}}}}"#);
    assert_eq!(e.path, "budgets.r.queue.max_waiting");
    let e = refused(r#"{"budgets":{"r":{"counts":"requests","window_ms":1000,"limit":1,"on_exceed":"drop"}}}"#);
    assert_eq!(e.path, "budgets.r.on_exceed");
    let c = parse(
        r#"{"budgets":{"q0":{"counts":"in_flight","limit":1,"on_exceed":"queue","queue":{"timeout_ms":0}},
                       "q1":{"counts":"requests","window_ms":86400000,"limit":1,"on_exceed":"queue"},
                       "w":{"counts":"requests","window_ms":1000,"limit":1,"on_exceed":"warn"}}}"#,
    )
    .unwrap();
    let w = c.warnings();
    assert!(w.iter().any(|m| m.contains("q0.queue.timeout_ms is 0")), "{w:?}");
    assert!(w.iter().any(|m| m.contains("q1") && m.contains("far longer")), "{w:?}");
    assert_eq!(c.budgets[c.budget_index("q1").unwrap()].queue, Queue { timeout_ms: 1000, max_waiting: 100 });
}

#[test]
fn alerts_and_the_webhook_are_checked() {
    let c = parse(r#"{"budgets":{"r":{"counts":"requests","window_ms":1000,"limit":1,"alerts":[120,50,50]},"d":{"counts":"requests","window_ms":1000,"limit":1}}}"#).unwrap();
    assert_eq!(c.budgets[c.budget_index("r").unwrap()].alerts, vec![50, 120]);
    assert_eq!(c.budgets[c.budget_index("d").unwrap()].alerts, vec![80, 90, 95]);
    assert_eq!(refused(r#"{"budgets":{"r":{"counts":"requests","window_ms":1000,"limit":1,"alerts":[0]}}}"#).path, "budgets.r.alerts");
    assert_eq!(refused(r#"{"budgets":{"r":{"counts":"in_flight","limit":1,"alerts":[50]}}}"#).path, "budgets.r.alerts");
    assert_eq!(refused(r#"{"alerts_webhook":{"cluster":"a","path":"nope"}}"#).path, "alerts_webhook.path");
    assert_eq!(refused(r#"{"alerts_webhook":{"cluster":"a"}}"#).path, "alerts_webhook");
}

#[test]
fn filter_state_is_an_opt_in_bool() {
    assert!(!parse("{}").unwrap().filter_state);
    assert!(parse(r#"{"filter_state":true}"#).unwrap().filter_state);
    let e = refused(r#"{"filter_state":"yes"}"#);
    assert_eq!(e.path, "filter_state", "{e}");
    let e = refused(r#"{"filter_sate":true}"#);
    assert!(e.to_string().contains("filter_sate"), "{e}");
}

/// `counts`, `global.on_unavailable` and `llm.model` are read by serde enums (`raw/tagged.rs`);
/// their refusals keep `compile`'s words and paths, without serde_json's position.
#[test]
fn tagged_fields_keep_their_refusals() {
    let kinds = "expected one of `requests`, `request_bytes`, `in_flight`, `llm_cost`, {\"request_header\": H}, {\"response_header\": H}, {\"llm_tokens\": K}";
    let shape = "expected a string or an object with one key `request_header` or `response_header`";
    let budget = |counts: &str| format!(r#"{{"budgets":{{"a":{{"counts":{counts},"window_ms":60000,"limit":1}}}}}}"#);
    let cases: Vec<(String, &str, String)> = vec![
        (budget(r#""sockets""#), "budgets.a.counts", format!("unknown counts kind `sockets`, {kinds}")),
        (budget(r#""request_header""#), "budgets.a.counts", format!("unknown counts kind `request_header`, {kinds}")),
        (budget(r#"{"request_header":"bad header"}"#), "budgets.a.counts.request_header", "expected a header name (string)".into()),
        (budget(r#"{"bogus":5}"#), "budgets.a.counts.bogus", "expected a header name (string)".into()),
        (budget(r#"{"bogus":"x-a"}"#), "budgets.a.counts.bogus", "unknown key `bogus`, expected `request_header` or `response_header`".into()),
        (budget(r#"{"llm_tokens":"all"}"#), "budgets.a.counts.llm_tokens", "expected `input`, `output` or `total`".into()),
        (budget(r#"{"llm_tokens":{"input":null}}"#), "budgets.a.counts.llm_tokens", "expected `input`, `output` or `total`".into()),
        (budget("{}"), "budgets.a.counts", shape.into()),
        (budget(r#"{"request_header":"x","response_header":"y"}"#), "budgets.a.counts", shape.into()),
        (budget("5"), "budgets.a.counts", shape.into()),
        (budget("null"), "budgets.a.counts", shape.into()),
        (budget("[]"), "budgets.a.counts", shape.into()),
        (r#"{"global":{"cluster":"r","on_unavailable":"maybe"}}"#.into(), "global.on_unavailable", "expected `local`, `deny` or {\"local_share\": N}".into()),
        (r#"{"global":{"cluster":"r","on_unavailable":{"local":1}}}"#.into(), "global.on_unavailable", "expected `local`, `deny` or {\"local_share\": N}".into()),
        (r#"{"global":{"cluster":"r","on_unavailable":{"local_share":0}}}"#.into(), "global.on_unavailable.local_share", "must be a whole number of Envoys, at least 1".into()),
        (r#"{"global":{"cluster":"r","on_unavailable":{"local_share":3.0}}}"#.into(), "global.on_unavailable.local_share", "must be a whole number of Envoys, at least 1".into()),
        (r#"{"llm":{"model":{"header":"bad h"}}}"#.into(), "llm.model.header", "expected a header name".into()),
        (r#"{"llm":{"model":{"request_body":"other"}}}"#.into(), "llm.model.request_body", "expected \"model\" (the body's top-level field)".into()),
        (r#"{"llm":{"model":{"request_body":"model"}}}"#.into(), "llm.model.request_body", "the model can come from the request body only with `llm.request_body: true`".into()),
        (r#"{"llm":{"model":"x-model"}}"#.into(), "llm.model", "expected {\"header\": H} or {\"request_body\": \"model\"}".into()),
        (r#"{"llm":{"model":{"foo":"x"}}}"#.into(), "llm.model", "expected {\"header\": H} or {\"request_body\": \"model\"}".into()),
    ];
    for (json, path, message) in cases {
        let e = refused(&json);
        assert_eq!((e.path.as_str(), e.message.as_str()), (path, message.as_str()), "{json}");
    }
    let c = parse(&budget(r#"{"response_header":"X-Cost"}"#)).unwrap();
    assert_eq!(c.budgets[0].counts, Counts::ResponseHeader("x-cost".into()));
    assert_eq!(parse(&budget(r#"{"llm_tokens":"output"}"#)).unwrap().budgets[0].counts, Counts::LlmTokens(TokenKind::Output));
    let c = parse(r#"{"global":{"cluster":"r","on_unavailable":"deny"},"llm":{"model":{"header":"X-Model"}}}"#).unwrap();
    assert_eq!(c.global.unwrap().on_unavailable, OnUnavailable::Deny);
    assert_eq!(c.llm.model, Some(ModelSource::Header("x-model".into())));
    let c = parse(r#"{"global":{"cluster":"r","on_unavailable":null},"llm":{"model":{"request_body":"model"},"request_body":true}}"#).unwrap();
    assert_eq!(c.global.unwrap().on_unavailable, OnUnavailable::Local);
    assert_eq!(c.llm.model, Some(ModelSource::RequestBody));
}

/// SPEC 8: what a global budget may be (the rate limit service's units, names that cannot
/// collide in its keys), and the `global` block's own rules.
#[test]
fn config_refuses_what_the_service_cannot_express() {
    let bad = [
        (r#"{"budgets":{"r":{"counts":"requests","window_ms":60000,"limit":1,"global":"sync"}}}"#, "budgets.r.global"),
        (r#"{"global":{"cluster":"x"},"budgets":{"r":{"counts":"requests","window_ms":120000,"limit":1,"global":"sync"}}}"#, "budgets.r.window_ms"),
        (r#"{"global":{"cluster":"x"},"budgets":{"r":{"counts":"in_flight","limit":1,"global":"exact"}}}"#, "budgets.r.global"),
        (r#"{"global":{"cluster":"x"},"budgets":{"r":{"counts":"requests","window_ms":60000,"algorithm":"sliding","limit":1,"global":"sync"}}}"#, "budgets.r.global"),
        (r#"{"global":{"domain":"d"}}"#, "global"),
        (r#"{"global":{"cluster":""}}"#, "global.cluster"),
        (r#"{"global":{"cluster":"x","on_unavailable":{"local_share":0}}}"#, "global.on_unavailable.local_share"),
        (r#"{"global":{"cluster":"x","on_unavailable":"maybe"}}"#, "global.on_unavailable"),
        (r#"{"global":{"cluster":"x","sync_period_ms":0}}"#, "global.sync_period_ms"),
        (r#"{"global":{"cluster":"x"},"budgets":{"r":{"counts":"requests","window_ms":60000,"limit":1,"global":"sync"}},"tenants":{"a":{"budgets":{"r":{"window_ms":5000}}}}}"#, "tenants.a.budgets.r.window_ms"),
        // D9: names that could join to another tenant's key in the service.
        (r#"{"global":{"cluster":"x"},"budgets":{"llm_budget_daily":{"counts":"requests","window_ms":60000,"limit":1,"global":"sync"}}}"#, "budgets.llm_budget_daily.global"),
        (r#"{"global":{"cluster":"x"},"budgets":{"budget_x":{"counts":"requests","window_ms":60000,"limit":1,"global":"sync"}}}"#, "budgets.budget_x.global"),
        (r#"{"global":{"cluster":"x"},"budgets":{"a_month_b":{"counts":"requests","window_ms":60000,"limit":1,"global":"exact"}}}"#, "budgets.a_month_b.global"),
        (r#"{"global":{"cluster":"x"},"scopes":{"cost_center":{"header":"x-cc"}},"budgets":{"cc":{"counts":"requests","window_ms":60000,"limit":1,"scope":"cost_center","global":"sync"}}}"#, "budgets.cc.global"),
        (r#"{"global":{"cluster":"x"},"scopes":{"tenant":{"header":"x-t2"}},"budgets":{"cc":{"counts":"requests","window_ms":60000,"limit":1,"scope":"tenant","global":"sync"}}}"#, "budgets.cc.global"),
    ];
    for (json, path) in bad {
        let e = Config::parse(json.as_bytes()).unwrap_err();
        assert_eq!(e.path, path, "{json}: {e}");
    }
    // SPEC 8: every windowed kind, in any scope, calendar months, caps past 32 bits.
    let good = r#"{"global":{"cluster":"x"},"scopes":{"team":{"header":"x-team"}},
        "llm":{"model":{"header":"x-model"},"prices":{"m":{"input":1,"output":2}}},
        "budgets":{"b":{"counts":"request_bytes","window_ms":1000,"limit":1,"global":"sync"},
                   "h":{"counts":{"request_header":"x-cost"},"window_ms":3600000,"limit":1,"global":"exact"},
                   "rh":{"counts":{"response_header":"x-cost"},"window_ms":86400000,"limit":1,"global":"sync"},
                   "tok":{"counts":{"llm_tokens":"total"},"window_ms":60000,"limit":5000000000,"global":"sync"},
                   "usd":{"counts":"llm_cost","window":"calendar_month","limit":1,"global":"exact"},
                   "team_day":{"counts":"requests","window_ms":86400000,"limit":1,"scope":"team","global":"exact"},
                   "monthly_budget":{"counts":"requests","window":"calendar_month","limit":1,"scope":"team","global":"sync"}}}"#;
    if let Err(e) = Config::parse(good.as_bytes()) {
        panic!("{e}");
    }
    let c = parse(r#"{"global":{"cluster":"rls","on_unavailable":{"local_share":3}}}"#).unwrap();
    assert_eq!(c.global.as_ref().unwrap().on_unavailable, OnUnavailable::LocalShare(3));
    assert_eq!(c.global.as_ref().unwrap().domain, "tenant-quota");
}

#[test]
fn fallbacks_and_providers() {
    let ok = parse(
        r#"{"llm":{"model":{"header":"x-model"}},
  "providers":{"by":"cluster","route_header":"X-Route","cooldown_on":[429],"cooldown_s":5,"max_cooldown_s":60,
               "fallbacks":{"primary":{"upstream":"backup","model":"small"}}},
  "budgets":{"b":{"counts":"requests","window_ms":60000,"limit":1,"on_exceed":"fallback","fallback":{"model":"small"}}}}"#,
    )
    .unwrap();
    assert_eq!(ok.budgets[0].fallback, Some(Target { model: Some("small".into()), upstream: None, cluster: None }));
    let p = ok.providers.as_ref().unwrap();
    assert_eq!((ok.route_header.as_str(), p.cooldown_s, p.max_cooldown_s), ("x-route", 5, 60));
    assert!(p.cools_on(429) && !p.cools_on(503));
    assert_eq!((p.cooldown_ms(None), p.cooldown_ms(Some(b" 7 ")), p.cooldown_ms(Some(b"999")), p.cooldown_ms(Some(b"Wed, 21 Oct"))), (5000, 7000, 60_000, 5000));
    assert_eq!(parse(r#"{"budgets":{}}"#).unwrap().route_header, DEFAULT_ROUTE_HEADER);

    let b = |extra: &str| format!(r#"{{"budgets":{{"b":{{"counts":"requests","window_ms":60000,"limit":1{extra}}}}}}}"#);
    for (cfg, path) in [
        (b(r#","on_exceed":"fallback""#), "budgets.b.fallback"),
        (b(r#","fallback":{"upstream":"x"}"#), "budgets.b.fallback"),
        (b(r#","on_exceed":"fallback","fallback":{}"#), "budgets.b.fallback"),
        (b(r#","on_exceed":"fallback","fallback":{"upstream":"a b"}"#), "budgets.b.fallback.upstream"),
        (b(r#","on_exceed":"fallback","fallback":{"model":"m"}"#), "budgets.b.fallback.model"),
        (b(r#","on_exceed":"fallback","fallback":{"upstream":"x","region":"y"}"#), "budgets.b.fallback"),
        (b(r#","on_exceed":"fallback","fallback":{"model":"m","cluster":"c"}"#), "budgets.b.fallback.cluster"),
        (r#"{"providers":{"cooldown_on":[200]}}"#.to_string(), "providers.cooldown_on[0]"),
        (r#"{"providers":{"cooldown_s":0}}"#.to_string(), "providers.cooldown_s"),
        (r#"{"providers":{"cooldown_s":60,"max_cooldown_s":10}}"#.to_string(), "providers.max_cooldown_s"),
        (r#"{"providers":{"route_header":"a b"}}"#.to_string(), "providers.route_header"),
        (r#"{"providers":{"by":"host"}}"#.to_string(), "providers.by"),
        (r#"{"providers":{"by":"model"}}"#.to_string(), "providers.by"),
        (r#"{"providers":{"fallbacks":{"c1":{"model":"m"}}}}"#.to_string(), "providers.fallbacks.c1"),
        (r#"{"llm":{"model":{"header":"x-model"}},"providers":{"by":"model","fallbacks":{"m":{"model":"m"}}}}"#.to_string(), "providers.fallbacks.m"),
    ] {
        let e = refused(&cfg);
        assert!(e.path.starts_with(path), "{cfg}: {e}");
    }
    let e = refused(
        r#"{"global":{"cluster":"rls","domain":"d"},
  "budgets":{"b":{"counts":"requests","window_ms":60000,"limit":1,"global":"exact","on_exceed":"fallback","fallback":{"upstream":"x"}}}}"#,
    );
    assert!(e.path.starts_with("budgets.b"), "{e}");
}

#[test]
fn the_readme_llm_gateway_cookbook_configures() {
    let readme = include_str!("../../README.md");
    let at = readme.find("## An LLM gateway cookbook").expect("the cookbook section");
    let json = readme[at..].split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).expect("its JSON block");
    let c = parse(json).unwrap_or_else(|e| panic!("README cookbook: {e}"));
    assert_eq!(c.providers.as_ref().unwrap().fallbacks["openai"].upstream.as_deref(), Some("azure"));
    let fb = c.budgets.iter().find(|b| b.name == "gpt4o_tokens_per_minute").unwrap();
    assert_eq!((fb.on_exceed, fb.fallback.as_ref().and_then(|t| t.model.as_deref())), (OnExceed::Fallback, Some("gpt-4o-mini")));
    let spend = c.budgets.iter().position(|b| b.name == "team_spend_per_month").unwrap();
    assert!(c.budgets[spend].limits.window.cycle().is_some());
    // Team blue's own billing day and zone, other teams the budget's.
    let blue = c.scopes[0].policy("blue").limits[spend].window;
    let red = c.scopes[0].policy("red").limits[spend].window;
    assert_ne!(blue, red);
    assert_eq!(blue.cycle().unwrap().period, crate::core::cycle::Period::Monthly(3));
}
