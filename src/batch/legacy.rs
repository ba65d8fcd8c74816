//! Up-converting the old message formats (magic 0 and 1) to v2 batches: the
//! other path where the mirror inflates records.
//!
//! Kafka 4.0 dropped the old formats ([KIP-724]) and refuses them in a
//! Produce request, but a 3.x source in ZooKeeper mode at an old
//! `inter.broker.protocol.version` still stores them, and its Fetch returns
//! them as stored (brokers down-convert for old consumers, never up). So a
//! run of such entries, split off a Fetch response by
//! [`split_batches`](super::split_batches) as [`LegacyMessages`], is decoded
//! here and rebuilt as v2 batches.
//!
//! An entry is `offset int64, size int32`, then a message: `crc uint32`
//! (CRC-32/IEEE of the rest, checked), `magic int8`, `attributes int8`
//! (bits 0-2 codec: none, gzip, snappy, lz4; bit 3 LogAppendTime, magic 1
//! only), `timestamp int64` (magic 1 only), then key and value as
//! `int32 length` (-1 for null) and bytes. A compressed message is a
//! *wrapper*: its value is a compressed message set of uncompressed inner
//! messages. Its offset is the last inner one's. Inner offsets are absolute in
//! magic 0 and relative in magic 1 (`wrapper offset - last relative +
//! relative`). A magic 1 LogAppendTime wrapper's timestamp is every inner
//! record's timestamp.
//!
//! What the v2 batches hold:
//! - the same offsets: a batch covers consecutive source offsets only
//!   (offset delta = source offset - base offset), so a gap left by
//!   compaction starts a new batch and no target refuses it
//!   ("Inconsistent batch offset range"). Uncompressed messages with
//!   consecutive offsets are grouped into one batch of up to
//!   [`MAX_RUN_SOURCE_BYTES`] of source entries, since one batch per message
//!   would cost a Produce round trip each; a wrapper's messages make their own
//!   batch with the wrapper's codec (snappy keeps its framing);
//! - the same keys and values, null ones (tombstones) included; no headers,
//!   which the old formats cannot hold;
//! - timestamps as CreateTime: a magic 1 record's own timestamp, a
//!   LogAppendTime wrapper's for its inner records (what the source's
//!   consumers saw, as [`reencode`](super::reencode) does for v2), and -1 (no
//!   timestamp) for magic 0, which has none. Kafka's own up-conversion does the
//!   same, and brokers exempt -1 from the timestamp range checks;
//! - no producer id, epoch or sequence: the pipeline stamps its own.
//!
//! Magic 0 lz4 wrappers carry a wrong frame descriptor checksum (Kafka
//! computed it over the frame's magic number too, [KAFKA-3160], and keeps
//! writing it that way for magic 0); Kafka's reader ignores it, and here it
//! is recomputed before decoding.
//!
//! Every length read is checked against the bytes that hold it, and each
//! wrapper decompresses through the bounded codecs of `codec`, so corrupt
//! input is a [`BatchError`] naming the offset, never a panic or an unbounded
//! allocation.
//!
//! [KIP-724]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-724%3A+Drop+support+for+message+formats+v0+and+v1
//! [KAFKA-3160]: https://issues.apache.org/jira/browse/KAFKA-3160

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{seal, Codec, MAX_INFLATED_BYTES};
use super::varint::{write_varint, write_varlong};
use super::view::{HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};
use super::{BatchError, Compression, RecordBatch};

/// The most source bytes of uncompressed messages grouped into one v2 batch.
/// A v2 record is at most a few bytes larger than the same old message, so
/// the batch stays well below a broker's default 1 MiB `max.message.bytes`.
pub const MAX_RUN_SOURCE_BYTES: usize = 512 << 10;

/// The timestamp of a record that has none (every magic 0 record).
pub const NO_TIMESTAMP: i64 = -1;

/// Where the magic byte sits: after offset, size and crc.
const MAGIC_AT: usize = LOG_OVERHEAD + 4;
const CODEC_MASK: u8 = 0b111;
const LOG_APPEND_TIME_BIT: u8 = 1 << 3;

/// A run of complete old-format (magic 0 or 1) entries, as fetched.
#[derive(Clone)]
pub struct LegacyMessages {
    bytes: Bytes,
}

impl LegacyMessages {
    /// `bytes` holds at least one entry's offset and size.
    pub(super) fn new(bytes: Bytes) -> Self {
        debug_assert!(bytes.len() >= LOG_OVERHEAD);
        LegacyMessages { bytes }
    }

    /// Offset of the first entry.
    pub fn base_offset(&self) -> i64 {
        i64_at(&self.bytes, 0)
    }

