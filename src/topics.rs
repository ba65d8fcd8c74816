//! Topic management on the target: create what is missing, add partitions,
//! keep configs in step with the source.
//!
//! A batch is produced to the same partition number it was fetched from, so a
//! target topic needs at least as many partitions as its source. Missing
//! topics are created with the source's partition count and its topic-level
//! configs (cleanup.policy, retention, max.message.bytes, ...), less the ones
//! that describe the source cluster's own operation or that the flow keeps
//! for the target (`never_copy_configs`). A target topic with fewer
//! partitions gets the missing ones (CreatePartitions), as a partition added
//! on the source must be. While running, changed source configs are applied
//! to the target with IncrementalAlterConfigs (`sync_configs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::cluster::{Cluster, ClusterError, Metadata};

/// A target topic that cannot be made ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The target refused to add partitions to a topic that has fewer than its source.
    #[error("cannot add partitions to target topic `{topic}` ({target} of the source's {source_count}): {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    PartitionsRefused {
        /// The topic.
        topic: String,
        /// Partitions on the source.
        source_count: i32,
        /// Partitions on the target.
        target: i32,
        /// The broker's error code.
        error: ResponseError,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
    },
    /// The target refused to change a topic's configs.
    #[error("cannot update the configs of target topic `{topic}`: {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    AlterRefused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        error: ResponseError,
        /// The broker's explanation, when it gave one.
        message: Option<String>,
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
    /// A cluster would not describe a topic's configs.
    #[error("cannot read the configs of topic `{topic}`: {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
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
/// always writes v2, and Kafka 4 no longer knows them. A flow's
/// `never_copy_configs` adds to them.
pub const NOT_COPIED: &[&str] = &[
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

/// `IncrementalAlterConfigs` operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

/// The configs set on each source topic (not inherited from broker
/// defaults), minus `never_copy` and sensitive values: what its target topic
/// gets.
pub async fn copied_configs(
    source: &Arc<Cluster>,
    topics: &[String],
    never_copy: &[String],
) -> Result<BTreeMap<String, Vec<(String, String)>>, TopicError> {
    // A source topic the broker does not know is gone: no waiting.
    Ok(topic_configs(source, topics, Duration::ZERO)
        .await?
        .into_iter()
        .map(|(topic, configs)| {
            let copied = configs
                .into_iter()
                .filter(|(name, _)| !never_copy.contains(name))
                .collect();
            (topic, copied)
        })
        .collect())
}

/// The configs set on each topic itself, without sensitive ones.
async fn topic_configs(
    cluster: &Arc<Cluster>,
    topics: &[String],
    patience: Duration,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, TopicError> {
    if topics.is_empty() {
        return Ok(BTreeMap::new());
    }
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
    let response = describe_configs(cluster, request, patience).await?;
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
        let set = result
            .configs
            .into_iter()
            .filter(|c| c.config_source == DYNAMIC_TOPIC_CONFIG && !c.is_sensitive)
            .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
            .collect();
        configs.insert(topic, set);
    }
    Ok(configs)
}

/// Sends a DescribeConfigs of topics. A broker may not know a topic another
/// one just created, and the answer comes from any broker: while one says a
/// topic is unknown, it is asked again for up to `patience`.
async fn describe_configs(
    cluster: &Arc<Cluster>,
    request: DescribeConfigsRequest,
    patience: Duration,
) -> Result<DescribeConfigsResponse, TopicError> {
    let started = Instant::now();
    loop {
        let response = cluster.send_any(request.clone()).await?;
        let unknown = response
            .results
            .iter()
            .any(|r| r.error_code.err() == Some(ResponseError::UnknownTopicOrPartition));
        if !unknown || started.elapsed() >= patience {
            return Ok(response);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value a topic has for one config, wherever it comes from (set on the
/// topic, or the broker's default): the limit the broker applies.
pub async fn effective_config(
    cluster: &Arc<Cluster>,
    topic: &str,
    key: &str,
) -> Result<Option<String>, TopicError> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_owned())]))]);
    let response = describe_configs(cluster, request, NEW_TOPIC_PROPAGATION).await?;
    let Some(result) = response.results.into_iter().next() else {
        return Ok(None);
    };
    if let Some(error) = result.error_code.err() {
        return Err(TopicError::DescribeRefused {
            topic: topic.to_owned(),
            error,
            message: result.error_message.map(|m| m.to_string()),
        });
    }
    Ok(result
        .configs
        .into_iter()
        .find(|c| c.name.as_str() == key)
        .and_then(|c| Some(c.value?.to_string())))
}

