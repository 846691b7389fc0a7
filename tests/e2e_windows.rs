//! Windows, burst credits, headers, cost sources, modes and tenant handling in a real Envoy.

mod common;
use common::*;
use std::time::Duration;

fn t(id: &str) -> [(&'static str, &str); 1] {
    [("x-tenant-id", id)]
}

fn hdrs<'a>(v: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
    v.to_vec()
}

/// Sleep until `ms_into` milliseconds into a fresh window of `window_ms`.
fn align(window_ms: u64, ms_into: u64) {
    let now = now_ms();
    let start = now - now % window_ms;
    let target = start + window_ms + ms_into;
    std::thread::sleep(Duration::from_millis(target - now));
}

#[test]
fn window_exhaustion_burst_retry_after_and_reset() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"budgets":{"short":{"counts":"requests","window_ms":4000,"limit":3,"burst_credits":2}}}"#, up.port, EnvoyOpts::default());
    align(4000, 100);
    let h = t("win");
    let mut remaining = Vec::new();
    let mut burst = Vec::new();
    for i in 0..5 {
        let r = e.get("/", &hdrs(&h));
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-tenant-quota-limit"), Some("3"));
        remaining.push(r.num("x-tenant-quota-remaining"));
        burst.push(r.num("x-tenant-quota-burst-remaining"));
    }
    assert_eq!(remaining, vec![2, 1, 0, 0, 0]);
    assert_eq!(burst, vec![2, 2, 2, 1, 0]);
    let before = now_ms();
    let r = e.get("/", &hdrs(&h));
    assert_eq!(r.status, 429, "{r:?}");
    let expected = (4000 - before % 4000).div_ceil(1000);
    let retry = r.num("retry-after");
    assert!(retry == expected || retry + 1 == expected, "retry-after {retry}, expected {expected}");
    assert!(retry >= 1);
    assert_eq!(r.header("x-tenant-quota-reason"), Some("burst_exhausted"));
    assert_eq!(r.header("x-tenant-quota-budget"), Some("short"));
    assert_eq!(r.header("x-tenant-quota-limit"), Some("3"));
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"short\";q=3;w=4"));
    assert_eq!(r.header("ratelimit"), Some(format!("\"short\";r=0;t={retry}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "quota_exceeded");
    assert_eq!(body["reason"], "burst_exhausted");
    assert_eq!(body["budget"], "short");
    assert_eq!(body["tenant"], "win");
    assert_eq!(body["retry_after_s"], retry);
    assert_eq!(body["violated-policies"], serde_json::json!(["short"]));
    assert!(body["type"].is_string() && body["title"].is_string());
    // Deterministic: the same request in the same state gets the same answer.
    let again = e.get("/", &hdrs(&h));
    assert_eq!((again.status, again.header("x-tenant-quota-reason")), (429, Some("burst_exhausted")));
    // Rejected requests never reached the upstream.
    assert_eq!(up.received(), 5);
    // The window resets on the epoch-aligned boundary.
    align(4000, 100);
    let r = e.get("/", &hdrs(&h));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("2"));
}

#[test]
fn budget_without_burst_rejects_with_its_own_reason() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":2}}}"#, up.port, EnvoyOpts::default());
    let h = t("nob");
    assert_eq!(e.get("/", &hdrs(&h)).status, 200);
    assert_eq!(e.get("/", &hdrs(&h)).status, 200);
    let r = e.get("/", &hdrs(&h));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-tenant-quota-reason"), Some("rph_exceeded"));
    assert_eq!(r.header("x-tenant-quota-budget"), Some("rph"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"rph\";q=2;w=3600"));
    assert_eq!(r.count("retry-after"), 1);
    assert_eq!(r.count("x-tenant-quota-limit"), 1, "local reply must not get admitted headers added: {r:?}");
}

