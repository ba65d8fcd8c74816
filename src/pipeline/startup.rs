//! Everything before the first Fetch of one flow: select topics, create
//! target topics, load checkpoints, get a producer id, and decide where each
//! partition starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, Prepared, RunOptions};
use super::epochs::EpochHistory;
use super::lifecycle::target_specs;
use super::producer::{init_producer_id, producer_expiry};
use super::slots::{Slot, Slots, Status};
use super::MirrorError;
use crate::checkpoint::CheckpointStore;
use crate::cluster::{Cluster, Metadata, OffsetSpec, TransactionCoordinator};
use crate::config::{Flow, StartPosition};
use crate::offset_map::OffsetMap;
use crate::topics::{ensure_topics, sync_configs, TopicSpec};

/// Prepares the target for one flow and builds its engine. The clusters may
/// be shared with other flows.
pub(super) async fn start(
    flow: Flow,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    options: RunOptions,
) -> Result<Engine, MirrorError> {
    let source_meta = source.metadata().await?;
    let specs = target_specs(&flow, &source, &source_meta).await?;
    if specs.is_empty() {
        // Nothing would ever be copied by a run that stops when caught up; a
        // long-running flow picks topics up as they appear.
        if options.until_caught_up {
            return Err(MirrorError::NoTopics {
                include: flow.topics.include_pattern().to_owned(),
                exclude: flow.topics.exclude.clone(),
            });
        }
        tracing::warn!(
            flow = %flow.name,
            include = flow.topics.include_pattern(),
            exclude = flow.topics.exclude.as_deref().unwrap_or(""),
            every = ?flow.topic_refresh_interval,
            "no source topic matches yet; looking again at every topic refresh"
        );
    }
    tracing::info!(flow = %flow.name, topics = ?specs.iter().map(|(source, _)| source).collect::<Vec<_>>(), "selected source topics");
    let replication_factor = flow.replication.replication_factor;
    let target_specs: Vec<TopicSpec> = specs.iter().map(|(_, spec)| spec.clone()).collect();
    let target_meta = ensure_topics(&target, &target_specs, replication_factor).await?;
    sync_configs(&target, &target_specs, &flow.never_copy_configs).await?;
    let checkpoints = CheckpointStore::open(
        target.clone(),
        &flow.checkpoints.topic,
        &flow.checkpoint_name,
        replication_factor,
    )
    .await?;
    // Exactly-once: taking the transactional id first fences any older
    // instance of this name and aborts its open transaction, so the
    // checkpoints read next are the last ones committed, and no zombie can
    // commit another after them.
    let (producer, transactions) = if flow.replication.exactly_once {
        let coordinator = TransactionCoordinator::new(target.clone(), transactional_id(&flow));
        let producer = coordinator
            .init_producer_id(flow.replication.transaction_timeout(), None)
            .await?;
        (producer, Some(Arc::new(coordinator)))
    } else {
        (init_producer_id(&target).await?, None)
    };
    let stored = checkpoints.load().await?;
    let producer_expiry = producer_expiry(&target, &target_meta).await;
    tracing::info!(
        flow = %flow.name,
        producer_id = producer.0,
        epoch = producer.1,
        "target producer id"
    );

    let mut slots = Slots::default();
    // Checkpoints written before offset maps were kept.
    let mut without_map = Vec::new();
    for (source_name, spec) in &specs {
        let topic = &source_meta.topics[source_name];
        let name: Arc<str> = source_name.as_str().into();
        let target_name: Arc<str> = spec.name.as_str().into();
        for &partition in topic.partitions.keys() {
            // A checkpoint of an older incarnation of the topic keeps its
            // topic id here, so the engine's recreated-topic check reports it.
            let (offset, topic_id, status, epoch) =
                match stored.get(&(spec.name.clone(), partition)) {
                    None => (
                        0,
                        topic.id,
                        Status::Resolving {
                            spec: start_spec(flow.replication.start_position),
                            asked: false,
                        },
                        None,
                    ),
                    Some(checkpoint) => {
                        if let (Some(stored), Some(current)) =
                            (&checkpoint.source_cluster, &source_meta.cluster_id)
                        {
                            if stored != current {
                                return Err(MirrorError::WrongSourceCluster {
                                    mirror: flow.checkpoint_name.clone(),
                                    stored: stored.clone(),
                                    current: current.clone(),
                                });
                            }
                        }
                        (
                            checkpoint.next_offset,
                            checkpoint.topic_id,
                            Status::Copying,
                            checkpoint.leader_epoch,
                        )
                    }
                };
            let id = slots.push(Slot::new(
                name.clone(),
                target_name.clone(),
                partition,
                topic_id,
                offset,
                status,
            ));
            // The first Fetch checks that the source still holds the last
            // batch copied: it may have been truncated while we were away.
            slots[id].epochs = EpochHistory::resumed(epoch, offset);
            if let Some(checkpoint) = stored.get(&(spec.name.clone(), partition)) {
                let slot = &mut slots[id];
                let map = match checkpoint.stored_map() {
                    Some(map) => map,
                    None if checkpoint.offset_map.is_none() => {
                        without_map.push((name.clone(), partition));
                        OffsetMap::starting_at(offset)
                    }
                    None => {
                        tracing::info!(
                            topic = %slot.topic,
                            partition,
                            offset,
                            "the checkpoint's offset map is damaged; offsets translate from the checkpointed offset on"
                        );
                        OffsetMap::starting_at(offset)
                    }
                };
                slot.state.resume_offset_map(map);
            }
        }
    }
    if let Some((topic, partition)) = without_map.first() {
        tracing::info!(
            flow = %flow.name,
            partitions = without_map.len(),
            example = %format!("{topic}-{partition}"),
            "checkpoints without an offset map (written by an older kafka-mirror): \
             their offsets translate from the checkpointed offset on"
        );
    }
    if options.until_caught_up {
        let ends = end_offsets(&source, &source_meta, &slots, &flow).await?;
        for (_, slot) in slots.iter_mut() {
            slot.caught_up_at = ends.get(&(slot.topic.to_string(), slot.partition)).copied();
        }
    }
    Ok(Engine::new(Prepared {
        config: flow,
        options,
        source,
        target,
        checkpoints: Arc::new(checkpoints),
        producer,
        transactions,
        producer_expiry,
        source_meta,
        target_meta,
        slots,
        topic_count: specs.len(),
    }))
}

