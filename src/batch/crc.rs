//! CRC-32C arithmetic that updates a batch's checksum after a header change
//! without reading the records again.
//!
//! A CRC is linear over GF(2): for two messages of equal length,
//! `crc(a) ^ crc(b) == raw(a ^ b)`, where `raw` is the CRC register with no
//! initial or final inversion. When only a few bytes near the start change,
//! `a ^ b` is those bytes' difference followed by zeros, and appending `n`
//! zero bytes to a raw CRC multiplies it by `x^(8n)` modulo the polynomial.
//! With a table of the powers needed, that is one to three multiplications
//! of 32 steps for a batch of any realistic size, against a pass over every
//! record byte (the method of zlib's `crc32_combine`, with a larger table).

/// The CRC-32C (Castagnoli) polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a * b` modulo the polynomial, both reflected (bit 31 is `x^0`).
/// Branch-free: the bits of `a` are random, and mispredicted branches would
/// cost more than the arithmetic.
const fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut i = 0;
    while i < 32 {
        product ^= b & 0u32.wrapping_sub((a >> (31 - i)) & 1);
        b = (b >> 1) ^ (POLY & 0u32.wrapping_sub(b & 1));
        i += 1;
    }
    product
}

/// `ZEROS[j][d]` appends `d * 256^j` zero bytes to a raw CRC: it is
/// `x^(8 * d * 256^j)` modulo the polynomial. Appending `n` zero bytes takes
/// one multiplication per non-zero byte of `n` (three for a 1 MiB batch).
const ZEROS: [[u32; 256]; 8] = {
    let mut table = [[0; 256]; 8];
    let mut step = 1u32 << 23; // x^8: one zero byte
    let mut j = 0;
    while j < 8 {
        table[j][0] = 1 << 31; // x^0
        let mut d = 1;
        while d < 256 {
            table[j][d] = multiply(table[j][d - 1], step);
            d += 1;
        }
        step = multiply(table[j][255], step);
        j += 1;
    }
    table
};

/// A raw CRC with `count` zero bytes appended.
fn append_zeros(raw: u32, count: usize) -> u32 {
    (count as u64)
        .to_le_bytes()
        .iter()
        .zip(&ZEROS)
        .filter(|(&digit, _)| digit != 0)
        .fold(raw, |raw, (&digit, powers)| {
            multiply(powers[usize::from(digit)], raw)
        })
}

/// The CRC-32C of a message whose bytes `old` were replaced by `new` (the
/// same length), given the message's CRC before (`crc`) and how many bytes
/// follow the replaced ones (`tail`). Bytes before them do not matter.
pub(super) fn patch(crc: u32, old: &[u8], new: &[u8], tail: usize) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    let mut difference = [0u8; 64];
    let mut raw = 0;
    for (old, new) in old.chunks(64).zip(new.chunks(64)) {
        let chunk = &mut difference[..old.len()];
        for ((d, o), n) in chunk.iter_mut().zip(old).zip(new) {
            *d = o ^ n;
        }
        // `crc32c_append` inverts on the way in and out; starting from an
        // inverted zero register and inverting the result gives the raw CRC.
        raw = !crc32c::crc32c_append(!raw, chunk);
    }
    crc ^ append_zeros(raw, tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tails whose lengths have three and four non-zero bytes, past what
    /// the property test reaches.
    #[test]
    fn patch_handles_long_tails() {
        for len in [70_000, (1 << 24) + 300] {
            let mut message = vec![0x5a; len];
            let before = crc32c::crc32c(&message);
            message[3..7].copy_from_slice(b"abcd");
            let patched = patch(before, &[0x5a; 4], b"abcd", len - 7);
            assert_eq!(patched, crc32c::crc32c(&message), "{len} bytes");
        }
    }

    proptest! {
        /// Patching equals recomputing, for any change at any place.
        #[test]
        fn patch_equals_a_full_pass(
            message in proptest::collection::vec(any::<u8>(), 1..5000),
            start in any::<prop::sample::Index>(),
            replacement in proptest::collection::vec(any::<u8>(), 1..100),
        ) {
            let start = start.index(message.len());
            let len = replacement.len().min(message.len() - start);
            let mut changed = message.clone();
            changed[start..start + len].copy_from_slice(&replacement[..len]);
            let tail = message.len() - start - len;
            let patched = patch(
                crc32c::crc32c(&message),
                &message[start..start + len],
                &changed[start..start + len],
                tail,
            );
            prop_assert_eq!(patched, crc32c::crc32c(&changed));
        }
    }
}
