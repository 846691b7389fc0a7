//! Fixtures of the global tier's e2e tests: a real `redis-server` (Debian), the RLS test
//! server of tests/rls_server (envoyproxy/ratelimit's Redis semantics; see its doc comment),
//! a tiny RESP client to read Redis, and Envoys whose `ratelimit` cluster points at the
//! RLS server over HTTP/2.
#![allow(dead_code)]

use super::*;

pub fn rls_bin() -> PathBuf {
    let p = std::env::var("TQ_RLS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/rls_server/target/release/tq-rls-server"));
    assert!(p.exists(), "{} missing: run `make test` (it builds tests/rls_server)", p.display());
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

    /// The RLS server's `--redis` argument for this Redis.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.sock.display())
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

/// The RLS test server (tests/rls_server).
pub struct Rls {
    child: Option<Child>,
    pub port: u16,
    redis: String,
    dir: PathBuf,
}

impl Rls {
    pub fn start(redis: &Redis) -> Rls {
        Rls::start_on(&redis.addr(), 0)
    }

    /// With keys kept `extra_s` seconds past their window (a fixture-only aid to read a 1 s
    /// window's key afterwards; the service's semantics are otherwise unchanged).
    pub fn start_keeping(redis: &Redis, extra_s: u64) -> Rls {
        Rls::start_with(&redis.addr(), 0, &["--expire-extra-s", &extra_s.to_string()])
    }

    /// On `port` (0: the kernel picks; a restart reuses the old port so Envoys find it).
    pub fn start_on(redis: &str, port: u16) -> Rls {
        Rls::start_with(redis, port, &[])
    }

    fn start_with(redis: &str, port: u16, extra: &[&str]) -> Rls {
        // A directory of its own: two tests starting a server in the same millisecond once
        // shared one port file, and so one RLS server (and one Redis).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("tq-rls-{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        let child = Command::new(rls_bin())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--redis", redis, "--domain", "tenant-quota", "--port-file"])
            .arg(&port_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run tq-rls-server");
        // Owned by the value from here on: dropped (killed and waited for) on any panic.
        let mut rls = Rls { child: Some(child), port: 0, redis: redis.to_string(), dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                rls.port = p;
                return rls;
            }
            assert!(Instant::now() < deadline, "tq-rls-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = Rls::start_on(&self.redis.clone(), port);
            if r.port == port {
                *self = r;
                return;
            }
            assert!(Instant::now() < deadline, "could not restart tq-rls-server on {port}");
        }
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Envoy cluster `ratelimit`: HTTP/2 to the RLS server.
pub fn rls_cluster(port: u16) -> String {
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
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

/// `n` Envoys (like `n` pods) with the same plugin config and the same RLS server.
pub fn envoys(n: usize, plugin_json: &str, upstream: u16, rls_port: u16) -> Vec<Envoy> {
    (0..n)
        .map(|_| Envoy::start(plugin_json, upstream, EnvoyOpts { extra_clusters: rls_cluster(rls_port), ..EnvoyOpts::default() }))
        .collect()
}

/// A counter or gauge from Envoy's `/stats` (`wasmcustom.` names are plain here).
pub fn stat(e: &Envoy, name: &str) -> u64 {
    e.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
}
