//! What the stages' unit tests build on: real v2 batches, partitions,
//! metadata snapshots, and Fetch responses captured from a real broker
//! (`protocol-fixtures/`).

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

use super::slots::{Slot, Status};
use crate::batch::RecordBatch;
use crate::cluster::{Metadata, PartitionMetadata, TopicMetadata};
use crate::net::frame::decode_response;

/// A real v2 batch of `count` records starting at `base` from Kafka's codec crate.
pub(super) fn batch(base: i64, count: i32) -> RecordBatch {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 99,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: base + i64::from(i),
            sequence: 40 + i,
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    RecordBatch::parse(buf.freeze()).expect("parse")
}

/// Source topic `topic` (id `id`) copied into `copy.<topic>`, copying from `offset`.
pub(super) fn slot(topic: &str, id: Uuid, partition: i32, offset: i64) -> Slot {
    Slot::new(
        topic.into(),
        format!("copy.{topic}").into(),
        partition,
        id,
        offset,
        Status::Copying,
    )
}

/// A snapshot listing `topic` (id `id`) with each `(partition, leader)`.
pub(super) fn metadata(topic: &str, id: Uuid, leaders: &[(i32, Option<i32>)]) -> Metadata {
    let mut metadata = Metadata::default();
    metadata.topics.insert(
        topic.to_owned(),
        TopicMetadata {
            id,
            internal: false,
            error: None,
            partitions: leaders
                .iter()
                .map(|&(partition, leader)| {
                    (
                        partition,
                        PartitionMetadata {
                            leader,
                            leader_epoch: 1,
                        },
                    )
                })
                .collect(),
        },
    );
    metadata
}

/// The one partition with records of a captured Fetch response frame
/// (Fetch v16, see `protocol-fixtures/README.md`).
pub(super) fn fixture(name: &str) -> PartitionData {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("protocol-fixtures/frames")
        .join(format!("{name}.bin"));
    let frame = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, response): (i32, FetchResponse) =
        decode_response::<FetchRequest>(Bytes::from(frame), 16).expect("a Fetch v16 response");
    response
        .responses
        .into_iter()
        .flat_map(|topic| topic.partitions)
        .find(|partition| partition.records.is_some())
        .expect("a partition with records")
}

/// The batches a Produce job carries, as the target receives them.
pub(super) fn produced(job: &super::produce::ProduceJob) -> Vec<RecordBatch> {
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::Decodable;
    const VERSION: i16 = 9;
    let frame = crate::net::frame::encode_request(1, None, VERSION, &job.request, &job.splices)
        .expect("encode")
        .to_bytes();
    let mut body = frame.slice(4..);
    RequestHeader::decode(&mut body, ApiKey::Produce.request_header_version(VERSION))
        .expect("header");
    let request = ProduceRequest::decode(&mut body, VERSION).expect("request");
    request
        .topic_data
        .into_iter()
        .flat_map(|topic| topic.partition_data)
        .filter_map(|partition| partition.records)
        .map(|records| RecordBatch::parse(records).expect("parse"))
        .collect()
}
