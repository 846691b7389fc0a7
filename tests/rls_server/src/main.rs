//! `tq-rls-server`: a TEST FIXTURE for tenant-quota's e2e tests. It is never shipped.
//!
//! A minimal Envoy rate limit service (RLS v3 gRPC,
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) over a real Redis that
//! reproduces the Redis semantics of envoyproxy/ratelimit (Go, cannot be installed here).
//! Each behaviour is taken from these upstream files (envoyproxy/ratelimit):
//!
//! - `src/limiter/cache_key.go`: key `<domain>_<k1>_<v1>_<k2>_<v2>_..._<window start>`, window
//!   start `(now / divider) * divider` (upstream's optional CACHE_KEY_PREFIX is empty here).
//! - `src/utils/utilities.go`: `UnitToDivider` (SECOND 1, MINUTE 60, HOUR 3600, DAY 86400,
//!   WEEK 7d, MONTH 30d, YEAR 365d); `CalculateReset` (`divider - now % divider`);
//!   `GetHitsAddends` (descriptor `hits_addend` if set, 0 allowed = check without
//!   incrementing; else `max(1, request.hits_addend)`).
//! - `src/redis/fixed_cache_impl.go`: one pipeline of `INCRBY key hits` + `EXPIRE key divider`
//!   per descriptor with a limit; hits 0 still sends `INCRBY key 0` (no GET); descriptors
//!   without a limit get no Redis command; a Redis error fails the whole call.
//! - `src/limiter/base_limiter.go`: status per descriptor: no limit -> `OK`, no
//!   `current_limit`, `limit_remaining` 0, no `duration_until_reset`; OVER_LIMIT iff the count
//!   after the increment exceeds the limit (the increment still happened), remaining 0;
//!   else OK with remaining = limit - after; `duration_until_reset` when a limit applies.
//! - `src/service/ratelimit.go` + `src/config/config_impl.go`: overall code OVER_LIMIT if any
//!   descriptor is; empty domain / no descriptors are errors; unknown domain -> no limit; a
//!   descriptor `limit` override is used only for a configured domain; Redis errors are
//!   returned as plain Go errors, which grpc-go sends as status UNKNOWN (same here).
//!
//! Fixture-only differences: no local cache, near-limit stats, shadow mode, jitter or
//! per-second Redis; an unknown unit is INVALID_ARGUMENT (upstream panics); config is a
//! JSON list `[{"domain","key","requests_per_unit","unit"}]` (`--limits`), each entry acting
//! like an upstream one-level `- key: <key>` rule (matches a descriptor of exactly one entry
//! with that key, any value, one counter per value). Every call also runs
//! `INCR tq_rls_calls` and `INCRBY tq_rls_descriptors <n>` (fixture-only keys, for tests);
//! when no descriptor has a limit they are best effort, so Redis being down does not fail
//! a call that upstream would answer without Redis.
//!
//! CLI: `tq-rls-server --listen 127.0.0.1:0 --redis 127.0.0.1:<port>|unix:<path> [--domain <d>]...
//! [--limits <file.json>] [--port-file <path>] [--expire-extra-s N]` (the last is a test aid:
//! keys live N s longer than their unit, so a test can read a short window's key afterwards).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tonic::{Request, Response, Status};

/// Upper bound for one Redis round trip (connect + pipeline), so a call never hangs.
const REDIS_DEADLINE: Duration = Duration::from_millis(1000);
/// Fixture-only counter keys (not part of upstream's key space).
pub const CALLS_KEY: &str = "tq_rls_calls";
pub const DESCRIPTORS_KEY: &str = "tq_rls_descriptors";

/// utilities.go `UnitToDivider`; `None` for UNKNOWN / out-of-range values.
fn unit_seconds(unit: i32) -> Option<u64> {
    Some(match Unit::try_from(unit).ok()? {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86_400,
        Unit::Week => 86_400 * 7,
        Unit::Month => 86_400 * 30,
        Unit::Year => 86_400 * 365,
        Unit::Unknown => return None,
    })
}

