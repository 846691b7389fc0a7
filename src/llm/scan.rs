//! Byte search eight bytes at a time (SWAR: one `u64` word per step, no SIMD), for the SSE
//! reader's hot loops: the end of a data line and the `g` of a `"usage"` key. On wasm32 a
//! byte loop costs several instructions per byte; a word step costs about as much per eight.
//! The first match is exact: in `zero_bytes` a borrow can only set bits above the lowest
//! zero byte, and only the lowest set bit is used.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `x` (and possibly of bytes above the lowest one).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// The little-endian word at `hay[i..i + 8]` (the caller checked the bounds).
#[inline]
fn word(hay: &[u8], i: usize) -> u64 {
    match hay.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        Some(a) => u64::from_le_bytes(a),
        None => 0,
    }
}

/// The first index of a byte whose mask bit `matches` sets, 16 bytes per step, then 8, then
/// one by one.
#[inline]
fn first(hay: &[u8], matches: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let n = hay.len();
    let mut i = 0;
    while i + 16 <= n {
        let (z0, z1) = (matches(word(hay, i)), matches(word(hay, i + 8)));
        if z0 | z1 != 0 {
            return Some(if z0 != 0 { i + (z0.trailing_zeros() / 8) as usize } else { i + 8 + (z1.trailing_zeros() / 8) as usize });
        }
        i += 16;
    }
    if i + 8 <= n {
        let z = matches(word(hay, i));
        if z != 0 {
            return Some(i + (z.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay.get(i..).unwrap_or_default().iter().position(|&c| byte(c)).map(|p| i + p)
}

/// The first index of `a` in `hay`.
pub fn find(hay: &[u8], a: u8) -> Option<usize> {
    let pa = LO * u64::from(a);
    first(hay, |w| zero_bytes(w ^ pa), |c| c == a)
}

/// The first index of `a` or `b` in `hay`.
pub fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pa, pb) = (LO * u64::from(a), LO * u64::from(b));
    first(hay, |w| zero_bytes(w ^ pa) | zero_bytes(w ^ pb), |c| c == a || c == b)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_the_first_match_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = b'\n';
                if at + 3 < len {
                    v[at + 3] = b'\r';
                }
                assert_eq!(find2(&v, b'\n', b'\r'), Some(at));
                assert_eq!(find2(&v, b'\r', b'\n'), Some(at));
                assert_eq!(find(&v, b'\n'), Some(at));
            }
            assert_eq!(find2(&vec![b'x'; len], b'\n', b'\r'), None);
        }
        // Bytes one above or below the needle, and 0x80 bytes, never match (no borrow leak).
        let v = [0x0b, 0x09, 0x80, 0xff, 0x00, 0x01, 0x0e, 0x0c, 0x0b, 0x0a];
        assert_eq!(find2(&v, b'\n', b'\r'), Some(9));
        assert_eq!(find(&[0x01u8, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00], 0x00), Some(1));
    }

    proptest! {
        #[test]
        fn agrees_with_a_byte_loop(hay in prop::collection::vec(any::<u8>(), 0..70), a in any::<u8>(), b in any::<u8>()) {
            prop_assert_eq!(find(&hay, a), hay.iter().position(|&c| c == a));
            prop_assert_eq!(find2(&hay, a, b), hay.iter().position(|&c| c == a || c == b));
        }
    }
}
