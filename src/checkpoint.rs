//! Checkpoints: the next source offset to copy, per partition, kept on the target cluster.
//!
//! They live in a compacted, single-partition topic on the **target** cluster
//! (`kafka-mirror-checkpoints` by default), one record per source partition:
//!
//! - key `{"mirror":NAME,"topic":T,"partition":P}`, value
//!   `{"next_offset":N,"topic_id":UUID,"source_cluster":ID,"leader_epoch":E,"offset_map":M}`
//!   (JSON, so an operator can read them with any console consumer), where `M`
//!   is the partition's offset map up to `N` (where each copied source offset
//!   landed on the target, [`crate::offset_map::StoredMap`]). `T` is the target
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
//!
//! A write is split into record batches that each fit the checkpoint topic's
//! `max.message.bytes` ([`CheckpointTopic`], which MirrorMaker 2's
//! checkpoints are written with too). A checkpoint whose map is one point
//! (a plain topic) takes about 250 bytes, so about 4,000 fit the 1 MiB
//! default; a full map ([`crate::offset_map::MAX_POINTS`] points) takes 4 to
//! 20 KiB depending on the size of its steps, so about 50 fit at worst.
//! A load reads every record up to the end offset or fails: a start
//! with some checkpoints missing would copy those partitions again, or with
//! `start_position = "latest"` skip their data. It reads committed records
//! only (READ_COMMITTED, up to the last stable offset): checkpoints written
//! in a transaction ([`CheckpointStore::write_in_transaction`], with the
//! data they cover) count once it commits, never when it aborts.
//! [`CheckpointStore::load_stable`] first waits until every transaction
//! open on the topic is decided: what a partition taken over from another
//! instance starts from.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::batch::{split_batches, AbortedTransactions, BatchFate, Fetched};
use crate::cluster::{
    fetch_request, response_partitions, Cluster, ClusterError, Metadata, OffsetSpec,
    PartitionFetch, TopicNames,
};
use crate::config::IsolationLevel;
use crate::offset_map::{OffsetMap, StoredMap};
use crate::topics::TopicError;

mod topic;

pub use topic::{CheckpointTopic, KeyedRecord, TransactionStamp, Written};

/// A failure to read or write a checkpoint topic (kafka-mirror's own, or
/// MirrorMaker 2's).
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
    #[error(
        "checkpoint topic `{topic}` partition 0: unreadable record at offset {offset}: {reason}; \
         refusing to start with only part of the checkpoints (the partitions missing would be \
         copied again, or skipped with start_position = \"latest\")"
    )]
    Corrupt {
        /// The checkpoint topic.
        topic: String,
        /// The record's offset.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
    /// Reading the checkpoints stopped short of the partition's end.
    #[error(
        "checkpoint topic `{topic}` partition 0: reading stopped at offset {offset}, before its \
         end offset {end}; refusing to start with only part of the checkpoints"
    )]
    Stalled {
        /// The checkpoint topic.
        topic: String,
        /// Where the read stopped.
        offset: i64,
        /// The partition's end offset when the read began.
        end: i64,
    },
    /// The target refused a batch that fits the limit it reports.
    #[error(
        "checkpoint topic `{topic}`: the target refused a checkpoint batch of {bytes} bytes as too \
         large, though the topic's max.message.bytes is {limit}"
    )]
    TooLarge {
        /// The checkpoint topic.
        topic: String,
        /// The refused batch's size.
        bytes: usize,
        /// The topic's `max.message.bytes` as read after the refusal.
        limit: usize,
    },
}

impl CheckpointError {
    /// Whether the broker refused a batch as larger than the topic allows.
    fn is_too_large(&self) -> bool {
        matches!(
            self,
            CheckpointError::Broker {
                error: ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge,
                ..
            }
        )
    }

