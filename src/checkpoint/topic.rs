//! A checkpoint topic: a compacted, single-partition topic on the target
//! holding one keyed record per thing tracked, the latest value winning.
//! kafka-mirror keeps two kinds: its own checkpoints
//! ([`super::CheckpointStore`]) and MirrorMaker 2's consumer group
//! checkpoints ([`crate::groups::mm2`]).
//!
//! [`CheckpointTopic`] owns creating the topic, and writing records to it:
//! split into uncompressed record batches that each fit the topic's
//! `max.message.bytes` (read from the target, since the broker refuses a
//! larger batch however often it is sent), each acknowledged by every
//! in-sync replica (acks=all) before the next is sent, so records land in
//! the order given; plainly, or as part of a transaction of the caller's
//! transactional producer ([`TransactionStamp`]). What the records mean is
//! the caller's.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::CheckpointError;
use crate::batch::{increment_sequence, varint_len};
use crate::cluster::{Cluster, ClusterError, Metadata};
use crate::sync::lock;
use crate::topics::{effective_config, ensure_topics, TopicSpec};

/// The topic config that bounds a batch's size.
pub(super) const MAX_MESSAGE_BYTES: &str = "max.message.bytes";

/// One record to store: never a tombstone, since both kinds of checkpoint
/// topic are read by consumers that expect a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    /// What the record is about; compaction keeps the latest value per key.
    pub key: Bytes,
    /// Its value.
    pub value: Bytes,
}

/// How far a write got: it stores its records in order, one batch at a time.
#[derive(Debug)]
pub struct Written {
    /// How many of the records, from the first, are stored.
    pub stored: usize,
    /// Why the others are not, when some are not.
    pub result: Result<(), CheckpointError>,
}

/// The transactional producer a write goes as (KIP-98): its batches carry
/// the producer id and epoch, the transactional bit, and consecutive
/// sequences from `sequence`, in Produce requests naming the transactional
/// id. The topic's partition must be in the producer's transaction
/// (AddPartitionsToTxn) before the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionStamp<'a> {
    /// The producer's transactional id.
    pub transactional_id: &'a str,
    /// Its producer id, from InitProducerId.
    pub producer_id: i64,
    /// Its epoch, from InitProducerId.
    pub epoch: i16,
    /// The sequence of the first record: the partition's next sequence for
    /// this producer id and epoch (0 after InitProducerId).
    pub sequence: i32,
}

impl TransactionStamp<'_> {
    /// The stamp of the record `records` records after the first.
    fn after(self, records: usize) -> Self {
        let records = i32::try_from(records).unwrap_or(i32::MAX);
        TransactionStamp {
            sequence: increment_sequence(self.sequence, records),
            ..self
        }
    }
}

/// A compacted, single-partition topic on the target, written in order.
#[derive(Debug)]
pub struct CheckpointTopic {
    target: Arc<Cluster>,
    name: String,
    topic_id: Mutex<Uuid>,
    leader: Mutex<Option<i32>>,
    /// The topic's `max.message.bytes`: the largest batch it takes.
    max_batch_bytes: Mutex<usize>,
}

impl CheckpointTopic {
    /// Opens the topic `name` on `target`, creating it compacted with one
    /// partition if it is missing, and reads the batch size it takes.
    pub async fn create(
        target: Arc<Cluster>,
        name: &str,
        replication_factor: i16,
    ) -> Result<Self, CheckpointError> {
        let spec = TopicSpec {
            name: name.to_owned(),
            partitions: 1,
            configs: vec![("cleanup.policy".to_owned(), "compact".to_owned())],
        };
        let metadata = ensure_topics(&target, &[spec], replication_factor)
            .await
            .map_err(|source| CheckpointError::Topic {
                topic: name.to_owned(),
                source,
            })?;
        let topic = CheckpointTopic::at(target, name, &metadata);
        topic.read_limit().await?;
        Ok(topic)
    }