/// cache_key.go `GenerateCacheKey` (empty prefix).
fn cache_key(domain: &str, desc: &RateLimitDescriptor, divider: u64, now: u64) -> String {
    let mut key = format!("{domain}_");
    for e in &desc.entries {
        key.push_str(&format!("{}_{}_", e.key, e.value));
    }
    key + &((now / divider) * divider).to_string()
}

/// utilities.go `GetHitsAddends`.
fn hits_addend(desc: &RateLimitDescriptor, request_hits: u32) -> u64 {
    match &desc.hits_addend {
        Some(v) => v.value,
        None => u64::from(request_hits.max(1)),
    }
}

/// base_limiter.go `GetResponseDescriptorStatus` for a descriptor with a limit.
fn limited_status(limit: &RateLimit, divider: u64, after: u64, now: u64) -> DescriptorStatus {
    let per_unit = u64::from(limit.requests_per_unit);
    let (code, remaining) = if after > per_unit {
        (Code::OverLimit, 0)
    } else {
        (Code::Ok, (per_unit - after) as u32)
    };
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(limit.clone()),
        limit_remaining: remaining,
        duration_until_reset: Some(PbDuration {
            seconds: (divider - now % divider) as i64,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// base_limiter.go: a descriptor with no limit (empty cache key).
fn unlimited_status() -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        ..Default::default()
    }
}

/// One `--limits` JSON entry.
#[derive(Debug, Clone, serde::Deserialize)]
struct LimitRule {
    domain: String,
    key: String,
    requests_per_unit: u32,
    unit: String,
}

#[derive(Debug, Default)]
struct Config {
    domains: HashSet<String>,
    rules: Vec<(LimitRule, i32)>,
}

impl Config {
    /// config_impl.go `GetLimit`: unknown domain -> none; override wins; else a matching rule.
    fn limit_for(&self, domain: &str, desc: &RateLimitDescriptor) -> Option<RateLimit> {
        if !self.domains.contains(domain) {
            return None;
        }
        if let Some(o) = &desc.limit {
            return Some(RateLimit {
                name: String::new(),
                requests_per_unit: o.requests_per_unit,
                unit: o.unit,
            });
        }
        let [entry] = desc.entries.as_slice() else {
            return None;
        };
        self.rules
            .iter()
            .find(|(r, _)| r.domain == domain && r.key == entry.key)
            .map(|(r, unit)| RateLimit {
                name: String::new(),
                requests_per_unit: r.requests_per_unit,
                unit: *unit,
            })
    }
}

/// Redis access: one multiplexed connection, dropped on any error and re-dialled lazily, so
/// the server keeps answering (with errors) while Redis is down and recovers when it is back.
struct RedisConn {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisConn {
    async fn query(&self, pipe: &redis::Pipeline) -> Result<Vec<i64>, String> {
        let attempt = async {
            let mut guard = self.conn.lock().await;
            if guard.is_none() {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(REDIS_DEADLINE / 2))
                    .set_response_timeout(Some(REDIS_DEADLINE));
                *guard = Some(
                    self.client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                );
            }
            let mut conn = guard.clone().expect("connection set above");
            drop(guard);
            pipe.query_async::<Vec<i64>>(&mut conn).await
        };
        let result = match tokio::time::timeout(REDIS_DEADLINE, attempt).await {
            Ok(Ok(values)) => return Ok(values),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("redis deadline of {REDIS_DEADLINE:?} exceeded"),
        };
        *self.conn.lock().await = None;
        Err(result)
    }
}

struct Service {
    config: Config,
    redis: RedisConn,
    /// Fixture-only test aid (`--expire-extra-s`): keys live this much longer than their unit,
    /// so a test can read a 1 s window's key after the window. 0 (upstream's behaviour) by default.
    expire_extra_s: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Service {
    async fn should_rate_limit(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        // ratelimit.go: serviceError panics surface as UNKNOWN in grpc-go.
        if req.domain.is_empty() {
            return Err(Status::unknown("rate limit domain must not be empty"));
        }
        if req.descriptors.is_empty() {
            return Err(Status::unknown(
                "rate limit descriptor list must not be empty",
            ));
        }
        let now = unix_now();
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(CALLS_KEY).ignore();
        pipe.cmd("INCRBY")
            .arg(DESCRIPTORS_KEY)
            .arg(req.descriptors.len())
            .ignore();
        // (descriptor index, limit, divider) for each descriptor that has a limit.
        let mut limited = Vec::new();
        for (i, desc) in req.descriptors.iter().enumerate() {
            let Some(limit) = self.config.limit_for(&req.domain, desc) else {
                continue;
            };
            let divider = unit_seconds(limit.unit).ok_or_else(|| {
                Status::invalid_argument(format!("unknown rate limit unit {}", limit.unit))
            })?;
            let key = cache_key(&req.domain, desc, divider, now);
            pipe.cmd("INCRBY")
                .arg(&key)
                .arg(hits_addend(desc, req.hits_addend));
            pipe.expire(&key, (divider + self.expire_extra_s) as i64).ignore();
            limited.push((i, limit, divider));
        }
        let counts = match self.redis.query(&pipe).await {
            Ok(counts) => counts,
            Err(e) if limited.is_empty() => {
                eprintln!("tq-rls-server: fixture counters not recorded: {e}");
                Vec::new()
            }
            // fixed_cache_impl.go checkError -> RedisError -> plain error -> UNKNOWN.
            Err(e) => return Err(Status::unknown(format!("redis error: {e}"))),
        };
        let mut statuses: Vec<DescriptorStatus> =
            req.descriptors.iter().map(|_| unlimited_status()).collect();
        for ((i, limit, divider), after) in limited.iter().zip(counts) {
            statuses[*i] = limited_status(limit, *divider, after.max(0) as u64, now);
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        Service::should_rate_limit(self, request.get_ref())
            .await
            .map(Response::new)
    }
}

struct Args {
    listen: String,
    redis: String,
    domains: Vec<String>,
    limits: Option<String>,
    port_file: Option<String>,
    expire_extra_s: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: String::new(),
        redis: String::new(),
        domains: vec![],
        limits: None,
        port_file: None,
        expire_extra_s: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--redis" => args.redis = value()?,
            "--domain" => args.domains.push(value()?),
            "--limits" => args.limits = Some(value()?),
            "--port-file" => args.port_file = Some(value()?),
            "--expire-extra-s" => args.expire_extra_s = value()?.parse().map_err(|_| "--expire-extra-s needs seconds".to_string())?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.listen.is_empty() || args.redis.is_empty() {
        return Err("--listen and --redis are required".into());
    }
    Ok(args)
}

fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = Config {
        domains: args.domains.iter().cloned().collect(),
        rules: vec![],
    };
    if let Some(path) = &args.limits {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let rules: Vec<LimitRule> =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        for rule in rules {
            let unit = Unit::from_str_name(&rule.unit.to_ascii_uppercase())
                .filter(|u| *u != Unit::Unknown)
                .ok_or(format!("{path}: unknown unit {:?}", rule.unit))?;
            config.domains.insert(rule.domain.clone());
            config.rules.push((rule, unit as i32));
        }
    }
    Ok(config)
}

/// Writes `port` to `path` atomically (temp file in the same directory, then rename).
fn write_port_file(path: &str, port: u16) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp.{}", std::process::id());
    std::fs::write(&tmp, port.to_string())?;
    std::fs::rename(&tmp, path)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Do not wait forever for clients (e.g. Envoy) that keep HTTP/2 connections open.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        std::process::exit(0);
    });
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("tq-rls-server: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = load_config(&args)?;
    let client =
        redis::Client::open(match args.redis.strip_prefix("unix:") {
            // A unix socket (tests: no TCP port to pick for Redis).
            Some(path) => format!("redis+unix://{path}"),
            None => format!("redis://{}/", args.redis),
        })
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(path) = &args.port_file {
        write_port_file(path, addr.port()).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut domains: Vec<_> = config.domains.iter().cloned().collect();
    domains.sort();
    eprintln!(
        "tq-rls-server (test fixture) listening on {addr}, redis {}, domains {domains:?}, {} limit rule(s)",
        args.redis,
        config.rules.len()
    );
    let service = Service {
        config,
        redis: RedisConn {
            client,
            conn: Default::default(),
        },
        expire_extra_s: args.expire_extra_s,
    };
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
