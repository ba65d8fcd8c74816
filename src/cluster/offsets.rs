//! Offset lookups (ListOffsets): log start, log end, or the first offset at a time.
//!
//! Each partition is asked of its leader; partitions that share a leader share
//! one request, and the leaders are asked concurrently.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::task::JoinSet;

use super::{Cluster, ClusterError, Metadata};

/// Which offset of a partition to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset: the oldest offset still held.
    Earliest,
    /// The log end: the high watermark, or the last stable offset under read_committed.
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch
    /// (the log end if there is none).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// What a lookup found for one partition.
pub type OffsetResult = Result<i64, OffsetLookupError>;

/// Why one partition's offset could not be looked up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OffsetLookupError {
    /// The metadata names no leader for it.
    #[error("no leader known")]
    NoLeader,
    /// The leader answered with an error.
    #[error("broker error {0:?}")]
    Broker(ResponseError),
    /// The leader could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The leader's answer left this partition out.
    #[error("missing from the broker's answer")]
    Missing,
}

impl Cluster {
    /// Looks up one offset for each partition, asking each partition's leader.
    pub async fn list_offsets(
        self: &std::sync::Arc<Self>,
        metadata: &Metadata,
        partitions: &[(String, i32)],
        spec: OffsetSpec,
        isolation_level: i8,
    ) -> HashMap<(String, i32), OffsetResult> {
        let mut results = HashMap::new();
        let mut by_leader: HashMap<i32, BTreeMap<String, Vec<i32>>> = HashMap::new();
        for (topic, partition) in partitions {
            match metadata.leader(topic, *partition) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push(*partition),
                None => {
                    results.insert(
                        (topic.clone(), *partition),
                        Err(OffsetLookupError::NoLeader),
                    );
                }
            }
        }
        let mut requests = JoinSet::new();
        for (leader, topics) in by_leader {
            let cluster = self.clone();
            requests.spawn(async move {
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(isolation_level)
                    .with_topics(
                        topics
                            .iter()
                            .map(|(topic, partitions)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(
                                        partitions
                                            .iter()
                                            .map(|p| {
                                                ListOffsetsPartition::default()
                                                    .with_partition_index(*p)
                                                    .with_timestamp(spec.wire_timestamp())
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                let response = cluster.send(leader, request).await;
                (topics, response)
            });
        }
        while let Some(joined) = requests.join_next().await {
            let Ok((asked, response)) = joined else {
                continue;
            };
            let mut answered = HashMap::new();
            match response {
                Ok(response) => {
                    for topic in response.topics {
                        for p in topic.partitions {
                            let result = match p.error_code.err() {
                                None => Ok(p.offset),
                                Some(e) => Err(OffsetLookupError::Broker(e)),
                            };
                            answered.insert((topic.name.0.to_string(), p.partition_index), result);
                        }
                    }
                }
                Err(e) => {
                    let reason = OffsetLookupError::Unreachable(ClusterError::to_string(&e));
                    for (topic, partitions) in &asked {
                        for p in partitions {
                            answered.insert((topic.clone(), *p), Err(reason.clone()));
                        }
                    }
                }
            }
            for (topic, partitions) in asked {
                for p in partitions {
                    let key = (topic.clone(), p);
                    let result = answered
                        .remove(&key)
                        .unwrap_or(Err(OffsetLookupError::Missing));
                    results.insert(key, result);
                }
            }
        }
        results
    }
}
