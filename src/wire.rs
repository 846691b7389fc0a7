//! Host wire formats, without the host: the proxy-wasm serialized header map (read and
//! written), and number formatting without allocation. Used on every request; tested
//! natively and on wasm32.

/// The value of `name` in a serialized header map: count u32, then (name_len u32,
/// value_len u32) per pair, then `name\0value\0` per pair. `None` if absent or malformed.
pub fn pairs_get<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u32_at = |o: usize| b.get(o..o + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize);
    let count = u32_at(0)?;
    let mut off = 4usize.checked_add(count.checked_mul(8)?)?;
    for i in 0..count {
        let (kl, vl) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let k = b.get(off..off.checked_add(kl)?)?;
        off = off.checked_add(kl + 1)?;
        let v = b.get(off..off.checked_add(vl)?)?;
        off = off.checked_add(vl + 1)?;
        if k == name.as_bytes() {
            return Some(v);
        }
    }
    None
}

/// Where each pair of a serialized header map lies: (name offset, name length, value offset,
/// value length), for the well-formed pairs before the first malformed one (what
/// [`pairs_get`] can reach). A request looks up several headers: each lookup then compares
/// names without walking the size table again.
pub fn pairs_index(b: &[u8]) -> Vec<[u32; 4]> {
    let mut out = Vec::new();
    let Some(&[c0, c1, c2, c3]) = b.get(..4) else { return out };
    let count = u64::from(u32::from_le_bytes([c0, c1, c2, c3]));
    // The size-table entries present; a pair past them is unreadable, like a short value.
    let n = count.min((b.len() as u64 - 4) / 8) as usize;
    let len = b.len() as u64;
    let mut off = 4 + 8 * count;
    out.reserve_exact(n);
    for e in b[4..4 + 8 * n].chunks_exact(8) {
        let kl = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
        let vl = u64::from(u32::from_le_bytes([e[4], e[5], e[6], e[7]]));
        let v = off + kl + 1;
        if v + vl > len {
            break;
        }
        out.push([off as u32, kl as u32, v as u32, vl as u32]);
        off = v + vl + 1;
    }
    out
}

/// [`pairs_get`] through a [`pairs_index`] of the same map.
pub fn index_get<'a>(b: &'a [u8], index: &[[u32; 4]], name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    index.iter().find(|e| e[1] as usize == name.len() && &b[e[0] as usize..(e[0] + e[1]) as usize] == name).map(|e| &b[e[2] as usize..(e[2] + e[3]) as usize])
}

/// A header map in the host's serialized form (the layout [`pairs_get`] reads).
pub fn serialize_pairs<K: AsRef<str>, V: AsRef<str>>(map: &[(K, V)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + map.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 10).sum::<usize>());
    b.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        b.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        b.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        b.extend_from_slice(k.as_ref().as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_ref().as_bytes());
        b.push(0);
    }
    b
}

/// `n` in decimal, written into `buf`. On wasm32 a u64 division is a call-free but slow
/// path that V8 does not turn into a multiplication, so the digits are taken from u32 parts
/// of at most 8 digits, two at a time.
pub fn fmt_u64(n: u64, buf: &mut [u8; 20]) -> &str {
    const DIGITS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";
    // Two digits of `v` (< 100) at buf[i - 2..i].
    let pair = |buf: &mut [u8; 20], i: usize, v: u32| {
        let d = 2 * v as usize;
        buf[i - 2] = DIGITS[d];
        buf[i - 1] = DIGITS[d + 1];
    };
    // A part of exactly 8 digits (leading zeros kept) ending at buf[i].
    let eight = |buf: &mut [u8; 20], i: usize, mut v: u32| {
        for k in 0..4 {
            pair(buf, i - 2 * k, v % 100);
            v /= 100;
        }
    };
    let mut i = buf.len();
    let mut n = n;
    while n >= 100_000_000 {
        eight(buf, i, (n % 100_000_000) as u32);
        n /= 100_000_000;
        i -= 8;
    }
    let mut v = n as u32;
    while v >= 100 {
        pair(buf, i, v % 100);
        v /= 100;
        i -= 2;
    }
    if v >= 10 {
        pair(buf, i, v);
        i -= 2;
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    // SAFETY: only ASCII digits were written to buf[i..] (validating them costs as much as
    // writing them on wasm32).
    unsafe { std::str::from_utf8_unchecked(&buf[i..]) }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn pairs_get_finds_values_and_survives_malformed_maps() {
        let b = serialize_pairs(&[(":path", "/x"), ("x-tenant-id", "acme"), ("empty", ""), ("x-query-cost", "7")]);
        assert_eq!(pairs_get(&b, "x-tenant-id"), Some(&b"acme"[..]));
        assert_eq!(pairs_get(&b, "x-query-cost"), Some(&b"7"[..]));
        assert_eq!(pairs_get(&b, "empty"), Some(&b""[..]));
        assert_eq!(pairs_get(&b, "x-tenant"), None);
        assert_eq!(pairs_get(&serialize_pairs::<&str, &str>(&[]), "a"), None);
        // Truncated or lying buffers give None, never a panic.
        for cut in 0..b.len() {
            let _ = pairs_get(&b[..cut], "x-query-cost");
        }
        let mut lying = b.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pairs_get(&lying, "x-tenant-id"), None);
        let mut long = b.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pairs_get(&long, "x-tenant-id"), None);
    }

    #[test]
    fn fmt_u64_matches_display() {
        let mut buf = [0u8; 20];
        for n in [0, 1, 9, 10, 11, 99, 100, 101, 12345, 99_999_999, 100_000_000, 100_000_001, 4_000_000_000, 1_000_000_000_000_000, 999_999_999_999_999_999, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            assert_eq!(fmt_u64(n, &mut buf), n.to_string());
        }
    }
}
