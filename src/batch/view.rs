//! [`RecordBatch`]: one v2 record batch viewed in place, and its rewrite for
//! producing.

use std::fmt;
use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::BatchError;

/// Byte offsets of the v2 header fields (see the table in `kafka-notes.md`).
mod at {
    pub(super) const BASE_OFFSET: usize = 0;
    pub(super) const BATCH_LENGTH: usize = 8;
    pub(super) const PARTITION_LEADER_EPOCH: usize = 12;
    pub(super) const MAGIC: usize = 16;
    pub(super) const CRC: usize = 17;
    pub(super) const ATTRIBUTES: usize = 21;
    pub(super) const LAST_OFFSET_DELTA: usize = 23;
    pub(super) const BASE_TIMESTAMP: usize = 27;
    pub(super) const MAX_TIMESTAMP: usize = 35;
    pub(super) const PRODUCER_ID: usize = 43;
    pub(super) const PRODUCER_EPOCH: usize = 51;
    pub(super) const BASE_SEQUENCE: usize = 53;
    pub(super) const RECORDS_COUNT: usize = 57;
    pub(super) const RECORDS: usize = 61;
}

/// Size of the v2 batch header; records start right after it.
pub(super) const HEADER_LEN: usize = at::RECORDS;
/// Bytes before and including `batchLength`; `batchLength` counts the rest.
pub(super) const LOG_OVERHEAD: usize = at::PARTITION_LEADER_EPOCH;
/// Smallest valid `batchLength`: a header with no records.
pub(super) const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only magic this module views.
const MAGIC_V2: i8 = 2;

const CODEC_MASK: i16 = 0b111;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// Compression codec of a batch's records (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip.
    Gzip,
    /// Snappy (Kafka's xerial framing).
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard; producing it needs Produce v7+.
    Zstd,
}

impl Compression {
    fn from_codec(codec: u8) -> Option<Self> {
        Some(match codec {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }
}

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producing client.
    CreateTime,
    /// Set by the broker on append; every record's timestamp is then the
    /// batch's `maxTimestamp`.
    LogAppendTime,
}

/// Kind of a control batch's marker, from its first record's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlType {
    /// End of an aborted transaction.
    Abort,
    /// End of a committed transaction.
    Commit,
    /// A type this module does not know (Kafka has added some, e.g. for KRaft).
    Other(i16),
}

/// The producer fields `rewrite_for_produce` writes into a batch header.
///
/// The destination broker checks these against its own producer state, so
/// the source's values can never be forwarded as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// Producer id from InitProducerId on the destination, or -1.
    pub producer_id: i64,
    /// Epoch that came with that producer id, or -1.
    pub producer_epoch: i16,
    /// Sequence of the batch's first record for this producer and
    /// partition, or -1 without a producer id.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// No producer: the batch is produced non-idempotently.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// A v2 record batch viewed in place: header fields are read from the bytes
/// on demand and the records stay opaque (still compressed).
///
/// Cloning is cheap: it shares the underlying `Bytes`.
#[derive(Clone)]
pub struct RecordBatch {
    /// Exactly one batch: `12 + batchLength` bytes.
    bytes: Bytes,
    /// Decoded once by `parse`, which refuses unknown codecs.
    compression: Compression,
    /// CRC-32C of the records (bytes 61..), filled by the first CRC pass so
    /// that `rewrite_for_produce` can recompute the CRC over the header only.
    body_crc: OnceLock<u32>,
}

