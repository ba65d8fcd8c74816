//! The codecs of a records section, and sealing a batch built anew: what
//! the two inflating paths share, `reencode` (v2 batches) and `legacy` (the
//! old message formats' compressed wrappers, up-converted to v2).
//!
//! Decompression is bounded: it stops at a limit (at most
//! [`MAX_INFLATED_BYTES`]), and a declared length is checked before anything
//! is allocated for it, so a corrupt section or a decompression bomb is an
//! error, never an unbounded allocation.
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

use super::view::{at, LOG_OVERHEAD};
use super::{BatchError, Compression, RecordBatch};

/// The most bytes one batch's records may decompress to. Far above what a
/// broker accepts in one batch with default settings (1 MiB), and low enough
/// that a decompression bomb cannot take the process's memory.
pub const MAX_INFLATED_BYTES: usize = 64 << 20;

/// zstd frames may ask for a window of up to 2^27 bytes (what Kafka's highest
/// compression level uses); larger windows are refused before allocating.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// First 8 bytes of xerial-framed snappy, followed by two 4-byte versions.
pub(super) const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Finishes a batch built in `out` (header and records, `batchLength` and
/// CRC not yet set): writes both and views the result.
pub(super) fn seal(mut out: BytesMut, base_offset: i64) -> Result<RecordBatch, BatchError> {
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::Corrupt {
            base_offset,
            reason: "the re-encoded batch is larger than 2 GiB".into(),
        })?;
    out[at::BATCH_LENGTH..at::BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[at::ATTRIBUTES..]);
    out[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::parse(out.freeze())
}

/// A codec as found in one batch: snappy in its two framings. Also the
/// codec of the old message formats' compressed wrappers (see `legacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    None,
    Gzip,
    XerialSnappy,
    RawSnappy,
    Lz4,
    Zstd,
}

/// Why a records section did not inflate.
#[derive(Debug)]
pub(super) enum InflateError {
    /// It holds more than the limit.
    TooLarge,
    /// It is not valid for its codec: why.
    Invalid(String),
}

impl Codec {
    pub(super) fn of(compression: Compression, body: &[u8]) -> Self {
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
    pub(super) fn inflate(self, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, InflateError> {
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
    pub(super) fn deflate(self, records: &[u8], out: &mut BytesMut) -> Result<(), String> {
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

impl InflateError {
    /// The batch error for the batch at `base_offset`, inflated with `limit`.
    pub(super) fn at(self, base_offset: i64, limit: usize) -> BatchError {
        match self {
            InflateError::TooLarge => BatchError::InflatedTooLarge { base_offset, limit },
            InflateError::Invalid(reason) => BatchError::Corrupt {
                base_offset,
                reason,
            },
        }
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
