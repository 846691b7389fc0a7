//! A small HTTP/1.1 client.

use super::*;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn num(&self, name: &str) -> u64 {
        self.header(name).unwrap_or_else(|| panic!("no {name} header in {self:?}")).parse().unwrap()
    }
}

pub fn write_request(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> std::io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if let (Some(b), false) = (body, chunked) {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        if chunked {
            for c in b.chunks(1000) {
                bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                bytes.extend_from_slice(c);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        } else {
            bytes.extend_from_slice(b);
        }
    }
    s.write_all(&bytes)
}

pub fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof in headers"));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

pub fn read_body<R: BufRead>(r: &mut R, headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if let Some(n) = get("content-length") {
        let n: usize = n.parse().unwrap_or(0);
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        return Ok(b);
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut t = String::new();
                r.read_line(&mut t)?;
                return Ok(out);
            }
            let mut b = vec![0; n + 2];
            r.read_exact(&mut b)?;
            out.extend_from_slice(&b[..n]);
        }
    }
    Ok(Vec::new())
}

pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (first, headers) = read_head(r)?;
    let status = first.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = read_body(r, &headers)?;
    Ok(Response { status, headers, body })
}

pub fn try_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write_request(&mut s, method, path, headers, body)?;
    read_response(&mut BufReader::new(s))
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    try_request(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A keep-alive connection.
pub struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { r: BufReader::new(s) }
    }
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        write_request(self.r.get_mut(), method, path, headers, body).unwrap();
        read_response(&mut self.r).unwrap()
    }
    /// Send a request and return without reading the response.
    pub fn send_only(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        write_request(self.r.get_mut(), method, path, headers, None).unwrap();
    }
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.r
    }
    /// Abort: close the socket before the response arrives.
    pub fn abort(self) {
        let s = self.r.into_inner();
        let _ = s.shutdown(Shutdown::Both);
    }
}
