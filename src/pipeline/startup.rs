//! Everything before the first Fetch of one flow: select topics, create
//! target topics, get a producer id, and either join the group of the
//! flow's instances (which says which partitions are this one's, each
//! started when taken over) or, not sharing, load the checkpoints and
//! decide where each partition starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, Prepared, RunOptions};
use super::lifecycle::target_specs;
use super::ownership::Ownership;
use super::partition_start::{
    log_old_checkpoints, same_source, start_partition, OtherSource, Started,
};
use super::producer::{init_producer_id, producer_expiry};
use super::slots::{Slot, Slots};
use super::throttle::SharedBucket;
use super::transaction::transactional_id;
use super::MirrorError;
use crate::checkpoint::CheckpointStore;
use crate::cluster::membership::{GroupMember, MemberConfig};
use crate::cluster::{Cluster, Metadata, OffsetSpec, TransactionCoordinator};
use crate::config::{Flow, StartPosition};
use crate::observe::FlowHandle;
use crate::topics::{ensure_topics, sync_configs, TopicSpec};

/// Prepares the target for one flow and builds its engine. The clusters may
/// be shared with other flows.
#[tracing::instrument(name = "flow", skip_all, fields(flow = %flow.name))]
pub(super) async fn start(
    flow: Flow,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    options: RunOptions,
    board: FlowHandle,
    process_throttle: Option<SharedBucket>,
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
            include = flow.topics.include_pattern(),
            exclude = flow.topics.exclude.as_deref().unwrap_or(""),
            every = ?flow.topic_refresh_interval,
            "no source topic matches yet; looking again at every topic refresh"
        );
    }
    tracing::info!(topics = ?specs.iter().map(|(source, _)| source).collect::<Vec<_>>(), "selected source topics");
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
        tracing::info!(producer_id, epoch, "target producer id");
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
        log_old_checkpoints(&old_checkpoints);
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
        board,
        process_throttle,
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