impl RecordBatch {
    /// Views `bytes` as one v2 batch.
    ///
    /// Checks only what every accessor relies on (the header is there, magic
    /// 2, `batchLength` matches the slice, a known codec); the CRC is checked
    /// by [`verify_crc`](Self::verify_crc), which costs a pass over the data.
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        if bytes.len() <= at::MAGIC {
            return Err(BatchError::TooShort {
                len: bytes.len(),
                min: HEADER_LEN,
            });
        }
        let base_offset = (&bytes[at::BASE_OFFSET..]).get_i64();
        // Magic first: old-format entries are legitimately shorter than a v2
        // header, and "unsupported magic" is what the caller must act on.
        let magic = bytes[at::MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { base_offset, magic });
        }
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                len: bytes.len(),
                min: HEADER_LEN,
            });
        }
        let batch_length = (&bytes[at::BATCH_LENGTH..]).get_i32();
        let expected = usize::try_from(batch_length)
            .ok()
            .and_then(|len| len.checked_add(LOG_OVERHEAD));
        if expected != Some(bytes.len()) {
            return Err(BatchError::Corrupt {
                base_offset,
                reason: format!(
                    "batchLength {batch_length} does not match the {} bytes after the length field",
                    bytes.len() - LOG_OVERHEAD
                ),
            });
        }
        let codec = ((&bytes[at::ATTRIBUTES..]).get_i16() & CODEC_MASK) as u8;
        let Some(compression) = Compression::from_codec(codec) else {
            return Err(BatchError::UnknownCompression { base_offset, codec });
        };
        Ok(Self {
            bytes,
            compression,
            body_crc: OnceLock::new(),
        })
    }

    /// Offset of the first record in the source partition.
    pub fn base_offset(&self) -> i64 {
        self.i64_at(at::BASE_OFFSET)
    }

    /// Bytes after the `batchLength` field.
    pub fn batch_length(&self) -> i32 {
        self.i32_at(at::BATCH_LENGTH)
    }

    /// Leader epoch the source broker stamped on append.
    pub fn partition_leader_epoch(&self) -> i32 {
        self.i32_at(at::PARTITION_LEADER_EPOCH)
    }

    /// Always 2: `parse` refuses anything else.
    pub fn magic(&self) -> i8 {
        self.bytes[at::MAGIC] as i8
    }

    /// The CRC-32C stored in the header.
    pub fn crc(&self) -> u32 {
        (&self.bytes[at::CRC..]).get_u32()
    }

    /// The raw attributes field.
    pub fn attributes(&self) -> i16 {
        self.i16_at(at::ATTRIBUTES)
    }

    /// Codec of the records.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Meaning of the timestamps.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds transaction markers rather than data.
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    /// Whether compaction set a delete horizon in `baseTimestamp`.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_BIT != 0
    }

    /// Offset of the last record relative to `base_offset`.
    ///
    /// After compaction this can exceed `records_count - 1`.
    pub fn last_offset_delta(&self) -> i32 {
        self.i32_at(at::LAST_OFFSET_DELTA)
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        // Wrapping: a corrupt header must not panic the mirror.
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// Where the next fetch starts: after the batch's offset range, which
    /// compaction may have left with gaps.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Timestamp of the first record (or the delete horizon, see
    /// [`has_delete_horizon`](Self::has_delete_horizon)).
    pub fn base_timestamp(&self) -> i64 {
        self.i64_at(at::BASE_TIMESTAMP)
    }

    /// Largest timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        self.i64_at(at::MAX_TIMESTAMP)
    }

    /// Source producer id, -1 when none.
    pub fn producer_id(&self) -> i64 {
        self.i64_at(at::PRODUCER_ID)
    }

    /// Source producer epoch, -1 when none.
    pub fn producer_epoch(&self) -> i16 {
        self.i16_at(at::PRODUCER_EPOCH)
    }

    /// Source sequence of the first record, -1 when none.
    pub fn base_sequence(&self) -> i32 {
        self.i32_at(at::BASE_SEQUENCE)
    }

    /// Number of records as stored in the header.
    pub fn records_count(&self) -> i32 {
        self.i32_at(at::RECORDS_COUNT)
    }

    /// Size of the whole batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a batch has at least its header. Here for clippy's
    /// `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The batch exactly as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Checks the stored CRC-32C against bytes 21..end.
    ///
    /// Remembers the records' share of the CRC so that a later
    /// [`rewrite_for_produce`](Self::rewrite_for_produce) does not read the
    /// records again.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = self.crc_with_header(&self.bytes[at::ATTRIBUTES..HEADER_LEN]);
        let stored = self.crc();
        if computed == stored {
            Ok(())
        } else {
            Err(BatchError::CrcMismatch {
                base_offset: self.base_offset(),
                stored,
                computed,
            })
        }
    }

    /// A copy of the batch ready for a Produce request to the destination:
    /// `baseOffset` 0 (the broker refuses anything else), the transactional
    /// bit cleared, the producer fields from `stamp`, and the CRC recomputed.
    ///
    /// `partitionLeaderEpoch` is kept as it is: it lies outside the CRC and
    /// the destination broker overwrites it on append, so touching it would
    /// only widen the rewrite. The records are copied, never decompressed.
    ///
    /// Call [`verify_crc`](Self::verify_crc) first: the new CRC covers the
    /// records as they are, so a batch damaged in transit would otherwise
    /// leave with a valid CRC.
    pub fn rewrite_for_produce(&self, stamp: ProducerStamp) -> Bytes {
        let mut out = BytesMut::with_capacity(self.bytes.len());
        out.put_i64(0);
        out.put_slice(&self.bytes[at::BATCH_LENGTH..at::CRC]);
        out.put_u32(0); // CRC, filled in below
        out.put_i16(self.attributes() & !TRANSACTIONAL_BIT);
        out.put_slice(&self.bytes[at::LAST_OFFSET_DELTA..at::PRODUCER_ID]);
        out.put_i64(stamp.producer_id);
        out.put_i16(stamp.producer_epoch);
        out.put_i32(stamp.base_sequence);
        out.put_slice(&self.bytes[at::RECORDS_COUNT..]);

        let crc = self.crc_with_header(&out[at::ATTRIBUTES..HEADER_LEN]);
        out[at::CRC..at::ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }

    /// Kind of marker in a control batch; `None` for a data batch, or for a
    /// control batch that compaction emptied (as Kafka's consumer treats it).
    ///
    /// Reads only the first record's key (int16 version, int16 type). Control
    /// batches are never compressed, so the record is read in place.
    pub fn control_type(&self) -> Result<Option<ControlType>, BatchError> {
        if !self.is_control() || self.records_count() <= 0 {
            return Ok(None);
        }
        let corrupt = |reason: &str| BatchError::Corrupt {
            base_offset: self.base_offset(),
            reason: format!("control record: {reason}"),
        };
        if self.compression() != Compression::None {
            return Err(corrupt("control batch is compressed"));
        }
        let key = first_record_key(&self.bytes[HEADER_LEN..]).map_err(corrupt)?;
        let Some(mut key) = key else {
            return Err(corrupt("null key"));
        };
        if key.len() < 4 {
            return Err(corrupt("key shorter than 4 bytes"));
        }
        let version = key.get_i16();
        if version < 0 {
            return Err(corrupt("negative key version"));
        }
        Ok(Some(match key.get_i16() {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        }))
    }

    /// CRC-32C of `header` (the 40 bytes 21..61) followed by the records,
    /// with the records' CRC computed at most once per batch.
    fn crc_with_header(&self, header: &[u8]) -> u32 {
        let body = &self.bytes[HEADER_LEN..];
        let body_crc = *self.body_crc.get_or_init(|| crc32c::crc32c(body));
        crc32c::crc32c_combine(crc32c::crc32c(header), body_crc, body.len())
    }

    fn i16_at(&self, at: usize) -> i16 {
        (&self.bytes[at..]).get_i16()
    }

    fn i32_at(&self, at: usize) -> i32 {
        (&self.bytes[at..]).get_i32()
    }

    fn i64_at(&self, at: usize) -> i64 {
        (&self.bytes[at..]).get_i64()
    }
}