    /// Whether trying again may succeed (leaders move, brokers restart).
    pub fn is_retriable(&self) -> bool {
        match self {
            CheckpointError::Cluster { source, .. } => source.is_retriable(),
            // The same bytes sent again are refused again as corrupt.
            CheckpointError::Broker {
                error: ResponseError::CorruptMessage,
                ..
            } => false,
            CheckpointError::Broker { error, .. } => {
                error.is_retriable()
                    || matches!(
                        error,
                        ResponseError::NotLeaderOrFollower | ResponseError::LeaderNotAvailable
                    )
            }
            // A leader moving while the checkpoints were read; the load tries again.
            CheckpointError::NotReady { .. } | CheckpointError::Stalled { .. } => true,
            CheckpointError::Topic { .. }
            | CheckpointError::Encode { .. }
            | CheckpointError::Corrupt { .. }
            | CheckpointError::TooLarge { .. } => false,
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
    /// Where the copied source offsets landed on the target, up to
    /// `next_offset` (see [`crate::offset_map`]): stored with the checkpoint
    /// so it is never older or newer than the copy it describes. Absent in
    /// older checkpoints, which older versions ignore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_map: Option<StoredMap>,
}

impl Checkpoint {
    /// The offset map stored with the checkpoint, ending at its next offset;
    /// `None` when it has none (an older kafka-mirror wrote it) or the one it
    /// has does not hold together.
    pub fn stored_map(&self) -> Option<OffsetMap> {
        OffsetMap::from_stored(self.offset_map.as_ref()?, self.next_offset)
    }
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
    topic: CheckpointTopic,
    mirror: String,
}

/// Tries to read the checkpoints before giving up (at 250 ms each).
const LOAD_ATTEMPTS: u32 = 60;

/// How long [`CheckpointStore::load_stable`] waits for the transactions
/// open on the checkpoint topic (a crashed instance's is aborted by its
/// transaction timeout), and how often it looks.
const STABLE_WAIT: Duration = Duration::from_secs(60);
const STABLE_POLL: Duration = Duration::from_millis(100);

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
        let topic = CheckpointTopic::create(target, topic, replication_factor).await?;
        Ok(CheckpointStore {
            topic,
            mirror: mirror.to_owned(),
        })
    }

    /// Opens the store to read only: `None` when the checkpoint topic does
    /// not exist (nothing was ever copied into this target). Creates nothing.
    pub async fn open_existing(
        target: Arc<Cluster>,
        topic: &str,
        mirror: &str,
    ) -> Result<Option<Self>, CheckpointError> {
        Ok(CheckpointTopic::existing(target, topic)
            .await?
            .map(|topic| CheckpointStore {
                topic,
                mirror: mirror.to_owned(),
            }))
    }

    /// The name of the checkpoint topic.
    pub fn topic(&self) -> &str {
        self.topic.name()
    }

