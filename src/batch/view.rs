//! [`RecordBatch`]: one v2 record batch viewed in place, and the header it
//! is produced with.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::varint::{read_varint, read_varlong};
use super::{crc, BatchError};

/// Byte offsets of the v2 header fields, in the order of the protocol guide's
/// [record batch section](https://kafka.apache.org/documentation/#recordbatch).
pub(super) mod at {
    pub(in crate::batch) const BASE_OFFSET: usize = 0;
    pub(in crate::batch) const BATCH_LENGTH: usize = 8;
    pub(in crate::batch) const PARTITION_LEADER_EPOCH: usize = 12;
    pub(in crate::batch) const MAGIC: usize = 16;
    pub(in crate::batch) const CRC: usize = 17;
    pub(in crate::batch) const ATTRIBUTES: usize = 21;
    pub(in crate::batch) const LAST_OFFSET_DELTA: usize = 23;
    pub(in crate::batch) const BASE_TIMESTAMP: usize = 27;
    pub(in crate::batch) const MAX_TIMESTAMP: usize = 35;
    pub(in crate::batch) const PRODUCER_ID: usize = 43;
    pub(in crate::batch) const PRODUCER_EPOCH: usize = 51;
    pub(in crate::batch) const BASE_SEQUENCE: usize = 53;
    pub(in crate::batch) const RECORDS_COUNT: usize = 57;
    pub(in crate::batch) const RECORDS: usize = 61;
}

/// Size of the v2 batch header; records start right after it.
pub(super) const HEADER_LEN: usize = at::RECORDS;
/// Bytes before and including `batchLength`; `batchLength` counts the rest.
pub(super) const LOG_OVERHEAD: usize = at::PARTITION_LEADER_EPOCH;
/// Smallest valid `batchLength`: a header with no records.
pub(super) const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only magic this module views.
pub(super) const MAGIC_V2: i8 = 2;

