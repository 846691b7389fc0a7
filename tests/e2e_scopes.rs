//! Scopes (SPEC 7) end to end in a real Envoy: a team budget shared by its tenants, one exact
//! decision across tenant and team under concurrency, ids bounded by max_tracked, the admin
//! API of scope ids, and Prometheus series labelled `scope`/`scope_id`.

mod common;
use common::*;
use serde_json::Value;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"
const AUTH: (&str, &str) = ("authorization", "Bearer secret");

fn cfg(team_limit: u64, tenant_limit: u64, max_tracked: u64) -> String {
    format!(
        r#"{{"scopes":{{"team":{{"header":"x-team-id","max_tracked":{max_tracked},"ids":{{"gold":{{"budgets":{{"team_rpm":{{"limit":2}}}}}}}}}}}},
  "budgets":{{"rpm":{{"counts":"requests","window_ms":3600000,"limit":{tenant_limit}}},
             "team_rpm":{{"counts":"requests","window_ms":3600000,"limit":{team_limit},"scope":"team"}}}},
  "admin":{{"path_prefix":"/.quota","token_sha256":"{HASH}"}}}}"#
    )
}

fn get(e: &Envoy, tenant: &str, team: Option<&str>) -> Response {
    let mut h = vec![("x-tenant-id", tenant)];
    if let Some(t) = team {
        h.push(("x-team-id", t));
    }
    e.get("/", &h)
}

fn admin(e: &Envoy, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let r = request(e.port, method, &format!("/.quota{path}"), &[AUTH, ("content-type", "application/json")], body.map(str::as_bytes));
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn used(e: &Envoy, path: &str, budget: &str) -> u64 {
    let (s, v) = admin(e, "GET", path, None);
    assert_eq!(s, 200, "{v}");
    v["budgets"][budget]["used"].as_u64().unwrap_or_else(|| panic!("{path}: {v}"))
}

#[test]
fn two_tenants_of_a_team_exhaust_its_budget_and_the_429_names_the_team() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(5, 10, 1000), up.port, EnvoyOpts::default());
    let mut statuses = Vec::new();
    let mut refused = None;
    for t in ["alpha", "alpha", "alpha", "beta", "beta", "beta"] {
        let r = get(&e, t, Some("blue"));
        statuses.push(r.status);
        if r.status == 429 {
            refused = Some(r);
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    let r = refused.unwrap();
    assert_eq!(r.header("x-tenant-quota-scope"), Some("team"));
    assert_eq!(r.header("x-tenant-quota-scope-id"), Some("blue"));
    assert_eq!(r.header("x-tenant-quota-budget"), Some("team_rpm"));
    assert_eq!(r.header("x-tenant-quota-reason"), Some("team_rpm_exceeded"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((body["scope"].as_str(), body["scope_id"].as_str(), body["tenant"].as_str()), (Some("team"), Some("blue"), Some("beta")));
    // Another team's tenant is unaffected; the refused request charged nothing to beta.
    assert_eq!(get(&e, "gamma", Some("red")).status, 200);
    assert_eq!(used(&e, "/tenants/beta", "rpm"), 2);
    assert_eq!(used(&e, "/scopes/team/blue", "team_rpm"), 5);
    assert_eq!(up.received(), 6);
    // Prometheus: the team's series carry scope/scope_id labels, never tenant_id.
    assert_eq!(e.series(r#"quota_checks_total{scope="team",scope_id="other",resource="team_rpm",result="allowed"}"#), Some(6.0));
    assert_eq!(e.series(r#"quota_checks_total{scope="team",scope_id="other",resource="team_rpm",result="rejected"}"#), Some(1.0));
    assert!(e.prometheus().iter().all(|(k, _)| !(k.contains("tenant_id") && k.contains("team_rpm"))));
}

#[test]
fn concurrent_clients_across_one_team_never_over_admit_and_tenant_counts_add_up() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(50, 10, 1000), up.port, EnvoyOpts { concurrency: 4, ..EnvoyOpts::default() });
    let port = e.port;
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|k| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let tenant = format!("member-{}", k % 8);
                barrier.wait();
                let mut ok = 0;
                for _ in 0..4 {
                    let r = c.send("GET", "/", &[("x-tenant-id", tenant.as_str()), ("x-team-id", "crowd")], None);
                    match r.status {
                        200 => ok += 1,
                        429 => {}
                        s => panic!("unexpected {s}"),
                    }
                }
                ok
            })
        })
        .collect();
    let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let team = used(&e, "/scopes/team/crowd", "team_rpm");
    let tenants: Vec<u64> = (0..8).map(|i| used(&e, &format!("/tenants/member-{i}"), "rpm")).collect();
    eprintln!("admitted {admitted}; team used {team}; tenants used {tenants:?}");
    assert!(admitted <= 50, "the team admitted {admitted} > 50");
    assert!(tenants.iter().all(|&u| u <= 10), "{tenants:?}");
    assert_eq!(tenants.iter().sum::<u64>(), team, "refused requests charged nothing anywhere");
    assert_eq!(team, admitted);
    assert_eq!(up.received() as u64, admitted);
}

#[test]
fn ids_absent_invalid_and_many() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(3, 1000, 100), up.port, EnvoyOpts::default());
    // Without the team header the team budget does not count.
    for _ in 0..5 {
        assert_eq!(get(&e, "loner", None).status, 200);
    }
    let (_, v) = admin(&e, "GET", "/scopes/team/overflow", None);
    assert_eq!(v["tracked"], false);
    // An invalid id: 400 invalid_scope (visible ASCII only, at most 256 bytes).
    let long = "x".repeat(300);
    for bad in ["has space", long.as_str()] {
        let r = get(&e, "loner", Some(bad));
        assert_eq!((r.status, r.header("x-tenant-quota-reason")), (400, Some("invalid_scope")), "{bad}");
    }
    // 10k random team ids with max_tracked 100: memory stays bounded, the rest share `overflow`.
    // `server.memory_allocated` is refreshed at each stats flush (every 5 s).
    std::thread::sleep(Duration::from_millis(5200));
    let before = e.stat("server.memory_allocated").unwrap();
    let mut conn = Conn::open(e.port);
    for i in 0..10_000 {
        let team = format!("team-{i}");
        conn.send("GET", "/", &[("x-tenant-id", "many"), ("x-team-id", team.as_str())], None);
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(5200));
    let grew = e.stat("server.memory_allocated").unwrap().saturating_sub(before);
    eprintln!("10k team ids with max_tracked 100: allocated memory grew {grew} bytes");
    assert!(grew < 400_000, "memory grew {grew} bytes");
    assert_eq!(used(&e, "/scopes/team/team-5", "team_rpm"), 1, "the first 100 ids have their own counts");
    let (_, v) = admin(&e, "GET", "/scopes/team/team-9999", None);
    assert_eq!(v["tracked"], false, "a late id has no state of its own");
    assert_eq!(used(&e, "/scopes/team/overflow", "team_rpm"), 3, "later ids share overflow (limit 3)");
    // Series stay bounded too.
    let series = e.prometheus().into_iter().filter(|(k, _)| k.contains("scope_id")).count();
    assert!(series < 20, "{series} scope series");
}