    /// The magic byte of the first entry (0 or 1).
    pub fn magic(&self) -> i8 {
        self.bytes.get(MAGIC_AT).map_or(-1, |&m| m as i8)
    }

    /// The entries as fetched.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// [`up_convert_with_limit`](Self::up_convert_with_limit) with
    /// [`MAX_INFLATED_BYTES`] per wrapper.
    pub fn up_convert(&self) -> Result<Vec<RecordBatch>, BatchError> {
        self.up_convert_with_limit(MAX_INFLATED_BYTES)
    }

    /// The entries as v2 batches, in offset order (see the module docs).
    ///
    /// Fails with [`BatchError::CrcMismatch`] for a damaged message,
    /// [`BatchError::InflatedTooLarge`] when a wrapper decompresses to more
    /// than `max_inflated_bytes`, and [`BatchError::Corrupt`] for anything
    /// else that does not hold together (lengths, offsets, codecs).
    pub fn up_convert_with_limit(
        &self,
        max_inflated_bytes: usize,
    ) -> Result<Vec<RecordBatch>, BatchError> {
        let mut batches = Vec::new();
        let mut run: Vec<Record<'_>> = Vec::new();
        let mut run_bytes = 0;
        let mut previous: Option<i64> = None;
        let mut rest = &self.bytes[..];
        while !rest.is_empty() {
            let before = rest.len();
            let (offset, message) = read_entry(&mut rest, previous.unwrap_or(-1))?;
            let entry_bytes = before - rest.len();
            check_order(offset, previous, offset)?;
            if message.codec() == 0 {
                let follows = run.last().is_some_and(|last| offset - last.offset == 1);
                if !follows || run_bytes + entry_bytes > MAX_RUN_SOURCE_BYTES {
                    push_runs(&mut batches, Compression::None, Codec::None, &run)?;
                    run.clear();
                    run_bytes = 0;
                }
                run.push(Record {
                    offset,
                    timestamp: message.timestamp,
                    key: message.key,
                    value: message.value,
                });
                run_bytes += entry_bytes;
            } else {
                push_runs(&mut batches, Compression::None, Codec::None, &run)?;
                run.clear();
                run_bytes = 0;
                up_convert_wrapper(&mut batches, offset, &message, previous, max_inflated_bytes)?;
            }
            previous = Some(offset);
        }
        push_runs(&mut batches, Compression::None, Codec::None, &run)?;
        Ok(batches)
    }
}

impl fmt::Debug for LegacyMessages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyMessages")
            .field("base_offset", &self.base_offset())
            .field("magic", &self.magic())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The length of the complete old-format entry at the start of `rest`:
/// `None` when `rest` starts with something else (a v2 batch) or with a cut
/// entry. Only the offset, size and magic are read; the rest is checked when
/// the entry is up-converted.
pub(super) fn entry_len(rest: &[u8]) -> Result<Option<usize>, BatchError> {
    if rest.len() <= MAGIC_AT || !matches!(rest[MAGIC_AT], 0 | 1) {
        return Ok(None);
    }
    let size = i32_at(rest, 8);
    let size = usize::try_from(size).map_err(|_| BatchError::Corrupt {
        base_offset: i64_at(rest, 0),
        reason: format!("negative message size {size}"),
    })?;
    let total = size + LOG_OVERHEAD;
    Ok((total <= rest.len()).then_some(total))
}

/// One old-format message, borrowed from the bytes it was read from.
#[derive(Debug)]
struct Message<'a> {
    magic: i8,
    attributes: u8,
    /// [`NO_TIMESTAMP`] for magic 0.
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

impl Message<'_> {
    fn codec(&self) -> u8 {
        self.attributes & CODEC_MASK
    }
}

/// A record of a v2 batch being built.
#[derive(Debug)]
struct Record<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Reads the entry at the start of `rest` and moves past it. `at` names the
/// position in errors until the entry's own offset is known.
fn read_entry<'a>(rest: &mut &'a [u8], at: i64) -> Result<(i64, Message<'a>), BatchError> {
    let corrupt = |base_offset, reason: String| BatchError::Corrupt {
        base_offset,
        reason,
    };
    let Some((header, after)) = rest.split_first_chunk::<LOG_OVERHEAD>() else {
        return Err(corrupt(
            at,
            format!(
                "{} bytes after this offset are not a whole entry",
                rest.len()
            ),
        ));
    };
    let offset = i64_at(header, 0);
    let size = i32_at(header, 8);
    let message = usize::try_from(size)
        .ok()
        .and_then(|size| after.get(..size))
        .ok_or_else(|| {
            corrupt(
                offset,
                format!(
                    "message size {size} does not fit the {} bytes left",
                    after.len()
                ),
            )
        })?;
    *rest = &after[message.len()..];
    Ok((offset, parse_message(offset, message)?))
}

