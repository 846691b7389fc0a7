//! End-to-end check of the `tq-rls-server` fixture against a real `redis-server`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tonic::transport::Channel;

const DOMAIN: &str = "tenant-quota";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn redis_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    client.get_connection_with_timeout(Duration::from_millis(300))
}

/// Starts redis-server on `port`; `None` if it exits (port taken) or never answers PING.
fn try_start_redis(port: u16) -> Option<Proc> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn /usr/bin/redis-server");
    let mut proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if proc.0.try_wait().unwrap().is_some() {
            return None;
        }
        if let Ok(mut c) = redis_conn(port) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return Some(proc);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Picks random high ports until redis-server binds one (no pick-then-release race).
fn start_redis_random_port() -> (Proc, u16) {
    let mut seed = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for _ in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + (seed >> 33) as u16 % 40_000;
        if let Some(p) = try_start_redis(port) {
            return (p, port);
        }
    }
    panic!("could not start redis-server on a random port");
}

fn start_server(redis_port: u16, dir: &std::path::Path) -> (Proc, u16) {
    let limits = dir.join("limits.json");
    std::fs::write(
        &limits,
        r#"[{"domain":"tenant-quota","key":"tenant","requests_per_unit":600,"unit":"MINUTE"}]"#,
    )
    .unwrap();
    let port_file = dir.join("port");
    let child = Command::new(env!("CARGO_BIN_EXE_tq-rls-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &format!("127.0.0.1:{redis_port}"),
            "--domain",
            DOMAIN,
        ])
        .arg("--limits")
        .arg(&limits)
        .arg("--port-file")
        .arg(&port_file)
        .spawn()
        .expect("spawn tq-rls-server");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            return (proc, text.trim().parse().expect("port file holds a port"));
        }
        assert!(
            Instant::now() < deadline,
            "tq-rls-server did not write its port file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn descriptor(
    entries: &[(&str, &str)],
    limit: Option<(u32, Unit)>,
    hits: Option<u64>,
) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        limit: limit.map(|(n, u)| RateLimitOverride {
            requests_per_unit: n,
            unit: u as i32,
        }),
        hits_addend: hits.map(|value| UInt64Value { value }),
        ..Default::default()
    }
}

async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> Result<RateLimitResponse, tonic::Status> {
    let req = RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend,
    };
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}

