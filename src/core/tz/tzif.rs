//! A TZif file's footer and listed transitions (RFC 8536, versions 2 and later): what the
//! zone table's generator (`examples/tz_table.rs`) embeds, and what the jiff comparison tests
//! check it against. Native tooling only: never in the filter.

/// `(footer, last transition)`: the POSIX TZ string of the file's last line, and the Unix
/// second of its last listed transition (None when it lists none). None for a file that is
/// not TZif version 2 or later.
/// The six counts of the TZif header at `at` (isutcnt, isstdcnt, leapcnt, timecnt, typecnt,
/// charcnt). None for a file that is not TZif version 2 or later, or too short.
fn counts(data: &[u8], at: usize) -> Option<[usize; 6]> {
    if data.len() < 44 || &data[..4] != b"TZif" || data[4] < b'2' {
        return None;
    }
    let mut c = [0usize; 6];
    for (i, c) in c.iter_mut().enumerate() {
        let b = data.get(at + 20 + 4 * i..at + 24 + 4 * i)?;
        *c = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    }
    Some(c)
}

pub fn read(data: &[u8]) -> Option<(String, Option<i64>)> {
    let counts = |at: usize| counts(data, at);
    // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
    let [isut, isstd, leap, time, typ, chars] = counts(0)?;
    let v1 = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
    let h2 = 44 + v1;
    let [isut, isstd, leap, time, typ, chars] = counts(h2)?;
    let body = h2 + 44;
    let last = (time > 0)
        .then(|| {
            let b = data.get(body + (time - 1) * 8..body + time * 8)?;
            Some(i64::from_be_bytes(b.try_into().ok()?))
        })
        .flatten();
    let end = body + time * 9 + typ * 6 + chars + leap * 12 + isstd + isut;
    let rest = data.get(end..)?;
    let footer = rest.strip_prefix(b"\n")?;
    let footer = &footer[..footer.iter().position(|&b| b == b'\n')?];
    Some((String::from_utf8(footer.to_vec()).ok()?, last))
}

/// Every transition the file lists (version 2+ data): `(Unix second, UTC offset from then
/// on)`, ascending, with the offset before the first (time type 0). None for a file that is
/// not TZif version 2 or later.
pub fn transitions(data: &[u8]) -> Option<(Vec<(i64, i32)>, i32)> {
    let counts = |at: usize| counts(data, at);
    let [isut, isstd, leap, time, typ, chars] = counts(0)?;
    let h2 = 44 + time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
    let [_, _, _, time, typ, _] = counts(h2)?;
    let body = h2 + 44;
    let utoff = |ty: usize| -> Option<i32> {
        let b = data.get(body + time * 9 + ty * 6..body + time * 9 + ty * 6 + 4)?;
        Some(i32::from_be_bytes(b.try_into().ok()?))
    };
    if typ == 0 {
        return None;
    }
    let mut list = Vec::with_capacity(time);
    for i in 0..time {
        let at = i64::from_be_bytes(data.get(body + i * 8..body + i * 8 + 8)?.try_into().ok()?);
        let ty = usize::from(*data.get(body + time * 8 + i)?);
        list.push((at, utoff(ty)?));
    }
    Some((list, utoff(0)?))
}