#[test]
fn tenants_are_isolated_and_overrides_and_unlimited_apply() {
    let up = Upstream::start();
    let e = Envoy::start(
        r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":2},"bytes":{"counts":"request_bytes","window_ms":3600000,"limit":1000}},
            "tenants":{"big":{"budgets":{"rph":{"limit":5}}},"free":{"unlimited":true},"half":{"budgets":{"rph":{"unlimited":true}}}}}"#,
        up.port,
        EnvoyOpts::default(),
    );
    let count_ok = |id: &str, n: usize| (0..n).filter(|_| e.get("/", &hdrs(&t(id))).status == 200).count();
    assert_eq!(count_ok("a", 4), 2);
    assert_eq!(count_ok("b", 4), 2, "tenant b is not affected by a");
    assert_eq!(count_ok("big", 8), 5);
    assert_eq!(count_ok("free", 20), 20);
    assert_eq!(count_ok("half", 10), 10);
    // "half" is still limited on the bytes budget.
    let big = vec![b'x'; 900];
    let post = |id: &str| request(e.port, "POST", "/", &hdrs(&t(id)), Some(&big)).status;
    assert_eq!(post("half"), 200);
    assert_eq!(post("half"), 429);
    assert_eq!(post("free"), 200);
    assert_eq!(post("free"), 200);
}

#[test]
fn request_bytes_with_and_without_content_length() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"budgets":{"ingest":{"counts":"request_bytes","window_ms":3600000,"limit":100}}}"#, up.port, EnvoyOpts::default());
    let h = t("bytes");
    let post = |n: usize, chunked: bool| {
        let body = vec![b'a'; n];
        let mut hs = hdrs(&h);
        if chunked {
            hs.push(("transfer-encoding", "chunked"));
        }
        request(e.port, "POST", "/", &hs, Some(&body))
    };
    let r = post(60, false);
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok 60\n"));
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("40"));
    let r = post(50, false);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("ratelimit-policy"), Some("\"ingest\";q=100;w=3600;qu=\"content-bytes\""));
    assert_eq!(post(40, false).status, 200);
    assert_eq!(post(1, false).status, 429);
    assert_eq!(post(0, false).status, 200, "an empty body costs nothing");
    // Without content-length: admitted while below the limit, charged as the body streams.
    let h2 = t("chunky");
    let post2 = |n: usize| {
        let body = vec![b'b'; n];
        let mut hs = hdrs(&h2);
        hs.push(("transfer-encoding", "chunked"));
        request(e.port, "POST", "/", &hs, Some(&body))
    };
    let r = post2(2500);
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok 2500\n"));
    // The charge lands when the stream ends; give the worker a moment.
    std::thread::sleep(Duration::from_millis(200));
    let r = post2(10);
    assert_eq!(r.status, 429, "2500 streamed bytes must have been charged: {r:?}");
    let _ = post;
}

