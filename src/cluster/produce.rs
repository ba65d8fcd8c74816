//! Building Produce requests: one batch per partition (Kafka's rule), many
//! partitions per request, `acks=all`.
//!
//! Produce v13+ names topics by id, older versions by name; the request
//! carries both and the codec writes the one the negotiated version has.
//!
//! The batches go in as [`Splice`]s: the request holds each source batch as
//! it came, and its frame sends the new header in front of the untouched
//! records, by reference ([`crate::net::splice`]).

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Metadata;
use crate::net::splice::{Splice, Splices};

/// A Produce request, `acks=all`, for each topic's `(partition, batch)`
/// pairs, and the splices its frame is encoded with; topic ids come from the
/// target's `metadata` (nil if unknown).
pub fn produce_request<T: AsRef<str>>(
    metadata: &Metadata,
    topics: impl IntoIterator<Item = (T, Vec<(i32, Splice)>)>,
    timeout_ms: i32,
) -> (ProduceRequest, Splices) {
    let mut splices = Splices::default();
    let topic_data = topics
        .into_iter()
        .map(|(topic, partitions)| {
            let topic = topic.as_ref();
            let topic_id = metadata.topics.get(topic).map_or(Uuid::nil(), |t| t.id);
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partition_data(
                    partitions
                        .into_iter()
                        .map(|(index, batch)| {
                            let records = batch.value().clone();
                            splices.push(batch);
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(records))
                        })
                        .collect(),
                )
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topic_data);
    (request, splices)
}
