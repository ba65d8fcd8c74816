//! Checkpoints: the next source offset to copy, per partition, kept on the target cluster.
//!
//! They live in a compacted, single-partition topic on the **target** cluster
//! (`kafka-mirror-checkpoints` by default), one record per source partition:
//!
//! - key `{"mirror":NAME,"topic":T,"partition":P}`, value
//!   `{"next_offset":N,"topic_id":UUID,"source_cluster":ID,"leader_epoch":E}` (JSON, so an
//!   operator can read them with any console consumer). `T` is the target
//!   topic (the source topic's name under the flow's policy, so a changed
//!   policy copies its new topics from the start); `NAME` is the flow's
//!   checkpoint name (`Flow::checkpoint_name`: the mirror name, or
//!   `<mirror name>/<flow name>` for declared flows), so flows into one target
//!   never share a key;
//! - compaction keeps the latest value per key forever, unlike consumer group
//!   offsets, which expire after `offsets.retention.minutes`;
//! - on the target, because that is where the data lands: any instance on any
//!   machine that can reach the target resumes from them, and a later
//!   exactly-once mode can write data and checkpoint in one target transaction
//!   (a Kafka transaction spans partitions of one cluster only).
//!
//! A checkpoint only ever names an offset whose data the target acknowledged,
//! and the topic id and cluster id let a restart notice a source topic that was
//! deleted and recreated, or a config that now points at another cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::{
    fetch_request, response_partitions, Cluster, ClusterError, OffsetSpec, PartitionFetch,
    TopicNames,
};
use crate::topics::{ensure_topics, TopicError, TopicSpec};

/// A failure to read or write checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint topic could not be created or found.
    #[error("checkpoint topic `{topic}`: {source}")]
    Topic {
        /// The checkpoint topic.
        topic: String,
        /// Why.
        #[source]
        source: TopicError,
    },
    /// The target cluster could not be reached.
    #[error("checkpoint topic `{topic}`: {source}")]
    Cluster {
        /// The checkpoint topic.
        topic: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// The broker refused a read or a write.
    #[error("checkpoint topic `{topic}`: the target answered {error:?} while {action}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// The checkpoint topic.
        topic: String,
        /// The broker's error.
        error: ResponseError,
        /// What the mirror was doing.
        action: &'static str,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
    },
    /// The checkpoint topic has no usable leader yet.
    #[error("checkpoint topic `{topic}` is not ready: {reason}")]
    NotReady {
        /// The checkpoint topic.
        topic: String,
        /// What is missing.
        reason: String,
    },
    /// A checkpoint batch could not be encoded.
    #[error("checkpoint topic `{topic}`: cannot encode a checkpoint batch: {reason}")]
    Encode {
        /// The checkpoint topic.
        topic: String,
        /// The codec's message.
        reason: String,
    },
    /// A stored checkpoint could not be decoded.
    #[error("checkpoint topic `{topic}`: unreadable record at offset {offset}: {reason}")]
    Corrupt {
        /// The checkpoint topic.
        topic: String,
        /// The record's offset.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
}

impl CheckpointError {
    /// Whether trying again may succeed (leaders move, brokers restart).
    pub fn is_retriable(&self) -> bool {
        match self {
            CheckpointError::Cluster { source, .. } => source.is_retriable(),
            CheckpointError::Broker { error, .. } => {
                error.is_retriable()
                    || matches!(
                        error,
                        ResponseError::NotLeaderOrFollower | ResponseError::LeaderNotAvailable
                    )
            }
            CheckpointError::NotReady { .. } => true,
            CheckpointError::Topic { .. }
            | CheckpointError::Encode { .. }
            | CheckpointError::Corrupt { .. } => false,
        }
    }
}

/// Progress of one source partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The next source offset to copy: everything before it is on the target.
    pub next_offset: i64,
    /// The source topic's id when the checkpoint was written.
    pub topic_id: Uuid,
    /// The source cluster's id when the checkpoint was written.
    pub source_cluster: Option<String>,
    /// The source leader epoch of the last batch copied (the one before
    /// `next_offset`), so a restart can tell whether the source's log still
    /// holds it (KIP-320); absent when unknown, and in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointKey<'a> {
    mirror: &'a str,
    topic: &'a str,
    partition: i32,
}