#[test]
fn cost_from_request_header_and_from_response_header() {
    let up = Upstream::start();
    let e = Envoy::start(
        r#"{"budgets":{"cost":{"counts":{"request_header":"x-query-cost"},"window_ms":3600000,"limit":10},
                       "tokens":{"counts":{"response_header":"x-tokens"},"window_ms":3600000,"limit":100}}}"#,
        up.port,
        EnvoyOpts::default(),
    );
    let with = |id: &str, extra: &[(&'static str, &str)]| {
        let mut hs = vec![("x-tenant-id", id)];
        hs.extend_from_slice(extra);
        e.get("/", &hs)
    };
    assert_eq!(with("c", &[("x-query-cost", "7")]).status, 200);
    let r = with("c", &[("x-query-cost", "4")]);
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (429, Some("cost_exceeded")));
    assert_eq!(with("c", &[("x-query-cost", "3")]).status, 200);
    assert_eq!(with("c", &[]).status, 200, "a missing cost header counts 0");
    for bad in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let r = with("c", &[("x-query-cost", bad)]);
        assert_eq!((r.status, r.header("x-tenant-quota-reason")), (400, Some("invalid_cost")), "cost {bad}");
    }
    // Response cost: admitted while used < limit, charged after; the crossing request completes.
    let r = with("r", &[("x-test-respond-x-tokens", "80")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tenant-quota-limit"), Some("100"));
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("20"));
    let r = with("r", &[("x-test-respond-x-tokens", "30")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tenant-quota-remaining"), Some("0"));
    let r = with("r", &[("x-test-respond-x-tokens", "1")]);
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (429, Some("tokens_exceeded")));
    assert_eq!(r.header("x-tenant-quota-limit"), Some("100"));
}

#[test]
fn shadow_mode_never_rejects_and_off_mode_adds_nothing() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"mode":"shadow","budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":1}}}"#, up.port, EnvoyOpts::default());
    let h = t("sh");
    let r1 = e.get("/", &hdrs(&h));
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("x-tenant-quota-shadow"), None);
    assert_eq!(r1.header("x-tenant-quota-remaining"), Some("0"));
    for _ in 0..3 {
        let r = e.get("/", &hdrs(&h));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-tenant-quota-shadow"), Some("rph_exceeded"));
    }
    let r = e.get("/", &[("x-tenant-id", "bad id")]);
    assert_eq!((r.status, r.header("x-tenant-quota-shadow")), (200, Some("invalid_tenant")));
    assert_eq!(up.received(), 5);
    drop(e);

    let e = Envoy::start(r#"{"mode":"off","budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":1}}}"#, up.port, EnvoyOpts::default());
    for _ in 0..3 {
        let r = e.get("/", &hdrs(&h));
        assert_eq!(r.status, 200);
        assert!(r.headers.iter().all(|(k, _)| !k.starts_with("x-tenant-quota") && !k.starts_with("ratelimit")), "{r:?}");
    }
}

#[test]
fn missing_tenant_uses_fallback_or_401() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":1}}}"#, up.port, EnvoyOpts::default());
    assert_eq!(e.get("/", &[]).status, 200);
    assert_eq!(e.get("/", &[("x-tenant-id", "")]).status, 429, "empty id is the fallback tenant, already used up");
    let r = e.get("/", &[("x-tenant-id", "anonymous")]);
    assert_eq!(r.status, 429);
    drop(e);
    let e = Envoy::start(r#"{"tenant":{"header":"x-org","fallback":null},"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":5}}}"#, up.port, EnvoyOpts::default());
    let r = e.get("/", &[("x-tenant-id", "ignored")]);
    assert_eq!((r.status, r.header("x-tenant-quota-reason")), (401, Some("missing_tenant")));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(e.get("/", &[("x-org", "org1")]).status, 200);
}

