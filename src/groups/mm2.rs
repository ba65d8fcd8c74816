//! MirrorMaker 2's consumer group checkpoints, written along the group
//! offset sync, so tools that call MirrorMaker 2's
//! `RemoteClusterUtils.translateOffsets` (or read its checkpoints) keep
//! working against a target kafka-mirror fills.
//!
//! The format is connect-mirror-client's `Checkpoint`, version 0:
//!
//! - topic `<source alias><sep>checkpoints<sep>internal` on the target
//!   (DefaultReplicationPolicy's `checkpointsTopic`, `sep` being the flow's
//!   `separator`, MirrorMaker 2's `replication.policy.separator`, `.` by
//!   default), compacted, one partition;
//! - key: the Kafka protocol struct {group STRING, topic STRING, partition
//!   INT32}, where the topic is the copy's name on the target;
//! - value: INT16 version 0, then {upstreamOffset INT64, offset INT64 (on
//!   the target), metadata STRING};
//! - STRING is an INT16 length and that many bytes of UTF-8, never null.
//!
//! After each sync, every partition whose translation the target's group
//! now holds (committed by the sync, or already in place) gets a checkpoint:
//! upstream the source's committed offset, downstream its translation,
//! metadata the commit's. The topic is compacted, so only checkpoints whose
//! value changed since this process last wrote them are written.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use super::{GroupOutcome, PartitionAction, SyncReport};
use crate::checkpoint::{CheckpointError, CheckpointTopic, KeyedRecord, Written};
use crate::cluster::Cluster;
use crate::config::Flow;

/// The value version MirrorMaker 2 writes and reads (`Checkpoint.VERSION`).
const VERSION: i16 = 0;

/// One checkpoint: where a group's committed source offset resumes on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mm2Checkpoint {
    /// The consumer group.
    pub group: String,
    /// The topic's name on the target.
    pub topic: String,
    /// The partition (the same on both clusters).
    pub partition: i32,
    /// The group's committed offset on the source.
    pub upstream_offset: i64,
    /// Where that resumes on the target.
    pub downstream_offset: i64,
    /// The commit's metadata (empty when it had none).
    pub metadata: String,
}

/// A checkpoint that cannot be written, or bytes that are not one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Mm2FormatError {
    /// A string longer than the INT16 length of the format allows.
    #[error("the {field} is {len} bytes, over the 32767 a MirrorMaker 2 checkpoint holds")]
    TooLong {
        /// Which string.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Bytes that do not read as a checkpoint's key or value.
    #[error("not a MirrorMaker 2 checkpoint {part}: {reason}")]
    Malformed {
        /// `key` or `value`.
        part: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A value version other than 0.
    #[error("MirrorMaker 2 checkpoint value version {0}; only version 0 is known")]
    Version(i16),
}

impl Mm2Checkpoint {
    /// The checkpoint as the record MirrorMaker 2 writes.
    pub fn encode(&self) -> Result<KeyedRecord, Mm2FormatError> {
        let mut key = BytesMut::new();
        put_string(&mut key, "group id", &self.group)?;
        put_string(&mut key, "topic name", &self.topic)?;
        key.put_i32(self.partition);
        let mut value = BytesMut::new();
        value.put_i16(VERSION);
        value.put_i64(self.upstream_offset);
        value.put_i64(self.downstream_offset);
        put_string(&mut value, "commit metadata", &self.metadata)?;
        Ok(KeyedRecord {
            key: key.freeze(),
            value: value.freeze(),
        })
    }

    /// Reads a record of a checkpoints topic, as MirrorMaker 2's
    /// `Checkpoint.deserializeRecord` does, but refusing trailing bytes.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, Mm2FormatError> {
        let (group, topic, partition) = whole(key, |k| {
            let group = get_string(k)?;
            let topic = get_string(k)?;
            Ok((group, topic, k.try_get_i32().map_err(|e| e.to_string())?))
        })
        .map_err(malformed("key"))?;
        let mut v = value;
        let version = v.try_get_i16().map_err(malformed("value"))?;
        if version != VERSION {
            return Err(Mm2FormatError::Version(version));
        }
        let (upstream_offset, downstream_offset, metadata) = whole(v, |v| {
            let upstream = v.try_get_i64().map_err(|e| e.to_string())?;
            let downstream = v.try_get_i64().map_err(|e| e.to_string())?;
            Ok((upstream, downstream, get_string(v)?))
        })
        .map_err(malformed("value"))?;
        Ok(Mm2Checkpoint {
            group,
            topic,
            partition,
            upstream_offset,
            downstream_offset,
            metadata,
        })
    }
}

