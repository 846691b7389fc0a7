//! tenant-quota-ctl (ctl/) against a real Envoy: every command's output, and its errors
//! (wrong URL, wrong token, unknown tenant, malformed answer) with their exit codes.
//! Daily windows: no window rolls over while a test runs (except at 00:00 UTC).
//!
//! The binary is `$TQ_CTL` (the Makefile's `ctl` target builds it before e2e-test), else
//! target/release or target/debug. With `TQ_CTL_TRANSCRIPT=<file>` every call is appended to
//! that file as a console transcript (docs/cli.md shows one).

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

// sha256("secret")
const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn cfg() -> String {
    format!(
        r#"{{"budgets":{{"requests_per_day":{{"counts":"requests","window_ms":86400000,"limit":5,"burst_credits":2}},
                       "export_concurrency":{{"counts":"in_flight","limit":2,"match":{{"path_prefix":"/export"}}}},
                       "team_requests_per_day":{{"counts":"requests","window_ms":86400000,"limit":3,"scope":"team"}}}},
            "scopes":{{"team":{{"header":"x-team-id","ids":{{"blue":{{}}}}}}}},
            "tenants":{{"acme":{{"priority":"vip","budgets":{{"requests_per_day":{{"limit":10,"burst_credits":0}}}}}},"beta.corp":{{}}}},
            "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    )
}

fn ctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TQ_CTL") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = repo().join("target").join(profile).join("tenant-quota-ctl");
        if p.exists() {
            return p;
        }
    }
    panic!("tenant-quota-ctl not built: run `make ctl` (or `cargo build --release -p tenant-quota-ctl`)");
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the CLI with `env` (on top of a clean TENANT_QUOTA_* environment) and `args`.
fn ctl(env: &[(&str, &str)], args: &[&str]) -> Out {
    let mut c = Command::new(ctl_bin());
    for k in ["TENANT_QUOTA_TOKEN", "TENANT_QUOTA_URL", "TENANT_QUOTA_STATS_URL"] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied()).args(args);
    let o = c.output().expect("cannot run tenant-quota-ctl");
    let out = Out { code: o.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned() };
    if let Ok(path) = std::env::var("TQ_CTL_TRANSCRIPT") {
        let shown: Vec<String> = env.iter().filter(|(k, _)| !k.ends_with("_URL")).map(|(k, v)| format!("{k}={v} ")).collect();
        let mut t = format!("$ {}tenant-quota-ctl {}\n{}{}", shown.concat(), args.join(" "), out.stdout, out.stderr);
        if out.code != 0 {
            t.push_str(&format!("[exit {}]\n", out.code));
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(format!("{t}\n").as_bytes()).unwrap();
    }
    out
}

fn ok(env: &[(&str, &str)], args: &[&str]) -> String {
    let o = ctl(env, args);
    assert_eq!(o.code, 0, "{args:?}: exit {}\nstdout: {}\nstderr: {}", o.code, o.stdout, o.stderr);
    assert!(o.stderr.is_empty(), "{args:?}: {}", o.stderr);
    o.stdout
}

/// A failed call: its exit code and its one-line error.
fn fails(env: &[(&str, &str)], args: &[&str], code: i32, needle: &str) -> String {
    let o = ctl(env, args);
    assert_eq!(o.code, code, "{args:?}: exit {} (want {code})\nstdout: {}\nstderr: {}", o.code, o.stdout, o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
    assert!(o.stderr.starts_with("tenant-quota-ctl: ") && o.stderr.contains(needle), "{args:?}: want {needle:?} in {}", o.stderr);
    o.stderr
}

fn line<'a>(text: &'a str, starts: &str) -> &'a str {
    text.lines().find(|l| l.trim_start().starts_with(starts)).unwrap_or_else(|| panic!("no line starting {starts:?} in\n{text}"))
}