/// The transactional id of a flow's exactly-once writes: one per mirror
/// name and flow, so that a second instance of the same name fences the
/// first.
fn transactional_id(flow: &Flow) -> String {
    format!("kafka-mirror.{}", flow.checkpoint_name)
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
    slots: &Slots,
    flow: &Flow,
) -> Result<HashMap<(String, i32), i64>, MirrorError> {
    let ids: Vec<_> = slots.ids().collect();
    let isolation = flow.replication.isolation_level.wire_value();
    offsets_of(
        source,
        metadata,
        slots.keys(&ids),
        OffsetSpec::Latest,
        isolation,
    )
    .await
}

/// One offset (`spec`) of each of these partitions, asked again for a
/// while where a leader could not answer yet (leaders move, a topic was
/// just created).
pub(super) async fn offsets_of(
    cluster: &Arc<Cluster>,
    metadata: &Metadata,
    mut wanted: Vec<(String, i32)>,
    spec: OffsetSpec,
    isolation: i8,
) -> Result<HashMap<(String, i32), i64>, MirrorError> {
    let mut offsets = HashMap::new();
    let mut metadata = metadata.clone();
    for attempt in 1..=20u32 {
        let results = cluster
            .list_offsets(&metadata, &wanted, spec, isolation)
            .await;
        let mut failed = Vec::new();
        for key in wanted {
            match results.get(&key) {
                Some(Ok(offset)) => {
                    offsets.insert(key, *offset);
                }
                other => {
                    tracing::debug!(?key, result = ?other, attempt, "offset not known yet");
                    failed.push(key);
                }
            }
        }
        if failed.is_empty() {
            return Ok(offsets);
        }
        wanted = failed;
        tokio::time::sleep(Duration::from_millis(250)).await;
        metadata = cluster.metadata().await?;
    }
    Err(MirrorError::Cluster(
        crate::cluster::ClusterError::Unreachable {
            role: cluster.role(),
            attempts: format!(
                "no {spec:?} offset for {} partitions, e.g. {:?}",
                wanted.len(),
                wanted.first()
            ),
        },
    ))
}