/// One change to a target topic's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set to the source's value.
    Set(String, String),
    /// Set on the target but no longer on the source: back to the target's default.
    Reset(String),
}

/// What each existing target topic's configs need to follow their spec (the
/// topics that need nothing are left out).
async fn pending_config_changes(
    target: &Arc<Cluster>,
    specs: &[&TopicSpec],
    never_copy: &[String],
) -> Result<BTreeMap<String, Vec<ConfigChange>>, TopicError> {
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    // Target topics may have just been created.
    let current = topic_configs(target, &names, NEW_TOPIC_PROPAGATION).await?;
    let empty = BTreeMap::new();
    Ok(specs
        .iter()
        .map(|spec| {
            let now = current.get(&spec.name).unwrap_or(&empty);
            (
                spec.name.clone(),
                config_changes(&spec.configs, now, never_copy),
            )
        })
        .filter(|(_, changes)| !changes.is_empty())
        .collect())
}

/// Brings each target topic's configs in step with its spec: a copyable
/// config the spec sets is set where it differs, and one set on the target
/// but no longer on the source goes back to the target's default. Configs in
/// `never_copy` are the target's own and never touched.
pub async fn sync_configs(
    target: &Arc<Cluster>,
    specs: &[TopicSpec],
    never_copy: &[String],
) -> Result<(), TopicError> {
    let specs: Vec<&TopicSpec> = specs.iter().collect();
    let mut resources = Vec::new();
    for (topic, changes) in pending_config_changes(target, &specs, never_copy).await? {
        tracing::info!(topic = %topic, ?changes, "updating target topic configs");
        resources.push(
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic))
                .with_configs(changes.iter().map(alterable).collect()),
        );
    }
    if resources.is_empty() {
        return Ok(());
    }
    let request = IncrementalAlterConfigsRequest::default().with_resources(resources);
    let response = target.send_any(request).await?;
    for result in response.responses {
        if let Some(error) = result.error_code.err() {
            return Err(TopicError::AlterRefused {
                topic: result.resource_name.to_string(),
                error,
                message: result.error_message.map(|m| m.to_string()),
            });
        }
    }
    Ok(())
}

/// What makes a target topic's configs (`current`) those of its source
/// (`wanted`): set what differs, and reset what the source no longer sets,
/// except the `never_copy` ones.
fn config_changes(
    wanted: &[(String, String)],
    current: &BTreeMap<String, String>,
    never_copy: &[String],
) -> Vec<ConfigChange> {
    let mut changes: Vec<ConfigChange> = wanted
        .iter()
        .filter(|(name, value)| current.get(name) != Some(value))
        .map(|(name, value)| ConfigChange::Set(name.clone(), value.clone()))
        .collect();
    changes.extend(
        current
            .keys()
            .filter(|name| !never_copy.contains(name))
            .filter(|name| !wanted.iter().any(|(set, _)| set == *name))
            .map(|name| ConfigChange::Reset(name.clone())),
    );
    changes
}

fn alterable(change: &ConfigChange) -> AlterableConfig {
    let (name, operation, value) = match change {
        ConfigChange::Set(name, value) => (name, SET, Some(value)),
        ConfigChange::Reset(name) => (name, DELETE, None),
    };
    AlterableConfig::default()
        .with_name(StrBytes::from_string(name.clone()))
        .with_config_operation(operation)
        .with_value(value.map(|v| StrBytes::from_string(v.clone())))
}

/// What the mirror would do to one target topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// The target topic as the source wants it.
    pub spec: TopicSpec,
    /// `None` if the topic is missing (created from the spec), else its partition count.
    pub existing_partitions: Option<i32>,
    /// Config changes to an existing topic.
    pub config_changes: Vec<ConfigChange>,
}

/// What [`ensure_topics`] and [`sync_configs`] would do to the target for
/// these specs, without doing it.
pub async fn plan(
    target: &Arc<Cluster>,
    specs: &[TopicSpec],
    never_copy: &[String],
) -> Result<Vec<TopicPlan>, TopicError> {
    let metadata = target.metadata().await?;
    let (missing, _) = partition_gaps(&metadata, specs);
    let existing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|spec| !missing.iter().any(|m| m.name == spec.name))
        .collect();
    let mut changes = pending_config_changes(target, &existing, never_copy).await?;
    Ok(specs
        .iter()
        .map(|spec| TopicPlan {
            spec: spec.clone(),
            existing_partitions: metadata
                .topics
                .get(&spec.name)
                .filter(|t| t.error.is_none())
                .map(|t| t.partition_count()),
            config_changes: changes.remove(&spec.name).unwrap_or_default(),
        })
        .collect())
}