#[test]
fn every_command_against_a_real_envoy() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(), up.port, EnvoyOpts::default());
    let url = format!("http://127.0.0.1:{}/.quota", e.port);
    let stats = format!("http://127.0.0.1:{}", e.admin);
    let env = [("TENANT_QUOTA_URL", url.as_str()), ("TENANT_QUOTA_STATS_URL", stats.as_str()), ("TENANT_QUOTA_TOKEN", "secret")];
    let get = |id: &str, team: Option<&str>| {
        let mut h = vec![("x-tenant-id", id)];
        if let Some(t) = team {
            h.push(("x-team-id", t));
        }
        e.get("/", &h).status
    };
    // acme: limit 10, no burst: 10 admitted, 2 rejected. t1 (unnamed): 5 + 2 burst, 1 rejected.
    // blue (team, limit 3): 3 of acme's admitted requests carried it.
    let acme: Vec<u16> = (0..12).map(|i| get("acme", (i < 3).then_some("blue"))).collect();
    assert_eq!(acme.iter().filter(|&&s| s == 429).count(), 2, "{acme:?}");
    let t1: Vec<u16> = (0..8).map(|_| get("t1", None)).collect();
    assert_eq!(t1.iter().filter(|&&s| s == 429).count(), 1, "{t1:?}");
    assert_eq!(get("beta.corp", Some("blue")), 429, "blue's 3 are used up");
    // Metric updates are batched per worker and flushed on a 100 ms tick.
    std::thread::sleep(Duration::from_millis(300));

    let s = ok(&env, &["status"]);
    assert_eq!(line(&s, "mode"), "mode               enforce");
    assert_eq!(line(&s, "tracked tenants"), "tracked tenants    1 of at most 100000 (not counting the 2 named in the configuration)");
    assert_eq!(line(&s, "checks"), "checks             20 allowed, 4 rejected, 0 shadow-rejected");
    assert_eq!(line(&s, "runtime overrides"), "runtime overrides  0");
    assert_eq!(line(&s, "global"), "global             not configured");
    let j: Value = serde_json::from_str(&ok(&env, &["status", "--json"])).unwrap();
    assert_eq!(j["tracked_tenants"], 1);

    let u = ok(&env, &["usage", "acme"]);
    assert_eq!(u.lines().next(), Some("tenant acme, priority vip, named in the configuration, tracked"));
    let rph = line(&u, "requests_per_day");
    assert!(rph.contains("[####################] 10/10 100.0%  resets in "), "{u}");
    assert!(rph.ends_with("(requests)"), "{rph}");
    let exp = line(&u, "export_concurrency");
    assert!(exp.contains("[--------------------]"), "{exp}");
    assert!(exp.contains("0/2   0.0%  in flight now (no window)  (in_flight)"), "{exp}");
    assert!(!u.contains("team_requests_per_day"), "a tenant's report has the tenant's budgets only");
    let t = ok(&env, &["usage", "t1"]);
    assert_eq!(t.lines().next(), Some("tenant t1, priority normal, not named in the configuration, tracked"));
    assert!(line(&t, "requests_per_day").contains("[####################! 7/5 140.0%  burst 2/2, resets in "), "{t}");
    let b = ok(&env, &["usage", "--scope", "team", "blue"]);
    assert_eq!(b.lines().next(), Some("team blue, named in the configuration, tracked"));
    assert!(line(&b, "team_requests_per_day").contains("[####################] 3/3 100.0%"), "{b}");
    let j: Value = serde_json::from_str(&ok(&env, &["usage", "acme", "--json"])).unwrap();
    assert_eq!(j["budgets"]["requests_per_day"]["used"], 10);

    // Overrides: set, seen in the report and enforced; removed again.
    let o = ok(&env, &["override", "set", "t1", "requests_per_day.limit=20", "requests_per_day.burst_credits=0"]);
    assert_eq!(o.lines().next(), Some(r#"override set for tenant `t1`: {"budgets":{"requests_per_day":{"burst_credits":0,"limit":20}}}"#));
    let t = ok(&env, &["usage", "t1"]);
    assert_eq!(line(&t, "runtime override"), r#"runtime override: {"budgets":{"requests_per_day":{"burst_credits":0,"limit":20}}}"#);
    assert!(line(&t, "requests_per_day").contains(" 7/20  35.0%  resets in "), "{t}");
    std::thread::sleep(Duration::from_millis(1100));
    let admitted = (0..15).filter(|_| get("t1", None) == 200).count();
    assert_eq!(admitted, 13, "20 - 7 used");
    assert!(ok(&env, &["status"]).contains("runtime overrides  1"));
    let bad = fails(&env, &["override", "set", "t1", "no_such_budget.limit=1"], 7, "the admin API refused the request (400): invalid override at `budgets.no_such_budget`");
    assert!(bad.contains("no_such_budget"), "{bad}");
    fails(&env, &["override", "set", "t1", "requests_per_day.limit=abc"], 2, "limit is a non-negative integer");
    assert_eq!(ok(&env, &["override", "rm", "t1"]), "override removed for tenant `t1`: the configuration's limits apply again\n");
    assert!(line(&ok(&env, &["usage", "t1"]), "requests_per_day").contains(" 20/5 400.0%  burst 2/2"));
    fails(&env, &["override", "rm", "t1"], 5, "tenant `t1` has no runtime override");
    // A scope id's override, through the same command.
    assert!(ok(&env, &["override", "set", "--scope", "team", "blue", "team_requests_per_day.limit=4"]).starts_with("override set for team `blue`"));
    assert!(line(&ok(&env, &["usage", "--scope", "team", "blue"]), "team_requests_per_day").contains(" 3/4  75.0%"));
    fails(&env, &["override", "set", "--scope", "team", "blue", "--priority", "vip"], 2, "--priority is a tenant's");

    // Reset: counters cleared, in_flight kept unless asked.
    assert_eq!(ok(&env, &["reset", "t1"]), "reset tenant `t1`: counters cleared (in_flight slots kept)\n");
    assert!(line(&ok(&env, &["usage", "t1"]), "requests_per_day").contains("[--------------------] 0/5   0.0%"));
    assert_eq!(ok(&env, &["reset", "acme", "--in-flight"]), "reset tenant `acme`: counters cleared (in_flight slots cleared too)\n");
    let j: Value = serde_json::from_str(&ok(&env, &["reset", "--scope", "team", "blue", "--json"])).unwrap();
    assert_eq!((j["reset"].as_bool(), j["scope"].as_str()), (Some(true), Some("team")));

    // top: other (t1: 1 + 2 past its override) has the most rejections, then acme (2).
    std::thread::sleep(Duration::from_millis(300));
    let top = ok(&env, &["top"]);
    let rows: Vec<&str> = top.lines().collect();
    assert_eq!(rows[0], "TENANT      REJECTED    ALLOWED  REJECTED%  MOST REJECTED BY");
    assert_eq!(rows[1], "other              3         20      13.0%  requests_per_day (3)", "{top}");
    assert_eq!(rows[2], "acme               2         10      16.7%  requests_per_day (2)", "{top}");
    assert_eq!(rows[3], "beta_corp          0          0       0.0%  -", "{top}");
    assert_eq!(rows[4], "other: every tenant not named in the configuration (metrics count them together)");
    let by_allowed = ok(&env, &["top", "--by", "allowed", "-n", "1"]);
    assert_eq!(by_allowed.lines().nth(1).map(|l| l.split_whitespace().next()), Some(Some("other")), "{by_allowed}");
    assert_eq!(by_allowed.lines().filter(|l| !l.starts_with("other:")).count(), 2, "-n 1: one row");
    let j: Value = serde_json::from_str(&ok(&env, &["top", "--json"])).unwrap();
    assert_eq!(j[1]["tenant_id"], "acme");
    assert_eq!(j[1]["rejected_by"]["requests_per_day"], 2);
    let team = ok(&env, &["top", "--scope", "team"]);
    assert_eq!(line(&team, "blue"), "blue           1          3      25.0%  team_requests_per_day (1)", "{team}");
}

/// A one-shot HTTP server answering every connection with `answer`.
fn fake_server(answer: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn errors_have_one_line_and_distinct_exit_codes() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(), up.port, EnvoyOpts::default());
    let url = format!("http://127.0.0.1:{}/.quota", e.port);
    let token = [("TENANT_QUOTA_URL", url.as_str()), ("TENANT_QUOTA_TOKEN", "secret")];
    assert_eq!(e.get("/", &[("x-tenant-id", "known")]).status, 200);

    // Wrong or unreachable URL: 3.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{closed}/.quota");
    fails(&token, &["--url", &dead, "status"], 3, &format!("cannot reach http://127.0.0.1:{closed}/.quota"));
    let wrong_prefix = format!("http://127.0.0.1:{}/quota", e.port);
    let got = fails(&token, &["--url", &wrong_prefix, "status"], 3, "not the tenant-quota admin API");
    assert!(got.contains("answered 200 with content-type text/plain"), "the upstream answered: {got}");
    let envoy_admin = format!("http://127.0.0.1:{}/.quota", e.admin);
    fails(&token, &["--url", &envoy_admin, "status"], 3, "answered 404");
    fails(&token, &["--url", "https://127.0.0.1/.quota", "status"], 3, "https is not supported");
    let deep = format!("{url}/x");
    fails(&token, &["--url", &deep, "status"], 3, "no such admin endpoint");
    fails(&token, &["--stats-url", &dead, "top"], 3, "is --stats-url right?");
    fails(&token, &["--stats-url", &url, "top"], 3, "--stats-url must be Envoy's admin address");

    // Token: 4 (wrong, missing, empty file); a token file works.
    let wrong = [("TENANT_QUOTA_URL", url.as_str()), ("TENANT_QUOTA_TOKEN", "not-the-token")];
    fails(&wrong, &["status"], 4, "the admin API refused the token (401)");
    fails(&wrong, &["reset", "known"], 4, "refused the token (401)");
    let none = [("TENANT_QUOTA_URL", url.as_str())];
    fails(&none, &["status"], 4, "no admin token: set TENANT_QUOTA_TOKEN or pass --token-file FILE");
    let dir = std::env::temp_dir().join(format!("tq-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tf = dir.join("token");
    std::fs::write(&tf, "secret\n").unwrap();
    assert!(ok(&none, &["--token-file", tf.to_str().unwrap(), "status"]).starts_with("mode "));
    std::fs::write(&tf, "").unwrap();
    fails(&none, &["--token-file", tf.to_str().unwrap(), "status"], 4, "is empty");
    // The two wrong tokens, and `top` asking the filter's listener (no token) for stats.
    assert_eq!(e.stat("wasmcustom.quota_admin_auth_failures_total"), Some(3));
    assert_eq!(up.received(), 2, "only `known` and the wrong prefix's call reached the upstream");
    // Wrong token and wrong URL are told apart however the two combine.
    fails(&wrong, &["--url", &dead, "status"], 3, "cannot reach");

    // Unknown tenant, scope id or scope: 5.
    fails(&token, &["usage", "nobody"], 5, "unknown tenant `nobody`: not named in the configuration, no traffic seen by this Envoy, no runtime override");
    fails(&token, &["reset", "nobody"], 5, "unknown tenant `nobody`: tenant has no state yet, nothing to reset");
    fails(&token, &["override", "rm", "nobody"], 5, "tenant `nobody` has no runtime override");
    fails(&token, &["usage", "--scope", "team", "red"], 5, "unknown team `red`");
    fails(&token, &["usage", "--scope", "project", "p1"], 5, "no scope `project` in the configuration");
    // ... whereas a named tenant with no traffic yet is known.
    assert!(ok(&token, &["usage", "beta.corp"]).starts_with("tenant beta.corp, priority normal, named in the configuration, no traffic yet"));
    // An id the API cannot take: a usage error, nothing sent.
    fails(&token, &["usage", "a/b"], 2, "cannot be sent in an admin API path");

    // Malformed answers: 6.
    let bad_json = fake_server("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\nconnection: close\r\n\r\n{\"mode\":");
    fails(&token, &["--url", &format!("http://127.0.0.1:{bad_json}/.quota"), "status"], 6, "malformed answer");
    let wrong_shape = fake_server("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\nconnection: close\r\n\r\n{\"tenant\":\"x\"}");
    fails(&token, &["--url", &format!("http://127.0.0.1:{wrong_shape}/.quota"), "usage", "x"], 6, "has no `budgets`");
    let not_http = fake_server("SSH-2.0-OpenSSH_9.6\r\n");
    fails(&token, &["--url", &format!("http://127.0.0.1:{not_http}/.quota"), "status"], 6, "not an HTTP/1.1 response");
    let not_prom = fake_server("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\nconnection: close\r\n\r\n<html>hi</html");
    fails(&token, &["--stats-url", &format!("http://127.0.0.1:{not_prom}"), "top"], 6, "not Prometheus text");
}