#[test]
fn hostile_tenant_ids_are_refused_or_bounded() {
    let up = Upstream::start();
    let e = Envoy::start(
        r#"{"tenant":{"max_tracked":100},"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":1}}}"#,
        up.port,
        EnvoyOpts { extra_bootstrap: "stats_flush_interval: 0.2s".into(), ..EnvoyOpts::default() },
    );
    let long = "x".repeat(300);
    for bad in [long.as_str(), "a b", "tab\there", "caf\u{e9}"] {
        let r = e.get("/", &[("x-tenant-id", bad)]);
        assert_eq!(r.status, 400, "id {bad:?}: {r:?}");
        if r.header("server").is_some() && r.header("x-tenant-quota-reason").is_some() {
            assert_eq!(r.header("x-tenant-quota-reason"), Some("invalid_tenant"));
        }
    }
    let ok256 = "y".repeat(256);
    assert_eq!(e.get("/", &[("x-tenant-id", ok256.as_str())]).status, 200);
    // Control characters are refused (by Envoy's codec or by the filter), and Envoy lives on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", e.port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nhost: x\r\nx-tenant-id: a\x01b\r\n\r\n").unwrap();
    let r = read_response(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(r.status, 400);
    // 10k distinct ids: only max_tracked get state of their own, the rest share `overflow`.
    let (ok, growth) = ten_thousand_ids(&e);
    // The id of length 256 took one slot: 99 more get their own budget, overflow admits 1.
    assert_eq!(ok, 99 + 1, "only tracked tenants and one overflow request may pass");
    // Control: the same 10k ids with room to track them all.
    let unbounded = Envoy::start(
        r#"{"tenant":{"max_tracked":1000000},"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":1}}}"#,
        up.port,
        EnvoyOpts { extra_bootstrap: "stats_flush_interval: 0.2s".into(), ..EnvoyOpts::default() },
    );
    let (ok_u, growth_u) = ten_thousand_ids(&unbounded);
    assert_eq!(ok_u, 10_000);
    eprintln!("memory growth after 10k distinct ids: bounded {growth} bytes, unbounded {growth_u} bytes");
    assert!(growth * 4 < growth_u, "bounded growth {growth} should be far below unbounded {growth_u}");
    assert_eq!(e.get("/", &t("fine")).status, 429, "new tenants share the exhausted overflow budget");
    assert_eq!(e.get("/", &[("x-tenant-id", ok256.as_str())]).status, 429, "tracked tenant keeps its own state");
    assert_eq!(e.get("/health", &t("rnd-5")).status, 429);
}

#[test]
fn headers_are_added_once_per_response() {
    let up = Upstream::start();
    let e = Envoy::start(r#"{"budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":5}}}"#, up.port, EnvoyOpts::default());
    let mut c = Conn::open(e.port);
    for _ in 0..7 {
        let r = c.send("GET", "/", &[("x-tenant-id", "once")], None);
        for h in ["x-tenant-quota-limit", "x-tenant-quota-remaining"] {
            assert_eq!(r.count(h), 1, "{h} in {r:?}");
        }
        let on_429 = usize::from(r.status == 429);
        for h in ["ratelimit", "ratelimit-policy", "retry-after"] {
            assert_eq!(r.count(h), on_429, "{h} in {r:?}");
        }
    }
}

/// Send 10k requests with distinct tenant ids; (admitted, growth of Envoy's allocated bytes).
fn ten_thousand_ids(e: &Envoy) -> (usize, u64) {
    std::thread::sleep(Duration::from_millis(500));
    let before = e.stat("server.memory_allocated").unwrap();
    let mut conn = Conn::open(e.port);
    let mut ok = 0;
    for i in 0..10_000 {
        let id = format!("rnd-{i}");
        if conn.send("GET", "/", &[("x-tenant-id", id.as_str())], None).status == 200 {
            ok += 1;
        }
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(500));
    let after = e.stat("server.memory_allocated").unwrap();
    (ok, after.saturating_sub(before))
}

#[test]
fn tenant_from_envoy_metadata() {
    // header_to_metadata stands in for jwt_authn: it writes the tenant into dynamic metadata,
    // and the filter reads it by property path rather than from a client header.
    let pre = r#"          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              request_rules:
              - header: x-verified-org
                on_header_present: { metadata_namespace: auth, key: tenant, type: STRING }
                remove: true
"#;
    let up = Upstream::start();
    let e = Envoy::start(
        r#"{"tenant":{"metadata":["metadata","filter_metadata","auth","tenant"],"fallback":null},
            "budgets":{"rph":{"counts":"requests","window_ms":3600000,"limit":2}}}"#,
        up.port,
        EnvoyOpts { pre_filters: pre.into(), ..EnvoyOpts::default() },
    );
    let h = [("x-verified-org", "org-a"), ("x-tenant-id", "ignored")];
    assert_eq!(e.get("/", &h).status, 200);
    assert_eq!(e.get("/", &h).status, 200);
    let r = e.get("/", &h);
    assert_eq!(r.status, 429);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["tenant"], "org-a");
    assert_eq!(e.get("/", &[("x-verified-org", "org-b")]).status, 200);
    // No metadata and no fallback: 401.
    assert_eq!(e.get("/", &[("x-tenant-id", "org-a")]).status, 401);
}