    /// Reads every checkpoint of this mirror: the latest value per partition.
    /// Retries for a while: a just-created checkpoint topic may not have a
    /// leader known to every broker yet.
    pub async fn load(&self) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        self.load_up_to(None).await
    }

    /// [`CheckpointStore::load`], the first attempt up to `known`'s last
    /// stable offset, just looked up with its metadata (each saves a round
    /// trip).
    async fn load_up_to(
        &self,
        mut known: Option<(Metadata, i64)>,
    ) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        let mut attempt = 0;
        loop {
            match self.try_load(known.take()).await {
                Err(e) if e.is_retriable() && attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "checkpoints not readable yet; retrying");
                    attempt += 1;
                    self.topic.forget_leader();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                result => return result,
            }
        }
    }

    /// [`CheckpointStore::load`] once every transaction open on the
    /// checkpoint topic now is committed or aborted (its last stable offset
    /// reached the high watermark it has now): an instance that handed
    /// partitions over, or one fenced or gone, has then stored its last
    /// checkpoint of them, and nothing of it comes after.
    pub async fn load_stable(&self) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        let (target, name) = (self.topic.target(), self.topic.name());
        let metadata = self.topic.cluster_result(target.metadata().await)?;
        let (written, mut stable) = tokio::try_join!(
            self.end_offset(&metadata, IsolationLevel::ReadUncommitted),
            self.end_offset(&metadata, IsolationLevel::ReadCommitted)
        )?;
        let started = Instant::now();
        while stable < written {
            if started.elapsed() > STABLE_WAIT {
                return Err(CheckpointError::NotReady {
                    topic: name.to_owned(),
                    reason: format!(
                        "a transaction stays open at offset {stable} (of {written}) for over {STABLE_WAIT:?}"
                    ),
                });
            }
            tokio::time::sleep(STABLE_POLL).await;
            stable = self
                .end_offset(&metadata, IsolationLevel::ReadCommitted)
                .await?;
        }
        self.load_up_to(Some((metadata, stable))).await
    }

    /// The checkpoint partition's end offset: for `ReadCommitted` its last
    /// stable offset, where the first transaction still open starts.
    async fn end_offset(
        &self,
        metadata: &Metadata,
        isolation: IsolationLevel,
    ) -> Result<i64, CheckpointError> {
        let (target, name) = (self.topic.target(), self.topic.name());
        target
            .list_offsets(
                metadata,
                &[(name.to_owned(), 0)],
                OffsetSpec::Latest,
                isolation.wire_value(),
            )
            .await
            .remove(&(name.to_owned(), 0))
            .unwrap_or(Err(crate::cluster::OffsetLookupError::Missing))
            .map_err(|e| CheckpointError::NotReady {
                topic: name.to_owned(),
                reason: format!("cannot find its end offset: {e}"),
            })
    }

    async fn try_load(
        &self,
        known: Option<(Metadata, i64)>,
    ) -> Result<HashMap<(String, i32), Checkpoint>, CheckpointError> {
        let (target, name) = (self.topic.target(), self.topic.name());
        // Up to the last stable offset: an open transaction's checkpoints
        // are not read, nor anything after them.
        let committed = IsolationLevel::ReadCommitted.wire_value();
        let (metadata, end) = match known {
            Some(known) => known,
            None => {
                let metadata = self.topic.cluster_result(target.metadata().await)?;
                let end = self
                    .end_offset(&metadata, IsolationLevel::ReadCommitted)
                    .await?;
                (metadata, end)
            }
        };
        let topic_meta = metadata.topics.get(name);
        let topic_id = topic_meta.map(|t| t.id).unwrap_or_default();
        let leader_epoch = metadata.partition(name, 0).map_or(-1, |p| p.leader_epoch);
        let leader = self.topic.leader_or_refresh().await?;
        let names = TopicNames::from_iter([(topic_id, name.to_owned())]);
        let mut scan = Scan::new(&self.mirror, name, end);
        while let Some(offset) = scan.next_offset() {
            let request = fetch_request(
                &[PartitionFetch {
                    topic: name.to_owned(),
                    topic_id,
                    partition: 0,
                    offset,
                    last_fetched_epoch: -1,
                    leader_epoch,
                    max_bytes: LOAD_FETCH_BYTES,
                }],
                committed,
                Duration::from_millis(100),
                LOAD_FETCH_BYTES,
            );
            let response = self
                .topic
                .cluster_result(target.send(leader, request).await)?;
            let Some((_, data)) = response_partitions(response, &names).next() else {
                return Err(self
                    .topic
                    .broker_error(ResponseError::UnknownServerError, "reading"));
            };
            scan.take(data)?;
        }
        Ok(scan.checkpoints)
    }

    /// Writes checkpoints for these partitions, in order (see
    /// [`CheckpointTopic::write`]).
    pub async fn write(&self, entries: &[(String, i32, Checkpoint)]) -> Written {
        match checkpoint_records(&self.mirror, entries) {
            Ok(records) => self.topic.write(&records).await,
            Err(reason) => self.unwritten(reason),
        }
    }

    /// [`CheckpointStore::write`] in `stamp`'s transaction (see
    /// [`CheckpointTopic::write_in_transaction`]): loaded once the
    /// transaction commits, never if it aborts. The checkpoint topic's
    /// partition, `(self.topic(), 0)`, must be in the transaction first.
    /// Also returns the partition's next sequence for the producer.
    pub async fn write_in_transaction(
        &self,
        entries: &[(String, i32, Checkpoint)],
        stamp: TransactionStamp<'_>,
    ) -> (Written, i32) {
        match checkpoint_records(&self.mirror, entries) {
            Ok(records) => self.topic.write_in_transaction(&records, stamp).await,
            Err(reason) => (self.unwritten(reason), stamp.sequence),
        }
    }

    /// A write that stored nothing: its checkpoints could not be encoded.
    fn unwritten(&self, reason: String) -> Written {
        Written {
            stored: 0,
            result: Err(CheckpointError::Encode {
                topic: self.topic.name().to_owned(),
                reason,
            }),
        }
    }
}

