//! Building Fetch requests and reading their responses by topic name.
//!
//! Fetch v13+ names topics by id, older versions by name; requests carry both
//! (the codec writes the one the negotiated version has) and responses are
//! mapped back to names here, so callers never care which version was used.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// One partition to fetch, and from where.
#[derive(Debug, Clone)]
pub struct PartitionFetch {
    /// The topic's name.
    pub topic: String,
    /// The topic's id (used from Fetch v13 on).
    pub topic_id: Uuid,
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
    /// The leader epoch the caller believes in, so a stale leader is refused;
    /// -1 to skip the check.
    pub leader_epoch: i32,
    /// The most bytes of this partition in the response (a first batch larger
    /// than this is still returned whole, KIP-74).
    pub max_bytes: i32,
}

/// A Fetch request for these partitions, outside any fetch session (KIP-227
/// sessions are an optimisation for many idle partitions, not needed for correctness).
pub fn fetch_request(
    partitions: &[PartitionFetch],
    isolation_level: i8,
    max_wait: Duration,
    max_bytes: i32,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for p in partitions {
        let slot = *index.entry(&p.topic).or_insert_with(|| {
            topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_topic_id(p.topic_id),
            );
            topics.len() - 1
        });
        topics[slot].partitions.push(
            FetchPartition::default()
                .with_partition(p.partition)
                .with_fetch_offset(p.offset)
                .with_current_leader_epoch(p.leader_epoch)
                .with_partition_max_bytes(p.max_bytes),
        );
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(isolation_level)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// The partitions of a Fetch response with their topic names, whichever way
/// the response named them. A topic id the caller did not ask for is skipped.
pub fn response_partitions(
    response: FetchResponse,
    names_by_id: &HashMap<Uuid, String>,
) -> Vec<(String, PartitionData)> {
    let mut out = Vec::new();
    for topic in response.responses {
        let name = if topic.topic_id.is_nil() {
            topic.topic.0.to_string()
        } else {
            match names_by_id.get(&topic.topic_id) {
                Some(name) => name.clone(),
                None => continue,
            }
        };
        for partition in topic.partitions {
            out.push((name.clone(), partition));
        }
    }
    out
}
