//! `admin` (SPEC 4): the admin API's path, bearer token digest and allowed sources.

use super::error::{err, ConfigError};
use super::raw::RawAdmin;

#[derive(Debug, Clone)]
pub struct Admin {
    pub path_prefix: String,
    pub token_sha256: [u8; 32],
    /// Downstream address ranges allowed to call the admin API (empty: any).
    pub allowed_sources: Vec<Cidr>,
}

/// An IPv4 or IPv6 address range, e.g. `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address as 16 bytes (IPv4 mapped into `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Prefix length over the 16 bytes (an IPv4 /n is 96 + n).
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let (addr, bits) = match ip.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(v4) => {
                let b = bits.unwrap_or(32);
                if b > 32 {
                    return None;
                }
                (v4.to_ipv6_mapped().octets(), 96 + b)
            }
            std::net::IpAddr::V6(v6) => {
                let b = bits.unwrap_or(128);
                if b > 128 {
                    return None;
                }
                (v6.octets(), b)
            }
        };
        Some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        let o = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.octets(), |v4| v4.to_ipv6_mapped().octets()),
        };
        let full = usize::from(self.bits / 8);
        if o[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.bits % 8;
        rest == 0 || (o[full] ^ self.addr[full]) >> (8 - rest) == 0
    }
}

/// The IP of a downstream address as Envoy reports it (`1.2.3.4:5678`, `[::1]:5678`).
pub fn parse_source_ip(v: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.parse::<std::net::IpAddr>().ok()
}

pub(super) fn compile(raw: &RawAdmin) -> Result<Admin, ConfigError> {
    if !raw.path_prefix.starts_with('/') || raw.path_prefix.len() < 2 || raw.path_prefix.ends_with('/') {
        return err("admin.path_prefix", "must start with `/`, not end with `/`, and not be `/` alone");
    }
    let hex = raw.token_sha256.as_bytes();
    if hex.len() != 64 {
        return err("admin.token_sha256", "must be 64 hex digits (the SHA-256 of the bearer token)");
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok().and_then(|s| u8::from_str_radix(s, 16).ok());
        match s {
            Some(v) => out[i] = v,
            None => return err("admin.token_sha256", "must be 64 hex digits"),
        }
    }
    let mut allowed_sources = Vec::new();
    for (i, c) in raw.allowed_sources.iter().flatten().enumerate() {
        match Cidr::parse(c) {
            Some(c) => allowed_sources.push(c),
            None => return err(format!("admin.allowed_sources[{i}]"), format!("`{c}` is not a CIDR (e.g. 10.0.0.0/8, ::1/128)")),
        }
    }
    if raw.allowed_sources.as_ref().is_some_and(|v| v.is_empty()) {
        return err("admin.allowed_sources", "an empty list would allow no one; leave it out to allow any address");
    }
    Ok(Admin { path_prefix: raw.path_prefix.clone(), token_sha256: out, allowed_sources })
}
