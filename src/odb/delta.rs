//! Applying git delta instructions (gitformat-pack "Deltified representation").

/// A delta that cannot be applied (what is wrong with it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt delta: {0}")]
pub struct DeltaError(pub &'static str);

fn varint(d: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *d.get(*pos).ok_or(DeltaError("truncated size"))?;
        *pos += 1;
        if shift > 63 {
            return Err(DeltaError("size overflow"));
        }
        v |= ((b & 0x7f) as u64) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// Sizes of the base and of the result, as written at the start of a delta.
pub fn sizes(delta: &[u8]) -> Result<(u64, u64), DeltaError> {
    let mut pos = 0;
    Ok((varint(delta, &mut pos)?, varint(delta, &mut pos)?))
}

/// The result size of a stored (zlib-compressed) delta, inflating only its first bytes.
pub fn result_size_of_compressed(compressed: &[u8]) -> Option<u64> {
    let mut head = [0u8; 32];
    let n = crate::odb::with_inflater(|z| {
        let _ = z.decompress(compressed, &mut head, flate2::FlushDecompress::None);
        usize::try_from(z.total_out()).ok()
    })?
    .min(head.len());
    sizes(&head[..n]).ok().map(|(_, result)| result)
}

/// Apply `delta` to `base`, producing the target object.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut pos = 0;
    let base_size = varint(delta, &mut pos)?;
    let result_size = varint(delta, &mut pos)?;
    if base_size != base.len() as u64 {
        return Err(DeltaError("base size mismatch"));
    }
    if result_size > (1 << 40) {
        return Err(DeltaError("result too large"));
    }
    // The declared size is untrusted: reserve at most 64 MiB up front and grow from there.
    let mut out = Vec::with_capacity(result_size.min(64 << 20) as usize);
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset = 0u64;
            let mut size = 0u64;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    offset |=
                        (*delta.get(pos).ok_or(DeltaError("truncated copy"))? as u64) << (8 * i);
                    pos += 1;
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    size |=
                        (*delta.get(pos).ok_or(DeltaError("truncated copy"))? as u64) << (8 * i);
                    pos += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let end = offset
                .checked_add(size)
                .ok_or(DeltaError("copy overflow"))?;
            let src = base
                .get(offset as usize..end as usize)
                .ok_or(DeltaError("copy out of range"))?;
            out.extend_from_slice(src);
        } else if op != 0 {
            let src = delta
                .get(pos..pos + op as usize)
                .ok_or(DeltaError("truncated insert"))?;
            out.extend_from_slice(src);
            pos += op as usize;
        } else {
            return Err(DeltaError("reserved opcode 0"));
        }
        if out.len() as u64 > result_size {
            return Err(DeltaError("result larger than declared"));
        }
    }
    if out.len() as u64 != result_size {
        return Err(DeltaError("result size mismatch"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_size_from_compressed_prefix() {
        let mut d = vec![0x80 | 0x2c, 0x01]; // base size 172
        d.extend_from_slice(&[0x80 | 0x10, 0x80 | 0x02, 0x03]); // result size 0x3 << 14 | 2 << 7 | 16
        d.extend_from_slice(&[0x05, b'h', b'e', b'l', b'l', b'o']);
        d.extend(std::iter::repeat_n(0x7fu8, 4000));
        let z = crate::odb::deflate(&d);
        let want = (0x3u64 << 14) | (2 << 7) | 0x10;
        assert_eq!(result_size_of_compressed(&z), Some(want));
        assert_eq!(result_size_of_compressed(b"not zlib"), None);
    }

    #[test]
    fn copy_and_insert() {
        let base = b"hello world";
        // base 11, result 11: copy 0..6 ("hello "), insert "there"
        let delta = [11, 11, 0x80 | 0x10, 6, 5, b't', b'h', b'e', b'r', b'e'];
        assert_eq!(apply(base, &delta).unwrap(), b"hello there");
        assert_eq!(sizes(&delta).unwrap(), (11, 11));
        assert!(apply(b"short", &delta).is_err());
        assert!(apply(base, &[11, 11, 0]).is_err());
        assert!(apply(base, &[11, 3, 0x91, 20, 5]).is_err());
        // A huge declared result must fail cleanly, not abort on allocation.
        let huge = [0x00, 0xcd, 0xcc, 0xcd, 0xcd, 0xcd, 0x0b, 0x00, 0x00];
        assert!(apply(b"", &huge).is_err());
    }
}