/// Reads `bytes` with `read`, which must take them all.
fn whole<T>(
    mut bytes: &[u8],
    read: impl FnOnce(&mut &[u8]) -> Result<T, String>,
) -> Result<T, String> {
    let value = read(&mut bytes)?;
    match bytes.len() {
        0 => Ok(value),
        left => Err(format!("{left} bytes after its last field")),
    }
}

/// Writes a Kafka protocol STRING: an INT16 length, then the UTF-8 bytes.
fn put_string(buf: &mut BytesMut, field: &'static str, text: &str) -> Result<(), Mm2FormatError> {
    let len = i16::try_from(text.len()).map_err(|_| Mm2FormatError::TooLong {
        field,
        len: text.len(),
    })?;
    buf.put_i16(len);
    buf.put_slice(text.as_bytes());
    Ok(())
}

/// Reads a Kafka protocol STRING; a null one (length -1) is refused, as
/// MirrorMaker 2's schemas refuse it.
fn get_string(buf: &mut &[u8]) -> Result<String, String> {
    let len = buf.try_get_i16().map_err(|e| e.to_string())?;
    let len = usize::try_from(len).map_err(|_| format!("a string of length {len}"))?;
    if buf.len() < len {
        return Err(format!(
            "a string of {len} bytes where {} are left",
            buf.len()
        ));
    }
    let (text, rest) = buf.split_at(len);
    *buf = rest;
    String::from_utf8(text.to_vec()).map_err(|e| e.to_string())
}

/// An error reading a `part` (`key` or `value`) as a malformed checkpoint.
fn malformed<E: fmt::Display>(part: &'static str) -> impl Fn(E) -> Mm2FormatError {
    move |e| Mm2FormatError::Malformed {
        part,
        reason: e.to_string(),
    }
}

/// MirrorMaker 2's checkpoints topic for groups copied from `source_alias`
/// (DefaultReplicationPolicy's `checkpointsTopic`).
pub fn checkpoints_topic(source_alias: &str, separator: &str) -> String {
    format!("{source_alias}{separator}checkpoints{separator}internal")
}

/// The checkpoints of a sync: the partitions whose translation the target's
/// group holds after it, in the report's order.
pub fn checkpoints(report: &SyncReport) -> Vec<Mm2Checkpoint> {
    let mut found = Vec::new();
    for group in &report.groups {
        let committed = matches!(group.outcome, GroupOutcome::Synced { .. });
        for p in &group.partitions {
            let held = match p.action {
                PartitionAction::InPlace => true,
                PartitionAction::Commit => committed,
                PartitionAction::TargetAhead | PartitionAction::Untranslatable => false,
            };
            let Some(downstream_offset) = p.resume_at().filter(|_| held) else {
                continue;
            };
            found.push(Mm2Checkpoint {
                group: group.group.clone(),
                topic: p.target_topic.clone(),
                partition: p.partition,
                upstream_offset: p.source_committed,
                downstream_offset,
                metadata: p.metadata.clone().unwrap_or_default(),
            });
        }
    }
    found
}

/// Writes one flow's MirrorMaker 2 checkpoints, sync after sync.
#[derive(Debug)]
pub struct Mm2Checkpoints {
    target: Arc<Cluster>,
    topic: String,
    replication_factor: i16,
    /// One write at a time.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Opened (and created if missing) at the first write.
    topic: Option<CheckpointTopic>,
    /// What this process stored, by key: what need not be written again.
    stored: HashMap<Bytes, Bytes>,
}

/// What one sync's checkpoints came to.
#[derive(Debug)]
pub struct Mm2Written {
    /// The checkpoints topic.
    pub topic: String,
    /// The sync's checkpoints, one per partition the target's groups hold.
    pub checkpoints: usize,
    /// Of those, how many changed and were written now.
    pub written: usize,
    /// Why some were not written, when some were not: the next sync tries again.
    pub result: Result<(), CheckpointError>,
}

impl fmt::Display for Mm2Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MirrorMaker 2 checkpoints in `{}`: {} partitions, {} written now",
            self.topic, self.checkpoints, self.written
        )?;
        if let Err(error) = &self.result {
            write!(f, ", NOT ALL WRITTEN: {error}")?;
        }
        Ok(())
    }
}