/// Short on purpose: the derived form would print every byte of the batch.
impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("records_count", &self.records_count())
            .field("attributes", &self.attributes())
            .field("producer_id", &self.producer_id())
            .field("len", &self.len())
            .finish()
    }
}

/// Key of the first record in uncompressed `records`: `Ok(None)` for a
/// null key. Every length is checked against the record's own bounds.
fn first_record_key(records: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut buf = records;
    let length = read_varint(&mut buf)?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    let mut record = buf.get(..length).ok_or("record runs past the batch")?;
    if !record.has_remaining() {
        return Err("record ends before its attributes");
    }
    record.advance(1); // attributes, unused
    read_varlong(&mut record)?; // timestampDelta
    read_varint(&mut record)?; // offsetDelta
    let key_length = read_varint(&mut record)?;
    if key_length < 0 {
        return Ok(None);
    }
    let key_length = key_length as usize;
    record
        .get(..key_length)
        .map(Some)
        .ok_or("key runs past the record")
}

/// Reads a zigzag varint of at most 5 bytes (Kafka's `varint`).
fn read_varint(buf: &mut &[u8]) -> Result<i32, &'static str> {
    let raw = read_unsigned_varint(buf, 5)? as u32;
    Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
}

/// Reads a zigzag varint of at most 10 bytes (Kafka's `varlong`).
fn read_varlong(buf: &mut &[u8]) -> Result<i64, &'static str> {
    let raw = read_unsigned_varint(buf, 10)?;
    Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
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