#[test]
fn admin_reads_overrides_and_resets_a_team() {
    let up = Upstream::start();
    let e = Envoy::start(&cfg(3, 1000, 1000), up.port, EnvoyOpts::default());
    for _ in 0..3 {
        assert_eq!(get(&e, "t", Some("blue")).status, 200);
    }
    assert_eq!(get(&e, "t", Some("blue")).status, 429);
    let (s, v) = admin(&e, "GET", "/scopes/team/blue", None);
    assert_eq!(s, 200);
    assert_eq!((v["scope"].as_str(), v["id"].as_str()), (Some("team"), Some("blue")));
    assert_eq!(v["budgets"]["team_rpm"]["used"], 3);
    assert_eq!(v["budgets"]["team_rpm"]["limit"], 3);
    assert!(v["budgets"].get("rpm").is_none(), "a team's report has only team budgets: {v}");
    // A configured id has its own limit.
    let (_, v) = admin(&e, "GET", "/scopes/team/gold", None);
    assert_eq!((v["budgets"]["team_rpm"]["limit"].as_u64(), v["configured"].as_bool()), (Some(2), Some(true)));
    // Runtime override, seen by every worker.
    let (s, v) = admin(&e, "PUT", "/scopes/team/blue/overrides", Some(r#"{"budgets":{"team_rpm":{"limit":5}}}"#));
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&e, "t", Some("blue")).status, 200);
    assert_eq!(get(&e, "t2", Some("blue")).status, 200);
    assert_eq!(get(&e, "t", Some("blue")).status, 429);
    // Overrides are checked: only the scope's budgets, no priority.
    assert_eq!(admin(&e, "PUT", "/scopes/team/blue/overrides", Some(r#"{"budgets":{"rpm":{"limit":5}}}"#)).0, 400);
    assert_eq!(admin(&e, "PUT", "/scopes/team/blue/overrides", Some(r#"{"priority":"vip"}"#)).0, 400);
    assert_eq!(admin(&e, "GET", "/scopes/nope/blue", None).0, 404);
    // Reset: the team admits again; the tenant's own count is untouched.
    let (s, v) = admin(&e, "POST", "/scopes/team/blue/reset", None);
    assert_eq!((s, v["reset"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(used(&e, "/scopes/team/blue", "team_rpm"), 0);
    assert_eq!(used(&e, "/tenants/t", "rpm"), 4, "3 + 1 admitted; the two refused by the team charged nothing");
    assert_eq!(admin(&e, "DELETE", "/scopes/team/blue/overrides", None).0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..3 {
        assert_eq!(get(&e, "t", Some("blue")).status, 200);
    }
    assert_eq!(get(&e, "t", Some("blue")).status, 429, "the configured limit is back");
}
