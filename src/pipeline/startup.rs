//! Everything before the first Fetch: reach both clusters, select topics,
//! create target topics, load checkpoints, get a producer id, and decide
//! where each partition starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, Prepared, RunOptions, Slot, Status};
use super::partition::{Backoff, PartitionState};
use super::MirrorError;
use crate::checkpoint::CheckpointStore;
use crate::cluster::{Cluster, Metadata, OffsetSpec, Role};
use crate::config::{MirrorConfig, StartPosition};
use crate::topics::{copied_configs, ensure_topics, TopicSpec};

/// Connects, prepares the target and builds the engine.
pub(super) async fn start(
    config: MirrorConfig,
    options: RunOptions,
) -> Result<Engine, MirrorError> {
    let filter = config.topic_filter()?;
    let source = Cluster::new(
        Role::Source,
        config.source.bootstrap_list(),
        config.source.connector("source")?,
    );
    let target = Cluster::new(
        Role::Target,
        config.target.bootstrap_list(),
        config.target.connector("target")?,
    );
    let source_meta = source.metadata().await?;
    let selected: Vec<String> = source_meta
        .topics
        .iter()
        .filter(|(name, topic)| topic.error.is_none() && filter.selects(name, topic.internal))
        .map(|(name, _)| name.clone())
        .collect();
    if selected.is_empty() {
        return Err(MirrorError::NoTopics {
            include: config.topics.include.clone(),
            exclude: config.topics.exclude.clone(),
        });
    }
    let mut configs = copied_configs(&source, &selected).await?;
    let specs: Vec<TopicSpec> = selected
        .into_iter()
        .map(|name| TopicSpec {
            partitions: source_meta.topics[&name].partition_count(),
            configs: configs.remove(&name).unwrap_or_default(),
            name,
        })
        .collect();
    tracing::info!(topics = ?specs.iter().map(|s| &s.name).collect::<Vec<_>>(), "selected source topics");
    let replication_factor = config.replication.replication_factor;
    let target_meta = ensure_topics(&target, &specs, replication_factor).await?;
    let checkpoints = CheckpointStore::open(
        target.clone(),
        &config.checkpoints.topic,
        &config.name,
        replication_factor,
    )
    .await?;
    let stored = checkpoints.load().await?;
    let producer = super::produce::init_producer_id(&target).await?;
    tracing::info!(
        producer_id = producer.0,
        epoch = producer.1,
        "target producer id"
    );

    let mut slots = Vec::new();
    for spec in &specs {
        let topic = &source_meta.topics[&spec.name];
        let name: Arc<str> = spec.name.as_str().into();
        for &partition in topic.partitions.keys() {
            // A checkpoint of an older incarnation of the topic keeps its
            // topic id here, so the engine's recreated-topic check reports it.
            let (offset, topic_id, status) = match stored.get(&(spec.name.clone(), partition)) {
                None => (
                    0,
                    topic.id,
                    Status::Resolving {
                        spec: start_spec(config.replication.start_position),
                        asked: false,
                    },
                ),
                Some(checkpoint) => {
                    if let (Some(stored), Some(current)) =
                        (&checkpoint.source_cluster, &source_meta.cluster_id)
                    {
                        if stored != current {
                            return Err(MirrorError::WrongSourceCluster {
                                mirror: config.name.clone(),
                                stored: stored.clone(),
                                current: current.clone(),
                            });
                        }
                    }
                    (checkpoint.next_offset, checkpoint.topic_id, Status::Copying)
                }
            };
            slots.push(Slot {
                topic: name.clone(),
                partition,
                source_topic_id: topic_id,
                state: PartitionState::new(offset),
                status,
                fetching: false,
                fetch_backoff: Backoff::default(),
                produce_backoff: Backoff::default(),
                caught_up_at: None,
                out_of_order_streak: 0,
            });
        }
    }
    if options.until_caught_up {
        let ends = end_offsets(&source, &source_meta, &slots, &config).await?;
        for slot in &mut slots {
            slot.caught_up_at = ends.get(&(slot.topic.to_string(), slot.partition)).copied();
        }
    }
    Ok(Engine::new(Prepared {
        config,
        options,
        source,
        target,
        checkpoints: Arc::new(checkpoints),
        producer,
        source_meta,
        target_meta,
        slots,
        topic_count: specs.len(),
    }))
}

fn start_spec(position: StartPosition) -> OffsetSpec {
    match position {
        StartPosition::Earliest => OffsetSpec::Earliest,
        StartPosition::Latest => OffsetSpec::Latest,
        StartPosition::Timestamp(ms) => OffsetSpec::Timestamp(ms),
    }
}

/// The source's end offsets now: what "caught up" means for this run.
async fn end_offsets(
    source: &Arc<Cluster>,
    metadata: &Metadata,
    slots: &[Slot],
    config: &MirrorConfig,
) -> Result<HashMap<(String, i32), i64>, MirrorError> {
    let mut wanted: Vec<(String, i32)> = slots
        .iter()
        .map(|s| (s.topic.to_string(), s.partition))
        .collect();
    let isolation = config.replication.isolation_level.wire_value();
    let mut ends = HashMap::new();
    let mut metadata = metadata.clone();
    for attempt in 1..=20u32 {
        let results = source
            .list_offsets(&metadata, &wanted, OffsetSpec::Latest, isolation)
            .await;
        let mut failed = Vec::new();
        for key in wanted {
            match results.get(&key) {
                Some(Ok(offset)) => {
                    ends.insert(key, *offset);
                }
                other => {
                    tracing::debug!(?key, result = ?other, attempt, "end offset not known yet");
                    failed.push(key);
                }
            }
        }
        if failed.is_empty() {
            return Ok(ends);
        }
        wanted = failed;
        tokio::time::sleep(Duration::from_millis(250)).await;
        metadata = source.metadata().await?;
    }
    Err(MirrorError::Cluster(
        crate::cluster::ClusterError::Unreachable {
            role: Role::Source,
            attempts: format!(
                "no end offset for {} partitions, e.g. {:?}",
                wanted.len(),
                wanted.first()
            ),
        },
    ))
}
