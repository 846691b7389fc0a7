//! Test upstreams: the echoing one of most tests, and envoy/demo_backend.py.

use super::*;

/// An HTTP/1.1 upstream on a free port:
/// - `/slow/<ms>...` answers after `<ms>` milliseconds;
/// - `/reset...` closes the connection without answering (an upstream reset);
/// - a request header `x-test-respond-<name>: <v>` becomes a response header `<name>: <v>`;
/// - the body is `ok <bytes received>`.
pub struct Upstream {
    pub port: u16,
    pub received: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    /// Headers added to every response (load reports).
    pub extra: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// When each request arrived (Unix ms).
    pub stamps: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Each request's path and body.
    pub bodies: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let extra = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stamps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rc, oc, ec, sc, bc) = (received.clone(), open.clone(), extra.clone(), stamps.clone(), bodies.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (rc, oc, ec, sc, bc) = (rc.clone(), oc.clone(), ec.clone(), sc.clone(), bc.clone());
                std::thread::spawn(move || serve(s, rc, oc, ec, sc, bc));
            }
        });
        Upstream { port, received, open, extra, stamps, bodies }
    }
    /// Set the headers every response carries from now on.
    pub fn report(&self, headers: &[(&str, &str)]) {
        *self.extra.lock().unwrap() = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
    /// When each request arrived (Unix ms), in arrival order.
    pub fn received_at(&self) -> Vec<u64> {
        self.stamps.lock().unwrap().clone()
    }
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

pub fn serve(
    s: TcpStream,
    received: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    extra: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stamps: Arc<std::sync::Mutex<Vec<u64>>>,
    bodies: Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    loop {
        let Ok((first, headers)) = read_head(&mut r) else { return };
        let Ok(body) = read_body(&mut r, &headers) else { return };
        stamps.lock().unwrap().push(now_ms());
        received.fetch_add(1, Ordering::SeqCst);
        let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
        bodies.lock().unwrap().push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
        if path.starts_with("/reset") {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms: u64 = ms.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("0").parse().unwrap_or(0);
            open.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            open.fetch_sub(1, Ordering::SeqCst);
        }
        let text = format!("ok {}\n", body.len());
        let mut resp = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n", text.len());
        for (k, v) in extra.lock().unwrap().iter() {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in &headers {
            if let Some(name) = k.strip_prefix("x-test-respond-") {
                resp.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// envoy/demo_backend.py (the `make run` upstream: OpenAI and Anthropic APIs with usage) on a
/// port of the kernel's; stopped on drop.
pub struct DemoBackend {
    pub port: u16,
    child: Child,
}

impl DemoBackend {
    pub fn start() -> DemoBackend {
        let mut child = Command::new("python3")
            .arg(repo().join("envoy/demo_backend.py"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start python3 envoy/demo_backend.py");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let port = first.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("demo backend said {first:?}"));
        DemoBackend { port, child }
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