impl Mm2Checkpoints {
    /// The writer of a flow's checkpoints, if the flow syncs groups with
    /// `mm2_checkpoints` on: into `<source alias><separator>checkpoints<separator>internal`
    /// on `target`, created with the flow's replication factor.
    pub fn for_flow(flow: &Flow, target: Arc<Cluster>) -> Option<Self> {
        flow.groups.as_ref().filter(|g| g.mm2_checkpoints())?;
        let separator = flow.topics.separator.as_deref().unwrap_or(".");
        Some(Mm2Checkpoints::new(
            target,
            checkpoints_topic(&flow.source_alias, separator),
            flow.replication.replication_factor,
        ))
    }

    /// A writer into `topic` on `target`, which it creates (compacted, one
    /// partition) when it is missing.
    pub fn new(target: Arc<Cluster>, topic: String, replication_factor: i16) -> Self {
        Mm2Checkpoints {
            target,
            topic,
            replication_factor,
            state: Mutex::new(State::default()),
        }
    }

    /// The checkpoints topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes the checkpoints of `report` ([`checkpoints`]) that changed
    /// since this process last stored them. A checkpoint that cannot be
    /// encoded is left out and reported; the others are written.
    pub async fn write(&self, report: &SyncReport) -> Mm2Written {
        let all = checkpoints(report);
        let mut state = self.state.lock().await;
        let mut unencodable = None;
        let changed: Vec<KeyedRecord> = all
            .iter()
            .filter_map(|checkpoint| match checkpoint.encode() {
                Ok(record) => Some(record),
                Err(e) => {
                    unencodable.get_or_insert_with(|| CheckpointError::Encode {
                        topic: self.topic.clone(),
                        reason: format!(
                            "group {:?}, {}-{}: {e}",
                            checkpoint.group, checkpoint.topic, checkpoint.partition
                        ),
                    });
                    None
                }
            })
            .filter(|record| state.stored.get(&record.key) != Some(&record.value))
            .collect();
        let stored = self.store(&mut state, &changed).await;
        let outcome = Mm2Written {
            topic: self.topic.clone(),
            checkpoints: all.len(),
            written: stored.stored,
            result: stored.result.and_then(|()| unencodable.map_or(Ok(()), Err)),
        };
        if outcome.result.is_err() {
            tracing::warn!("{outcome}");
        } else if outcome.written > 0 {
            tracing::debug!("{outcome}");
        }
        outcome
    }

