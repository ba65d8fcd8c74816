//! Topic management on the target: create what is missing, refuse what cannot work.
//!
//! A batch is produced to the same partition number it was fetched from, so a
//! target topic needs at least as many partitions as its source. Missing
//! topics are created with the source's partition count; a target with fewer
//! partitions is an error that names the topic rather than a silent reshuffle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::cluster::{Cluster, ClusterError, Metadata};

/// A target topic that cannot be made ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The target topic exists with fewer partitions than the source.
    #[error(
        "target topic `{topic}` has {target} partitions but the source has {source_count}: \
         add partitions on the target (kafka-topics --alter --partitions {source_count}) or exclude the topic"
    )]
    TooFewPartitions {
        /// The topic.
        topic: String,
        /// Partitions on the source.
        source_count: i32,
        /// Partitions on the target.
        target: i32,
    },
    /// The target refused to create the topic.
    #[error("cannot create target topic `{topic}`: {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    CreateRefused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        error: ResponseError,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
    },
    /// Created topics did not get leaders in time.
    #[error("target topics {topics:?} have no leader after {waited:?}")]
    NotReady {
        /// The topics still without a leader for every partition.
        topics: Vec<String>,
        /// How long the mirror waited.
        waited: Duration,
    },
    /// The cluster could not be queried.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A topic to have on the target: its name, partition count and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The target topic's name.
    pub name: String,
    /// The partitions it must have at least.
    pub partitions: i32,
    /// Configs set when the mirror creates it (ignored for an existing topic).
    pub configs: Vec<(String, String)>,
}

/// How long created topics may take to get leaders.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes sure every topic exists on the target with enough partitions and a
/// leader for each, creating missing ones. Returns the target metadata after.
pub async fn ensure_topics(
    target: &Arc<Cluster>,
    wanted: &[TopicSpec],
    replication_factor: i16,
) -> Result<Metadata, TopicError> {
    let metadata = target.metadata().await?;
    let mut missing = Vec::new();
    for spec in wanted {
        match metadata.topics.get(&spec.name) {
            Some(existing) if existing.error.is_none() => {
                if existing.partition_count() < spec.partitions {
                    return Err(TopicError::TooFewPartitions {
                        topic: spec.name.clone(),
                        source_count: spec.partitions,
                        target: existing.partition_count(),
                    });
                }
            }
            _ => missing.push(spec),
        }
    }
    if !missing.is_empty() {
        create(target, &missing, replication_factor).await?;
    }
    wait_until_led(target, wanted).await
}

async fn create(
    target: &Arc<Cluster>,
    specs: &[&TopicSpec],
    replication_factor: i16,
) -> Result<(), TopicError> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            specs
                .iter()
                .map(|spec| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(spec.name.clone())))
                        .with_num_partitions(spec.partitions)
                        .with_replication_factor(replication_factor)
                        .with_configs(
                            spec.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = target.send_any(request).await?;
    for result in response.topics {
        match result.error_code.err() {
            None | Some(ResponseError::TopicAlreadyExists) => {
                tracing::info!(topic = %result.name.0.as_str(), partitions = result.num_partitions, "created target topic");
            }
            Some(error) => {
                return Err(TopicError::CreateRefused {
                    topic: result.name.0.to_string(),
                    error,
                    message: result.error_message.map(|m| m.to_string()),
                })
            }
        }
    }
    Ok(())
}

async fn wait_until_led(
    target: &Arc<Cluster>,
    wanted: &[TopicSpec],
) -> Result<Metadata, TopicError> {
    let started = Instant::now();
    loop {
        let metadata = target.metadata().await?;
        let waiting: BTreeMap<&str, ()> = wanted
            .iter()
            .filter(|spec| {
                !metadata
                    .topics
                    .get(&spec.name)
                    .is_some_and(|t| t.all_led() && t.partition_count() >= spec.partitions)
            })
            .map(|spec| (spec.name.as_str(), ()))
            .collect();
        if waiting.is_empty() {
            return Ok(metadata);
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(TopicError::NotReady {
                topics: waiting.keys().map(|t| t.to_string()).collect(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
