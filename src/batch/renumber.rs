//! Renumbering compacted batches: the exception path where the mirror
//! *inflates* a batch.
//!
//! Everywhere else a batch is forwarded deflated (see the module above): its
//! records stay compressed and opaque. Log compaction breaks that for one kind
//! of batch. The cleaner removes records but keeps the batch's offset range,
//! so a cleaned batch can hold fewer records than offsets
//! (`recordsCount != lastOffsetDelta + 1`). A broker refuses such a batch in a
//! Produce request ("Inconsistent batch offset range"), so it cannot be
//! forwarded as it is.
//!
//! [`renumber`] re-encodes it. It decompresses the records section with the
//! batch's own codec, walks each record's varint fields (length, attributes,
//! timestampDelta, offsetDelta, then key, value and headers, only checked),
//! rewrites the offsetDelta to the record's index, copies every other byte as
//! it is, recompresses with the same codec and writes a header with
//! `lastOffsetDelta = count - 1` and a fresh CRC. Records are never decoded
//! into a map-based model: Kafka allows repeated header names, and they must
//! arrive as they left, byte for byte. Only offsets change: the target assigns
//! its own anyway, so consumers see the same keys, values, headers and
//! timestamps, in the same order.
//!
//! This costs a decompression and a compression per batch, so it is counted
//! and only taken for batches that need it. Every length read from the input
//! is checked before it is used, and decompression stops at
//! [`MAX_INFLATED_BYTES`], so a corrupt batch or a decompression bomb is a
//! [`BatchError`], never a panic or an unbounded allocation.
//!
//! Codecs as Kafka writes them:
//! - gzip: one or more gzip members (Java's `GZIPOutputStream`, librdkafka);
//! - snappy: Java clients write xerial framing (a 16-byte header, then
//!   length-prefixed raw blocks), librdkafka writes one raw snappy block;
//!   both are read, and the output keeps the input's framing;
//! - lz4: the LZ4 frame format;
//! - zstd: one or more zstd frames.
//!
//! Compression reuses `kafka_protocol::compression`'s compressors. Its
//! decompressors are not used: they grow their output without a bound.

use std::borrow::Cow;
use std::io::Read;

use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use super::view::{at, read_varint, read_varlong, HEADER_LEN, LOG_OVERHEAD};
use super::{BatchError, Compression, RecordBatch};

/// The most bytes one batch's records may decompress to. Far above what a
/// broker accepts in one batch with default settings (1 MiB), and low enough
/// that a decompression bomb cannot take the process's memory.
pub const MAX_INFLATED_BYTES: usize = 64 << 20;

/// zstd frames may ask for a window of up to 2^27 bytes (what Kafka's highest
/// compression level uses); larger windows are refused before allocating.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// First 8 bytes of xerial-framed snappy, followed by two 4-byte versions.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Re-encodes `batch` so that its records are numbered `0..n-1`, as
/// [`renumber_with_limit`] with [`MAX_INFLATED_BYTES`].
pub fn renumber(batch: &RecordBatch) -> Result<RecordBatch, BatchError> {
    renumber_with_limit(batch, MAX_INFLATED_BYTES)
}

