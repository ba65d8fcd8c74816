//! What the stages' unit tests build on: real v2 batches, partitions,
//! metadata snapshots, and Fetch, Produce and Metadata responses captured
//! from real brokers (`protocol-fixtures/`).

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, MetadataRequest};
use kafka_protocol::protocol::Request;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
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

/// [`batch`] as the source's leader stamped it in leader `epoch` (bytes
/// 12..16 of the header, outside the CRC).
pub(super) fn batch_in_epoch(base: i64, count: i32, epoch: i32) -> RecordBatch {
    let mut bytes = batch(base, count).as_bytes().to_vec();
    bytes[12..16].copy_from_slice(&epoch.to_be_bytes());
    RecordBatch::parse(bytes.into()).expect("parse")
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

/// A captured frame and its sidecar's JSON (see `protocol-fixtures/README.md`).
fn capture(name: &str) -> (Bytes, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures/frames");
    let read = |file: String| {
        let path = dir.join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    (
        Bytes::from(read(format!("{name}.bin"))),
        read(format!("{name}.json")),
    )
}

/// Reads a sidecar into what a test needs of it.
fn sidecar<T: DeserializeOwned>(name: &str, json: &[u8]) -> T {
    serde_json::from_slice(json).unwrap_or_else(|e| panic!("{name}.json: {e}"))
}

/// A captured response frame decoded as the answer to `R`, at the version
/// the broker answered with.
pub(super) fn captured<R: Request>(name: &str) -> R::Response {
    #[derive(Deserialize)]
    struct Version {
        api_version: i16,
    }
    let (frame, json) = capture(name);
    let Version { api_version } = sidecar(name, &json);
    let (_, response) =
        decode_response::<R>(frame, api_version).unwrap_or_else(|e| panic!("{name}: {e}"));
    response
}

/// The snapshot a captured Metadata response gives.
pub(super) fn captured_metadata(name: &str) -> Metadata {
    Metadata::from_response(captured::<MetadataRequest>(name))
}

/// `(topic, topic id, partition)` of each partition a captured response
/// answers, in its order. Produce v13 names topics by id only; the sidecar
/// holds the names the capture's Metadata gave those ids.
pub(super) fn answered_partitions(name: &str) -> Vec<(String, Uuid, i32)> {
    #[derive(Deserialize)]
    struct Answered {
        partitions: Vec<Partition>,
    }
    #[derive(Deserialize)]
    struct Partition {
        topic: String,
        topic_id: String,
        partition: i32,
    }
    let Answered { partitions } = sidecar(name, &capture(name).1);
    partitions
        .into_iter()
        .map(|p| {
            let id = Uuid::parse_str(&p.topic_id)
                .unwrap_or_else(|e| panic!("{name}: topic id {}: {e}", p.topic_id));
            (p.topic, id, p.partition)
        })
        .collect()
}

/// The one partition with records of a captured Fetch response.
pub(super) fn fixture(name: &str) -> PartitionData {
    captured::<FetchRequest>(name)
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