/// The wanted topics the target lacks, and those with fewer partitions than
/// wanted (with the count they have).
fn partition_gaps<'a>(
    metadata: &Metadata,
    wanted: &'a [TopicSpec],
) -> (Vec<&'a TopicSpec>, Vec<(&'a TopicSpec, i32)>) {
    let mut missing = Vec::new();
    let mut short = Vec::new();
    for spec in wanted {
        match metadata.topics.get(&spec.name) {
            Some(existing) if existing.error.is_none() => {
                if existing.partition_count() < spec.partitions {
                    short.push((spec, existing.partition_count()));
                }
            }
            _ => missing.push(spec),
        }
    }
    (missing, short)
}

/// How long a topic one broker created may stay unknown to the others.
const NEW_TOPIC_PROPAGATION: Duration = Duration::from_secs(10);
/// How long created topics may take to get leaders.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes sure every topic exists on the target with enough partitions and a
/// leader for each, creating missing topics and partitions. Returns the
/// target metadata after.
pub async fn ensure_topics(
    target: &Arc<Cluster>,
    wanted: &[TopicSpec],
    replication_factor: i16,
) -> Result<Metadata, TopicError> {
    let metadata = target.metadata().await?;
    let (missing, short) = partition_gaps(&metadata, wanted);
    if !missing.is_empty() {
        create(target, &missing, replication_factor).await?;
    }
    if !short.is_empty() {
        add_partitions(target, &short).await?;
    }
    wait_until_led(target, wanted).await
}

/// Grows target topics to their spec's partition count.
async fn add_partitions(
    target: &Arc<Cluster>,
    short: &[(&TopicSpec, i32)],
) -> Result<(), TopicError> {
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            short
                .iter()
                .map(|(spec, _)| {
                    CreatePartitionsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(spec.name.clone())))
                        .with_count(spec.partitions)
                        .with_assignments(None)
                })
                .collect(),
        );
    let response = target.send_any(request).await?;
    for result in response.results {
        let name = result.name.0.to_string();
        let Some((spec, had)) = short.iter().find(|(spec, _)| spec.name == name) else {
            continue;
        };
        match result.error_code.err() {
            None => {
                tracing::info!(topic = %name, from = had, to = spec.partitions, "added partitions to target topic");
            }
            // It has them already (another instance added them first); the
            // wait for leaders below checks the count.
            Some(ResponseError::InvalidPartitions) => {}
            Some(error) => {
                return Err(TopicError::PartitionsRefused {
                    topic: name,
                    source_count: spec.partitions,
                    target: *had,
                    error,
                    message: result.error_message.map(|m| m.to_string()),
                })
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn config_changes_follow_the_source_but_keep_the_targets_own() {
        let wanted = pairs(&[("retention.ms", "1000"), ("cleanup.policy", "compact")]);
        let current: BTreeMap<String, String> = pairs(&[
            ("retention.ms", "5000"),
            ("cleanup.policy", "compact"),
            ("max.message.bytes", "2000000"),
            ("segment.ms", "3600000"),
        ])
        .into_iter()
        .collect();
        let never_copy = vec!["segment.ms".to_owned()];
        assert_eq!(
            config_changes(&wanted, &current, &never_copy),
            [
                ConfigChange::Set("retention.ms".to_owned(), "1000".to_owned()),
                // Set on the target but no longer on the source: back to the default.
                ConfigChange::Reset("max.message.bytes".to_owned()),
            ]
        );
        let operations: Vec<(i8, Option<String>)> = [
            ConfigChange::Set("retention.ms".to_owned(), "1000".to_owned()),
            ConfigChange::Reset("max.message.bytes".to_owned()),
        ]
        .iter()
        .map(alterable)
        .map(|a| (a.config_operation, a.value.map(|v| v.to_string())))
        .collect();
        assert_eq!(operations, [(SET, Some("1000".to_owned())), (DELETE, None)]);
        let same: BTreeMap<String, String> = wanted.iter().cloned().collect();
        assert!(config_changes(&wanted, &same, &never_copy).is_empty());
    }
}