/// Re-encodes `batch` with the same records renumbered `0..n-1`.
///
/// The result has the same base offset, partition leader epoch, attributes
/// (so the same codec), base and max timestamps, producer fields and record
/// count as `batch`; `lastOffsetDelta` becomes `count - 1`, `batchLength` and
/// the CRC are recomputed. Each record keeps every byte but its offsetDelta
/// (and its length prefix, when the shorter offsetDelta shortens it).
///
/// Verify the CRC of `batch` first: the new CRC would otherwise bless a batch
/// damaged in transit.
///
/// Fails with [`BatchError::InflatedTooLarge`] when the records decompress
/// to more than `max_inflated_bytes`, and with [`BatchError::Corrupt`] when
/// they do not decompress, or do not hold `records_count` well-formed records
/// with increasing offsets inside the batch's range.
pub fn renumber_with_limit(
    batch: &RecordBatch,
    max_inflated_bytes: usize,
) -> Result<RecordBatch, BatchError> {
    let base_offset = batch.base_offset();
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset,
        reason,
    };
    let count = batch.records_count();
    if count <= 0 {
        return Err(corrupt(format!(
            "a batch of {count} records has nothing to renumber"
        )));
    }
    let source = batch.as_bytes();
    let body = &source[HEADER_LEN..];
    let codec = Codec::of(batch.compression(), body);
    let records = codec
        .inflate(body, max_inflated_bytes)
        .map_err(|e| match e {
            InflateError::TooLarge => BatchError::InflatedTooLarge {
                base_offset,
                limit: max_inflated_bytes,
            },
            InflateError::Invalid(reason) => corrupt(reason),
        })?;
    // Each new offsetDelta is at most the old one, so the output never grows.
    let mut renumbered = Vec::with_capacity(records.len());
    renumber_records(&records, count, batch.last_offset_delta(), &mut renumbered)
        .map_err(corrupt)?;
    drop(records);

    let mut out = BytesMut::with_capacity(HEADER_LEN + renumbered.len());
    out.put_slice(&source[..HEADER_LEN]);
    codec
        .deflate(&renumbered, &mut out)
        .map_err(|e| corrupt(format!("recompressing the renumbered records failed: {e}")))?;
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| corrupt("the renumbered batch is larger than 2 GiB".into()))?;
    out[at::BATCH_LENGTH..at::BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(count - 1).to_be_bytes());
    let crc = crc32c::crc32c(&out[at::ATTRIBUTES..]);
    out[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::parse(out.freeze())
}

/// Writes the `count` records of `records` into `out` with offsetDelta `i`
/// for the i-th record, everything else copied.
fn renumber_records(
    records: &[u8],
    count: i32,
    last_offset_delta: i32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut rest = records;
    let mut previous_delta: Option<i32> = None;
    for index in 0..count {
        let fail = |reason: &str| format!("record {index} of {count}: {reason}");
        let length = read_varint(&mut rest).map_err(fail)?;
        let length = usize::try_from(length).map_err(|_| fail("negative record length"))?;
        let record = rest
            .get(..length)
            .ok_or_else(|| fail("record runs past the records section"))?;
        rest = &rest[length..];

        let (&attributes, mut fields) = record
            .split_first()
            .ok_or_else(|| fail("record ends before its attributes"))?;
        let timestamp_start = fields;
        read_varlong(&mut fields).map_err(fail)?;
        let timestamp_delta = &timestamp_start[..timestamp_start.len() - fields.len()];
        let offset_delta = read_varint(&mut fields).map_err(fail)?;
        let in_order = match previous_delta {
            None => offset_delta >= 0,
            Some(previous) => offset_delta > previous,
        };
        if !in_order || offset_delta > last_offset_delta {
            return Err(fail(&format!(
                "offsetDelta {offset_delta} is out of order or outside the batch's range 0..={last_offset_delta}"
            )));
        }
        previous_delta = Some(offset_delta);
        check_record_tail(fields).map_err(fail)?;

        let new_length = 1 + timestamp_delta.len() + varint_len(index) + fields.len();
        // new_length <= length, which came from an i32.
        write_varint(out, new_length as i32);
        out.push(attributes);
        out.extend_from_slice(timestamp_delta);
        write_varint(out, index);
        out.extend_from_slice(fields);
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the last of the batch's {count} records",
            rest.len()
        ));
    }
    Ok(())
}

/// Checks that key, value and headers fill the rest of a record exactly.
fn check_record_tail(mut rest: &[u8]) -> Result<(), &'static str> {
    skip_nullable_bytes(&mut rest, "key runs past the record")?;
    skip_nullable_bytes(&mut rest, "value runs past the record")?;
    let headers = read_varint(&mut rest)?;
    if headers < 0 {
        return Err("negative header count");
    }
    for _ in 0..headers {
        let key_length = read_varint(&mut rest)?;
        let key_length = usize::try_from(key_length).map_err(|_| "null header key")?;
        rest = rest
            .get(key_length..)
            .ok_or("header key runs past the record")?;
        skip_nullable_bytes(&mut rest, "header value runs past the record")?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err("bytes follow the record's last header")
    }
}

