//! Fixtures of the global tier's e2e tests: a real `redis-server` (Debian), the real
//! envoyproxy/ratelimit (`service_cmd`, installed pinned by `make ratelimit`) loading
//! deploy/ratelimit/config.yaml, a tiny RESP client to read Redis, and Envoys whose
//! `ratelimit` cluster reaches the service over HTTP/2 on a unix socket.
#![allow(dead_code)]

use super::*;

/// The service binary: `TQ_RATELIMIT`, else `.tools/go/bin/service_cmd` (mk/ratelimit.mk).
pub fn ratelimit_bin() -> PathBuf {
    let p = std::env::var("TQ_RATELIMIT").map(PathBuf::from).unwrap_or_else(|_| repo().join(".tools/go/bin/service_cmd"));
    assert!(p.exists(), "{} missing: run `make ratelimit` (it installs envoyproxy/ratelimit pinned)", p.display());
    p
}

fn redis_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub struct Redis {
    child: Option<Child>,
    /// Its unix socket: no TCP port to pick, so no two tests can ever share a Redis.
    pub sock: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("tq-redis-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        Redis::start_on(&dir.join("redis.sock")).expect("could not start redis-server (is it installed? `make test` installs it)")
    }

    /// Start (or restart) a Redis on the unix socket `sock`.
    pub fn start_on(sock: &std::path::Path) -> Option<Redis> {
        let _ = std::fs::remove_file(sock);
        let child = Command::new(redis_bin())
            .args(["--port", "0", "--unixsocket"])
            .arg(sock)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server");
        let mut r = Redis { child: Some(child), sock: sock.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = r.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    r.child = None;
                    return None;
                }
            }
            if r.cmd(&["PING"]).ok() == Some(Resp::Simple("PONG".into())) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        r.kill();
        None
    }

    /// `calls=` of `cmd` (lowercase, e.g. `incrby`) in `INFO commandstats`: how many times this
    /// Redis ran it since it started (0 if never).
    pub fn command_calls(&self, cmd: &str) -> u64 {
        let Ok(Resp::Bulk(Some(info))) = self.cmd(&["INFO", "commandstats"]) else { return 0 };
        let prefix = format!("cmdstat_{cmd}:calls=");
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.split(',').next()).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    }

    /// The service's keys of `budget` for subject `id` in `scope` (`tenant`, or a scope such as
    /// `team`), with their values. `id` may be a glob (`m123-*`). Only the prefix the filter's
    /// descriptor begins with is matched, `tenant-quota_<scope>_<id>_budget_<name>_`: whatever
    /// entries follow (a window index, a month) and the service's window start are not, so a
    /// change of the filter's later entries does not change what this finds. Each key's last
    /// `_` part is the service's window start in seconds (envoyproxy/ratelimit cache_key.go).
    pub fn budget_keys(&self, scope: &str, id: &str, budget: &str) -> Vec<(String, u64)> {
        self.scan(&format!("tenant-quota_{scope}_{id}_budget_{budget}_*"))
    }

    /// Units of `budget` for subject `id` in `scope`, over every window key.
    pub fn units(&self, scope: &str, id: &str, budget: &str) -> u64 {
        self.budget_keys(scope, id, budget).iter().map(|(_, v)| v).sum()
    }

    /// Wait until Redis holds `want` units (the sync loop sent them), or time out.
    pub fn wait_units(&self, scope: &str, id: &str, budget: &str, want: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let got = self.units(scope, id, budget);
            if got >= want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client of a Redis another `Redis` owns (dropping it stops nothing).
    pub fn attach(sock: &std::path::Path) -> Redis {
        Redis { child: None, sock: sock.to_path_buf() }
    }

    pub fn cmd(&self, args: &[&str]) -> std::io::Result<Resp> {
        let mut c = self.conn()?;
        send_cmd(&mut c, args)
    }

    fn conn(&self) -> std::io::Result<BufReader<std::os::unix::net::UnixStream>> {
        let s = std::os::unix::net::UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(BufReader::new(s))
    }

    pub fn get(&self, key: &str) -> u64 {
        match self.cmd(&["GET", key]) {
            Ok(Resp::Bulk(Some(v))) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// Keys matching a glob, with their values: one connection (KEYS, then MGET in batches),
    /// so scanning thousands of keys does not use up the machine's ephemeral ports.
    pub fn scan(&self, pattern: &str) -> Vec<(String, u64)> {
        let Ok(mut c) = self.conn() else { return Vec::new() };
        let Ok(Resp::Array(keys)) = send_cmd(&mut c, &["KEYS", pattern]) else { return Vec::new() };
        let keys: Vec<String> = keys
            .into_iter()
            .filter_map(|k| match k {
                Resp::Bulk(Some(k)) => Some(String::from_utf8_lossy(&k).into_owned()),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for batch in keys.chunks(1000) {
            let mut args = vec!["MGET"];
            args.extend(batch.iter().map(String::as_str));
            let Ok(Resp::Array(vals)) = send_cmd(&mut c, &args) else { return Vec::new() };
            for (k, v) in batch.iter().zip(vals) {
                let v = match v {
                    Resp::Bulk(Some(v)) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
                    _ => 0,
                };
                out.push((k.clone(), v));
            }
        }
        out.sort();
        out
    }
}

fn send_cmd(c: &mut BufReader<std::os::unix::net::UnixStream>, args: &[&str]) -> std::io::Result<Resp> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    c.get_mut().write_all(req.as_bytes())?;
    read_resp(c)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn read_resp<R: BufRead>(r: &mut R) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let (t, rest) = line.split_at(1.min(line.len()));
    Ok(match t {
        "+" => Resp::Simple(rest.into()),
        "-" => Resp::Error(rest.into()),
        ":" => Resp::Int(rest.parse().unwrap_or(0)),
        "$" => {
            let n: i64 = rest.parse().unwrap_or(-1);
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap_or(0);
            let mut v = Vec::new();
            for _ in 0..n.max(0) {
                v.push(read_resp(r)?);
            }
            Resp::Array(v)
        }
        _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"))),
    })
}

/// The real envoyproxy/ratelimit, in a directory of its own: its runtime config (only
/// deploy/ratelimit/config.yaml: any other YAML there would be loaded too, D10), its log, and
/// its gRPC unix socket. A socket path, not a TCP port: the service binds TCP with
/// SO_REUSEPORT, so a second service on a port already in use binds it silently and the
/// kernel splits the connections (research note D2); a path in a fresh directory can never be
/// shared. Its HTTP and debug listeners bind 127.0.0.1:0 (never used).
pub struct Rls {
    child: Option<Child>,
    /// The gRPC socket, which the Envoys' `ratelimit` cluster dials (`pipe` address).
    pub sock: PathBuf,
    redis: PathBuf,
    dir: PathBuf,
}

impl Rls {
    /// Start the service on `redis`, which must be up: this version exits at startup if Redis
    /// does not answer (the retry came with upstream PR #1144, after the pinned commit).
    pub fn start(redis: &Redis) -> Rls {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("tq-rls-{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), now_ms()));
        let config = dir.join("rt/ratelimit/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::copy(repo().join("deploy/ratelimit/config.yaml"), config.join("config.yaml")).unwrap();
        let mut rls = Rls { child: None, sock: dir.join("rls.sock"), redis: redis.sock.clone(), dir };
        rls.spawn();
        rls
    }

    /// Run the service (again) on `self.sock`; return once a connect to it succeeds (it
    /// listens only after Redis answered PING and the config loaded).
    fn spawn(&mut self) {
        // A service killed with SIGKILL leaves its socket file, and `net.Listen("unix")` does
        // not unlink it: it would exit with "address already in use".
        let _ = std::fs::remove_file(&self.sock);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("ratelimit.log")).unwrap();
        // Settings: research note §2. env -i: envconfig reads bare names such as HOST and PORT.
        let child = Command::new(ratelimit_bin())
            .env_clear()
            .env("RUNTIME_ROOT", self.dir.join("rt"))
            .envs([
                ("RUNTIME_SUBDIRECTORY", "ratelimit"),
                ("RUNTIME_APPDIRECTORY", "config"),
                ("RUNTIME_WATCH_ROOT", "false"),
                ("RUNTIME_IGNOREDOTFILES", "true"),
                ("REDIS_SOCKET_TYPE", "unix"),
                ("REDIS_TYPE", "SINGLE"),
                // The default 10 s would hold every call while Redis hangs (D3).
                ("REDIS_TIMEOUT", "1s"),
                ("DISABLE_STATS", "true"),
                ("USE_STATSD", "false"),
                // Keys expire exactly one unit after their last call (the default adds 0-300 s).
                ("EXPIRATION_JITTER_MAX_SECONDS", "0"),
                ("LOCAL_CACHE_SIZE_IN_BYTES", "0"),
                ("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", "false"),
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("DEBUG_HOST", "127.0.0.1"),
                ("DEBUG_PORT", "0"),
                ("LOG_LEVEL", "warn"),
            ])
            .env("REDIS_URL", &self.redis)
            .env("GRPC_UDS", &self.sock)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run envoyproxy/ratelimit's service_cmd");
        // Owned from here on: killed and waited for on any panic.
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!("envoyproxy/ratelimit exited ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "envoyproxy/ratelimit not listening after 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The service's resident memory (kB, `VmRSS` of /proc/<pid>/status).
    pub fn rss_kb(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("ratelimit.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// SIGKILL, like a crash: the socket file stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same socket, so the Envoys find it (their Redis must be up).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Envoy cluster `ratelimit`: HTTP/2 to the service's unix socket `sock`.
pub fn rls_cluster(sock: &std::path::Path) -> String {
    format!(
        r#"  - name: ratelimit
    connect_timeout: 0.25s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ pipe: {{ path: "{sock}" }} }} }}
"#,
        sock = sock.display()
    )
}

/// `n` Envoys (like `n` pods) with the same plugin config and the same service.
pub fn envoys(n: usize, plugin_json: &str, upstream: u16, rls: &Rls) -> Vec<Envoy> {
    (0..n)
        .map(|_| Envoy::start(plugin_json, upstream, EnvoyOpts { extra_clusters: rls_cluster(&rls.sock), ..EnvoyOpts::default() }))
        .collect()
}

/// Calls Envoy made to the `ratelimit` cluster (sync calls, exact checks and probes).
pub fn rls_calls(e: &Envoy) -> u64 {
    e.stat("cluster.ratelimit.upstream_rq_total").unwrap_or(0)
}

/// A counter or gauge from Envoy's `/stats` (`wasmcustom.` names are plain here).
pub fn stat(e: &Envoy, name: &str) -> u64 {
    e.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
}

/// One request of a paced load.
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn get(path: &str, headers: &[(&str, &str)]) -> Req {
        Req { method: "GET", path: path.into(), headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body: None }
    }
}

/// What a paced load saw.
#[derive(Debug, Default, Clone)]
pub struct Load {
    pub admitted: u64,
    pub rejected: u64,
    pub other: Vec<u16>,
    pub max_latency_ms: u64,
    /// (client time ms, status) per request.
    pub log: Vec<(u64, u16)>,
    /// Admitted requests per Envoy (index into `ports`).
    pub per_envoy: Vec<u64>,
}

/// `total` requests made by `make(i)`, request `i` to `ports[i % ports.len()]`, at `rate` per
/// second from `threads` keep-alive clients (each with a connection to every Envoy).
pub fn drive_with<F>(ports: &[u16], total: usize, rate: f64, threads: usize, make: F) -> Load
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let out = Arc::new(std::sync::Mutex::new(Load { per_envoy: vec![0; ports.len()], ..Load::default() }));
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (out, next, ports, make) = (out.clone(), next.clone(), ports.to_vec(), make.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<Conn> = ports.iter().map(|p| Conn::open(*p)).collect();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let due = Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let k = i % conns.len();
                    let q = make(i);
                    let hs: Vec<(&str, &str)> = q.headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                    let t0 = Instant::now();
                    let r = conns[k].send(q.method, &q.path, &hs, q.body.as_deref());
                    let ms = t0.elapsed().as_millis() as u64;
                    if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                        conns[k] = Conn::open(ports[k]);
                    }
                    let mut o = out.lock().unwrap();
                    o.max_latency_ms = o.max_latency_ms.max(ms);
                    o.log.push((now_ms(), r.status));
                    match r.status {
                        200 => {
                            o.admitted += 1;
                            o.per_envoy[k] += 1;
                        }
                        429 => o.rejected += 1,
                        s => o.other.push(s),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let o = out.lock().unwrap().clone();
    o
}

/// Make sure at least `need` of the current minute remains.
pub fn minute_with(need: Duration) {
    let into = now_ms() % 60_000;
    if 60_000 - into < need.as_millis() as u64 {
        std::thread::sleep(Duration::from_millis(60_000 - into + 50));
    }
}

/// Wait until every Envoy's `quota_global_degraded` is `want`; how long it took.
pub fn wait_degraded(es: &[Envoy], want: u64, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if es.iter().all(|e| stat(e, "quota_global_degraded") == want) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