    /// Opens the topic to read only: `None` when it does not exist. Creates
    /// nothing.
    pub async fn existing(
        target: Arc<Cluster>,
        name: &str,
    ) -> Result<Option<Self>, CheckpointError> {
        let metadata = target
            .metadata()
            .await
            .map_err(|source| CheckpointError::Cluster {
                topic: name.to_owned(),
                source,
            })?;
        Ok(metadata
            .topics
            .contains_key(name)
            .then(|| CheckpointTopic::at(target, name, &metadata)))
    }

    /// The topic `name` as `metadata` describes it.
    fn at(target: Arc<Cluster>, name: &str, metadata: &Metadata) -> Self {
        let (topic_id, leader) = metadata
            .topics
            .get(name)
            .map(|t| (t.id, t.partitions.get(&0).and_then(|p| p.leader)))
            .unwrap_or_default();
        CheckpointTopic {
            target,
            name: name.to_owned(),
            topic_id: Mutex::new(topic_id),
            leader: Mutex::new(leader),
            max_batch_bytes: Mutex::new(0),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster the topic is on.
    pub(super) fn target(&self) -> &Arc<Cluster> {
        &self.target
    }

    /// Reads the topic's `max.message.bytes` from the target.
    async fn read_limit(&self) -> Result<usize, CheckpointError> {
        let value = effective_config(&self.target, &self.name, MAX_MESSAGE_BYTES)
            .await
            .map_err(|source| CheckpointError::Topic {
                topic: self.name.clone(),
                source,
            })?;
        let limit = value
            .as_deref()
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| CheckpointError::NotReady {
                topic: self.name.clone(),
                reason: format!("the target reports {MAX_MESSAGE_BYTES} = {value:?}"),
            })?;
        tracing::debug!(topic = %self.name, limit, "checkpoint topic's {MAX_MESSAGE_BYTES}");
        *lock(&self.max_batch_bytes) = limit;
        Ok(limit)
    }

    /// Writes these records, in batches that fit the topic, each
    /// acknowledged by the target (acks=all) before the next is sent. One
    /// write at a time keeps them in order.
    ///
    /// A batch refused as too large makes the topic's limit be read again:
    /// when it shrank, the rest is split again to fit; when it did not, the
    /// write fails with [`CheckpointError::TooLarge`].
    pub async fn write(&self, records: &[KeyedRecord]) -> Written {
        self.write_as(records, None).await
    }

    /// [`CheckpointTopic::write`] in `stamp`'s transaction, which the
    /// records are part of until it ends; also returns the partition's
    /// next sequence for the producer: `stamp.sequence` advanced by the
    /// records stored. The records after a failed batch are not stored:
    /// after a broker's refusal ([`CheckpointError::Broker`], e.g. a leader
    /// that moved) they can be written again from the sequence returned;
    /// after a lost answer the batch may have landed, so the transaction is
    /// for aborting.
    pub async fn write_in_transaction(
        &self,
        records: &[KeyedRecord],
        stamp: TransactionStamp<'_>,
    ) -> (Written, i32) {
        let written = self.write_as(records, Some(stamp)).await;
        let next = stamp.after(written.stored).sequence;
        (written, next)
    }

    /// Writes plainly, or as `stamp`'s producer.
    async fn write_as(
        &self,
        records: &[KeyedRecord],
        stamp: Option<TransactionStamp<'_>>,
    ) -> Written {
        let mut stored = 0;
        let mut batches = 0;
        let mut bytes = 0;
        let result = 'write: loop {
            if stored == records.len() {
                break Ok(());
            }
            let limit = *lock(&self.max_batch_bytes);
            let producer = stamp.map(|stamp| stamp.after(stored));
            let encoded = match self.encode(&records[stored..], limit, producer) {
                Ok(encoded) => encoded,
                Err(e) => break Err(e),
            };
            for batch in encoded {
                let size = batch.bytes.len();
                let transactional_id = stamp.map(|stamp| stamp.transactional_id);
                match self.produce(batch.bytes, transactional_id).await {
                    Ok(()) => {
                        stored += batch.records;
                        batches += 1;
                        bytes += size;
                    }
                    Err(e) if e.is_too_large() => match self.read_limit().await {
                        Ok(lowered) if lowered < size => {
                            tracing::info!(topic = %self.name, limit = lowered, "the checkpoint topic's {MAX_MESSAGE_BYTES} was lowered; splitting again");
                            continue 'write;
                        }
                        Ok(limit) => {
                            break 'write Err(CheckpointError::TooLarge {
                                topic: self.name.clone(),
                                bytes: size,
                                limit,
                            })
                        }
                        Err(e) => break 'write Err(e),
                    },
                    Err(e) => break 'write Err(e),
                }
            }
        };
        tracing::debug!(
            topic = %self.name,
            records = stored,
            batches,
            bytes,
            complete = result.is_ok(),
            "checkpoints stored"
        );
        Written { stored, result }
    }

    /// Sends one batch, in the transaction of `transactional_id` if given,
    /// and waits for its acknowledgement.
    async fn produce(
        &self,
        batch: Bytes,
        transactional_id: Option<&str>,
    ) -> Result<(), CheckpointError> {
        let leader = self.leader_or_refresh().await?;
        let topic_id = *lock(&self.topic_id);
        let transactional_id =
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_owned())));
        let request = ProduceRequest::default()
            .with_transactional_id(transactional_id)
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.name.clone())))
                .with_topic_id(topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let result = self.target.send(leader, request).await;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                self.forget_leader();
                return Err(CheckpointError::Cluster {
                    topic: self.name.clone(),
                    source: e,
                });
            }
        };
        let answer = response
            .responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
            .next();
        let Some(answer) = answer else {
            return Err(self.broker_error(ResponseError::UnknownServerError, "writing"));
        };
        match answer.error_code.err() {
            None => Ok(()),
            Some(error) => {
                self.forget_leader();
                Err(CheckpointError::Broker {
                    topic: self.name.clone(),
                    error,
                    action: "writing",
                    message: answer.error_message.map(|m| m.to_string()),
                })
            }
        }
    }

    fn encode(
        &self,
        records: &[KeyedRecord],
        max_bytes: usize,
        producer: Option<TransactionStamp<'_>>,
    ) -> Result<Vec<EncodedBatch>, CheckpointError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        encode_batches(records, now, max_bytes, producer).map_err(|reason| {
            CheckpointError::Encode {
                topic: self.name.clone(),
                reason,
            }
        })
    }

    /// The partition's leader, looked up when not known.
    pub(super) async fn leader_or_refresh(&self) -> Result<i32, CheckpointError> {
        if let Some(leader) = *lock(&self.leader) {
            return Ok(leader);
        }
        let metadata = self.cluster_result(self.target.metadata().await)?;
        let topic = metadata.topics.get(&self.name);
        let leader = topic
            .and_then(|t| t.partitions.get(&0))
            .and_then(|p| p.leader);
        if let Some(t) = topic {
            *lock(&self.topic_id) = t.id;
        }
        *lock(&self.leader) = leader;
        leader.ok_or_else(|| {
            self.broker_error(ResponseError::LeaderNotAvailable, "finding the leader")
        })
    }

    /// Looks the leader up again before the next request.
    pub(super) fn forget_leader(&self) {
        *lock(&self.leader) = None;
    }

    pub(super) fn cluster_result<T>(
        &self,
        result: Result<T, ClusterError>,
    ) -> Result<T, CheckpointError> {
        result.map_err(|source| CheckpointError::Cluster {
            topic: self.name.clone(),
            source,
        })
    }

    pub(super) fn broker_error(
        &self,
        error: ResponseError,
        action: &'static str,
    ) -> CheckpointError {
        CheckpointError::Broker {
            topic: self.name.clone(),
            error,
            action,
            message: None,
        }
    }
}