/// Skips a varint length (-1 for null) and that many bytes.
fn skip_nullable_bytes(rest: &mut &[u8], past_end: &'static str) -> Result<(), &'static str> {
    let length = read_varint(rest)?;
    if length < -1 {
        return Err("length below -1");
    }
    if let Ok(length) = usize::try_from(length) {
        *rest = rest.get(length..).ok_or(past_end)?;
    }
    Ok(())
}

/// Writes a zigzag varint (Kafka's `varint`).
fn write_varint(out: &mut Vec<u8>, value: i32) {
    let mut raw = ((value << 1) ^ (value >> 31)) as u32;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn varint_len(value: i32) -> usize {
    let raw = ((value << 1) ^ (value >> 31)) as u32;
    (32 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

/// A codec as found in one batch: snappy in its two framings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    None,
    Gzip,
    XerialSnappy,
    RawSnappy,
    Lz4,
    Zstd,
}

#[derive(Debug)]
enum InflateError {
    TooLarge,
    Invalid(String),
}

impl Codec {
    fn of(compression: Compression, body: &[u8]) -> Self {
        match compression {
            Compression::None => Codec::None,
            Compression::Gzip => Codec::Gzip,
            // Like Java's SnappyInputStream: without the xerial header the
            // whole section is one raw block.
            Compression::Snappy
                if body.len() >= XERIAL_HEADER_LEN && body.starts_with(XERIAL_MAGIC) =>
            {
                Codec::XerialSnappy
            }
            Compression::Snappy => Codec::RawSnappy,
            Compression::Lz4 => Codec::Lz4,
            Compression::Zstd => Codec::Zstd,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::XerialSnappy => "snappy (xerial framing)",
            Codec::RawSnappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// The records section decompressed, at most `limit` bytes of it.
    fn inflate(self, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, InflateError> {
        self.inflate_unnamed(body, limit).map_err(|e| match e {
            InflateError::Invalid(reason) => InflateError::Invalid(format!(
                "records do not decompress as {}: {reason}",
                self.name()
            )),
            too_large => too_large,
        })
    }

    fn inflate_unnamed(self, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, InflateError> {
        let records = match self {
            Codec::None => return Ok(Cow::Borrowed(body)),
            Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(body), limit)?,
            Codec::Lz4 => read_bounded(lz4::Decoder::new(body).map_err(invalid)?, limit)?,
            Codec::Zstd => {
                let mut decoder =
                    zstd::stream::read::Decoder::with_buffer(body).map_err(invalid)?;
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(invalid)?;
                read_bounded(decoder, limit)?
            }
            Codec::RawSnappy => {
                let mut out = Vec::new();
                snappy_block(body, &mut out, limit)?;
                out
            }
            Codec::XerialSnappy => {
                let mut rest = &body[XERIAL_HEADER_LEN..];
                let mut out = Vec::new();
                while !rest.is_empty() {
                    let (length, after) = rest
                        .split_first_chunk::<4>()
                        .ok_or_else(|| invalid("a block length is cut off"))?;
                    let length = u32::from_be_bytes(*length) as usize;
                    let block = after
                        .get(..length)
                        .ok_or_else(|| invalid("a block runs past the records"))?;
                    rest = &after[length..];
                    snappy_block(block, &mut out, limit)?;
                }
                out
            }
        };
        Ok(Cow::Owned(records))
    }

    /// Appends `records` compressed with this codec to `out`.
    fn deflate(self, records: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let fill = |tmp: &mut BytesMut| {
            tmp.put_slice(records);
            Ok(())
        };
        let result = match self {
            Codec::None => {
                out.put_slice(records);
                Ok(())
            }
            Codec::Gzip => Gzip::compress(out, fill),
            Codec::XerialSnappy => Snappy::compress(out, fill),
            Codec::Lz4 => Lz4::compress(out, fill),
            Codec::Zstd => Zstd::compress(out, fill),
            Codec::RawSnappy => {
                let block = snap::raw::Encoder::new()
                    .compress_vec(records)
                    .map_err(|e| e.to_string())?;
                out.put_slice(&block);
                Ok(())
            }
        };
        result.map_err(|e| format!("{}: {e}", self.name()))
    }
}

fn invalid(e: impl std::fmt::Display) -> InflateError {
    InflateError::Invalid(e.to_string())
}

/// Reads `reader` to its end, refusing more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(invalid)?;
    if out.len() > limit {
        return Err(InflateError::TooLarge);
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its declared length
/// against what is left of `limit` before allocating.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
    let length = snap::raw::decompress_len(block).map_err(invalid)?;
    if length > limit.saturating_sub(out.len()) {
        return Err(InflateError::TooLarge);
    }
    let start = out.len();
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(invalid)?;
    if written != length {
        return Err(invalid(format!(
            "a block declares {length} bytes but holds {written}"
        )));
    }
    Ok(())
}