fn code_remaining(s: &DescriptorStatus) -> (Code, u32) {
    (Code::try_from(s.code).unwrap(), s.limit_remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_over_real_redis() {
    let dir =
        std::env::temp_dir().join(format!("tq-rls-test-{}-{}", std::process::id(), unix_now()));
    std::fs::create_dir_all(&dir).unwrap();
    let (redis_proc, redis_port) = start_redis_random_port();
    let (mut server, port) = start_server(redis_port, &dir);
    let mut client = RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut rc = redis_conn(redis_port).unwrap();
    let get = |rc: &mut redis::Connection, key: &str| {
        redis::cmd("GET").arg(key).query::<Option<i64>>(rc).unwrap()
    };

    // Stay inside one minute window for the whole sequence.
    if unix_now() % 60 >= 50 {
        tokio::time::sleep(Duration::from_secs(61 - unix_now() % 60)).await;
    }
    let window = unix_now() / 60 * 60;

    // 3 calls of hits 2 against an override of 5/MINUTE.
    let d = || {
        vec![descriptor(
            &[("tenant", "t1")],
            Some((5, Unit::Minute)),
            None,
        )]
    };
    let mut seen = vec![];
    for _ in 0..3 {
        let r = call(&mut client, DOMAIN, d(), 2).await.unwrap();
        assert_eq!(r.statuses.len(), 1);
        let s = &r.statuses[0];
        assert_eq!(
            s.current_limit
                .as_ref()
                .map(|l| (l.requests_per_unit, l.unit)),
            Some((5, Unit::Minute as i32))
        );
        let reset = s.duration_until_reset.unwrap().seconds;
        assert!((1..=60).contains(&reset), "duration_until_reset {reset}");
        seen.push((code_remaining(s), Code::try_from(r.overall_code).unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            ((Code::Ok, 3), Code::Ok),
            ((Code::Ok, 1), Code::Ok),
            ((Code::OverLimit, 0), Code::OverLimit)
        ]
    );
    let key = format!("{DOMAIN}_tenant_t1_{window}");
    assert_eq!(get(&mut rc, &key), Some(6));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut rc).unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    // Descriptor hits_addend 0: read only (request hits_addend ignored).
    let r = call(
        &mut client,
        DOMAIN,
        vec![descriptor(
            &[("tenant", "t1")],
            Some((5, Unit::Minute)),
            Some(0),
        )],
        9,
    )
    .await
    .unwrap();
    assert_eq!(code_remaining(&r.statuses[0]), (Code::OverLimit, 0));
    assert_eq!(get(&mut rc, &key), Some(6));
    let t2 = || descriptor(&[("tenant", "t2")], Some((5, Unit::Minute)), Some(0));
    let r = call(&mut client, DOMAIN, vec![t2()], 0).await.unwrap();
    assert_eq!(
        (
            code_remaining(&r.statuses[0]),
            Code::try_from(r.overall_code).unwrap()
        ),
        ((Code::Ok, 5), Code::Ok)
    );
    assert_eq!(
        get(&mut rc, &format!("{DOMAIN}_tenant_t2_{window}")),
        Some(0),
        "INCRBY 0 like upstream"
    );

    // Unknown domain: OK, no current_limit, remaining 0, nothing written.
    let r = call(&mut client, "other-domain", d(), 1).await.unwrap();
    assert_eq!(code_remaining(&r.statuses[0]), (Code::Ok, 0));
    assert!(r.statuses[0].current_limit.is_none() && r.statuses[0].duration_until_reset.is_none());
    assert_eq!(
        get(&mut rc, &format!("other-domain_tenant_t1_{window}")),
        None
    );

    // Mixed request: statuses in order; limits file applies without an override.
    let descs = vec![
        descriptor(&[("tenant", "t3")], Some((1, Unit::Minute)), Some(2)),
        descriptor(&[("nolimit", "x")], None, None),
        descriptor(&[("tenant", "t4")], None, None),
    ];
    let r = call(&mut client, DOMAIN, descs, 0).await.unwrap();
    let got: Vec<_> = r.statuses.iter().map(code_remaining).collect();
    assert_eq!(
        got,
        vec![(Code::OverLimit, 0), (Code::Ok, 0), (Code::Ok, 599)]
    );
    assert_eq!(
        r.statuses[2]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit),
        Some(600)
    );
    assert_eq!(Code::try_from(r.overall_code).unwrap(), Code::OverLimit);

    // Fixture counters: 3 + 1 + 1 + 1 + 1 calls, 3 + 1 + 1 + 1 + 3 descriptors.
    assert_eq!(get(&mut rc, "tq_rls_calls"), Some(7));
    assert_eq!(get(&mut rc, "tq_rls_descriptors"), Some(9));

    // Empty domain is an error, like upstream's serviceError.
    assert!(call(&mut client, "", d(), 1).await.is_err());

    // Redis hung (SIGSTOP): the response deadline turns it into an error within ~1 s.
    let redis_pid = redis_proc.0.id().to_string();
    Command::new("kill")
        .args(["-STOP", &redis_pid])
        .status()
        .unwrap();
    let start = Instant::now();
    let err = call(&mut client, DOMAIN, d(), 1)
        .await
        .expect_err("redis is stopped");
    assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        start.elapsed()
    );
    Command::new("kill")
        .args(["-CONT", &redis_pid])
        .status()
        .unwrap();

    // Redis killed: an error within ~1 s, never a hang.
    drop(rc);
    drop(redis_proc);
    for _ in 0..2 {
        let start = Instant::now();
        let err = call(&mut client, DOMAIN, d(), 1)
            .await
            .expect_err("redis is down");
        assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            start.elapsed()
        );
    }
    // A call with no limited descriptor does not need Redis (upstream sends no command).
    let r = call(&mut client, "other-domain", d(), 1).await.unwrap();
    assert_eq!(code_remaining(&r.statuses[0]), (Code::Ok, 0));

    // Redis restarted on the same port: the server answers again.
    let _redis2 = try_start_redis(redis_port).expect("restart redis-server on the same port");
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        match call(&mut client, DOMAIN, d(), 1).await {
            Ok(r) => break r,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no recovery after redis restart: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit),
        Some(5)
    );
    assert!(r.statuses[0].limit_remaining <= 4);

    // SIGTERM: clean exit.
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