/// Reads and writes one mirror's checkpoints.
#[derive(Debug)]
pub struct CheckpointStore {
    target: Arc<Cluster>,
    topic: String,
    mirror: String,
    topic_id: Mutex<Uuid>,
    leader: Mutex<Option<i32>>,
}

/// Tries to read the checkpoints before giving up (at 250 ms each).
const LOAD_ATTEMPTS: u32 = 60;

/// Bytes asked per Fetch while loading checkpoints.
const LOAD_FETCH_BYTES: i32 = 8 * 1024 * 1024;

impl CheckpointStore {
    /// Opens the store, creating the compacted checkpoint topic if it is missing.
    pub async fn open(
        target: Arc<Cluster>,
        topic: &str,
        mirror: &str,
        replication_factor: i16,
    ) -> Result<Self, CheckpointError> {
        let spec = TopicSpec {
            name: topic.to_owned(),
            partitions: 1,
            configs: vec![("cleanup.policy".to_owned(), "compact".to_owned())],
        };
        let metadata = ensure_topics(&target, &[spec], replication_factor)
            .await
            .map_err(|source| CheckpointError::Topic {
                topic: topic.to_owned(),
                source,
            })?;
        let (topic_id, leader) = metadata
            .topics
            .get(topic)
            .map(|t| (t.id, t.partitions.get(&0).and_then(|p| p.leader)))
            .unwrap_or_default();
        Ok(CheckpointStore {
            target,
            topic: topic.to_owned(),
            mirror: mirror.to_owned(),
            topic_id: Mutex::new(topic_id),
            leader: Mutex::new(leader),
        })
    }