/// Parses and CRC-checks one message (what follows an entry's size).
fn parse_message(offset: i64, message: &[u8]) -> Result<Message<'_>, BatchError> {
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset: offset,
        reason,
    };
    let Some((crc, body)) = message.split_first_chunk::<4>() else {
        return Err(corrupt(format!(
            "a message of {} bytes has no room for its CRC",
            message.len()
        )));
    };
    let stored = u32::from_be_bytes(*crc);
    let mut hasher = flate2::Crc::new();
    hasher.update(body);
    let computed = hasher.sum();
    if stored != computed {
        return Err(BatchError::CrcMismatch {
            base_offset: offset,
            stored,
            computed,
        });
    }
    let [magic, attributes, fields @ ..] = body else {
        return Err(corrupt("the message ends before its attributes".into()));
    };
    let magic = *magic as i8;
    let mut fields = fields;
    let timestamp = match magic {
        0 => NO_TIMESTAMP,
        1 => {
            let (timestamp, after) = fields
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("the message ends before its timestamp".into()))?;
            fields = after;
            i64::from_be_bytes(*timestamp)
        }
        other => return Err(corrupt(format!("magic {other} inside old-format messages"))),
    };
    let key = read_nullable(&mut fields).map_err(|e| corrupt(format!("key: {e}")))?;
    let value = read_nullable(&mut fields).map_err(|e| corrupt(format!("value: {e}")))?;
    if !fields.is_empty() {
        return Err(corrupt(format!(
            "{} bytes follow the message's value",
            fields.len()
        )));
    }
    Ok(Message {
        magic,
        attributes: *attributes,
        timestamp,
        key,
        value,
    })
}

/// Reads an `int32` length (-1 for null) and that many bytes.
fn read_nullable<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    let (length, after) = rest
        .split_first_chunk::<4>()
        .ok_or("the length is cut off")?;
    let length = i32::from_be_bytes(*length);
    if length == -1 {
        *rest = after;
        return Ok(None);
    }
    let bytes = usize::try_from(length)
        .ok()
        .and_then(|length| after.get(..length))
        .ok_or_else(|| {
            format!(
                "length {length} does not fit the {} bytes left",
                after.len()
            )
        })?;
    *rest = &after[bytes.len()..];
    Ok(Some(bytes))
}

/// Offsets must be non-negative and strictly increasing; `at` names the entry.
fn check_order(offset: i64, previous: Option<i64>, at: i64) -> Result<(), BatchError> {
    if offset < 0 || previous.is_some_and(|previous| offset <= previous) {
        return Err(BatchError::Corrupt {
            base_offset: at,
            reason: format!(
                "offset {offset} is negative or does not follow offset {}",
                previous.unwrap_or(-1)
            ),
        });
    }
    Ok(())
}

/// Decompresses a wrapper and pushes its inner messages as v2 batches with
/// the wrapper's codec.
fn up_convert_wrapper(
    batches: &mut Vec<RecordBatch>,
    wrapper_offset: i64,
    wrapper: &Message<'_>,
    previous: Option<i64>,
    max_inflated_bytes: usize,
) -> Result<(), BatchError> {
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset: wrapper_offset,
        reason,
    };
    // zstd came with magic 2: it is no codec of the old formats.
    let compression = match Compression::from_codec(wrapper.codec()) {
        Some(compression) if compression != Compression::Zstd => compression,
        _ => {
            return Err(BatchError::UnknownCompression {
                base_offset: wrapper_offset,
                codec: wrapper.codec(),
            })
        }
    };
    let value = wrapper
        .value
        .ok_or_else(|| corrupt("a compressed wrapper with a null value".into()))?;
    let fixed;
    let compressed = if compression == Compression::Lz4 && wrapper.magic == 0 {
        fixed = lz4_with_frame_checksum(value).map_err(corrupt)?;
        &fixed[..]
    } else {
        value
    };
    let codec = Codec::of(compression, compressed);
    let inflated = codec
        .inflate(compressed, max_inflated_bytes)
        .map_err(|e| e.at(wrapper_offset, max_inflated_bytes))?;

    let mut inner = Vec::new();
    let mut rest = &inflated[..];
    while !rest.is_empty() {
        let (offset, message) = read_entry(&mut rest, wrapper_offset)
            .map_err(|e| inner_error(e, wrapper_offset, inner.len()))?;
        if message.magic != wrapper.magic || message.codec() != 0 {
            return Err(corrupt(format!(
                "inner message {} has magic {} and codec {} in a magic {} wrapper",
                inner.len(),
                message.magic,
                message.codec(),
                wrapper.magic
            )));
        }
        inner.push((offset, message));
    }
    let last_relative = match inner.last() {
        Some(&(offset, _)) => offset,
        None => return Err(corrupt("a compressed wrapper holds no messages".into())),
    };
    let append_time = wrapper.magic == 1 && wrapper.attributes & LOG_APPEND_TIME_BIT != 0;
    let mut records = Vec::with_capacity(inner.len());
    let mut previous = previous;
    for (offset, message) in inner {
        let offset = if wrapper.magic == 0 {
            offset
        } else {
            wrapper_offset
                .checked_sub(last_relative)
                .and_then(|base| base.checked_add(offset))
                .ok_or_else(|| corrupt(format!("relative offset {offset} overflows")))?
        };
        check_order(offset, previous, wrapper_offset)?;
        previous = Some(offset);
        records.push(Record {
            offset,
            timestamp: if append_time {
                wrapper.timestamp
            } else {
                message.timestamp
            },
            key: message.key,
            value: message.value,
        });
    }
    if previous != Some(wrapper_offset) {
        return Err(corrupt(format!(
            "the wrapper's last inner message has offset {}, not the wrapper's",
            previous.unwrap_or(-1)
        )));
    }
    push_runs(batches, compression, codec, &records)
}