/// One read of the checkpoint partition, from its start up to the end
/// offset it had when the read began.
#[derive(Debug)]
struct Scan<'a> {
    mirror: &'a str,
    topic: &'a str,
    end: i64,
    offset: i64,
    checkpoints: HashMap<(String, i32), Checkpoint>,
}

impl<'a> Scan<'a> {
    fn new(mirror: &'a str, topic: &'a str, end: i64) -> Self {
        Scan {
            mirror,
            topic,
            end,
            offset: 0,
            checkpoints: HashMap::new(),
        }
    }

    /// Where the next Fetch starts, or `None` once the end is read.
    fn next_offset(&self) -> Option<i64> {
        (self.offset < self.end).then_some(self.offset)
    }

    /// Applies one Fetch answer for the partition.
    fn take(&mut self, data: PartitionData) -> Result<(), CheckpointError> {
        if let Some(error) = data.error_code.err() {
            if error == ResponseError::OffsetOutOfRange && self.offset == 0 {
                // Compaction or retention removed the head: start at the log start.
                self.offset = data.log_start_offset.max(1);
                return Ok(());
            }
            return Err(CheckpointError::Broker {
                topic: self.topic.to_owned(),
                error,
                action: "reading",
                message: None,
            });
        }
        let records = data.records.unwrap_or_default();
        let mut aborted =
            AbortedTransactions::new(data.aborted_transactions.as_deref().unwrap_or(&[]));
        let before = self.offset;
        let mut batches = split_batches(&records);
        for fetched in &mut batches {
            let batch = match fetched {
                Ok(Fetched::Batch(batch)) => batch,
                Ok(Fetched::Legacy(_)) => {
                    return Err(self.corrupt(
                        self.offset,
                        "a message in the old formats (magic 0 or 1)".into(),
                    ))
                }
                Err(e) => return Err(self.corrupt(self.offset, e.to_string())),
            };
            let fate = aborted
                .classify(&batch)
                .map_err(|e| self.corrupt(batch.base_offset(), e.to_string()))?;
            if fate != BatchFate::Forward {
                // A transaction marker, or checkpoints of an aborted transaction.
                self.offset = self.offset.max(batch.next_offset());
                continue;
            }
            let mut bytes = batch.as_bytes().clone();
            let set = RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| self.corrupt(batch.base_offset(), e.to_string()))?;
            for record in set.records {
                // A batch starts before the fetch offset when it falls inside it.
                if record.offset < self.offset {
                    continue;
                }
                apply_record(self.mirror, &record, &mut self.checkpoints)
                    .map_err(|reason| self.corrupt(record.offset, reason))?;
            }
            // Past the batch's last offset, records or not (compaction).
            self.offset = self.offset.max(batch.next_offset());
        }
        // The broker returns a first batch whole, whatever the size asked
        // (KIP-74), so an answer that moved nothing is not a cut-off one.
        if self.offset == before {
            return Err(CheckpointError::Stalled {
                topic: self.topic.to_owned(),
                offset: self.offset,
                end: self.end,
            });
        }
        Ok(())
    }

    fn corrupt(&self, offset: i64, reason: String) -> CheckpointError {
        CheckpointError::Corrupt {
            topic: self.topic.to_owned(),
            offset,
            reason,
        }
    }
}