    /// The name of the checkpoint topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Reads every checkpoint of this mirror: the latest value per partition.
    /// Retries for a while: a just-created checkpoint topic may not have a
    /// leader known to every broker yet.
    pub async fn load(&self) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        let mut attempt = 0;
        loop {
            match self.try_load().await {
                Err(e) if e.is_retriable() && attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "checkpoints not readable yet; retrying");
                    attempt += 1;
                    self.forget_leader();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                result => return result,
            }
        }
    }

    async fn try_load(&self) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        let metadata = self.cluster_result(self.target.metadata().await)?;
        let end = self
            .target
            .list_offsets(&metadata, &[(self.topic.clone(), 0)], OffsetSpec::Latest, 0)
            .await
            .remove(&(self.topic.clone(), 0))
            .unwrap_or(Err(crate::cluster::OffsetLookupError::Missing))
            .map_err(|e| CheckpointError::NotReady {
                topic: self.topic.clone(),
                reason: format!("cannot find its end offset: {e}"),
            })?;
        let topic_meta = metadata.topics.get(&self.topic);
        let topic_id = topic_meta.map(|t| t.id).unwrap_or_default();
        let leader_epoch = metadata
            .partition(&self.topic, 0)
            .map_or(-1, |p| p.leader_epoch);
        let leader = self.leader_or_refresh().await?;
        let names = TopicNames::from_iter([(topic_id, self.topic.clone())]);
        let mut checkpoints = HashMap::new();
        let mut offset = 0;
        while offset < end {
            let request = fetch_request(
                &[PartitionFetch {
                    topic: self.topic.clone(),
                    topic_id,
                    partition: 0,
                    offset,
                    last_fetched_epoch: -1,
                    leader_epoch,
                    max_bytes: LOAD_FETCH_BYTES,
                }],
                0,
                Duration::from_millis(100),
                LOAD_FETCH_BYTES,
            );
            let response = self.cluster_result(self.target.send(leader, request).await)?;
            let Some((_, data)) = response_partitions(response, &names).next() else {
                return Err(self.broker_error(ResponseError::UnknownServerError, "reading"));
            };
            if let Some(error) = data.error_code.err() {
                if error == ResponseError::OffsetOutOfRange && offset == 0 {
                    // Compaction or retention removed the head: start at the log start.
                    offset = data.log_start_offset.max(1);
                    continue;
                }
                return Err(self.broker_error(error, "reading"));
            }
            let mut records = data.records.unwrap_or_default();
            let before = offset;
            while !records.is_empty() {
                let set = match RecordBatchDecoder::decode(&mut records) {
                    Ok(set) => set,
                    // A cut-off last batch ends this response; fetch on from it.
                    Err(_) => break,
                };
                for record in set.records {
                    offset = offset.max(record.offset + 1);
                    if record.control {
                        continue;
                    }
                    self.apply(&record, &mut checkpoints)?;
                }
            }
            if offset == before {
                break;
            }
        }
        Ok(checkpoints)
    }

    fn apply(
        &self,
        record: &Record,
        checkpoints: &mut HashMap<(String, i32), Checkpoint>,
    ) -> Result<(), CheckpointError> {
        apply_record(&self.mirror, record, checkpoints).map_err(|reason| CheckpointError::Corrupt {
            topic: self.topic.clone(),
            offset: record.offset,
            reason,
        })
    }

    /// Writes checkpoints for these partitions and waits for the target's
    /// acknowledgement (acks=all). One write at a time keeps them in order.
    pub async fn write(
        &self,
        entries: &[(String, i32, Checkpoint)],
    ) -> Result<(), CheckpointError> {
        if entries.is_empty() {
            return Ok(());
        }
        let batch = self.encode(entries)?;
        let leader = self.leader_or_refresh().await?;
        let topic_id = *self.topic_id.lock().unwrap_or_else(|p| p.into_inner());
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
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
                    topic: self.topic.clone(),
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
                    topic: self.topic.clone(),
                    error,
                    action: "writing",
                    message: answer.error_message.map(|m| m.to_string()),
                })
            }
        }
    }

    fn encode(&self, entries: &[(String, i32, Checkpoint)]) -> Result<Bytes, CheckpointError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        encode_batch(&self.mirror, entries, now).map_err(|reason| CheckpointError::Encode {
            topic: self.topic.clone(),
            reason,
        })
    }

    async fn leader_or_refresh(&self) -> Result<i32, CheckpointError> {
        if let Some(leader) = *self.leader.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(leader);
        }
        let metadata = self.cluster_result(self.target.metadata().await)?;
        let topic = metadata.topics.get(&self.topic);
        let leader = topic
            .and_then(|t| t.partitions.get(&0))
            .and_then(|p| p.leader);
        if let Some(t) = topic {
            *self.topic_id.lock().unwrap_or_else(|p| p.into_inner()) = t.id;
        }
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
        leader.ok_or_else(|| {
            self.broker_error(ResponseError::LeaderNotAvailable, "finding the leader")
        })
    }

    fn forget_leader(&self) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn cluster_result<T>(&self, result: Result<T, ClusterError>) -> Result<T, CheckpointError> {
        result.map_err(|source| CheckpointError::Cluster {
            topic: self.topic.clone(),
            source,
        })
    }

    fn broker_error(&self, error: ResponseError, action: &'static str) -> CheckpointError {
        CheckpointError::Broker {
            topic: self.topic.clone(),
            error,
            action,
            message: None,
        }
    }
}

