//! Test batches built with kafka-protocol's encoder, and records sections
//! decompressed by its decompressors: an implementation written
//! independently of this module, for the unit tests here and the
//! integration tests (which get it with the `test-support` feature).

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::view::HEADER_LEN;
use super::RecordBatch;

pub const ALL_CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Batch-level settings of a test batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub delete_horizon: bool,
    pub base_timestamp: i64,
    pub compression: Compression,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            base_offset: 1_000,
            partition_leader_epoch: 7,
            producer_id: 4_242,
            producer_epoch: 3,
            base_sequence: 17,
            transactional: false,
            delete_horizon: false,
            base_timestamp: 1_700_000_000_000,
            compression: Compression::None,
        }
    }
}

/// Key, value and headers of one record.
pub type Content = (Option<Bytes>, Option<Bytes>, Vec<(String, Option<Bytes>)>);

/// A mix of keys, tombstones, null keys and headers (one with a null value).
pub fn sample_contents() -> Vec<Content> {
    vec![
        (
            Some(Bytes::from_static(b"key-0")),
            Some(Bytes::from_static(b"value-0")),
            vec![("trace".into(), Some(Bytes::from_static(b"abc")))],
        ),
        (Some(Bytes::from_static(b"key-1")), None, vec![]),
        (
            None,
            Some(Bytes::from(vec![7u8; 300])),
            vec![("a".into(), None), ("b".into(), Some(Bytes::new()))],
        ),
        (Some(Bytes::new()), Some(Bytes::from_static(b"x")), vec![]),
    ]
}

/// The records of a data batch as kafka-protocol models them.
pub fn data_records(spec: &BatchSpec, contents: &[Content]) -> Vec<Record> {
    contents
        .iter()
        .enumerate()
        .map(|(i, (key, value, headers))| {
            let i = i as i64;
            let headers: IndexMap<StrBytes, Option<Bytes>> = headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect();
            Record {
                transactional: spec.transactional,
                control: false,
                delete_horizon: spec.delete_horizon,
                partition_leader_epoch: spec.partition_leader_epoch,
                producer_id: spec.producer_id,
                producer_epoch: spec.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: spec.base_offset + i,
                sequence: spec.base_sequence.wrapping_add(i as i32),
                // Not monotonic, so base and max timestamps differ from the
                // first and last record's.
                timestamp: spec.base_timestamp + (i * 37) % 100,
                key: key.clone(),
                value: value.clone(),
                headers,
            }
        })
        .collect()
}

/// Encodes `records` (which must form one batch) into a `Bytes`.
pub fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options).expect("encoder accepts test records");
    buf.freeze()
}

/// One data batch of `contents` with the settings of `spec`.
pub fn data_batch(spec: &BatchSpec, contents: &[Content]) -> Bytes {
    encode(&data_records(spec, contents), spec.compression)
}

/// A transaction marker of `producer_id` at `offset`: type 0 aborts, 1
/// commits.
pub fn control_batch(offset: i64, producer_id: i64, control_type: i16) -> Bytes {
    let mut key = Vec::new();
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut value = Vec::new();
    value.extend_from_slice(&0i16.to_be_bytes()); // version
    value.extend_from_slice(&5i32.to_be_bytes()); // coordinator epoch
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 7,
        producer_id,
        producer_epoch: 1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(key.into()),
        value: Some(value.into()),
        headers: IndexMap::default(),
    };
    encode(&[record], Compression::None)
}

/// Applies `edit` to a copy of `batch` and restores a valid CRC, for
/// header variants the encoder cannot produce.
pub fn edit_and_fix_crc(batch: &Bytes, edit: impl FnOnce(&mut [u8])) -> Bytes {
    let mut bytes = batch.to_vec();
    edit(&mut bytes);
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes.into()
}

/// The records section of `batch`, decompressed by kafka-protocol.
pub fn plain_records(batch: &RecordBatch) -> Bytes {
    let mut body = batch.as_bytes().slice(HEADER_LEN..);
    let take = |b: &mut Bytes| Ok(b.split_off(0));
    let plain = match batch.compression() {
        super::Compression::None => return body,
        super::Compression::Gzip => Gzip::decompress(&mut body, take),
        super::Compression::Snappy => Snappy::decompress(&mut body, take),
        super::Compression::Lz4 => Lz4::decompress(&mut body, take),
        super::Compression::Zstd => Zstd::decompress(&mut body, take),
    };
    plain.expect("kafka-protocol decompresses the records")
}
