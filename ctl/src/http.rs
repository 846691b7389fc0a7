//! A small blocking HTTP/1.1 client: plain `http://` over a TcpStream, one request per
//! connection (`connection: close`), bodies by content-length, chunked or until EOF.
//! The admin API is reached on a trusted network or through a port-forward; TLS is
//! deliberately out of scope (a TLS stack would dwarf the rest of the CLI).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The most a response may carry (a large Envoy's /stats/prometheus stays well below).
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path without a trailing `/` (empty for the root).
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = match s.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(format!("{s}: https is not supported (reach the admin API over plain http, e.g. through a port-forward)")),
            Some((scheme, _)) => return Err(format!("{s}: unsupported scheme `{scheme}` (expected http://HOST:PORT/PREFIX)")),
            None => return Err(format!("{s}: not a URL (expected http://HOST:PORT/PREFIX)")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains('?') || path.contains('#') {
            return Err(format!("{s}: the URL may not carry a query or fragment"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| format!("{s}: unclosed `[` in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{s}: unexpected `{after}` after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("{s}: no host (expected http://HOST:PORT/PREFIX)"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("{s}: bad port `{p}`"))?,
        };
        Ok(Url { host, port, path: path.trim_end_matches('/').to_string() })
    }

    pub fn display(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("http://{host}:{}{}", self.port, self.path)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No connection (refused, no route, name not resolved, connect timeout).
    Connect(String),
    /// Connected, but no complete answer within the timeout.
    Timeout(String),
    /// Connected, but what came back is not an HTTP/1.1 response.
    Protocol(String),
}

/// Send one request to `url.path + suffix`.
pub fn request(url: &Url, method: &str, suffix: &str, headers: &[(&str, &str)], body: Option<&[u8]>, timeout: Duration) -> Result<Response, HttpError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last = format!("no address for {}", url.host);
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(HttpError::Connect(last))?;
    let io = |e: std::io::Error| HttpError::Protocol(format!("{}: {e}", url.display()));
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&encode_request(url, method, suffix, headers, body)).map_err(io)?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(HttpError::Protocol(format!("{}: response larger than {MAX_RESPONSE} bytes", url.display())));
                }
                // Stop early once a length-delimited response is complete (a server may
                // ignore `connection: close`).
                if let Ok(Some(r)) = parse_response(&raw, false) {
                    return Ok(r);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(HttpError::Timeout(format!("{}: no complete answer within {} s", url.display(), timeout.as_secs_f64())))
            }
            Err(e) => return Err(io(e)),
        }
    }
    match parse_response(&raw, true) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(HttpError::Protocol(format!("{}: the connection closed before a complete response", url.display()))),
        Err(e) => Err(HttpError::Protocol(format!("{}: {e}", url.display()))),
    }
}

pub fn encode_request(url: &Url, method: &str, suffix: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let path = format!("{}{}", url.path, suffix);
    let path = if path.is_empty() { "/".to_string() } else { path };
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}:{}\r\nuser-agent: tenant-quota-ctl/{}\r\nconnection: close\r\n", url.port, env!("CARGO_PKG_VERSION"));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    // Always a length, even 0: the admin API answers a bodiless call from its headers.
    if method != "GET" || body.is_some() {
        req.push_str(&format!("content-length: {}\r\n", body.map_or(0, <[u8]>::len)));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// Parse a raw response. `Ok(None)`: incomplete so far (with `eof`, a body without a length
/// runs to the end instead).
pub fn parse_response(raw: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof { Err(not_http(raw)) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "response head is not text".to_string())?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !proto.starts_with("HTTP/1.") {
        return Err(not_http(raw));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad status line `{first}`"))?;
    let mut content_type = None;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { return Err(format!("bad header line `{l}`")) };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-type" => content_type = Some(v.to_string()),
            "content-length" => length = Some(v.parse::<usize>().map_err(|_| format!("bad content-length `{v}`"))?),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None if eof => return Err("the connection closed inside a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return if eof { Err(format!("the body ended after {} of {n} bytes", rest.len())) } else { Ok(None) };
        }
        rest[..n].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, content_type, body }))
}

fn not_http(raw: &[u8]) -> String {
    let start: String = String::from_utf8_lossy(&raw[..raw.len().min(40)]).chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '.' }).collect();
    format!("not an HTTP/1.1 response (starts with `{start}`)")
}

/// A chunked body: `Ok(None)` while incomplete.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size = std::str::from_utf8(&b[..eol]).ok().and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let size = size.ok_or_else(|| "bad chunk size".to_string())?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:10000/.quota/").unwrap();
        assert_eq!(u, Url { host: "127.0.0.1".into(), port: 10000, path: "/.quota".into() });
        assert_eq!(u.display(), "http://127.0.0.1:10000/.quota");
        assert_eq!(Url::parse("http://localhost").unwrap().port, 80);
        let v6 = Url::parse("http://[::1]:9901").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 9901, ""));
        assert_eq!(v6.display(), "http://[::1]:9901");
        for bad in ["https://x/.quota", "localhost:10000", "ftp://x", "http://:80/", "http://x:0/", "http://x:99999", "http://x/a?b"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_bytes() {
        let u = Url::parse("http://h:1/p").unwrap();
        let r = String::from_utf8(encode_request(&u, "POST", "/tenants/a/reset", &[("authorization", "Bearer t")], None)).unwrap();
        assert!(r.starts_with("POST /p/tenants/a/reset HTTP/1.1\r\nhost: h:1\r\n"), "{r}");
        assert!(r.contains("authorization: Bearer t\r\n") && r.contains("content-length: 0\r\n") && r.ends_with("\r\n\r\n"), "{r}");
        let g = String::from_utf8(encode_request(&u, "GET", "/status", &[], None)).unwrap();
        assert!(!g.contains("content-length"), "{g}");
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}", false).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.is_json()), (200, &b"{}"[..], true));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false).unwrap().is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", true).is_err());
        let c = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(c.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab", false).unwrap().is_none());
        let e = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope", true).unwrap().unwrap();
        assert_eq!((e.status, e.body.as_slice(), e.is_json()), (404, &b"nope"[..], false));
        assert!(parse_response(b"SSH-2.0-OpenSSH_9.6\r\n", true).unwrap_err().contains("not an HTTP"));
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", true).is_err());
    }
}
