//! A TZif file's footer and last listed transition (RFC 8536, versions 2 and later): what the
//! zone table's generator (`examples/tz_table.rs`) embeds, and from when the footer alone
//! describes a zone (the jiff comparison tests). Native tooling only: never in the filter.

/// `(footer, last transition)`: the POSIX TZ string of the file's last line, and the Unix
/// second of its last listed transition (None when it lists none). None for a file that is
/// not TZif version 2 or later.
pub fn read(data: &[u8]) -> Option<(String, Option<i64>)> {
    if data.len() < 44 || &data[..4] != b"TZif" || data[4] < b'2' {
        return None;
    }
    let counts = |at: usize| -> Option<[usize; 6]> {
        let mut c = [0usize; 6];
        for (i, c) in c.iter_mut().enumerate() {
            let b = data.get(at + 20 + 4 * i..at + 24 + 4 * i)?;
            *c = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        }
        Some(c)
    };
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