/// A record batch, and how many of the records it holds.
#[derive(Debug)]
pub(super) struct EncodedBatch {
    pub(super) bytes: Bytes,
    pub(super) records: usize,
}

/// A v2 batch's bytes before its first record (Kafka's `RECORD_BATCH_OVERHEAD`).
const BATCH_HEADER_BYTES: usize = 61;

/// The records, in order, as uncompressed record batches (Produce v3+ takes
/// exactly one batch per partition and request) of at most `max_bytes` each,
/// each filled as far as the limit allows; without a producer, or as
/// `producer`'s transactional batches, the first record at its sequence.
pub(super) fn encode_batches(
    keyed: &[KeyedRecord],
    timestamp: i64,
    max_bytes: usize,
    producer: Option<TransactionStamp<'_>>,
) -> Result<Vec<EncodedBatch>, String> {
    let mut batches = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut size = BATCH_HEADER_BYTES;
    let mut producer = producer;
    for KeyedRecord { key, value } in keyed {
        let mut record_size = record_bytes(records.len(), key.len(), value.len());
        // A batch's sequences run up without wrapping, as its offsets do:
        // the record after i32::MAX, at sequence 0, starts a new batch.
        let wraps = producer.is_some_and(|p| p.sequence == 0);
        if !records.is_empty() && (size + record_size > max_bytes || wraps) {
            batches.push(encode_records(&mut records, max_bytes)?);
            size = BATCH_HEADER_BYTES;
            record_size = record_bytes(0, key.len(), value.len());
        }
        if size + record_size > max_bytes {
            return Err(format!(
                "the record keyed `{}` takes {} bytes in a batch, over the topic's {MAX_MESSAGE_BYTES} {max_bytes}",
                printable(key),
                BATCH_HEADER_BYTES + record_size
            ));
        }
        let i = records.len();
        // The codec keeps records in one batch only while offset - sequence
        // stays constant, and takes the first record's as the batch's base
        // sequence: -1 without a producer id, as the broker requires.
        let (producer_id, producer_epoch, sequence) = match producer {
            Some(p) => (p.producer_id, p.epoch, p.sequence),
            None => (-1, -1, i as i32 - 1),
        };
        producer = producer.map(|p| p.after(1));
        records.push(Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence,
            timestamp,
            key: Some(key.clone()),
            value: Some(value.clone()),
            headers: Default::default(),
        });
        size += record_size;
    }
    if !records.is_empty() {
        batches.push(encode_records(&mut records, max_bytes)?);
    }
    Ok(batches)
}