    /// Stores `records` in order, opening the topic first if need be, and
    /// remembers what landed.
    async fn store(&self, state: &mut State, records: &[KeyedRecord]) -> Written {
        if records.is_empty() {
            return Written {
                stored: 0,
                result: Ok(()),
            };
        }
        let topic = match state.topic.take() {
            Some(topic) => topic,
            None => {
                let opened = CheckpointTopic::create(
                    self.target.clone(),
                    &self.topic,
                    self.replication_factor,
                )
                .await;
                match opened {
                    Ok(topic) => topic,
                    Err(e) => {
                        return Written {
                            stored: 0,
                            result: Err(e),
                        }
                    }
                }
            }
        };
        let written = topic.write(records).await;
        state.topic = Some(topic);
        for record in &records[..written.stored] {
            state
                .stored
                .insert(record.key.clone(), record.value.clone());
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{CommittedOffset, CommittedOffsets};
    use crate::groups::{plan_group, CopiedPartitions, GroupReport};
    use crate::offset_map::OffsetMap;

    fn checkpoint(metadata: &str) -> Mm2Checkpoint {
        Mm2Checkpoint {
            group: "billing".into(),
            topic: "eu.orders".into(),
            partition: 2,
            upstream_offset: 1_000,
            downstream_offset: 0x0102_0304_0506,
            metadata: metadata.into(),
        }
    }

    /// The bytes MirrorMaker 2's `Checkpoint.recordKey` and `recordValue`
    /// give, written out from its schemas field by field.
    #[test]
    fn a_checkpoint_is_the_bytes_mirror_maker_2_writes() {
        let record = checkpoint("app state é").encode().expect("encodes");
        let mut key = Vec::new();
        key.extend([0, 7]);
        key.extend(b"billing");
        key.extend([0, 9]);
        key.extend(b"eu.orders");
        key.extend([0, 0, 0, 2]);
        assert_eq!(record.key, key);
        let mut value = vec![0, 0]; // version 0
        value.extend([0, 0, 0, 0, 0, 0, 0x03, 0xe8]); // upstream 1000
        value.extend([0, 0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        value.extend([0, 12]); // "é" is two bytes in UTF-8
        value.extend("app state é".as_bytes());
        assert_eq!(record.value, value);
        assert_eq!(
            Mm2Checkpoint::decode(&record.key, &record.value).expect("decodes"),
            checkpoint("app state é")
        );

        // No metadata is an empty string, never a null one (-1).
        let bare = checkpoint("").encode().expect("encodes");
        assert_eq!(&bare.value[18..], [0, 0]);
    }

    #[test]
    fn what_is_not_a_checkpoint_is_refused() {
        let record = checkpoint("m").encode().expect("encodes");
        let (key, value) = (&record.key[..], &record.value[..]);
        let err = |k: &[u8], v: &[u8]| {
            Mm2Checkpoint::decode(k, v)
                .expect_err("not a checkpoint")
                .to_string()
        };
        assert!(err(&key[..key.len() - 1], value).contains("checkpoint key"));
        assert!(err(key, &value[..value.len() - 1]).contains("checkpoint value"));
        let mut longer = value.to_vec();
        longer.push(0);
        assert!(err(key, &longer).contains("1 bytes after its last field"));
        let mut v1 = value.to_vec();
        v1[1] = 1;
        assert!(err(key, &v1).contains("version 1"));

        let huge = checkpoint(&"x".repeat(40_000));
        let e = huge.encode().expect_err("too long").to_string();
        assert!(e.contains("commit metadata is 40000 bytes"), "{e}");
    }

    #[test]
    fn the_topic_is_named_as_default_replication_policy_names_it() {
        assert_eq!(checkpoints_topic("eu", "."), "eu.checkpoints.internal");
        assert_eq!(checkpoints_topic("eu", "_"), "eu_checkpoints_internal");
    }

    fn committed(entries: &[(&str, i32, i64, Option<&str>)]) -> CommittedOffsets {
        entries
            .iter()
            .map(|&(topic, partition, offset, metadata)| {
                let committed = CommittedOffset {
                    offset,
                    metadata: metadata.map(str::to_owned),
                };
                ((topic.to_owned(), partition), committed)
            })
            .collect()
    }

    /// Partitions 0..4 of `orders`, copied to `eu.orders` 100 offsets further.
    fn copied() -> CopiedPartitions {
        let mut copied = CopiedPartitions::new();
        for partition in 0..4 {
            let mut map = OffsetMap::starting_at(0);
            map.copied(0, 100, 50);
            copied.insert("orders", partition, "eu.orders", map);
        }
        copied
    }

    #[test]
    fn checkpoints_are_the_partitions_the_target_holds() {
        let source = committed(&[
            ("orders", 0, 10, Some("note")),
            ("orders", 1, 20, None),
            ("orders", 2, 30, None),
            ("orders", 3, 60, None),
        ]);
        // Partition 1 in place, 2 ahead on the target; 0 and 3 to commit
        // (3 past the copy: at its end).
        let target = committed(&[("eu.orders", 1, 120, None), ("eu.orders", 2, 140, None)]);
        let partitions = plan_group(&source, &target, &copied());
        let report = |outcome| SyncReport {
            groups: vec![GroupReport {
                group: "billing".into(),
                outcome,
                partitions: partitions.clone(),
            }],
            mm2_checkpoints: None,
        };
        let row = |partition, upstream_offset, downstream_offset, metadata: &str| Mm2Checkpoint {
            group: "billing".into(),
            topic: "eu.orders".into(),
            partition,
            upstream_offset,
            downstream_offset,
            metadata: metadata.into(),
        };
        assert_eq!(
            checkpoints(&report(GroupOutcome::Synced { partitions: 2 })),
            [
                row(0, 10, 110, "note"),
                row(1, 20, 120, ""),
                row(3, 60, 150, "")
            ]
        );
        // Not committed: only what was in place already.
        for outcome in [
            GroupOutcome::Active {
                state: "Stable".into(),
            },
            GroupOutcome::Unchanged,
        ] {
            assert_eq!(checkpoints(&report(outcome)), [row(1, 20, 120, "")]);
        }
    }

    #[test]
    fn the_summary_line_says_where_and_what_failed() {
        let mut written = Mm2Written {
            topic: "eu.checkpoints.internal".into(),
            checkpoints: 3,
            written: 1,
            result: Ok(()),
        };
        assert_eq!(
            written.to_string(),
            "MirrorMaker 2 checkpoints in `eu.checkpoints.internal`: 3 partitions, 1 written now"
        );
        written.result = Err(CheckpointError::NotReady {
            topic: "eu.checkpoints.internal".into(),
            reason: "no leader".into(),
        });
        assert!(written
            .to_string()
            .ends_with("1 written now, NOT ALL WRITTEN: checkpoint topic `eu.checkpoints.internal` is not ready: no leader"));
    }
}