const CODEC_MASK: i16 = 0b111;
pub(super) const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
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
    pub(super) fn from_codec(codec: u8) -> Option<Self> {
        Some(match codec {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }

    /// The id in attribute bits 0-2.
    pub(super) fn codec(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
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

/// The producer fields [`RecordBatch::produce_header`] writes into a batch header.
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
    /// Whether the batch is part of the producer's open transaction (the
    /// attributes' transactional bit): only kafka-mirror's own transactions
    /// set it, never the source's.
    pub transactional: bool,
}

impl ProducerStamp {
    /// No producer: the batch is produced non-idempotently.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// Kafka's sequence arithmetic: the sequence `records` records after
/// `sequence`; sequences wrap from i32::MAX to 0.
pub(crate) fn increment_sequence(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
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
        check_offset_range(&bytes, base_offset)?;
        Ok(Self { bytes, compression })
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

    /// Whether compaction removed records but kept their offsets: the batch
    /// holds records yet fewer than its offset range. The destination refuses
    /// such a batch as it is ("Inconsistent batch offset range");
    /// [`reencode`](super::reencode) re-encodes it.
    pub fn has_offset_gaps(&self) -> bool {
        let count = self.records_count();
        count > 0 && i64::from(count) != i64::from(self.last_offset_delta()) + 1
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        // `parse` checked that the range fits.
        self.base_offset() + i64::from(self.last_offset_delta())
    }

    /// Where the next fetch starts: after the batch's offset range, which
    /// compaction may have left with gaps.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
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

    /// Copies the batch into memory of its own, releasing the buffer it was
    /// a slice of (a Fetch response that its other batches no longer need).
    pub fn detach(&mut self) {
        self.bytes = Bytes::copy_from_slice(&self.bytes);
    }

    /// Checks the stored CRC-32C against bytes 21..end.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = crc32c::crc32c(&self.bytes[at::ATTRIBUTES..]);
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

    /// The 61-byte header the batch takes in a Produce request to the
    /// destination, in front of its records as they are: `baseOffset` 0 (the
    /// broker refuses anything else), the transactional bit that of `stamp` (the
    /// source's transactions are never forwarded as such), the
    /// producer fields from `stamp`, and the CRC updated.
    ///
    /// `partitionLeaderEpoch` is kept as it is: it lies outside the CRC and
    /// the destination broker overwrites it on append, so touching it would
    /// only widen the rewrite.
    ///
    /// The new CRC is the stored one patched for the changed header bytes
    /// ([`crc::patch`]), so the records are not read again. Damage keeps
    /// showing: a batch whose stored CRC did not match its bytes leaves with
    /// a CRC that does not match either, and the target broker, which checks
    /// every batch it appends, refuses it as `CORRUPT_MESSAGE`.
    pub fn produce_header(&self, stamp: ProducerStamp) -> Bytes {
        let old = &self.bytes[..HEADER_LEN];
        let mut header = BytesMut::with_capacity(HEADER_LEN);
        header.put_i64(0);
        header.put_slice(&old[at::BATCH_LENGTH..at::CRC]);
        header.put_u32(0); // CRC, filled in below
        let attributes = self.attributes() & !TRANSACTIONAL_BIT;
        header.put_i16(if stamp.transactional {
            attributes | TRANSACTIONAL_BIT
        } else {
            attributes
        });
        header.put_slice(&old[at::LAST_OFFSET_DELTA..at::PRODUCER_ID]);
        header.put_i64(stamp.producer_id);
        header.put_i16(stamp.producer_epoch);
        header.put_i32(stamp.base_sequence);
        header.put_slice(&old[at::RECORDS_COUNT..]);
        let crc = crc::patch(
            self.crc(),
            &old[at::ATTRIBUTES..],
            &header[at::ATTRIBUTES..],
            self.bytes.len() - HEADER_LEN,
        );
        header[at::CRC..at::ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
        header.freeze()
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

/// Checks the header fields that offsets and producer sequences are computed
/// from, so that no arithmetic on a batch can overflow whatever the network
/// sent: `lastOffsetDelta` of at least 0 with the range
/// `base..=base + lastOffsetDelta` inside an i64, and a record count between
/// 0 (an empty batch compaction left) and the offsets in the range (fewer
/// when compaction removed records, never more).
fn check_offset_range(bytes: &[u8], base_offset: i64) -> Result<(), BatchError> {
    let last_offset_delta = (&bytes[at::LAST_OFFSET_DELTA..]).get_i32();
    let count = (&bytes[at::RECORDS_COUNT..]).get_i32();
    let corrupt = |reason: String| BatchError::Corrupt {
        base_offset,
        reason,
    };
    if last_offset_delta < 0 {
        return Err(corrupt(format!(
            "negative lastOffsetDelta {last_offset_delta}"
        )));
    }
    if base_offset
        .checked_add(i64::from(last_offset_delta) + 1)
        .is_none()
    {
        return Err(corrupt(format!(
            "lastOffsetDelta {last_offset_delta} takes the offsets past the largest one"
        )));
    }
    if count < 0 || i64::from(count) > i64::from(last_offset_delta) + 1 {
        return Err(corrupt(format!(
            "{count} records in a range of {} offsets",
            i64::from(last_offset_delta) + 1
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use kafka_protocol::records::{self as kp, RecordBatchDecoder};
    use proptest::prelude::*;

    use super::super::test_support::{
        control_batch, data_batch, data_records, edit_and_fix_crc, sample_contents, BatchSpec,
        Content, ALL_CODECS,
    };
    use super::*;

    fn ours(codec: kp::Compression) -> Compression {
        match codec {
            kp::Compression::None => Compression::None,
            kp::Compression::Gzip => Compression::Gzip,
            kp::Compression::Snappy => Compression::Snappy,
            kp::Compression::Lz4 => Compression::Lz4,
            kp::Compression::Zstd => Compression::Zstd,
        }
    }

    fn decode(bytes: &Bytes) -> kp::RecordSet {
        RecordBatchDecoder::decode(&mut bytes.clone()).expect("kafka-protocol decodes the batch")
    }

    /// The batch as the destination receives it: the produce header, then
    /// the records as they came.
    fn produced(batch: &RecordBatch, stamp: ProducerStamp) -> Bytes {
        let header = batch.produce_header(stamp);
        [&header[..], &batch.as_bytes()[HEADER_LEN..]]
            .concat()
            .into()
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 2, 3), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 5), 3);
    }

    #[test]
    fn header_fields_match_what_was_encoded_for_every_codec() {
        for codec in ALL_CODECS {
            for transactional in [false, true] {
                let spec = BatchSpec {
                    compression: codec,
                    transactional,
                    delete_horizon: !transactional,
                    ..BatchSpec::default()
                };
                let contents = sample_contents();
                let bytes = data_batch(&spec, &contents);
                let batch = RecordBatch::parse(bytes.clone()).unwrap();
                let timestamps: Vec<i64> = data_records(&spec, &contents)
                    .iter()
                    .map(|r| r.timestamp)
                    .collect();

                assert_eq!(batch.base_offset(), spec.base_offset);
                assert_eq!(batch.batch_length() as usize, bytes.len() - 12);
                assert_eq!(batch.partition_leader_epoch(), spec.partition_leader_epoch);
                assert_eq!(batch.magic(), 2);
                assert_eq!(batch.crc(), crc32c::crc32c(&bytes[21..]));
                assert_eq!(batch.compression(), ours(codec));
                assert_eq!(batch.attributes() & 0b111, codec as i16);
                assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
                assert_eq!(batch.is_transactional(), transactional);
                assert!(!batch.is_control());
                assert_eq!(batch.has_delete_horizon(), !transactional);
                assert_eq!(batch.last_offset_delta(), contents.len() as i32 - 1);
                assert_eq!(batch.last_offset(), spec.base_offset + 3);
                assert_eq!(batch.next_offset(), spec.base_offset + 4);
                assert_eq!(batch.base_timestamp(), *timestamps.iter().min().unwrap());
                assert_eq!(batch.max_timestamp(), *timestamps.iter().max().unwrap());
                assert_eq!(batch.producer_id(), spec.producer_id);
                assert_eq!(batch.producer_epoch(), spec.producer_epoch);
                assert_eq!(batch.base_sequence(), spec.base_sequence);
                assert_eq!(batch.records_count(), contents.len() as i32);
                assert_eq!(batch.len(), bytes.len());
                assert!(!batch.is_empty());
                assert_eq!(batch.as_bytes(), &bytes);
                assert_eq!(batch.control_type().unwrap(), None);
                batch.verify_crc().unwrap();
            }
        }
    }

    #[test]
    fn log_append_time_bit_is_read() {
        // The encoder never sets bit 3, so set it by hand.
        let bytes = data_batch(&BatchSpec::default(), &sample_contents());
        let bytes = edit_and_fix_crc(&bytes, |b| b[22] |= 1 << 3);
        let batch = RecordBatch::parse(bytes).unwrap();
        assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
        batch.verify_crc().unwrap();
    }

    #[test]
    fn parse_refuses_what_the_view_cannot_read() {
        let good = data_batch(&BatchSpec::default(), &sample_contents());

        for len in [0, 5, 16] {
            let err = RecordBatch::parse(good.slice(..len)).unwrap_err();
            assert!(matches!(err, BatchError::TooShort { len: l, min: 61 } if l == len));
        }
        let err = RecordBatch::parse(good.slice(..60)).unwrap_err();
        assert!(matches!(err, BatchError::TooShort { len: 60, .. }));

        for magic in [0u8, 1, 3, 0xff] {
            let mut bytes = good.to_vec();
            bytes[16] = magic;
            let err = RecordBatch::parse(bytes.into()).unwrap_err();
            assert!(matches!(
                err,
                BatchError::UnsupportedMagic { base_offset: 1_000, magic: m } if m == magic as i8
            ));
        }

        let err = RecordBatch::parse(good.slice(..good.len() - 1)).unwrap_err();
        assert!(matches!(
            err,
            BatchError::Corrupt {
                base_offset: 1_000,
                ..
            }
        ));
        let mut longer = good.to_vec();
        longer.push(0);
        let err = RecordBatch::parse(longer.into()).unwrap_err();
        assert!(matches!(
            err,
            BatchError::Corrupt {
                base_offset: 1_000,
                ..
            }
        ));
        let mut negative = good.to_vec();
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        let err = RecordBatch::parse(negative.into()).unwrap_err();
        assert!(matches!(
            err,
            BatchError::Corrupt {
                base_offset: 1_000,
                ..
            }
        ));

        for codec in 5..=7 {
            let bytes = edit_and_fix_crc(&good, |b| b[22] |= codec);
            let err = RecordBatch::parse(bytes).unwrap_err();
            assert!(matches!(
                err,
                BatchError::UnknownCompression { base_offset: 1_000, codec: c } if c == codec
            ));
        }
    }

    /// Before and after the header rewrite: the mirror leaves the CRC check
    /// of a batch it sends unchanged to the target broker, so the damage must
    /// survive the rewrite. It does even in the fields the rewrite replaces:
    /// the patch carries the difference from the damaged bytes.
    #[test]
    fn a_flipped_byte_under_the_crc_fails_verification() {
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 9,
            base_sequence: 123,
            transactional: false,
        };
        for codec in [kp::Compression::None, kp::Compression::Zstd] {
            let spec = BatchSpec {
                compression: codec,
                ..BatchSpec::default()
            };
            let good = data_batch(&spec, &sample_contents());
            let stored = crc32c::crc32c(&good[21..]);
            for at in 21..good.len() {
                let mut bytes = good.to_vec();
                bytes[at] ^= 0x10;
                let batch = match RecordBatch::parse(bytes.into()) {
                    Ok(batch) => batch,
                    // Only a flip into an unknown codec is refused earlier,
                    // or one that makes the offset range or the record
                    // count impossible: such a batch is never sent.
                    Err(BatchError::UnknownCompression { .. }) if at == 22 => continue,
                    Err(BatchError::Corrupt { .. })
                        if (23..27).contains(&at) || (57..61).contains(&at) =>
                    {
                        continue
                    }
                    Err(e) => panic!("flip at {at}: refused by parse: {e}"),
                };
                match batch.verify_crc() {
                    Err(BatchError::CrcMismatch {
                        base_offset,
                        stored: s,
                        computed,
                    }) => {
                        assert_eq!(base_offset, 1_000);
                        assert_eq!(s, stored);
                        assert_ne!(computed, stored);
                    }
                    other => panic!("flip at {at}: expected CrcMismatch, got {other:?}"),
                }
                let out = RecordBatch::parse(produced(&batch, stamp)).unwrap();
                assert!(
                    matches!(out.verify_crc(), Err(BatchError::CrcMismatch { .. })),
                    "a flip at byte {at} left with a matching CRC"
                );
            }
        }
    }

    #[test]
    fn base_offset_and_leader_epoch_are_outside_the_crc() {
        let good = data_batch(&BatchSpec::default(), &sample_contents());
        for at in (0..8).chain(12..16) {
            let mut bytes = good.to_vec();
            bytes[at] ^= 0xa5;
            let batch = RecordBatch::parse(bytes.into()).unwrap();
            batch.verify_crc().unwrap();
        }
        let mut bytes = good.to_vec();
        bytes[17] ^= 1;
        let err = RecordBatch::parse(bytes.into()).unwrap().verify_crc();
        assert!(matches!(err, Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn produced_batch_is_what_kafka_protocol_decodes_as_the_same_records() {
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 9,
            base_sequence: 123,
            transactional: false,
        };
        for codec in ALL_CODECS {
            let spec = BatchSpec {
                compression: codec,
                transactional: true,
                ..BatchSpec::default()
            };
            let original = data_batch(&spec, &sample_contents());
            let batch = RecordBatch::parse(original.clone()).unwrap();
            batch.verify_crc().unwrap();
            let rewritten = produced(&batch, stamp);

            let view = RecordBatch::parse(rewritten.clone()).unwrap();
            view.verify_crc().unwrap();
            assert_eq!(view.base_offset(), 0);
            assert!(!view.is_transactional());
            assert_eq!(view.compression(), ours(codec));
            assert_eq!(view.partition_leader_epoch(), spec.partition_leader_epoch);
            assert_eq!(view.producer_id(), stamp.producer_id);
            assert_eq!(view.producer_epoch(), stamp.producer_epoch);
            assert_eq!(view.base_sequence(), stamp.base_sequence);
            assert_eq!(view.records_count(), batch.records_count());
            assert_eq!(view.last_offset_delta(), batch.last_offset_delta());

            let before = decode(&original);
            let after = decode(&rewritten);
            assert_eq!(after.compression, codec);
            assert_same_records(&before.records, &after.records, stamp);
        }
    }

    fn assert_same_records(before: &[kp::Record], after: &[kp::Record], stamp: ProducerStamp) {
        assert_eq!(before.len(), after.len());
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            assert_eq!(a.key, b.key);
            assert_eq!(a.value, b.value);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.timestamp, b.timestamp);
            assert_eq!(a.timestamp_type, b.timestamp_type);
            assert_eq!(a.offset, i as i64);
            assert_eq!(a.producer_id, stamp.producer_id);
            assert_eq!(a.producer_epoch, stamp.producer_epoch);
            assert_eq!(a.sequence, stamp.base_sequence.wrapping_add(i as i32));
            assert!(!a.transactional);
            assert!(!a.control);
        }
    }

    #[test]
    fn a_detached_batch_releases_the_buffer_it_came_in() {
        let bytes = data_batch(&BatchSpec::default(), &sample_contents());
        let mut batch = RecordBatch::parse(bytes.clone()).unwrap();
        batch.detach();
        assert_eq!(batch.as_bytes(), &bytes);
        assert!(
            bytes.try_into_mut().is_ok(),
            "the original has no other owner"
        );
        batch.verify_crc().unwrap();
    }

    #[test]
    fn produce_header_is_the_header_alone() {
        let batch =
            RecordBatch::parse(data_batch(&BatchSpec::default(), &sample_contents())).unwrap();
        let header = batch.produce_header(ProducerStamp::NONE);
        assert_eq!(header.len(), HEADER_LEN);
        let reclaimed: BytesMut = header.try_into_mut().expect("sole owner");
        assert_eq!(reclaimed.capacity(), HEADER_LEN);
    }

    #[test]
    fn control_type_reads_the_marker() {
        for (raw, expected) in [
            (0, ControlType::Abort),
            (1, ControlType::Commit),
            (5, ControlType::Other(5)),
        ] {
            let batch = RecordBatch::parse(control_batch(40, 9, raw)).unwrap();
            batch.verify_crc().unwrap();
            assert!(batch.is_control());
            assert!(batch.is_transactional());
            assert_eq!(batch.control_type().unwrap(), Some(expected));
        }
    }

    #[test]
    fn an_emptied_control_batch_has_no_marker() {
        let bytes = control_batch(40, 9, 0);
        let mut emptied = bytes[..61].to_vec();
        emptied[8..12].copy_from_slice(&49i32.to_be_bytes());
        emptied[57..61].copy_from_slice(&0i32.to_be_bytes());
        let batch = RecordBatch::parse(edit_and_fix_crc(&emptied.into(), |_| {})).unwrap();
        assert_eq!(batch.control_type().unwrap(), None);
    }

    /// A control batch whose records are replaced by `body`, count 1.
    fn control_with_body(body: &[u8]) -> RecordBatch {
        let header = control_batch(40, 9, 0);
        let mut bytes = header[..61].to_vec();
        bytes.extend_from_slice(body);
        let length = (bytes.len() - 12) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        RecordBatch::parse(edit_and_fix_crc(&bytes.into(), |_| {})).unwrap()
    }

    #[test]
    fn malformed_control_records_are_errors() {
        // length 10, attributes, timestampDelta 0, offsetDelta 0, keyLength 4,
        // key (version 0, type 1), valueLength -1, no headers
        let good = [20, 0, 0, 0, 8, 0, 0, 0, 1, 1, 0];
        assert_eq!(
            control_with_body(&good).control_type().unwrap(),
            Some(ControlType::Commit)
        );

        // Each body must fail for the reason named, not some earlier one.
        let cases: &[(&[u8], &str)] = &[
            (&[], "varint runs past"),
            (&[1], "negative record length"),
            (&[40, 0, 0], "record runs past the batch"),
            (&[0], "before its attributes"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], "varint longer"),
            (&[4, 0, 0x80], "varint runs past"),
            (&[8, 0, 0, 0, 1], "null key"),
            (&[10, 0, 0, 0, 20, 0], "key runs past the record"),
            (&[12, 0, 0, 0, 4, 0, 1], "key shorter than 4 bytes"),
            (
                &[20, 0, 0, 0, 8, 0xff, 0xff, 0, 1, 1, 0],
                "negative key version",
            ),
        ];
        for (body, expected) in cases {
            match control_with_body(body).control_type() {
                Err(BatchError::Corrupt {
                    base_offset,
                    reason,
                }) => {
                    assert_eq!(base_offset, 40);
                    assert!(reason.contains(expected), "{body:?}: {reason}");
                }
                other => panic!("{body:?}: expected Corrupt, got {other:?}"),
            }
        }

        let compressed = edit_and_fix_crc(&control_batch(40, 9, 0), |b| b[22] |= 1);
        let batch = RecordBatch::parse(compressed).unwrap();
        assert!(matches!(
            batch.control_type(),
            Err(BatchError::Corrupt {
                base_offset: 40,
                ..
            })
        ));
    }

    fn batch_base(header: &[u8]) -> i64 {
        i64::from_be_bytes(header[..8].try_into().unwrap())
    }

    fn content() -> impl Strategy<Value = Content> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        let header = ("[a-z]{0,6}", bytes());
        (bytes(), bytes(), proptest::collection::vec(header, 0..3)).prop_map(|(k, v, h)| {
            let mut seen = std::collections::HashSet::new();
            let headers = h
                .into_iter()
                // Headers are a map in kafka-protocol: keep keys unique.
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| (k, v.map(Bytes::from)))
                .collect();
            (k.map(Bytes::from), v.map(Bytes::from), headers)
        })
    }

    fn codec() -> impl Strategy<Value = kp::Compression> {
        proptest::sample::select(ALL_CODECS.to_vec())
    }

    proptest! {
        #[test]
        fn produce_header_changes_only_the_producer_fields(
            contents in proptest::collection::vec(content(), 1..8),
            codec in codec(),
            transactional in any::<bool>(),
            base_offset in 0i64..i64::MAX / 2,
            producer_id in any::<i64>(),
            producer_epoch in any::<i16>(),
            base_sequence in any::<i32>(),
        ) {
            let spec = BatchSpec {
                base_offset,
                compression: codec,
                transactional,
                ..BatchSpec::default()
            };
            let original = data_batch(&spec, &contents);
            let batch = RecordBatch::parse(original.clone()).unwrap();
            batch.verify_crc().unwrap();
            let stamp = ProducerStamp { producer_id, producer_epoch, base_sequence, transactional: false };
            let rewritten = produced(&batch, stamp);

            prop_assert_eq!(rewritten.len(), original.len());
            RecordBatch::parse(rewritten.clone()).unwrap().verify_crc().unwrap();
            for (at, (&a, &b)) in original.iter().zip(rewritten.iter()).enumerate() {
                let may_differ = at < 8 || (17..21).contains(&at) || (43..57).contains(&at);
                if at == 22 {
                    prop_assert_eq!(a & !(1 << 4), b & !(1 << 4));
                    prop_assert_eq!(b & (1 << 4), 0);
                } else if !may_differ {
                    prop_assert_eq!(a, b, "byte {} changed", at);
                }
            }
            prop_assert_eq!(&rewritten[..8], &[0u8; 8][..]);
            assert_same_records(&decode(&original).records, &decode(&rewritten).records, stamp);
        }

        #[test]
        fn parse_and_control_type_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(batch) = RecordBatch::parse(bytes.into()) {
                let _ = batch.control_type();
                let _ = batch.verify_crc();
            }
        }

        /// Any header the network can send either is refused or gives
        /// fields the pipeline can do arithmetic on: offsets that do not
        /// overflow, and a record count from 0 to the offsets in the range
        /// (producer sequences advance by it).
        #[test]
        fn every_header_field_from_the_network_is_bounded_or_refused(
            header in proptest::collection::vec(any::<u8>(), HEADER_LEN),
        ) {
            let good = data_batch(&BatchSpec::default(), &sample_contents());
            let mut bytes = good.to_vec();
            bytes[..HEADER_LEN].copy_from_slice(&header);
            // Keep what makes it a v2 batch of this length.
            bytes[at::BATCH_LENGTH..at::PARTITION_LEADER_EPOCH]
                .copy_from_slice(&good[at::BATCH_LENGTH..at::PARTITION_LEADER_EPOCH]);
            bytes[at::MAGIC] = 2;
            bytes[at::ATTRIBUTES + 1] &= !0b111;
            let count = i32::from_be_bytes(bytes[57..61].try_into().unwrap());
            let delta = i32::from_be_bytes(bytes[23..27].try_into().unwrap());
            match RecordBatch::parse(bytes.into()) {
                Ok(batch) => {
                    prop_assert!(delta >= 0 && count >= 0);
                    prop_assert!(i64::from(count) <= i64::from(delta) + 1);
                    prop_assert_eq!(batch.records_count(), count);
                    prop_assert!(batch.next_offset() > batch.base_offset());
                    prop_assert_eq!(batch.next_offset() - 1, batch.last_offset());
                    let _ = batch.has_offset_gaps();
                    let _ = batch.control_type();
                }
                Err(e) => {
                    let impossible = delta < 0
                        || count < 0
                        || i64::from(count) > i64::from(delta) + 1
                        || batch_base(&header).checked_add(i64::from(delta) + 1).is_none();
                    prop_assert!(impossible, "refused: {}", e);
                }
            }
        }

        #[test]
        fn control_type_never_panics_on_arbitrary_records(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            count in any::<i32>(),
        ) {
            let batch = control_with_body(&body);
            let bytes = edit_and_fix_crc(batch.as_bytes(), |b| {
                b[57..61].copy_from_slice(&count.to_be_bytes());
            });
            // A count other than 0 or 1 does not fit the marker's one offset.
            match RecordBatch::parse(bytes) {
                Ok(batch) => {
                    prop_assert!((0..=1).contains(&count));
                    let _ = batch.control_type();
                }
                Err(e) => prop_assert!(matches!(e, BatchError::Corrupt { .. }), "{}", e),
            }
        }
    }
}