/// The entries as the records that store them.
fn checkpoint_records(
    mirror: &str,
    entries: &[(String, i32, Checkpoint)],
) -> Result<Vec<KeyedRecord>, String> {
    entries
        .iter()
        .map(|(topic, partition, checkpoint)| {
            let key = CheckpointKey {
                mirror,
                topic,
                partition: *partition,
            };
            Ok(KeyedRecord {
                key: serde_json::to_vec(&key).map_err(|e| e.to_string())?.into(),
                value: serde_json::to_vec(checkpoint)
                    .map_err(|e| e.to_string())?
                    .into(),
            })
        })
        .collect()
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
    use super::topic::EncodedBatch;
    use super::*;
    use crate::batch::RecordBatch;
    use crate::offset_map::{OffsetMap, MAX_POINTS};
    use bytes::{Bytes, BytesMut};

    fn checkpoint(offset: i64) -> Checkpoint {
        Checkpoint {
            next_offset: offset,
            topic_id: Uuid::from_u128(42),
            source_cluster: Some("src".into()),
            leader_epoch: Some(3),
            offset_map: None,
        }
    }

    /// The entries' records in batches of at most `max_bytes`, as a write sends them.
    fn encode_batches(
        mirror: &str,
        entries: &[(String, i32, Checkpoint)],
        timestamp: i64,
        max_bytes: usize,
    ) -> Result<Vec<EncodedBatch>, String> {
        topic::encode_batches(
            &checkpoint_records(mirror, entries)?,
            timestamp,
            max_bytes,
            None,
        )
    }

    /// The entries as the one batch they fit in.
    fn one_batch(entries: &[(String, i32, Checkpoint)], timestamp: i64) -> Bytes {
        let mut batches = encode_batches("dr", entries, timestamp, 1 << 20).expect("encode");
        assert_eq!(batches.len(), 1);
        batches.remove(0).bytes
    }

    #[test]
    fn a_write_is_one_batch_that_reads_back() {
        let entries = vec![
            ("orders".to_owned(), 0, checkpoint(10)),
            ("orders".to_owned(), 1, checkpoint(20)),
            ("payments".to_owned(), 0, checkpoint(30)),
        ];
        let bytes = one_batch(&entries, 1_700_000_000_000);
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
        let bytes = one_batch(&[("t".to_owned(), 0, checkpoint(5))], 0);
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

    /// Entries for `topics` x `partitions` partitions, every one at `offset`.
    fn entries(topics: usize, partitions: i32, offset: i64) -> Vec<(String, i32, Checkpoint)> {
        (0..topics)
            .flat_map(|t| {
                (0..partitions).map(move |p| {
                    let topic = format!("eu-west.orders-and-payments-of-region-{t}");
                    (topic, p, checkpoint(offset + i64::from(p)))
                })
            })
            .collect()
    }

    /// Applies batches in order, as the loader reads them back.
    fn reload(batches: &[EncodedBatch], into: &mut HashMap<(String, i32), Checkpoint>) {
        for batch in batches {
            let mut buf = batch.bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
            assert!(buf.is_empty(), "one batch each");
            assert_eq!(set.records.len(), batch.records);
            for record in &set.records {
                apply_record("dr", record, into).expect("apply");
            }
        }
    }

    #[test]
    fn checkpoints_are_split_into_batches_that_fit_the_limit() {
        const LIMIT: usize = 16 * 1024;
        let first = entries(6, 100, 1_000);
        let batches = encode_batches("dr", &first, 1_700_000_000_000, LIMIT).expect("encode");
        let total: usize = batches.iter().map(|b| b.bytes.len()).sum();
        assert!(
            total > 4 * LIMIT,
            "the test needs several batches: {total} bytes"
        );
        for (i, batch) in batches.iter().enumerate() {
            assert!(batch.bytes.len() <= LIMIT, "{} bytes", batch.bytes.len());
            // Well filled: the next entry would not have fitted.
            if i + 1 < batches.len() {
                assert!(
                    batch.bytes.len() > LIMIT - 300,
                    "{} bytes",
                    batch.bytes.len()
                );
            }
            let parsed = RecordBatch::parse(batch.bytes.clone()).expect("one v2 batch");
            parsed.verify_crc().expect("valid CRC");
            assert_eq!(parsed.records_count() as usize, batch.records);
            assert_eq!((parsed.producer_id(), parsed.base_sequence()), (-1, -1));
        }
        // Every partition is written exactly once.
        let mut seen = HashMap::new();
        for batch in &batches {
            let mut buf = batch.bytes.clone();
            for record in RecordBatchDecoder::decode(&mut buf)
                .expect("decode")
                .records
            {
                *seen.entry(record.key.expect("key")).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), first.len());
        assert!(seen.values().all(|&n| n == 1));

        // A later write of some partitions wins over the first on reload.
        let later: Vec<_> = first
            .iter()
            .filter(|(_, p, _)| p % 3 == 0)
            .map(|(t, p, c)| (t.clone(), *p, checkpoint(c.next_offset + 500)))
            .collect();
        let again = encode_batches("dr", &later, 1_700_000_000_100, LIMIT).expect("encode");
        let mut loaded = HashMap::new();
        reload(&batches, &mut loaded);
        reload(&again, &mut loaded);
        assert_eq!(loaded.len(), first.len());
        for (topic, partition, stored) in &first {
            let expected = if partition % 3 == 0 {
                stored.next_offset + 500
            } else {
                stored.next_offset
            };
            assert_eq!(loaded[&(topic.clone(), *partition)].next_offset, expected);
        }
    }

    #[test]
    fn a_checkpoint_larger_than_the_limit_is_an_error() {
        let err = encode_batches("dr", &entries(1, 1, 0), 0, 100).expect_err("too small");
        assert!(err.contains("max.message.bytes 100"), "{err}");
    }

    /// A Fetch answer holding these batches, one after another.
    fn answer(batches: &[Bytes]) -> PartitionData {
        PartitionData::default().with_records(Some(batches.concat().into()))
    }

    /// `count` checkpoints of partitions `first..` stored at `base_offset`.
    fn stored_batch(base_offset: i64, first: i32, count: i32) -> Bytes {
        let entries: Vec<_> = (first..first + count)
            .map(|p| ("t".to_owned(), p, checkpoint(7)))
            .collect();
        let mut bytes = BytesMut::from(&one_batch(&entries, 0)[..]);
        bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes.freeze()
    }

    #[test]
    fn the_loader_reads_up_to_the_end_across_answers() {
        let mut scan = Scan::new("dr", "checkpoints", 6);
        let second = stored_batch(3, 3, 3);
        // The first answer ends in a cut-off batch: the next Fetch starts there.
        scan.take(answer(&[stored_batch(0, 0, 3), second.slice(..20)]))
            .expect("take");
        assert_eq!(scan.next_offset(), Some(3));
        scan.take(answer(&[second])).expect("take");
        assert_eq!(scan.next_offset(), None);
        assert_eq!(scan.checkpoints.len(), 6);
    }

    const STAMP: TransactionStamp<'static> = TransactionStamp {
        transactional_id: "dr-0",
        producer_id: 4_000,
        epoch: 3,
        sequence: 10,
    };

    /// The entries as `stamp`'s transactional batches of at most `max_bytes`.
    fn transactional_batches(
        entries: &[(String, i32, Checkpoint)],
        stamp: TransactionStamp<'_>,
        max_bytes: usize,
    ) -> Vec<EncodedBatch> {
        let records = checkpoint_records("dr", entries).expect("records");
        topic::encode_batches(&records, 0, max_bytes, Some(stamp)).expect("encode")
    }

    #[test]
    fn a_transactional_write_carries_the_producer_and_consecutive_sequences() {
        let batches = transactional_batches(&entries(2, 50, 0), STAMP, 4 * 1024);
        assert!(batches.len() > 2, "the test needs several batches");
        let mut sequence = STAMP.sequence;
        for batch in &batches {
            let parsed = RecordBatch::parse(batch.bytes.clone()).expect("one v2 batch");
            parsed.verify_crc().expect("valid CRC");
            assert!(parsed.is_transactional() && !parsed.is_control());
            assert_eq!((parsed.producer_id(), parsed.producer_epoch()), (4_000, 3));
            assert_eq!(parsed.base_sequence(), sequence);
            sequence += parsed.records_count();
        }
        assert_eq!(sequence, STAMP.sequence + 100);

        // Sequences wrap from i32::MAX to 0 between batches, never inside one.
        let near_the_end = TransactionStamp {
            sequence: i32::MAX - 1,
            ..STAMP
        };
        let batches = transactional_batches(&entries(1, 5, 0), near_the_end, 1 << 20);
        let runs: Vec<(i32, i32)> = batches
            .iter()
            .map(|b| {
                let parsed = RecordBatch::parse(b.bytes.clone()).expect("one v2 batch");
                (parsed.base_sequence(), parsed.records_count())
            })
            .collect();
        assert_eq!(runs, [(i32::MAX - 1, 2), (0, 3)]);
    }

    /// Checkpoints of partitions `first..first + count` in `STAMP`'s
    /// transaction, stored at `base_offset`.
    fn stored_transactional_batch(base_offset: i64, first: i32, count: i32) -> Bytes {
        let entries: Vec<_> = (first..first + count)
            .map(|p| ("t".to_owned(), p, checkpoint(9)))
            .collect();
        let mut batches = transactional_batches(&entries, STAMP, 1 << 20);
        let mut bytes = BytesMut::from(&batches.remove(0).bytes[..]);
        bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes.freeze()
    }

    #[test]
    fn the_loader_skips_aborted_transactions_and_reads_committed_ones() {
        use crate::batch::test_support::control_batch;
        use kafka_protocol::messages::fetch_response::AbortedTransaction;
        use kafka_protocol::messages::ProducerId;

        const ABORT: i16 = 0;
        const COMMIT: i16 = 1;
        // Offsets 0-2 plain, 3-4 aborted then its marker at 5, 6-7
        // committed then its marker at 8.
        let batches = [
            stored_batch(0, 0, 3),
            stored_transactional_batch(3, 0, 2),
            control_batch(5, STAMP.producer_id, ABORT),
            stored_transactional_batch(6, 10, 2),
            control_batch(8, STAMP.producer_id, COMMIT),
        ];
        let aborted = AbortedTransaction::default()
            .with_producer_id(ProducerId(STAMP.producer_id))
            .with_first_offset(3);
        let mut scan = Scan::new("dr", "checkpoints", 9);
        scan.take(answer(&batches).with_aborted_transactions(Some(vec![aborted])))
            .expect("take");
        assert_eq!(scan.next_offset(), None);
        let mut loaded: Vec<(i32, i64)> = scan
            .checkpoints
            .iter()
            .map(|((_, p), c)| (*p, c.next_offset))
            .collect();
        loaded.sort_unstable();
        assert_eq!(loaded, [(0, 7), (1, 7), (2, 7), (10, 9), (11, 9)]);
    }

    #[test]
    fn an_undecodable_batch_fails_the_load_naming_its_offset() {
        let mut bad = BytesMut::from(&stored_batch(3, 3, 3)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // the CRC no longer matches
        let mut scan = Scan::new("dr", "checkpoints", 6);
        let err = scan
            .take(answer(&[stored_batch(0, 0, 3), bad.freeze()]))
            .expect_err("a batch that cannot be decoded");
        let text = err.to_string();
        assert!(
            matches!(err, CheckpointError::Corrupt { offset: 3, .. }),
            "{text}"
        );
        assert!(
            text.contains("`checkpoints` partition 0") && text.contains("offset 3"),
            "{text}"
        );
        assert!(!err.is_retriable());
    }

    #[test]
    fn a_read_that_stops_before_the_end_fails_the_load() {
        // A complete answer that ends short of the end offset, then nothing.
        let mut scan = Scan::new("dr", "checkpoints", 10);
        scan.take(answer(&[stored_batch(0, 0, 3)])).expect("take");
        assert_eq!(scan.next_offset(), Some(3));
        let err = scan.take(answer(&[])).expect_err("no progress");
        let text = err.to_string();
        assert!(
            text.contains("offset 3") && text.contains("end offset 10"),
            "{text}"
        );
        // A cut-off first batch, the whole answer, is no progress either.
        let mut scan = Scan::new("dr", "checkpoints", 10);
        let cut = stored_batch(0, 0, 3).slice(..30);
        assert!(scan.take(answer(&[cut])).is_err());
    }

    /// Checkpoints written before the leader epoch and the offset map were
    /// kept still load.
    #[test]
    fn a_checkpoint_without_a_leader_epoch_or_an_offset_map_loads() {
        let old = br#"{"next_offset":7,"topic_id":"00000000-0000-0000-0000-00000000002a","source_cluster":null}"#;
        let loaded: Checkpoint = serde_json::from_slice(old).expect("old checkpoint");
        assert_eq!((loaded.next_offset, loaded.leader_epoch), (7, None));
        assert_eq!(loaded.offset_map, None);
        let unknown = Checkpoint {
            leader_epoch: None,
            ..checkpoint(7)
        };
        let written = serde_json::to_string(&unknown).expect("json");
        assert!(!written.contains("leader_epoch"), "{written}");
        assert!(!written.contains("offset_map"), "{written}");
    }

    /// Reads back what `entries` wrote, as the loader does.
    fn written_and_loaded(
        entries: &[(String, i32, Checkpoint)],
        limit: usize,
    ) -> (Vec<EncodedBatch>, HashMap<(String, i32), Checkpoint>) {
        let batches = encode_batches("dr", entries, 1_700_000_000_000, limit).expect("encode");
        let mut loaded = HashMap::new();
        reload(&batches, &mut loaded);
        (batches, loaded)
    }

    /// A checkpoint carries its partition's offset map, and an operator
    /// reads it as JSON.
    #[test]
    fn the_offset_map_round_trips_through_the_checkpoint() {
        // Records 100..150, a commit marker at 150, records 151..171.
        let mut map = OffsetMap::starting_at(100);
        map.copied(100, 0, 50);
        map.skipped_to(151);
        map.copied(151, 50, 20);
        let with_map = Checkpoint {
            offset_map: Some(map.stored()),
            ..checkpoint(171)
        };
        let json = serde_json::to_string(&with_map).expect("json");
        assert!(
            json.ends_with(
                r#","offset_map":{"from":100,"points":[0,0,51,50],"copied_end":[171,70]}}"#
            ),
            "{json}"
        );
        let (_, loaded) = written_and_loaded(&[("t".to_owned(), 0, with_map.clone())], 1 << 20);
        let loaded = &loaded[&("t".to_owned(), 0)];
        assert_eq!(loaded, &with_map);
        let stored = loaded.offset_map.as_ref().expect("a map");
        assert_eq!(
            OffsetMap::from_stored(stored, loaded.next_offset),
            Some(map)
        );
    }

    /// The largest maps a checkpoint can carry still split into batches the
    /// topic takes, and read back whole.
    #[test]
    fn checkpoints_with_full_offset_maps_fit_the_limit() {
        const LIMIT: usize = 1 << 20;
        // Steps as large as a long-lived topic's offsets make: 17 digits each.
        let step = 10_000_000_000_000_000;
        let mut map = OffsetMap::starting_at(0);
        for i in 0..MAX_POINTS as i64 {
            map.copied(i * step, i * (step - 1), 1);
        }
        let end = map.end();
        let full: Vec<_> = entries(1, 200, 0)
            .into_iter()
            .map(|(topic, partition, _)| {
                let offset_map = Some(map.stored());
                (
                    topic,
                    partition,
                    Checkpoint {
                        offset_map,
                        ..checkpoint(end)
                    },
                )
            })
            .collect();
        let value = serde_json::to_vec(&full[0].2).expect("json").len();
        assert!((16 << 10..24 << 10).contains(&value), "{value} bytes");
        let (batches, loaded) = written_and_loaded(&full, LIMIT);
        assert!(batches.len() >= 4, "{} batches", batches.len());
        assert!(batches.iter().all(|b| b.bytes.len() <= LIMIT));
        assert_eq!(loaded.len(), full.len());
        for (topic, partition, written) in &full {
            let read = &loaded[&(topic.clone(), *partition)];
            assert_eq!(read, written);
            let stored = read.offset_map.as_ref().expect("a map");
            assert_eq!(OffsetMap::from_stored(stored, end).as_ref(), Some(&map));
        }
    }

    /// The checkpoint of a plain topic, its map one point.
    #[test]
    fn a_plain_topic_checkpoint_is_about_250_bytes() {
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 0, 8);
        let plain = Checkpoint {
            offset_map: Some(map.stored()),
            ..checkpoint(8)
        };
        let entries: Vec<_> = entries(6, 1000, 0)
            .into_iter()
            .map(|(t, p, _)| (t, p, plain.clone()))
            .collect();
        let (batches, _) = written_and_loaded(&entries, 1 << 20);
        let total: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let each = total / entries.len();
        assert!((200..300).contains(&each), "{each} bytes a checkpoint");
    }
}
