//! Property 5: every parser that sees outside bytes never panics; parsed configs evaluate.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

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
    // Mostly bursts inside one window (so caps are met), sometimes a window or two later.
    let step = prop_oneof![3 => 0..50u64, 1 => 0..2_000u64];
    (tenant_id(), headers(), any::<bool>(), 0..=3u8, prop::bool::weighted(0.2), step)
}

/// The subjects' states in `store` (state keys only), decoded.
fn states(store: &MemStore) -> BTreeMap<String, TenantState> {
    store
        .snapshot()
        .into_iter()
        .filter(|(k, _)| store::keys::parse_state(k).is_some())
        .filter_map(|(k, v)| TenantState::decode(&v).ok().map(|st| (k, st)))
        .collect()
}

/// Invariants after every request: no window budget a request reserves holds more than its
/// nominal cap (`response_header` budgets, and `request_bytes` of a request without
/// content-length, are charged after the fact and may cross it once), and every in_flight
/// slot is back once its request was released.
fn check_caps(c: &Config, store: &MemStore) -> Result<(), TestCaseError> {
    for (key, st) in states(store) {
        let Some((scope, id)) = store::keys::parse_state(&key) else { continue };
        let policy = match scope {
            None => c.policy(id),
            Some(name) => match c.scopes.iter().find(|s| s.name == name) {
                Some(sc) => sc.policy(id),
                None => continue,
            },
        };
        for s in &st.slots {
            let Some(b) = c.budgets.iter().position(|b| b.id == s.budget) else { continue };
            let l = &policy.limits[b];
            let after = matches!(c.budgets[b].counts, config::Counts::ResponseHeader(_) | config::Counts::RequestBytes);
            let capped = !after && !l.unlimited;
            if capped {
                prop_assert!(s.used <= l.limit.saturating_add(l.burst_credits), "{key}: budget {} holds {} > cap", c.budgets[b].name, s.used);
            }
            if c.budgets[b].counts == config::Counts::InFlight {
                prop_assert_eq!(s.used, 0, "{}: in_flight slots left after release", key);
            }
        }
    }
    Ok(())
}

/// Drive `engine::evaluate` (and the after-the-fact calls an admitted request makes) on a
/// MemStore: every call returns, no cap is passed, a refused request changes nothing.
fn drive(c: &Config, reqs: &[Request]) -> Result<(), TestCaseError> {
    let store = MemStore::new();
    store::init_registry(&store, None).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let mut w = Worker::new(7);
    let mut now = T0;
    let fail = |what: &str, e: store::StoreError| TestCaseError::fail(format!("{what}: {e:?}"));
    let mut service: HashMap<(String, usize, u64), u64> = HashMap::new();
    for (tenant, h, eos, level, degraded, step) in reqs {
        now += step;
        let mut headers = Headers(h.clone());
        let facts = RequestFacts::read(c, &mut headers, tenant.clone(), Vec::new(), *eos);
        let at = Conditions { now, level: *level, global_degraded: *degraded };
        let before = states(&store);
        match engine::evaluate(c, &store, &mut w, &facts, at, &RuntimePolicies::new()) {
            Verdict::Admit(mut a) => {
                let policy = c.policy(&a.tenant).clone();
                for ac in a.after.clone() {
                    let units = h.get("content-length").and_then(|v| engine::parse_units(v)).unwrap_or(3);
                    engine::charge(c, &store, &mut w, &a, &policy, ac.budget, units, now).map_err(|e| fail("charge", e))?;
                }
                if !a.exact.is_empty() {
                    prop_assert!(!engine::exact_request(c, &policy, &a).is_empty(), "an exact budget asks the service");
                    // The service's count per (tenant, budget), as envoyproxy/ratelimit keeps it
                    // (every call is added); saturation level 3 stands for a refusal.
                    let answers: Vec<Answer> = a
                        .exact
                        .iter()
                        .map(|d| {
                            let cap = policy.limits[d.budget].limit.saturating_add(policy.limits[d.budget].burst_credits);
                            let total = service.entry((a.tenant.clone(), d.budget, policy.limits[d.budget].window.start(now))).or_insert(0);
                            *total = total.saturating_add(d.units);
                            if *level == 3 || *total > cap { Answer::Over { cap } } else { Answer::Total(*total) }
                        })
                        .collect();
                    let snapshot = states(&store);
                    let out = engine::exact_finish(c, &store, &mut w, &mut a, &policy, if *degraded { None } else { Some(&answers) }, now).map_err(|e| fail("exact", e))?;
                    if let engine::ExactOutcome::Reject(reply, _) = out {
                        prop_assert!(reply.status == 429 || reply.status == 503);
                        // The service refused: what this request reserved is undone.
                        prop_assert!(states(&store).iter().all(|(k, st)| snapshot.get(k).is_none_or(|s0| st.slots.iter().all(|x| s0.slot(x.budget).is_none_or(|y| x.used <= y.used)))));
                        continue;
                    }
                }
                engine::release(c, &store, &mut w, &a, &a.in_flight).map_err(|e| fail("release", e))?;
                // The headline budget's headers are the three of SPEC 2 together, first, or absent.
                let mut names = Vec::new();
                engine::admitted_headers(&a, |n, _| names.push(n));
                let three = ["x-tenant-quota-limit", "x-tenant-quota-remaining", "x-tenant-quota-burst-remaining"];
                prop_assert!(names.starts_with(&three) || !names.iter().any(|n| three.contains(n)), "{:?}", names);
            }
            Verdict::Reject { reply, .. } => {
                prop_assert!(reply.status >= 400);
                // A refused request consumes nothing in any subject (new keys hold nothing).
                for (k, st) in states(&store) {
                    match before.get(&k) {
                        Some(old) => prop_assert_eq!(&st, old, "{} changed by a refused request", k),
                        None => prop_assert!(st.slots.iter().all(|s| s.used == 0), "{}: a refused request counted", k),
                    }
                }
            }
            Verdict::Wait(w) => prop_assert_eq!(w.reply.status, 429),
            // No generated budget falls back (engine/fallback_tests.rs covers it); a reroute
            // would consume nothing either.
            Verdict::Reroute(r) => prop_assert!(false, "no budget here falls back: {:?}", r),
            Verdict::Pass { .. } => {}
        }
        check_caps(c, &store)?;
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
    fn evaluate_never_panics(reqs in prop::collection::vec(request(), 1..24)) {
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
            prop_assert_eq!(crate::wire::index_get(&b, &crate::wire::pairs_index(&b), k), first);
        }
        let cut = &b[..cut.index(b.len().max(1)).min(b.len())];
        for (k, _) in &map {
            prop_assert_eq!(crate::wire::index_get(cut, &crate::wire::pairs_index(cut), k), crate::wire::pairs_get(cut, k));
        }
        let _ = crate::wire::pairs_get(cut, "x");
    }
}