/// A key as text for a message: control characters (the length fields of
/// a binary key) shown as `.`.
fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

/// The bytes a record without headers takes in a v2 batch, as the
/// `index`-th record, all records sharing the batch's timestamp.
fn record_bytes(index: usize, key: usize, value: usize) -> usize {
    let len = |n: usize| varint_len(i32::try_from(n).unwrap_or(i32::MAX));
    // attributes, timestamp delta (0), offset delta, key, value, header count (0)
    let body = 1 + 1 + len(index) + len(key) + key + len(value) + value + 1;
    len(body) + body
}

/// Encodes (and empties) `records` as one batch, which must fit `max_bytes`.
fn encode_records(records: &mut Vec<Record>, max_bytes: usize) -> Result<EncodedBatch, String> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &*records, &options).map_err(|e| e.to_string())?;
    if buf.len() > max_bytes {
        return Err(format!(
            "a batch of {} records came to {} bytes, over the {max_bytes} it was sized for",
            records.len(),
            buf.len()
        ));
    }
    let count = records.len();
    records.clear();
    Ok(EncodedBatch {
        bytes: buf.freeze(),
        records: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_too_large_for_the_topic_is_named_by_its_key() {
        let binary = KeyedRecord {
            key: Bytes::from_static(b"\x00\x05group\x00\x01t"),
            value: Bytes::from(vec![7; 200]),
        };
        let err = encode_batches(&[binary], 0, 200, None).expect_err("over the limit");
        assert!(
            err.starts_with("the record keyed `..group..t` takes 2"),
            "{err}"
        );
        assert!(err.ends_with("max.message.bytes 200"), "{err}");
    }
}
