//! Everything before the first Fetch of one flow: select topics, create
//! target topics, get a producer id, and either join the group of the
//! flow's instances (which says which partitions are this one's, each
//! started when taken over) or, not sharing, load the checkpoints and
//! decide where each partition starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::engine::{Engine, Prepared, RunOptions};
use super::epochs::EpochHistory;
use super::lifecycle::target_specs;
use super::ownership::Ownership;
use super::producer::{init_producer_id, producer_expiry};
use super::slots::{Slot, Slots, Status};
use super::MirrorError;
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::cluster::membership::{GroupMember, MemberConfig};
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
    // Exactly-once without sharing: taking the transactional id first
    // fences any older instance of this name and aborts its open
    // transaction, so the checkpoints read next are the last ones committed,
    // and no zombie can commit another after them. Sharing, the
    // transactional id is the writer slot's the group gives (see
    // `transaction.rs`), taken before any partition is.
    let (producer, transactions) = match (flow.replication.exactly_once, flow.instances.share) {
        (true, true) => (None, None),
        (true, false) => {
            let coordinator =
                TransactionCoordinator::new(target.clone(), transactional_id(&flow, None));
            let producer = coordinator
                .init_producer_id(flow.replication.transaction_timeout(), None)
                .await?;
            (Some(producer), Some(Arc::new(coordinator)))
        }
        (false, _) => (Some(init_producer_id(&target).await?), None),
    };
    let producer_expiry = producer_expiry(&target, &target_meta).await;
    if let Some((producer_id, epoch)) = producer {
        tracing::info!(flow = %flow.name, producer_id, epoch, "target producer id");
    }

    let mut slots = Slots::default();
    let fresh_start = start_spec(flow.replication.start_position);
    for (source_name, spec) in &specs {
        let topic = &source_meta.topics[source_name];
        let name: Arc<str> = source_name.as_str().into();
        let target_name: Arc<str> = spec.name.as_str().into();
        for &partition in topic.partitions.keys() {
            slots.push(Slot::unowned(
                name.clone(),
                target_name.clone(),
                partition,
                topic.id,
                fresh_start,
            ));
        }
    }
    // Checkpoints that cannot all be read, or of another source, refuse
    // the start either way.
    let stored = checkpoints.load().await?;
    let source_cluster = source_meta.cluster_id.as_deref();
    let wrong_source = |OtherSource { stored, current }| MirrorError::WrongSourceCluster {
        mirror: flow.checkpoint_name.clone(),
        stored,
        current,
    };
    // Sharing, which partitions are this instance's is the group's to say,
    // each started from its checkpoint as read when it is taken over;
    // alone, all are, from the checkpoints read now.
    let member = if flow.instances.share {
        for (_, slot) in slots.iter() {
            if let Some(checkpoint) = stored.get(&(slot.target_topic.to_string(), slot.partition)) {
                same_source(checkpoint, source_cluster).map_err(wrong_source)?;
            }
        }
        let partitions = Ownership::group_partitions(&slots);
        let member = GroupMember::new(target.clone(), member_config(&flow), partitions)
            .await
            .map_err(Box::new)?;
        Some(member)
    } else {
        let mut old_checkpoints = Vec::new();
        for (_, slot) in slots.iter_mut() {
            let checkpoint = stored.get(&(slot.target_topic.to_string(), slot.partition));
            let topic_id = slot.source_topic_id;
            match start_partition(slot, topic_id, checkpoint, source_cluster)
                .map_err(wrong_source)?
            {
                Started::FromOldCheckpoint => {
                    old_checkpoints.push(format!("{}-{}", slot.topic, slot.partition));
                }
                Started::Fresh | Started::FromCheckpoint => {}
            }
        }
        log_old_checkpoints(&flow.name, &old_checkpoints);
        None
    };
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
        member,
    }))
}

/// How this instance takes part in the group of the flow's instances.
fn member_config(flow: &Flow) -> MemberConfig {
    let instances = &flow.instances;
    let mut config = MemberConfig::new(
        flow.instances_group(),
        instances.session_timeout(),
        instances.rebalance_timeout(),
    );
    config.group_instance_id.clone_from(&instances.instance_id);
    config
}

/// How [`start_partition`] started a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Started {
    /// Without a checkpoint: at its fresh start, looked up first.
    Fresh,
    /// From its checkpoint, offset map included.
    FromCheckpoint,
    /// From a checkpoint written before offset maps were kept: its offsets
    /// translate from the checkpointed offset on.
    FromOldCheckpoint,
}

/// A checkpoint written while the mirror copied another source cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OtherSource {
    /// The source cluster id stored with the checkpoint.
    pub(super) stored: String,
    /// The configured source's cluster id.
    pub(super) current: String,
}

