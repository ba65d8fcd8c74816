//! Everything before the first Fetch of one flow: select topics, create
//! target topics, get a producer id, and either join the group of the
//! flow's instances (which says which partitions are this one's, each
//! started when taken over) or, not sharing, load the checkpoints and
//! decide where each partition starts.
//!
//! Over a WAN each request to the source costs a round trip, so start-up
//! asks the source only what it must before the target's side (metadata,
//! then the topics' configs), and the rest beside it: the start offsets of
//! partitions starting fresh, the end offsets of a run that ends when caught
//! up, and the connections the first Fetches go on. Before the first record
//! comes: ApiVersions, Metadata, DescribeConfigs and the first Fetch, four
//! round trips, where one after the other took seven.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::{Engine, Prepared, RunOptions};
use super::fetch::link_rate;
use super::fetch_window::opening_fetchers;
use super::lifecycle::{selected_partitions, target_specs};
use super::ownership::Ownership;
use super::partition_start::{
    log_old_checkpoints, same_source, start_partition, OtherSource, Started,
};
use super::positions::StartOffsets;
use super::producer::{init_producer_id, producer_expiry};
use super::slots::{Slot, Slots};
use super::throttle::{SharedBucket, Throttle};
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
///
/// Over a long round trip every request to the source costs one, so once
/// the source's metadata is known, what the source can answer already is
/// asked beside the target's side of start-up ([`look_ahead`]).
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
    let replication = &flow.replication;
    let throttle = Throttle::new(
        replication.max_bytes_per_sec,
        process_throttle,
        replication.partition_fetch_bytes,
        Instant::now(),
    );
    let (ahead, prepared) = tokio::try_join!(
        look_ahead(&flow, &source, &source_meta, &options, &throttle),
        prepare_target(&flow, &source, &target, &source_meta, &options),
    )?;
    let TargetSide {
        specs,
        target_meta,
        producer_expiry,
        taken:
            Taken {
                checkpoints,
                producer,
                transactions,
                mut slots,
                member,
            },
    } = prepared;
    if let Some(ends) = ahead.ends {
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
        throttle,
        start_offsets: Some(ahead.start_offsets),
    }))
}

/// What start-up asked the source beside the target's side.
struct SourceAhead {
    /// Where partitions starting without a checkpoint start.
    start_offsets: StartOffsets,
    /// The source's end offsets: what "caught up" means for a run that
    /// ends then.
    ends: Option<HashMap<(String, i32), i64>>,
}

/// Asks the source, for every selected partition, where a partition that
/// starts fresh starts and, for a run that ends when caught up, where the
/// source ends; and opens the connections the first Fetches go on, as many
/// as the fetch window will open to over this round trip.
async fn look_ahead(
    flow: &Flow,
    source: &Arc<Cluster>,
    source_meta: &Metadata,
    options: &RunOptions,
    throttle: &Throttle,
) -> Result<SourceAhead, MirrorError> {
    let partitions = selected_partitions(flow, source_meta);
    let replication = &flow.replication;
    let leaders: BTreeSet<i32> = partitions
        .iter()
        .filter_map(|(topic, partition)| source_meta.leader(topic, *partition))
        .collect();
    // The bootstrap connection's round trip says how many each leader
    // gets (the links to one cluster's brokers are alike); without it, one.
    let fetchers = leaders
        .iter()
        .filter_map(|&broker| source.round_trip(broker))
        .min()
        .map_or(1, |round_trip| {
            opening_fetchers(
                replication.fetchers_per_broker,
                round_trip,
                link_rate(throttle),
                replication.fetch_max_bytes,
            )
        });
    // Not waited for: a Fetch on a connection still opening waits for it,
    // and one that cannot be opened is the Fetch's to report.
    for broker in leaders {
        for nth in 0..fetchers {
            let source = source.clone();
            tokio::spawn(async move {
                if let Err(e) = source.open_connection(broker, nth).await {
                    tracing::debug!(broker, error = %e, "cannot open a fetch connection ahead of the first Fetch");
                }
            });
        }
    }
    let spec = start_spec(replication.start_position);
    let isolation = replication.isolation_level.wire_value();
    let looked_up = Instant::now();
    let (starts, ends) = tokio::join!(
        source.list_offsets(source_meta, &partitions, spec, isolation),
        async {
            if !options.until_caught_up {
                return Ok(None);
            }
            let latest = OffsetSpec::Latest;
            offsets_of(source, source_meta, partitions.clone(), latest, isolation)
                .await
                .map(Some)
        },
    );
    let starts = starts
        .into_iter()
        .filter_map(|(key, offset)| Some((key, offset.ok()?)))
        .collect();
    Ok(SourceAhead {
        start_offsets: StartOffsets::new(spec, starts, looked_up),
        ends: ends?,
    })
}

