//! A snapshot of one cluster's metadata: brokers, topics, partition leaders.
//!
//! Built from a Metadata response and never mutated: a refresh replaces the
//! whole snapshot, so readers always see one consistent view.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

/// One cluster's metadata at one moment.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// The cluster's id, which tells two clusters apart even behind the same address.
    pub cluster_id: Option<String>,
    /// `host:port` of every live broker, by node id.
    pub brokers: HashMap<i32, String>,
    /// Every topic the response listed, by name.
    pub topics: BTreeMap<String, TopicMetadata>,
}

/// One topic as the cluster describes it.
#[derive(Debug, Clone)]
pub struct TopicMetadata {
    /// The topic's id: changes when a topic is deleted and created again.
    pub id: Uuid,
    /// Whether the cluster marks it internal (`__consumer_offsets`, ...).
    pub internal: bool,
    /// The topic-level error, if the broker could not describe it.
    pub error: Option<ResponseError>,
    /// Partitions by index.
    pub partitions: BTreeMap<i32, PartitionMetadata>,
}

/// One partition's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The leader's node id; `None` while the partition has no leader.
    pub leader: Option<i32>,
    /// The leader epoch, sent with Fetch so a stale leader is detected.
    pub leader_epoch: i32,
}

impl Metadata {
    /// Builds a snapshot from a Metadata response.
    pub fn from_response(response: MetadataResponse) -> Self {
        let brokers = response
            .brokers
            .into_iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let topics = response
            .topics
            .into_iter()
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let leader = (p.leader_id.0 >= 0).then_some(p.leader_id.0);
                        let meta = PartitionMetadata {
                            leader,
                            leader_epoch: p.leader_epoch,
                        };
                        (p.partition_index, meta)
                    })
                    .collect();
                let topic = TopicMetadata {
                    id: t.topic_id,
                    internal: t.is_internal,
                    error: t.error_code.err(),
                    partitions,
                };
                Some((name, topic))
            })
            .collect();
        Metadata {
            cluster_id: response.cluster_id.map(|id| id.to_string()),
            brokers,
            topics,
        }
    }

    /// The leader of a partition, if the topic, the partition and a leader are known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partition(topic, partition)?.leader
    }

    /// A partition's metadata.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMetadata> {
        self.topics.get(topic)?.partitions.get(&partition)
    }
}

/// Topic names by topic id: Fetch and Produce from v13 on name topics by
/// id in their responses, older versions by name. Names are held as
/// [`StrBytes`], so handing one out per response topic is a reference-count
/// increment, not an allocation.
#[derive(Debug, Clone, Default)]
pub struct TopicNames(HashMap<Uuid, StrBytes>);

impl TopicNames {
    /// The names of every topic a metadata snapshot lists.
    pub fn of(metadata: &Metadata) -> Self {
        metadata
            .topics
            .iter()
            .map(|(name, topic)| (topic.id, name.clone()))
            .collect()
    }

    /// The name of a topic as a response gives it: `name` when `id` is nil
    /// (an older version named it), else the name known for `id`; `None`
    /// for an id this map does not know (a topic the caller did not ask for).
    pub fn resolve(&self, id: Uuid, name: &TopicName) -> Option<StrBytes> {
        if id.is_nil() {
            Some(name.0.clone())
        } else {
            self.0.get(&id).cloned()
        }
    }
}

impl FromIterator<(Uuid, String)> for TopicNames {
    fn from_iter<I: IntoIterator<Item = (Uuid, String)>>(names: I) -> Self {
        TopicNames(
            names
                .into_iter()
                .map(|(id, name)| (id, StrBytes::from_string(name)))
                .collect(),
        )
    }
}

impl TopicMetadata {
    /// The number of partitions, as Kafka counts them (indices 0..n).
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// Whether every partition has a leader (a just-created topic has none for a moment).
    pub fn all_led(&self) -> bool {
        self.error.is_none()
            && !self.partitions.is_empty()
            && self.partitions.values().all(|p| p.leader.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::BrokerId;

    #[test]
    fn snapshot_from_response() {
        let id = Uuid::from_u128(7);
        let response = MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("abc")))
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092)])
            .with_topics(vec![MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))
                .with_topic_id(id)
                .with_partitions(vec![
                    MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(1))
                        .with_leader_epoch(3),
                    MetadataResponsePartition::default()
                        .with_partition_index(1)
                        .with_leader_id(BrokerId(-1)),
                ])]);
        let meta = Metadata::from_response(response);
        assert_eq!(meta.cluster_id.as_deref(), Some("abc"));
        assert_eq!(meta.brokers[&1], "127.0.0.1:9092");
        let topic = &meta.topics["orders"];
        assert_eq!(topic.id, id);
        assert_eq!(topic.partition_count(), 2);
        assert!(!topic.all_led());
        assert_eq!(meta.leader("orders", 0), Some(1));
        assert_eq!(meta.partition("orders", 0).map(|p| p.leader_epoch), Some(3));
        assert_eq!(meta.leader("orders", 1), None);
        assert_eq!(meta.leader("missing", 0), None);

        let names = TopicNames::of(&meta);
        let unnamed = TopicName::default();
        assert_eq!(names.resolve(id, &unnamed).as_deref(), Some("orders"));
        assert_eq!(names.resolve(Uuid::from_u128(8), &unnamed), None);
        let old = TopicName(StrBytes::from_static_str("by-name"));
        assert_eq!(names.resolve(Uuid::nil(), &old).as_deref(), Some("by-name"));
    }
}
