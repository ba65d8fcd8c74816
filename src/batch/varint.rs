//! Kafka's zigzag varints: the `varint` (at most 5 bytes, an i32) and
//! `varlong` (at most 10 bytes, an i64) that every v2 record's lengths,
//! deltas and header counts are written in, as the protocol guide's
//! [record section](https://kafka.apache.org/documentation/#record) gives
//! them (the zigzag encoding of protocol buffers).
//!
//! Readers take a `&mut &[u8]` and advance it past what they read; a varint
//! that runs past the bytes or is longer than its type allows is an error,
//! never a panic.

/// Reads a zigzag varint of at most 5 bytes (Kafka's `varint`).
pub(super) fn read_varint(buf: &mut &[u8]) -> Result<i32, &'static str> {
    let raw = read_unsigned_varint(buf, 5)? as u32;
    Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
}

/// Reads a zigzag varint of at most 10 bytes (Kafka's `varlong`).
pub(super) fn read_varlong(buf: &mut &[u8]) -> Result<i64, &'static str> {
    let raw = read_unsigned_varint(buf, 10)?;
    Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
}

/// Writes a zigzag varint (Kafka's `varint`).
pub(super) fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_varlong(out, i64::from(value));
}

/// Writes a zigzag varint of an i64 (Kafka's `varlong`).
pub(super) fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Bytes [`write_varint`] takes for `value`.
pub(crate) fn varint_len(value: i32) -> usize {
    let raw = ((value << 1) ^ (value >> 31)) as u32;
    (32 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

fn read_unsigned_varint(buf: &mut &[u8], max_bytes: u32) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err("varint runs past the record");
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than its type allows")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Zigzag then base 128, low group first, as the record section gives.
    #[test]
    fn encodings_are_kafkas() {
        let cases: [(i32, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }

    #[test]
    fn varint_len_matches_the_encoding() {
        for value in [0, 1, -1, 63, 64, -65, 8191, 8192, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(varint_len(value), out.len(), "{value}");
            assert_eq!(read_varint(&mut &out[..]), Ok(value));
        }
    }

    proptest! {
        #[test]
        fn varlongs_round_trip(value in any::<i64>(), tail in any::<u8>()) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            out.push(tail);
            let mut rest = &out[..];
            prop_assert_eq!(read_varlong(&mut rest), Ok(value));
            prop_assert_eq!(rest, &[tail][..]);
        }
    }
}