/// Names the wrapper and the inner message in an error from inside it.
fn inner_error(e: BatchError, wrapper_offset: i64, index: usize) -> BatchError {
    match e {
        BatchError::Corrupt { reason, .. } => BatchError::Corrupt {
            base_offset: wrapper_offset,
            reason: format!("inner message {index}: {reason}"),
        },
        BatchError::CrcMismatch {
            stored, computed, ..
        } => BatchError::CrcMismatch {
            base_offset: wrapper_offset,
            stored,
            computed,
        },
        other => other,
    }
}

/// Pushes `records` (increasing offsets) as v2 batches, one per run of
/// consecutive offsets.
fn push_runs(
    batches: &mut Vec<RecordBatch>,
    compression: Compression,
    codec: Codec,
    records: &[Record<'_>],
) -> Result<(), BatchError> {
    let mut start = 0;
    for end in 1..records.len() + 1 {
        if end == records.len() || records[end].offset - records[end - 1].offset != 1 {
            batches.push(build_batch(compression, codec, &records[start..end])?);
            start = end;
        }
    }
    Ok(())
}

/// One v2 batch of `records` (non-empty, consecutive offsets), CreateTime,
/// without producer id.
fn build_batch(
    compression: Compression,
    codec: Codec,
    records: &[Record<'_>],
) -> Result<RecordBatch, BatchError> {
    let Some(first) = records.first() else {
        return Err(BatchError::Corrupt {
            base_offset: -1,
            reason: "an up-converted batch without records".into(),
        });
    };
    let base_offset = first.offset;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .fold(first.timestamp, i64::max);
    let too_large = || BatchError::Corrupt {
        base_offset,
        reason: "a record larger than 2 GiB".into(),
    };
    let mut plain = Vec::new();
    let mut record = Vec::new();
    for (delta, r) in records.iter().enumerate() {
        record.clear();
        record.push(0); // attributes
        write_varlong(&mut record, r.timestamp.wrapping_sub(first.timestamp));
        write_varint(&mut record, i32::try_from(delta).map_err(|_| too_large())?);
        for field in [r.key, r.value] {
            match field {
                None => write_varint(&mut record, -1),
                Some(bytes) => {
                    write_varint(
                        &mut record,
                        i32::try_from(bytes.len()).map_err(|_| too_large())?,
                    );
                    record.extend_from_slice(bytes);
                }
            }
        }
        write_varint(&mut record, 0); // no headers
        write_varint(
            &mut plain,
            i32::try_from(record.len()).map_err(|_| too_large())?,
        );
        plain.extend_from_slice(&record);
    }
    let count = i32::try_from(records.len()).map_err(|_| too_large())?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + plain.len());
    out.put_i64(base_offset);
    out.put_i32(0); // batchLength, set by seal
    out.put_i32(-1); // partitionLeaderEpoch: the target broker sets its own
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, set by seal
    out.put_i16(i16::from(compression.codec())); // CreateTime, not transactional
    out.put_i32(count - 1);
    out.put_i64(first.timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(-1); // producerId
    out.put_i16(-1); // producerEpoch
    out.put_i32(-1); // baseSequence
    out.put_i32(count);
    codec
        .deflate(&plain, &mut out)
        .map_err(|e| BatchError::Corrupt {
            base_offset,
            reason: format!("compressing the up-converted records failed: {e}"),
        })?;
    seal(out, base_offset)
}

/// A copy of lz4 `frame` with the frame descriptor checksum a decoder
/// expects: the second byte of XXH32 over the descriptor (FLG, BD and the
/// optional content size and dictionary id).
fn lz4_with_frame_checksum(frame: &[u8]) -> Result<Vec<u8>, String> {
    let flags = *frame.get(4).ok_or("an lz4 frame cut off in its header")?;
    let content_size = if flags & 0x08 != 0 { 8 } else { 0 };
    let dictionary_id = if flags & 0x01 != 0 { 4 } else { 0 };
    let checksum_at = 4 + 2 + content_size + dictionary_id;
    if frame.len() <= checksum_at {
        return Err("an lz4 frame cut off in its header".into());
    }
    let mut fixed = frame.to_vec();
    fixed[checksum_at] = (xxh32_short(&frame[4..checksum_at]) >> 8) as u8;
    Ok(fixed)
}

/// XXH32 with seed 0 of an input shorter than 16 bytes (a frame descriptor
/// is at most 14), per the xxHash specification.
fn xxh32_short(input: &[u8]) -> u32 {
    const PRIME1: u32 = 0x9E37_79B1;
    const PRIME2: u32 = 0x85EB_CA77;
    const PRIME3: u32 = 0xC2B2_AE3D;
    const PRIME4: u32 = 0x27D4_EB2F;
    const PRIME5: u32 = 0x1656_67B1;
    debug_assert!(input.len() < 16);
    let mut hash = PRIME5.wrapping_add(input.len() as u32);
    let mut words = input.chunks_exact(4);
    for word in words.by_ref() {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        hash = hash
            .wrapping_add(word.wrapping_mul(PRIME3))
            .rotate_left(17)
            .wrapping_mul(PRIME4);
    }
    for &byte in words.remainder() {
        hash = hash
            .wrapping_add(u32::from(byte).wrapping_mul(PRIME5))
            .rotate_left(11)
            .wrapping_mul(PRIME1);
    }
    hash ^= hash >> 15;
    hash = hash.wrapping_mul(PRIME2);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(PRIME3);
    hash ^ (hash >> 16)
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(field)
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(field)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy};
    use kafka_protocol::records::{self as kp, RecordBatchDecoder};
    use proptest::prelude::*;

    use super::*;

    /// One record as a test writes it and expects it back.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Expected {
        offset: i64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    }

    /// How a wrapper's value is compressed (test side).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum TestCodec {
        Gzip,
        XerialSnappy,
        RawSnappy,
        Lz4,
    }

    const TEST_CODECS: [TestCodec; 4] = [
        TestCodec::Gzip,
        TestCodec::XerialSnappy,
        TestCodec::RawSnappy,
        TestCodec::Lz4,
    ];

    impl TestCodec {
        fn id(self) -> u8 {
            match self {
                TestCodec::Gzip => 1,
                TestCodec::XerialSnappy | TestCodec::RawSnappy => 2,
                TestCodec::Lz4 => 3,
            }
        }

        /// Compressed as Kafka writes it; magic 0 lz4 with the broken
        /// descriptor checksum of KAFKA-3160 (computed from the frame start).
        fn compress(self, magic: i8, plain: &[u8]) -> Vec<u8> {
            let mut out = BytesMut::new();
            let fill = |tmp: &mut BytesMut| {
                tmp.extend_from_slice(plain);
                Ok(())
            };
            match self {
                TestCodec::Gzip => Gzip::compress(&mut out, fill).unwrap(),
                TestCodec::XerialSnappy => Snappy::compress(&mut out, fill).unwrap(),
                TestCodec::Lz4 => Lz4::compress(&mut out, fill).unwrap(),
                TestCodec::RawSnappy => {
                    return snap::raw::Encoder::new().compress_vec(plain).unwrap()
                }
            }
            let mut out = out.to_vec();
            if self == TestCodec::Lz4 && magic == 0 {
                let checksum_at = 6; // no content size, no dictionary id
                assert_eq!(out[4] & 0x09, 0);
                out[checksum_at] = (xxh32_short(&out[..checksum_at]) >> 8) as u8;
            }
            out
        }
    }

    /// A message (what follows offset and size), CRC filled in.
    fn message(
        magic: i8,
        attributes: u8,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = vec![magic as u8, attributes];
        if magic == 1 {
            body.extend_from_slice(&timestamp.to_be_bytes());
        }
        for field in [key, value] {
            match field {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        let mut message = crc.sum().to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        message
    }

    fn entry(offset: i64, message: &[u8]) -> Vec<u8> {
        let mut entry = offset.to_be_bytes().to_vec();
        entry.extend_from_slice(&(message.len() as i32).to_be_bytes());
        entry.extend_from_slice(message);
        entry
    }

    fn plain_entry(magic: i8, record: &Expected) -> Vec<u8> {
        let message = message(
            magic,
            0,
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
        );
        entry(record.offset, &message)
    }

    /// A compressed wrapper of `records` as a broker writes it: inner
    /// offsets absolute (magic 0) or relative to the first (magic 1, so a
    /// compaction gap stays a gap), wrapper offset the last inner one's,
    /// wrapper timestamp the max (or the append time).
    fn wrapper(
        magic: i8,
        codec: TestCodec,
        append_time: Option<i64>,
        records: &[Expected],
    ) -> Vec<u8> {
        let first = records[0].offset;
        let mut inner = Vec::new();
        for record in records {
            let offset = if magic == 0 {
                record.offset
            } else {
                record.offset - first
            };
            let mut plain = record.clone();
            plain.offset = offset;
            inner.extend_from_slice(&plain_entry(magic, &plain));
        }
        let last = records.last().unwrap().offset;
        let max = records.iter().map(|r| r.timestamp).max().unwrap();
        let attributes = codec.id()
            | if append_time.is_some() {
                LOG_APPEND_TIME_BIT
            } else {
                0
            };
        let value = codec.compress(magic, &inner);
        entry(
            last,
            &message(
                magic,
                attributes,
                append_time.unwrap_or(max),
                None,
                Some(&value),
            ),
        )
    }

    fn record(offset: i64, timestamp: i64, i: usize) -> Expected {
        Expected {
            offset,
            timestamp,
            key: (i % 3 != 2).then(|| format!("key-{i}").into_bytes()),
            value: (i % 4 != 3).then(|| vec![b'v'; i * 13 % 200]),
        }
    }

    fn up_convert(entries: Vec<u8>) -> Result<Vec<RecordBatch>, BatchError> {
        LegacyMessages::new(entries.into()).up_convert()
    }

    /// Decodes `batches` with kafka-protocol (written independently of this
    /// module), checking the batch-level fields on the way.
    fn decoded(batches: &[RecordBatch]) -> Vec<Expected> {
        let mut all = Vec::new();
        for batch in batches {
            batch.verify_crc().unwrap();
            assert_eq!(batch.producer_id(), -1);
            assert_eq!(batch.producer_epoch(), -1);
            assert_eq!(batch.base_sequence(), -1);
            assert!(!batch.is_transactional());
            assert!(!batch.has_offset_gaps(), "{batch:?}");
            assert_eq!(
                batch.timestamp_type(),
                super::super::TimestampType::CreateTime
            );
            let mut bytes = batch.as_bytes().clone();
            let set = RecordBatchDecoder::decode(&mut bytes).expect("kafka-protocol decodes it");
            assert!(bytes.is_empty());
            let records: Vec<kp::Record> = set.records;
            assert_eq!(records.len() as i32, batch.records_count());
            assert_eq!(
                batch.max_timestamp(),
                records.iter().map(|r| r.timestamp).max().unwrap()
            );
            for r in records {
                assert!(r.headers.is_empty());
                assert_eq!(r.timestamp_type, kp::TimestampType::Creation);
                all.push(Expected {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(|b| b.to_vec()),
                    value: r.value.map(|b| b.to_vec()),
                });
            }
        }
        all
    }

    #[test]
    fn consecutive_plain_messages_become_one_batch() {
        for magic in [0i8, 1] {
            let records: Vec<Expected> = (0..20)
                .map(|i| {
                    let timestamp = if magic == 0 {
                        NO_TIMESTAMP
                    } else {
                        1_700_000_000_000 + (i as i64 * 7) % 50
                    };
                    record(500 + i as i64, timestamp, i)
                })
                .collect();
            let entries = records.iter().flat_map(|r| plain_entry(magic, r)).collect();
            let batches = up_convert(entries).unwrap();
            assert_eq!(batches.len(), 1, "magic {magic}");
            assert_eq!(batches[0].base_offset(), 500);
            assert_eq!(batches[0].compression(), Compression::None);
            assert_eq!(decoded(&batches), records, "magic {magic}");
        }
    }

    #[test]
    fn wrappers_keep_their_codec_offsets_and_timestamps() {
        for magic in [0i8, 1] {
            for codec in TEST_CODECS {
                for append_time in [None, Some(1_800_000_000_000)] {
                    let at = |i: usize| {
                        if magic == 0 {
                            NO_TIMESTAMP
                        } else {
                            1_700_000_000_000 - i as i64
                        }
                    };
                    let first: Vec<Expected> =
                        (0..5).map(|i| record(40 + i as i64, at(i), i)).collect();
                    let second: Vec<Expected> =
                        (5..9).map(|i| record(40 + i as i64, at(i), i)).collect();
                    let mut entries = wrapper(magic, codec, append_time, &first);
                    entries.extend(wrapper(magic, codec, append_time, &second));
                    let batches = up_convert(entries)
                        .unwrap_or_else(|e| panic!("magic {magic} {codec:?}: {e}"));
                    assert_eq!(batches.len(), 2);
                    let compression = Compression::from_codec(codec.id()).unwrap();
                    assert!(batches.iter().all(|b| b.compression() == compression));
                    let mut expected: Vec<Expected> = first.into_iter().chain(second).collect();
                    if let (1, Some(append_time)) = (magic, append_time) {
                        for r in &mut expected {
                            r.timestamp = append_time;
                        }
                    }
                    assert_eq!(
                        decoded(&batches),
                        expected,
                        "magic {magic} {codec:?} {append_time:?}"
                    );
                    // snappy keeps its framing.
                    let xerial = batches[0].as_bytes()[HEADER_LEN..].starts_with(b"\x82SNAPPY\x00");
                    assert_eq!(xerial, codec == TestCodec::XerialSnappy);
                }
            }
        }
    }

    #[test]
    fn gaps_left_by_compaction_start_new_batches() {
        let offsets = [10i64, 11, 13, 14, 15, 20];
        let records: Vec<Expected> = offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| record(o, 1_000 + i as i64, i))
            .collect();
        let plain: Vec<u8> = records.iter().flat_map(|r| plain_entry(1, r)).collect();
        let batches = up_convert(plain).unwrap();
        let bases: Vec<i64> = batches.iter().map(RecordBatch::base_offset).collect();
        assert_eq!(bases, [10, 13, 20]);
        assert_eq!(decoded(&batches), records);

        let compressed = wrapper(1, TestCodec::Gzip, None, &records);
        let batches = up_convert(compressed).unwrap();
        let bases: Vec<i64> = batches.iter().map(RecordBatch::base_offset).collect();
        assert_eq!(bases, [10, 13, 20]);
        assert_eq!(decoded(&batches), records);
    }

    #[test]
    fn plain_runs_stop_at_a_wrapper_and_at_the_size_bound() {
        let big = vec![b'x'; MAX_RUN_SOURCE_BYTES / 3];
        let mut records: Vec<Expected> = (0..4)
            .map(|i| Expected {
                offset: i,
                timestamp: 5,
                key: None,
                value: Some(big.clone()),
            })
            .collect();
        let mut entries: Vec<u8> = records.iter().flat_map(|r| plain_entry(1, r)).collect();
        let wrapped = [record(4, 6, 4), record(5, 6, 5)];
        entries.extend(wrapper(1, TestCodec::Lz4, None, &wrapped));
        let after = record(6, 7, 6);
        entries.extend(plain_entry(1, &after));
        records.extend(wrapped);
        records.push(after);
        let batches = up_convert(entries).unwrap();
        let bases: Vec<i64> = batches.iter().map(RecordBatch::base_offset).collect();
        // Two big messages fill a run; the wrapper is a batch of its own.
        assert_eq!(bases, [0, 2, 4, 6]);
        assert!(batches.iter().all(|b| b.len() < 1 << 20));
        assert_eq!(decoded(&batches), records);
    }

    #[test]
    fn xxh32_matches_the_reference_and_liblz4() {
        assert_eq!(xxh32_short(b""), 0x02CC_5D05);
        assert_eq!(xxh32_short(b"a"), 0x550D_7456);
        assert_eq!(xxh32_short(b"abc"), 0x32D1_53FF);
        // The descriptor checksum liblz4 wrote is what is recomputed.
        let frame = TestCodec::Lz4.compress(1, b"some records");
        assert_eq!(lz4_with_frame_checksum(&frame).unwrap(), frame);
        // Without the fix, liblz4 refuses Kafka's magic 0 frames.
        let broken = TestCodec::Lz4.compress(0, b"some records");
        assert_ne!(broken, frame);
        assert!(Codec::Lz4.inflate(&broken, 1 << 20).is_err());
        let fixed = lz4_with_frame_checksum(&broken).unwrap();
        assert_eq!(
            &Codec::Lz4.inflate(&fixed, 1 << 20).unwrap()[..],
            b"some records"
        );
    }

    #[test]
    fn damage_is_named_by_offset() {
        let records: Vec<Expected> = (0..3)
            .map(|i| record(70 + i as i64, 9, i as usize))
            .collect();
        let good: Vec<u8> = records.iter().flat_map(|r| plain_entry(1, r)).collect();

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            up_convert(flipped),
            Err(BatchError::CrcMismatch {
                base_offset: 72,
                ..
            })
        ));

        let mut backwards = plain_entry(1, &records[1]);
        backwards.extend(plain_entry(1, &records[0]));
        assert!(matches!(
            up_convert(backwards),
            Err(BatchError::Corrupt {
                base_offset: 70,
                ..
            })
        ));

        let zstd = entry(5, &message(1, 4, 0, None, Some(b"zstd")));
        assert!(matches!(
            up_convert(zstd),
            Err(BatchError::UnknownCompression {
                base_offset: 5,
                codec: 4
            })
        ));

        // A wrapper whose offset is not its last inner message's.
        let mut moved = wrapper(0, TestCodec::Gzip, None, &records);
        moved[..8].copy_from_slice(&99i64.to_be_bytes());
        assert!(matches!(
            up_convert(moved),
            Err(BatchError::Corrupt {
                base_offset: 99,
                ..
            })
        ));

        let bomb = vec![0u8; 1 << 20];
        let bomb = wrapper(
            1,
            TestCodec::Gzip,
            None,
            &[Expected {
                offset: 0,
                timestamp: 0,
                key: None,
                value: Some(bomb),
            }],
        );
        assert!(matches!(
            LegacyMessages::new(bomb.into()).up_convert_with_limit(64 << 10),
            Err(BatchError::InflatedTooLarge {
                base_offset: 0,
                limit: 65_536
            })
        ));
    }

    /// A generated message: offset step (1, or more for a gap), key, value,
    /// timestamp.
    type GeneratedMessage = (u8, Option<Vec<u8>>, Option<Vec<u8>>, i64);

    /// Groups of a generated message set: plain messages (no codec), or a
    /// wrapper.
    fn groups() -> impl Strategy<Value = Vec<(Option<TestCodec>, Vec<GeneratedMessage>)>> {
        let codec = prop::option::of(prop::sample::select(TEST_CODECS.to_vec()));
        let message = (
            0u8..3, // offset step: 1, or a gap
            prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            -1i64..4_000_000_000_000,
        );
        prop::collection::vec((codec, prop::collection::vec(message, 1..8)), 1..6)
    }

    proptest! {
        #[test]
        fn every_record_survives_up_conversion(
            magic in 0i8..2,
            start in 0i64..1 << 40,
            groups in groups(),
        ) {
            let mut entries = Vec::new();
            let mut expected = Vec::new();
            let mut next = start;
            for (codec, messages) in groups {
                let records: Vec<Expected> = messages
                    .into_iter()
                    .map(|(step, key, value, timestamp)| {
                        let offset = next + i64::from(step.saturating_sub(1));
                        next = offset + 1;
                        Expected {
                            offset,
                            timestamp: if magic == 0 { NO_TIMESTAMP } else { timestamp },
                            key,
                            value,
                        }
                    })
                    .collect();
                match codec {
                    None => entries.extend(records.iter().flat_map(|r| plain_entry(magic, r))),
                    Some(codec) => entries.extend(wrapper(magic, codec, None, &records)),
                }
                expected.extend(records);
            }
            let batches = up_convert(entries).unwrap();
            prop_assert_eq!(decoded(&batches), expected);
        }

        #[test]
        fn damaged_input_is_an_error_never_a_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            codec in prop::sample::select(TEST_CODECS.to_vec()),
            magic in 0i8..2,
        ) {
            let records: Vec<Expected> = (0..6).map(|i| record(i as i64, 3, i)).collect();
            let mut entries = wrapper(magic, codec, None, &records[..3]);
            entries.extend(records[3..].iter().flat_map(|r| plain_entry(magic, r)));
            for (at, value) in flips {
                let at = at.index(entries.len());
                entries[at] = value;
            }
            // Keep only what the split would hand over: complete entries.
            let mut len = 0;
            while let Ok(Some(entry)) = entry_len(&entries[len..]) {
                len += entry;
            }
            if len > 0 {
                entries.truncate(len);
                if let Ok(batches) = LegacyMessages::new(entries.into()).up_convert_with_limit(1 << 20) {
                    for batch in batches {
                        prop_assert!(batch.verify_crc().is_ok());
                    }
                }
            }
        }
    }
}