/// Starts a partition that nothing is queued for: from its stored
/// checkpoint (offset, source topic id, the leader epoch of the last batch
/// copied, offset map), or without one at its fresh start, under the topic
/// id the source lists now (`topic_id`). The one place a partition starts,
/// at startup or when it is taken over from another instance.
pub(super) fn start_partition(
    slot: &mut Slot,
    topic_id: Uuid,
    stored: Option<&Checkpoint>,
    source_cluster: Option<&str>,
) -> Result<Started, OtherSource> {
    let Some(checkpoint) = stored else {
        slot.source_topic_id = topic_id;
        slot.state.start_at(0, OffsetMap::starting_at(0));
        slot.epochs = EpochHistory::default();
        slot.status = Status::Resolving {
            spec: slot.fresh_start,
            asked: false,
        };
        return Ok(Started::Fresh);
    };
    same_source(checkpoint, source_cluster)?;
    let offset = checkpoint.next_offset;
    let (map, started) = match checkpoint.stored_map() {
        Some(map) => (map, Started::FromCheckpoint),
        None if checkpoint.offset_map.is_none() => {
            (OffsetMap::starting_at(offset), Started::FromOldCheckpoint)
        }
        None => {
            tracing::info!(
                topic = %slot.topic,
                partition = slot.partition,
                offset,
                "the checkpoint's offset map is damaged; offsets translate from the checkpointed offset on"
            );
            (OffsetMap::starting_at(offset), Started::FromCheckpoint)
        }
    };
    // A checkpoint of an older incarnation of the topic keeps its topic id
    // here, so the engine's recreated-topic check reports it.
    slot.source_topic_id = checkpoint.topic_id;
    slot.state.start_at(offset, map);
    // The first Fetch checks that the source still holds the last batch
    // copied: it may have been truncated while we were away.
    slot.epochs = EpochHistory::resumed(checkpoint.leader_epoch, offset);
    slot.status = Status::Copying;
    Ok(started)
}

/// Whether a checkpoint was written while copying the source cluster
/// `source_cluster` (as far as both are known).
fn same_source(checkpoint: &Checkpoint, source_cluster: Option<&str>) -> Result<(), OtherSource> {
    match (&checkpoint.source_cluster, source_cluster) {
        (Some(stored), Some(current)) if stored != current => Err(OtherSource {
            stored: stored.clone(),
            current: current.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Says which partitions started from checkpoints written before offset
/// maps were kept (by an older kafka-mirror), once for all of them.
pub(super) fn log_old_checkpoints(flow: &str, partitions: &[String]) {
    if let Some(example) = partitions.first() {
        tracing::info!(
            flow,
            partitions = partitions.len(),
            example = %example,
            "checkpoints without an offset map (written by an older kafka-mirror): \
             their offsets translate from the checkpointed offset on"
        );
    }
}

/// The transactional id of a flow's exactly-once writes: one per mirror
/// name and flow and writer slot (`None` without sharing: one for all
/// instances), so that a new holder fences the one before.
pub(super) fn transactional_id(flow: &Flow, slot: Option<i32>) -> String {
    match slot {
        Some(slot) => format!("kafka-mirror.{}.{slot}", flow.checkpoint_name),
        None => format!("kafka-mirror.{}", flow.checkpoint_name),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset_map::Translation;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::batch;

    const NOW: Uuid = Uuid::from_u128(7);
    const OLD: Uuid = Uuid::from_u128(3);

    fn unowned() -> Slot {
        Slot::unowned("t".into(), "copy.t".into(), 2, NOW, OffsetSpec::Latest)
    }

    /// Where 100..110 of the source landed: at 500.. on the target.
    fn checkpoint(offset_map: bool) -> Checkpoint {
        let mut copy = crate::pipeline::partition::PartitionState::new(100);
        copy.push_batch(batch(100, 10));
        let sent = copy
            .next_to_send(Writer::idempotent(1, 0), false)
            .expect("batch");
        copy.acked(sent.entry, 500);
        Checkpoint {
            next_offset: 110,
            topic_id: OLD,
            source_cluster: Some("src".into()),
            leader_epoch: Some(4),
            offset_map: offset_map.then(|| copy.offset_map().stored()),
        }
    }

    #[test]
    fn without_a_checkpoint_a_partition_looks_up_its_fresh_start() {
        let mut slot = unowned();
        slot.source_topic_id = OLD;
        let started = start_partition(&mut slot, NOW, None, Some("src"));
        assert_eq!(started, Ok(Started::Fresh));
        assert!(matches!(
            slot.status,
            Status::Resolving {
                spec: OffsetSpec::Latest,
                asked: false
            }
        ));
        assert_eq!(slot.source_topic_id, NOW, "the topic the source lists now");
    }

    #[test]
    fn a_checkpoint_gives_the_offset_topic_id_epoch_and_map() {
        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(true)), Some("src"));
        assert_eq!(started, Ok(Started::FromCheckpoint));
        assert!(slot.status.is_copying());
        assert_eq!(
            (slot.state.fetch_offset, slot.state.checkpointed),
            (110, 110)
        );
        assert_eq!(
            slot.source_topic_id, OLD,
            "the copied topic's id, for the recreated-topic check"
        );
        assert_eq!(slot.epochs.last(), 4);
        assert_eq!(
            slot.state.offset_map().translate(105),
            Translation::Exact(505)
        );

        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(false)), None);
        assert_eq!(started, Ok(Started::FromOldCheckpoint));
        assert_eq!(slot.state.offset_map(), &OffsetMap::starting_at(110));
    }

    #[test]
    fn a_checkpoint_of_another_source_cluster_is_refused() {
        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(true)), Some("other"));
        assert_eq!(
            started,
            Err(OtherSource {
                stored: "src".into(),
                current: "other".into()
            })
        );
        assert!(matches!(slot.status, Status::Unowned), "not started");
    }
}
