//! Topic management on the target: create what is missing, refuse what cannot work.
//!
//! A batch is produced to the same partition number it was fetched from, so a
//! target topic needs at least as many partitions as its source. Missing
//! topics are created with the source's partition count and its topic-level
//! configs (cleanup.policy, retention, max.message.bytes, ...), less the ones
//! that describe the source cluster's own operation; a target with fewer
//! partitions is an error that names the topic rather than a silent reshuffle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{CreateTopicsRequest, DescribeConfigsRequest, TopicName};
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
    /// The source would not describe a topic's configs.
    #[error("cannot read the configs of source topic `{topic}`: {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    DescribeRefused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        error: ResponseError,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
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

/// Topic configs never copied to the target, as MirrorMaker 2 does: they
/// describe how the source cluster runs (replication throttles, ISR and
/// election rules) or how it validated timestamps when the data was new. A
/// LogAppendTime target would also overwrite the copied timestamps. The
/// message format settings describe how the source stores data; the mirror
/// always writes v2, and Kafka 4 no longer knows them.
const NOT_COPIED: &[&str] = &[
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "message.timestamp.type",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "message.format.version",
    "message.downconversion.enable",
];

/// `DescribeConfigs` resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// `DescribeConfigs` config source of a value set on the topic itself.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;

/// The configs set on each source topic (not inherited from broker
/// defaults), minus `NOT_COPIED` and sensitive values: what a created
/// target topic gets.
pub async fn copied_configs(
    source: &Arc<Cluster>,
    topics: &[String],
) -> Result<BTreeMap<String, Vec<(String, String)>>, TopicError> {
    let request = DescribeConfigsRequest::default().with_resources(
        topics
            .iter()
            .map(|topic| {
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(topic.clone()))
                    .with_configuration_keys(None)
            })
            .collect(),
    );
    let response = source.send_any(request).await?;
    let mut configs = BTreeMap::new();
    for result in response.results {
        let topic = result.resource_name.to_string();
        if let Some(error) = result.error_code.err() {
            return Err(TopicError::DescribeRefused {
                topic,
                error,
                message: result.error_message.map(|m| m.to_string()),
            });
        }
        let copied = result
            .configs
            .into_iter()
            .filter(|c| c.config_source == DYNAMIC_TOPIC_CONFIG && !c.is_sensitive)
            .filter(|c| !NOT_COPIED.contains(&c.name.as_str()))
            .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
            .collect();
        configs.insert(topic, copied);
    }
    Ok(configs)
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