/// One uncompressed record batch with a record per partition (Produce v3+
/// takes exactly one batch per partition).
fn encode_batch(
    mirror: &str,
    entries: &[(String, i32, Checkpoint)],
    timestamp: i64,
) -> Result<Bytes, String> {
    let mut records = Vec::with_capacity(entries.len());
    for (i, (topic, partition, checkpoint)) in entries.iter().enumerate() {
        let key = CheckpointKey {
            mirror,
            topic,
            partition: *partition,
        };
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The codec keeps records in one batch only while offset -
            // sequence stays constant; the batch's base sequence is the first
            // record's: -1, as a batch without a producer id must have.
            sequence: i as i32 - 1,
            timestamp,
            key: Some(Bytes::from(
                serde_json::to_vec(&key).map_err(|e| e.to_string())?,
            )),
            value: Some(Bytes::from(
                serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?,
            )),
            headers: Default::default(),
        });
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Applies one stored record to the checkpoints of `mirror`: the latest
/// value wins, a null value (tombstone) removes the partition's checkpoint,
/// and records of other mirrors are ignored.
fn apply_record(
    mirror: &str,
    record: &Record,
    checkpoints: &mut HashMap<(String, i32), Checkpoint>,
) -> Result<(), String> {
    let Some(key) = &record.key else {
        return Ok(());
    };
    let key: CheckpointKey<'_> = serde_json::from_slice(key).map_err(|e| format!("key: {e}"))?;
    if key.mirror != mirror {
        return Ok(());
    }
    let slot = (key.topic.to_owned(), key.partition);
    match &record.value {
        None => {
            checkpoints.remove(&slot);
        }
        Some(value) => {
            let checkpoint: Checkpoint =
                serde_json::from_slice(value).map_err(|e| format!("value: {e}"))?;
            checkpoints.insert(slot, checkpoint);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordBatch;

    fn checkpoint(offset: i64) -> Checkpoint {
        Checkpoint {
            next_offset: offset,
            topic_id: Uuid::from_u128(42),
            source_cluster: Some("src".into()),
            leader_epoch: Some(3),
        }
    }

    #[test]
    fn a_write_is_one_batch_that_reads_back() {
        let entries = vec![
            ("orders".to_owned(), 0, checkpoint(10)),
            ("orders".to_owned(), 1, checkpoint(20)),
            ("payments".to_owned(), 0, checkpoint(30)),
        ];
        let bytes = encode_batch("dr", &entries, 1_700_000_000_000).expect("encode");
        let batch = RecordBatch::parse(bytes.clone()).expect("exactly one v2 batch");
        assert_eq!(batch.len(), bytes.len());
        assert_eq!(batch.records_count(), 3);
        assert_eq!(batch.producer_id(), -1);
        assert_eq!(batch.base_sequence(), -1);
        batch.verify_crc().expect("valid CRC");

        let mut buf = bytes;
        let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
        let mut loaded = HashMap::new();
        for record in &set.records {
            apply_record("dr", record, &mut loaded).expect("apply");
            apply_record("other-mirror", record, &mut HashMap::new()).expect("apply");
        }
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded[&("orders".to_owned(), 1)], checkpoint(20));
        assert_eq!(loaded[&("payments".to_owned(), 0)], checkpoint(30));
    }

    #[test]
    fn other_mirrors_and_tombstones() {
        let bytes = encode_batch("dr", &[("t".to_owned(), 0, checkpoint(5))], 0).expect("encode");
        let mut buf = bytes;
        let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
        let mut loaded = HashMap::new();
        apply_record("another", &set.records[0], &mut loaded).expect("apply");
        assert!(
            loaded.is_empty(),
            "another mirror's checkpoints are not ours"
        );
        apply_record("dr", &set.records[0], &mut loaded).expect("apply");
        let mut tombstone = set.records[0].clone();
        tombstone.value = None;
        apply_record("dr", &tombstone, &mut loaded).expect("apply");
        assert!(loaded.is_empty(), "a tombstone removes the checkpoint");
        let mut garbage = set.records[0].clone();
        garbage.value = Some(Bytes::from_static(b"not json"));
        let err = apply_record("dr", &garbage, &mut loaded).expect_err("corrupt");
        assert!(err.starts_with("value:"), "{err}");
    }

    /// Checkpoints written before the leader epoch was kept still load.
    #[test]
    fn a_checkpoint_without_a_leader_epoch_loads() {
        let old = br#"{"next_offset":7,"topic_id":"00000000-0000-0000-0000-00000000002a","source_cluster":null}"#;
        let loaded: Checkpoint = serde_json::from_slice(old).expect("old checkpoint");
        assert_eq!((loaded.next_offset, loaded.leader_epoch), (7, None));
        let unknown = Checkpoint {
            leader_epoch: None,
            ..checkpoint(7)
        };
        let written = serde_json::to_string(&unknown).expect("json");
        assert!(!written.contains("leader_epoch"), "{written}");
    }
}