/// The target's side of start-up, and the source's topic configs it needs.
struct TargetSide {
    specs: Vec<(String, TopicSpec)>,
    target_meta: Metadata,
    producer_expiry: Option<Duration>,
    taken: Taken,
}

/// Selects the topics, then at once creates and configures their target
/// topics and takes the partitions ([`take_partitions`]): neither needs
/// the other.
async fn prepare_target(
    flow: &Flow,
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
    source_meta: &Metadata,
    options: &RunOptions,
) -> Result<TargetSide, MirrorError> {
    let specs = target_specs(flow, source, source_meta).await?;
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
    let topics = async {
        let target_meta = ensure_topics(target, &target_specs, replication_factor).await?;
        sync_configs(target, &target_specs, &flow.never_copy_configs).await?;
        let producer_expiry = producer_expiry(target, &target_meta).await;
        Ok::<_, MirrorError>((target_meta, producer_expiry))
    };
    let slots = slots_of(flow, source_meta, &specs);
    let ((target_meta, producer_expiry), taken) =
        tokio::try_join!(topics, take_partitions(flow, target, source_meta, slots))?;
    Ok(TargetSide {
        specs,
        target_meta,
        producer_expiry,
        taken,
    })
}

/// A slot for every partition of the selected topics, none started.
fn slots_of(flow: &Flow, source_meta: &Metadata, specs: &[(String, TopicSpec)]) -> Slots {
    let mut slots = Slots::default();
    let fresh_start = start_spec(flow.replication.start_position);
    for (source_name, spec) in specs {
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
    slots
}

/// Whose partitions these are, and where they start.
struct Taken {
    checkpoints: CheckpointStore,
    producer: Option<(i64, i16)>,
    transactions: Option<Arc<TransactionCoordinator>>,
    slots: Slots,
    member: Option<GroupMember>,
}

/// Opens the checkpoint store and gets a producer id (at once), loads the
/// checkpoints, then either joins the group of the flow's instances or
/// decides where each partition starts.
async fn take_partitions(
    flow: &Flow,
    target: &Arc<Cluster>,
    source_meta: &Metadata,
    mut slots: Slots,
) -> Result<Taken, MirrorError> {
    let replication_factor = flow.replication.replication_factor;
    let checkpoints = async {
        Ok(CheckpointStore::open(
            target.clone(),
            &flow.checkpoints.topic,
            &flow.checkpoint_name,
            replication_factor,
        )
        .await?)
    };
    let (checkpoints, (producer, transactions)) =
        tokio::try_join!(checkpoints, producer_identity(flow, target))?;
    if let Some((producer_id, epoch)) = producer {
        tracing::info!(producer_id, epoch, "target producer id");
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
        let member = GroupMember::new(target.clone(), member_config(flow), partitions)
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
    Ok(Taken {
        checkpoints,
        producer,
        transactions,
        slots,
        member,
    })
}

/// The target producer id, and the transaction coordinator in exactly-once
/// mode.
///
/// Exactly-once without sharing: taking the transactional id fences any
/// older instance of this name and aborts its open transaction, so the
/// checkpoints read after it are the last ones committed, and no zombie can
/// commit another after them. Sharing, the transactional id is the writer
/// slot's the group gives (see `transaction.rs`), taken before any
/// partition is.
async fn producer_identity(
    flow: &Flow,
    target: &Arc<Cluster>,
) -> Result<(Option<(i64, i16)>, Option<Arc<TransactionCoordinator>>), MirrorError> {
    Ok(
        match (flow.replication.exactly_once, flow.instances.share) {
            (true, true) => (None, None),
            (true, false) => {
                let coordinator =
                    TransactionCoordinator::new(target.clone(), transactional_id(flow, None));
                let producer = coordinator
                    .init_producer_id(flow.replication.transaction_timeout(), None)
                    .await?;
                (Some(producer), Some(Arc::new(coordinator)))
            }
            (false, _) => (Some(init_producer_id(target).await?), None),
        },
    )
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
