//! The engine: the one task that owns all partition state of one flow and
//! runs the loop "start what may start, wait for an answer, apply it".
//!
//! Requests are spawned tasks that send their answer back as an [`Event`];
//! nothing else touches the state, so there are no locks on the data path and
//! the order of decisions is the order of events.
//!
//! While the instances of the flow's name share its partitions, the engine
//! also runs this instance's member of their group: its events go to the
//! ownership stage (`ownership.rs`), which says which partitions are this
//! instance's, and every write waits on its lease.
//!
//! There is one engine per flow rather than one for all flows: a flow is then
//! exactly the single-copy pipeline this engine already was (its own producer
//! id, memory budget, checkpoints and summary), a stopped or slow flow cannot
//! stall another's loop, and flows writing the same cluster still share its
//! connections through one `Arc<Cluster>` (see `Targets` in `mod.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::checkpoints::{self, CheckpointSchedule};
use super::event::Event;
use super::fetch::{self, FetchContext, FetchJob, FetchReply, FetchStage};
use super::group_sync::{self, GroupSyncSchedule};
use super::landing;
use super::lane::ProduceLane;
use super::lifecycle::{deleted_topics, refresh_topics, TopicRefresh};
use super::metadata::MetadataView;
use super::ownership::{named_partitions, owned_partitions, start_unshared, Lease, Ownership};
use super::partition_start::log_old_checkpoints;
use super::positions::{Lookups, Positions, StartOffsets};
use super::produce::{ProduceContext, ProduceStage, KAFKA_PRODUCER_EXPIRY};
use super::producer::{init_producer_id, ProducerIdentity, RenewalReason};
use super::slots::{SlotId, Slots, Status};
use super::stats::{Counters, FlowPartition, PartitionProblem, Summary, UnsavedCheckpoints};
use super::throttle::Throttle;
use super::transaction::{
    self, transactional_id, TransactionFailure, TransactionStage, WriterSlot,
};
use super::view::{FlowInputs, FlowObserver};
use super::MirrorError;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::cluster::membership::{GroupMember, MemberEvent, MembershipError};
use crate::cluster::{Cluster, GroupError, Metadata, OffsetSpec, Role, TransactionCoordinator};
use crate::config::{ByteRate, Flow};
use crate::groups::mm2::Mm2Checkpoints;
use crate::groups::{self, SyncReport};
use crate::observe::metrics::{requests, Api};
use crate::observe::{FlowHandle, FlowPhase};

/// How a run ends besides a shutdown signal.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once the target holds everything the source held when the run began.
    pub until_caught_up: bool,
}

/// Everything the engine starts from, gathered by `startup.rs`.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) config: Flow,
    pub(super) options: RunOptions,
    pub(super) source: Arc<Cluster>,
    pub(super) target: Arc<Cluster>,
    pub(super) checkpoints: Arc<CheckpointStore>,
    /// kafka-mirror's producer id and epoch on the target; none yet in
    /// exactly-once mode while sharing (see `transaction.rs`).
    pub(super) producer: Option<(i64, i16)>,
    /// Exactly-once mode: the coordinator of the transactional id the
    /// producer id belongs to.
    pub(super) transactions: Option<Arc<TransactionCoordinator>>,
    /// The target's `producer.id.expiration.ms`, if it could be read.
    pub(super) producer_expiry: Option<Duration>,
    pub(super) source_meta: Metadata,
    pub(super) target_meta: Metadata,
    pub(super) slots: Slots,
    pub(super) topic_count: usize,
    /// The member of the group of the flow's instances, when they share its
    /// partitions; every slot is then unowned until the group says.
    pub(super) member: Option<GroupMember>,
    /// Where the flow's view is published, and its pause switch.
    pub(super) board: FlowHandle,
    /// The flow's rate limit, and the process's it shares with other flows.
    pub(super) throttle: Throttle,
    /// Start offsets looked up during start-up.
    pub(super) start_offsets: Option<StartOffsets>,
}

/// How often the engine wakes without an event (backoffs, checkpoint interval):
/// the shortest backoff. Each wake looks at every partition, which is what an
/// idle mirror spends its CPU on (5,000 partitions: 2.8% of a core at 20 ms).
const TICK: Duration = Duration::from_millis(50);
/// How often progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Tries of the final checkpoint write, for failures that may pass.
const FINAL_CHECKPOINT_TRIES: u32 = 5;
/// How long leaving the group may take at the end of a run; a member that
/// could not say so is removed after its session timeout.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Exactly-once mode: the transaction stage, and the target's coordinator of
/// our transactional id that its requests go to (none while sharing until
/// the group gives a writer slot).
#[derive(Debug)]
struct ExactlyOnce {
    stage: TransactionStage,
    coordinator: Option<Arc<TransactionCoordinator>>,
    /// While sharing: the writer slot the transactional id is named after.
    slot: Option<WriterSlot>,
}

/// Sharing the flow with the other instances of its name: this instance's
/// member of their group, and the stage deciding what it owns.
#[derive(Debug)]
struct Sharing {
    member: GroupMember,
    ownership: Ownership,
    /// The member stopped for good (another process took its static id).
    stopped: bool,
}

/// The loop of one flow: the partition table, the stages that own the rest,
/// and the clusters their requests go to.
#[derive(Debug)]
pub(crate) struct Engine {
    config: Arc<Flow>,
    options: RunOptions,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    checkpoints: Arc<CheckpointStore>,
    slots: Slots,
    meta: MetadataView,
    fetch: FetchStage,
    produce: ProduceStage,
    /// The per-broker queues that put Produce requests on the wire in order.
    lanes: HashMap<i32, ProduceLane>,
    positions: Positions,
    checkpoint: CheckpointSchedule,
    /// Consumer group offset syncs, when the flow syncs groups.
    group_sync: Option<GroupSyncSchedule>,
    /// MirrorMaker 2's checkpoints, written after each group sync when on.
    mm2_checkpoints: Option<Arc<Mm2Checkpoints>>,
    /// Exactly-once mode's transactions.
    exactly_once: Option<ExactlyOnce>,
    /// Instances sharing the flow's partitions, unless `instances.share` is off.
    sharing: Option<Sharing>,
    /// Why the flow stopped writing for good: another instance of its name
    /// took over its transactional id.
    fenced: Option<String>,
    topics: TopicRefresh,
    counters: Counters,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// When draining must end, once it began.
    draining: Option<Instant>,
    started: Instant,
    last_progress: Instant,
    /// What the board shows of the flow (`view.rs`).
    observer: FlowObserver,
}

impl Engine {
    /// An engine over what `startup.rs` prepared.
    pub(super) fn new(prepared: Prepared) -> Self {
        let Prepared {
            config,
            options,
            source,
            target,
            checkpoints,
            producer,
            transactions,
            producer_expiry,
            source_meta,
            target_meta,
            slots,
            topic_count,
            member,
            board,
            throttle,
            start_offsets,
        } = prepared;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mm2_checkpoints = Mm2Checkpoints::for_flow(&config, target.clone()).map(Arc::new);
        let exactly_once = config.replication.exactly_once.then(|| ExactlyOnce {
            stage: TransactionStage::new(
                config.replication.transaction_interval(),
                checkpoints.topic(),
            ),
            coordinator: transactions,
            slot: member.is_some().then(WriterSlot::default),
        });
        let producer = match (&exactly_once, producer) {
            (
                Some(ExactlyOnce {
                    coordinator: Some(coordinator),
                    ..
                }),
                Some(producer),
            ) => ProducerIdentity::transactional(
                producer,
                coordinator.transactional_id().into(),
                config.replication.transaction_max_in_flight_batches,
            ),
            (Some(_), _) => ProducerIdentity::transactional_pending(
                config.replication.transaction_max_in_flight_batches,
            ),
            (None, producer) => ProducerIdentity::new(producer.unwrap_or((-1, -1))),
        };
        let mut engine = Engine {
            options,
            source,
            target,
            checkpoints,
            slots,
            meta: MetadataView::default(),
            fetch: FetchStage::new(throttle),
            produce: ProduceStage::new(producer)
                .with_producer_expiry(producer_expiry.unwrap_or(KAFKA_PRODUCER_EXPIRY)),
            lanes: HashMap::new(),
            positions: Positions::new(config.replication.on_data_loss, start_offsets),
            checkpoint: CheckpointSchedule::new(
                Duration::from_millis(config.checkpoints.interval_ms),
                source_meta.cluster_id.clone(),
                now,
            ),
            group_sync: config
                .groups
                .clone()
                .map(|settings| GroupSyncSchedule::new(settings, now)),
            mm2_checkpoints,
            exactly_once,
            sharing: member.map(|member| Sharing {
                member,
                ownership: Ownership::new(now),
                stopped: false,
            }),
            fenced: None,
            topics: TopicRefresh::new(now, config.topic_refresh_interval, topic_count),
            config: Arc::new(config),
            counters: Counters::default(),
            events_tx,
            events_rx,
            draining: None,
            started: now,
            last_progress: now,
            observer: FlowObserver::new(board, now),
        };
        engine.take_metadata(Role::Source, source_meta);
        engine.take_metadata(Role::Target, target_meta);
        engine
    }

    /// Runs until shut down or caught up, then stores the final checkpoints.
    #[tracing::instrument(name = "flow", skip_all, fields(flow = %self.config.name))]
    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Summary {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut shutdown_seen = false;
        loop {
            self.dispatch();
            if self.is_done() {
                break;
            }
            tokio::select! {
                Some(event) = self.events_rx.recv() => self.handle(event),
                event = next_member_event(&mut self.sharing) => self.member_event(event),
                _ = tick.tick() => {}
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    self.begin_drain("shutdown requested");
                }
            }
        }
        if self.fenced.is_some() {
            self.leave_group().await;
            self.publish_view(FlowPhase::Done, true);
            return self.summary();
        }
        let unsaved = self.final_checkpoint().await;
        self.final_group_sync().await;
        // Only now may another instance start from these checkpoints.
        self.leave_group().await;
        self.publish_view(FlowPhase::Done, true);
        let mut summary = self.summary();
        summary.unsaved_checkpoints.extend(unsaved);
        summary
    }

    /// Leaves the group of the flow's instances, so that the others take
    /// over its partitions at once.
    async fn leave_group(&mut self) {
        let Some(sharing) = self.sharing.take() else {
            return;
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, sharing.member.leave()).await {
            Ok(Ok(())) => {
                tracing::info!("left the group of the mirror's instances")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not leave the group; the others take over after the session timeout")
            }
            Err(_) => {
                tracing::warn!(
                    "no answer to LeaveGroup; the others take over after the session timeout"
                )
            }
        }
    }

    /// Until when this instance may write for its partitions.
    fn lease(&self) -> Lease {
        Lease::until(
            self.sharing
                .as_ref()
                .and_then(|sharing| sharing.member.membership().lease_end()),
        )
    }

    /// What the group said: partitions to hand over and to take over, or
    /// all of them lost.
    fn member_event(&mut self, event: Result<MemberEvent, MembershipError>) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        match event {
            Ok(MemberEvent::Assigned {
                generation,
                assignment,
            }) => {
                sharing
                    .ownership
                    .assigned(&mut self.slots, generation, &assignment);
                let writer = self.exactly_once.as_mut().and_then(|eos| eos.slot.as_mut());
                if let Some(writer) = writer {
                    if writer.given(assignment.slot) {
                        if let Some(slot) = assignment.slot {
                            let reason = RenewalReason::NewSlot(slot);
                            self.produce.producer().refused(reason, Instant::now());
                        }
                    }
                }
                tracing::info!(
                    generation,
                    revoking = assignment.revoke.len(),
                    slot = ?assignment.slot,
                    "assigned {}",
                    named_partitions(
                        &self.config.name,
                        assignment.partitions.iter().map(|(t, p)| (t.as_str(), *p)),
                        self.slots.len()
                    )
                );
            }
            Ok(MemberEvent::Lost { partitions, cause }) => {
                tracing::warn!(
                    partitions = partitions.len(),
                    "{cause}: stopped copying them"
                );
                let fenced = matches!(cause, MembershipError::FencedInstance { .. });
                if sharing.ownership.lost(&mut self.slots) {
                    let now = Instant::now();
                    self.produce.producer().refused(RenewalReason::Lost, now);
                }
                if fenced {
                    sharing.stopped = true;
                    self.fenced(&MirrorError::Membership(Box::new(cause)));
                }
            }
            Err(MembershipError::Stopped { .. }) => sharing.stopped = true,
            Err(e) => {
                tracing::error!(error = %e, "cannot take part in the group of the mirror's instances; trying again");
            }
        }
    }

    /// The group's side of each round: settled hand-overs are reported,
    /// take-overs read their checkpoints, and the bytes each partition
    /// copied go into the next join. (A lease that ended holds every write
    /// back: see `lease`.)
    fn share(&mut self, now: Instant) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        if sharing.ownership.settle_revocations(&mut self.slots) {
            sharing.member.membership_mut().revoked();
        }
        if let Some(bytes) = sharing.ownership.recent_bytes_due(&self.slots, now) {
            sharing.member.membership_mut().set_recent_bytes(bytes);
        }
        let read_progress = self.options.until_caught_up
            && self.slots.caught_up()
            && sharing.ownership.progress_read_due(&self.slots, now);
        // Partitions are taken over with a producer to write them: in
        // exactly-once mode, the transactional id of the writer slot.
        let writer_ready = !self.produce.producer().renewing()
            && self
                .exactly_once
                .as_ref()
                .is_none_or(|eos| eos.coordinator.is_some());
        let take_over = if self.draining.is_none() && writer_ready {
            sharing
                .ownership
                .take_over_due(&self.slots, self.meta.source(), now)
        } else {
            None
        };
        if read_progress {
            let store = self.checkpoints.clone();
            self.spawn(async move { Event::ProgressRead(store.load().await) });
        }
        if let Some(ids) = take_over {
            let store = self.checkpoints.clone();
            self.spawn(async move {
                Event::TakenOver {
                    slots: ids,
                    read: store.load_stable().await,
                }
            });
        }
    }

    /// New partitions found while running: the group's to share out, or
    /// this instance's at once.
    fn partitions_added(&mut self, added: &[SlotId]) {
        if added.is_empty() {
            return;
        }
        match &mut self.sharing {
            Some(sharing) => {
                let membership = sharing.member.membership_mut();
                membership.set_partitions(Ownership::group_partitions(&self.slots));
                membership.rejoin("new partitions");
            }
            None => start_unshared(&mut self.slots, added),
        }
    }

    /// Starts whatever may start now.
    fn dispatch(&mut self) {
        let now = Instant::now();
        self.share(now);
        let lease = self.lease();
        for role in self.meta.due_refreshes(now) {
            let cluster = match role {
                Role::Source => self.source.clone(),
                Role::Target => self.target.clone(),
            };
            self.spawn(async move {
                Event::MetadataRefreshed {
                    role,
                    result: cluster.metadata().await,
                }
            });
        }
        if !self.options.until_caught_up && self.draining.is_none() && self.topics.due(now) {
            let (flow, source, target) = (
                self.config.clone(),
                self.source.clone(),
                self.target.clone(),
            );
            self.spawn(async move {
                Event::TopicsRefreshed {
                    result: refresh_topics(&flow, &source, &target).await,
                }
            });
        }
        let sync_due = self.draining.is_none()
            && self
                .group_sync
                .as_mut()
                .is_some_and(|schedule| schedule.start_if_due(now));
        if sync_due {
            let sync = self.sync_groups();
            self.spawn(async move { Event::GroupsSynced { result: sync.await } });
        }
        let lookups = self.positions.due_lookups(&mut self.slots, &self.meta, now);
        self.start_lookups(lookups);
        if self.draining.is_none() && !self.observer.paused() {
            let source = &self.source;
            let cx = FetchContext {
                config: &self.config.replication,
                meta: &self.meta,
                memory: source.frame_memory(),
                round_trip: &|broker| source.round_trip(broker),
            };
            let jobs = self
                .fetch
                .start(&mut self.slots, cx, &mut self.counters, now);
            for job in jobs {
                self.start_fetch(job);
            }
        }
        // Exactly-once needs no landing check: the producer state of an open
        // transaction never expires, and the commit waits for every batch of
        // unknown fate to be settled.
        if self.exactly_once.is_none() {
            let producer = self.produce.producer();
            let producer = (producer.id, producer.epoch);
            let stale_before_ms = self.produce.stale_before_ms();
            for check in
                landing::due_checks(&mut self.slots, &self.meta, stale_before_ms, producer, now)
            {
                let target = self.target.clone();
                self.spawn(
                    async move { Event::LandingChecked(landing::look(target, check).await) },
                );
            }
        }
        self.add_to_transaction(lease, now);
        let cx = ProduceContext {
            config: &self.config.replication,
            meta: &self.meta,
            transaction: self.exactly_once.as_ref().map(|eos| &eos.stage),
            lease,
        };
        for job in self.produce.start(&mut self.slots, cx, now) {
            let (target, events) = (&self.target, &self.events_tx);
            self.lanes
                .entry(job.broker)
                .or_insert_with(|| ProduceLane::start(target.clone(), events.clone()))
                .submit(job);
        }
        let in_flight = self.produce.in_flight() > 0
            || self
                .exactly_once
                .as_ref()
                .is_some_and(|eos| eos.stage.request_in_flight());
        // Sharing in exactly-once mode, no transactional id before the
        // group gives a writer slot.
        let writer_known = self
            .exactly_once
            .as_ref()
            .and_then(|eos| eos.slot)
            .is_none_or(|slot| slot.known());
        if writer_known {
            if let Some(reason) = self.produce.producer().due(&self.slots, in_flight, now) {
                self.renew_producer(reason);
            }
        }
        // A revocation waits for the checkpoints of what it hands over.
        let revoking = self
            .sharing
            .as_ref()
            .is_some_and(|sharing| sharing.ownership.revoking());
        if self.exactly_once.is_some() {
            self.commit_if_due(revoking, lease, now);
        } else if let Some(write) =
            self.checkpoint
                .due(&self.slots, self.checkpoint_urgent() || revoking, now)
        {
            let store = self.checkpoints.clone();
            self.spawn(async move {
                if !lease.holds() {
                    return Event::CheckpointWritten {
                        written: Vec::new(),
                        result: Err(lease_ended(store.topic())),
                    };
                }
                let written = store.write(&write.entries).await;
                Event::CheckpointWritten {
                    written: write.stored_part(written.stored),
                    result: written.result,
                }
            });
        }
        if self.draining.is_none() {
            self.check_finished();
        }
        self.publish_view(self.phase(), false);
        if now.duration_since(self.last_progress) >= PROGRESS_INTERVAL {
            self.last_progress = now;
            self.source.frame_memory().release_unused_spares();
            tracing::info!(
                records = self.counters.records,
                megabytes = self.counters.bytes as f64 / 1e6,
                held_bytes = self.held(),
                "progress"
            );
        }
    }

    /// Exactly-once: adds the partitions that have batches to send to the
    /// open transaction, first thing in it.
    fn add_to_transaction(&mut self, lease: Lease, now: Instant) {
        let Some(ExactlyOnce {
            stage,
            coordinator: Some(coordinator),
            ..
        }) = &mut self.exactly_once
        else {
            return;
        };
        if self.produce.producer().renewing() {
            return;
        }
        let Some(partitions) = stage.partitions_to_add(&self.slots) else {
            return;
        };
        let coordinator = coordinator.clone();
        let producer = self.produce.producer().writer();
        self.spawn(async move {
            if !lease.holds() {
                let result = Err(TransactionFailure::LeaseEnded);
                return Event::PartitionsAdded { partitions, result };
            }
            let names: Vec<(String, i32)> = partitions
                .iter()
                .map(|(topic, partition)| (topic.to_string(), *partition))
                .collect();
            let result = coordinator
                .add_partitions((producer.id, producer.epoch), &names)
                .await
                .map_err(TransactionFailure::AddPartitions);
            Event::PartitionsAdded { partitions, result }
        });
        tracing::trace!(?now, "adding partitions to the transaction");
    }

    /// Exactly-once: closes the open transaction once it is due, and
    /// commits it, with the checkpoints of what it holds, once every batch
    /// in it is settled.
    ///
    /// Memory never hurries a commit: an acknowledged batch's memory is freed
    /// at once, not by the commit (see `PartitionState::budgeted_bytes`); a
    /// revocation does (`revoking`), since it waits for the commit.
    fn commit_if_due(&mut self, revoking: bool, lease: Lease, now: Instant) {
        let Some(ExactlyOnce {
            stage,
            coordinator: Some(coordinator),
            ..
        }) = &mut self.exactly_once
        else {
            return;
        };
        // Caught up (nothing to send, nothing in flight): committing now
        // shows the data to read_committed consumers at once rather than
        // after the interval; under load the interval decides.
        let caught_up = self.produce.in_flight() == 0 && !self.slots.any_unsent();
        let now_wanted = revoking || self.draining.is_some() || caught_up;
        stage.close_if_due(now_wanted, self.target.shortest_round_trip(), now);
        let settled = self.produce.in_flight() == 0 && !self.slots.any_unresolved();
        if self.produce.producer().renewing() {
            return;
        }
        let Some(sequence) = stage.start_commit(settled) else {
            return;
        };
        let write = self.checkpoint.dirty(&self.slots);
        let (store, coordinator) = (self.checkpoints.clone(), coordinator.clone());
        let producer = self.produce.producer().writer();
        self.spawn(async move {
            if !lease.holds() {
                return Event::TransactionCommitted {
                    written: Vec::new(),
                    result: Err(TransactionFailure::LeaseEnded),
                };
            }
            let result = transaction::commit(
                &store,
                &coordinator,
                (producer.id, producer.epoch),
                &write.entries,
                sequence,
            )
            .await;
            Event::TransactionCommitted {
                written: write.written,
                result,
            }
        });
    }

    /// Asks the target for a new producer epoch: a fresh idempotent producer
    /// id, or a bump of our transactional id's epoch, which aborts the open
    /// transaction.
    fn renew_producer(&mut self, reason: RenewalReason) {
        let target = self.target.clone();
        let current = self.produce.producer().writer();
        let current = (current.id, current.epoch);
        let timeout = self.config.replication.transaction_timeout();
        let Some(eos) = &self.exactly_once else {
            self.spawn(async move {
                let result = init_producer_id(&target).await;
                Event::ProducerRenewed {
                    reason,
                    result,
                    switched: None,
                }
            });
            return;
        };
        let held = eos.coordinator.clone();
        let switch = eos.slot.and_then(|slot| slot.switch_to()).map(|slot| {
            let id = transactional_id(&self.config, Some(slot));
            (slot, Arc::new(TransactionCoordinator::new(target, id)))
        });
        self.spawn(async move {
            let result = match (&switch, held) {
                // Another writer slot: what is open under the old one is
                // aborted first (an epoch bump, which fails harmlessly if
                // its new holder took it already), then the new one's id
                // is taken, fencing whoever held it before.
                (Some((_, new)), held) => {
                    if let Some(old) = held {
                        if let Err(e) = old.init_producer_id(timeout, Some(current)).await {
                            tracing::debug!(error = %e, "nothing to abort under the writer slot given up");
                        }
                    }
                    new.init_producer_id(timeout, None)
                        .await
                        .map_err(MirrorError::from)
                }
                (None, Some(held)) => held
                    .init_producer_id(timeout, Some(current))
                    .await
                    .map_err(MirrorError::from),
                // Not asked before the group gives a slot; tried again.
                (None, None) => Err(MirrorError::ProducerId(
                    "no writer slot from the group yet".into(),
                )),
            };
            Event::ProducerRenewed {
                reason,
                result,
                switched: switch,
            }
        });
    }

    /// Another instance of the flow's name took over its transactional id:
    /// nothing more is written, and the run ends.
    fn fenced(&mut self, error: &MirrorError) {
        let message = format!(
            "fenced by another instance named {}: {error}; this instance stopped without writing more",
            self.config.checkpoint_name
        );
        tracing::error!("{message}");
        self.fenced = Some(message);
        self.begin_drain("fenced");
    }

    /// Sharing, another instance took this one's writer slot (it was out of
    /// the group, or stalled): it gives up its partitions and slot, and
    /// joins the group again for new ones.
    fn fenced_while_sharing(&mut self) {
        let (Some(sharing), Some(eos)) = (&mut self.sharing, &mut self.exactly_once) else {
            return;
        };
        tracing::warn!("another instance took this one's writer slot; giving up its partitions and joining again");
        sharing.ownership.lost(&mut self.slots);
        sharing
            .member
            .membership_mut()
            .start_over("fenced on its writer slot");
        eos.stage.renewed();
        eos.coordinator = None;
        if let Some(writer) = &mut eos.slot {
            writer.fenced();
        }
    }

    /// Sends a Fetch on its fetcher's connection.
    fn start_fetch(&self, job: FetchJob) {
        let FetchJob {
            fetcher,
            request,
            asked,
            reserved,
            capacity,
        } = job;
        let source = self.source.clone();
        self.spawn(async move {
            let (broker, nth) = fetcher;
            let sent = Instant::now();
            let result = source.fetch_on(broker, nth, request).await;
            let elapsed = sent.elapsed();
            requests().completed(Role::Source, broker, Api::Fetch, elapsed);
            Event::FetchAnswered(FetchReply {
                fetcher,
                asked,
                reserved,
                capacity,
                elapsed,
                round_trip: source.round_trip(broker),
                result,
            })
        });
    }

    /// Sends the offset lookups that are due.
    fn start_lookups(&self, lookups: Lookups) {
        let isolation = self.config.replication.isolation_level.wire_value();
        for (spec, slots) in lookups.resolve {
            let partitions = self.slots.keys(&slots);
            let (source, metadata) = (self.source.clone(), self.meta.source().clone());
            self.spawn(async move {
                let results = source
                    .list_offsets(&metadata, &partitions, spec, isolation)
                    .await;
                Event::OffsetsResolved { slots, results }
            });
        }
        if !lookups.loss.is_empty() {
            let partitions = self.slots.keys(&lookups.loss);
            let (source, metadata) = (self.source.clone(), self.meta.source().clone());
            let slots = lookups.loss;
            self.spawn(async move {
                let earliest = source
                    .list_offsets(&metadata, &partitions, OffsetSpec::Earliest, 0)
                    .await;
                let latest = source
                    .list_offsets(&metadata, &partitions, OffsetSpec::Latest, 0)
                    .await;
                Event::LossChecked {
                    slots,
                    earliest,
                    latest,
                }
            });
        }
    }

    /// Routes an answer to the stage that asked.
    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        self.observer.observe(&event, now);
        match event {
            Event::FetchAnswered(reply) => {
                let source = &self.source;
                let cx = FetchContext {
                    config: &self.config.replication,
                    meta: &self.meta,
                    memory: source.frame_memory(),
                    round_trip: &|broker| source.round_trip(broker),
                };
                let draining = self.draining.is_some();
                self.fetch.answered(
                    &mut self.slots,
                    cx,
                    &mut self.counters,
                    reply,
                    draining,
                    now,
                );
            }
            Event::ProduceAnswered(reply) => {
                let cx = ProduceContext {
                    config: &self.config.replication,
                    meta: &self.meta,
                    transaction: self.exactly_once.as_ref().map(|eos| &eos.stage),
                    lease: self.lease(),
                };
                self.produce
                    .answered(&mut self.slots, cx, &mut self.counters, reply, now);
            }
            Event::CheckpointWritten { written, result } => {
                self.checkpoint
                    .answered(&mut self.slots, written, result, now);
                if let Some(e) = self.checkpoint.failure() {
                    let why = format!("checkpoints cannot be stored ({e})");
                    self.begin_drain(&why);
                }
            }
            Event::LandingChecked(answer) => {
                landing::answered(&mut self.slots, &self.meta, &mut self.counters, answer, now);
            }
            Event::GroupsSynced { result } => {
                if let Some(schedule) = &mut self.group_sync {
                    schedule.answered(&result, now);
                }
            }
            Event::MetadataRefreshed { role, result } => {
                self.meta.refresh_answered(role, result.is_ok());
                match result {
                    Ok(metadata) => self.take_metadata(role, metadata),
                    Err(e) => tracing::warn!(error = %e, "metadata refresh failed; retrying"),
                }
            }
            Event::OffsetsResolved { slots, results } => {
                self.positions
                    .resolved(&mut self.slots, &self.meta, slots, results, now);
            }
            Event::LossChecked {
                slots,
                earliest,
                latest,
            } => self.positions.loss_checked(
                &mut self.slots,
                &self.meta,
                &mut self.counters,
                slots,
                earliest,
                latest,
                now,
            ),
            Event::ProducerRenewed {
                reason,
                result,
                switched,
            } => {
                let fenced = result.as_ref().is_err_and(MirrorError::is_fenced);
                if fenced && self.sharing.is_none() {
                    if let Err(e) = &result {
                        self.fenced(e);
                    }
                    return;
                }
                let renewed = result.is_ok();
                self.produce.producer().renewed(
                    &mut self.slots,
                    &mut self.counters,
                    reason,
                    result,
                    now,
                );
                let Some(eos) = &mut self.exactly_once else {
                    return;
                };
                if renewed {
                    eos.stage.renewed();
                    self.counters.transactions_aborted += 1;
                    if let Some((slot, coordinator)) = switched {
                        tracing::info!(
                            slot,
                            transactional_id = coordinator.transactional_id(),
                            "took the writer slot's transactional id"
                        );
                        let id = coordinator.transactional_id().into();
                        self.produce.producer().set_transactional_id(id);
                        eos.coordinator = Some(coordinator);
                        if let Some(writer) = &mut eos.slot {
                            writer.switched(slot);
                        }
                    }
                } else if fenced {
                    self.fenced_while_sharing();
                }
                // The group gave another slot while this renewal was out.
                let switch = self
                    .exactly_once
                    .as_ref()
                    .and_then(|eos| eos.slot?.switch_to());
                if let Some(slot) = switch.filter(|_| renewed) {
                    let reason = RenewalReason::NewSlot(slot);
                    self.produce.producer().refused(reason, now);
                }
            }
            Event::PartitionsAdded { partitions, result } => {
                let Some(eos) = &mut self.exactly_once else {
                    return;
                };
                eos.stage.added(partitions, result.is_ok(), now);
                if let Err(failure) = result {
                    let reason = RenewalReason::Transaction(failure);
                    self.produce.producer().refused(reason, now);
                }
            }
            Event::TransactionCommitted { written, result } => {
                let Some(eos) = &mut self.exactly_once else {
                    return;
                };
                match result {
                    Ok(next_sequence) => {
                        checkpoints::stored(&mut self.slots, written);
                        eos.stage.commit_answered(Some(next_sequence));
                        self.counters.transactions_committed += 1;
                    }
                    Err(failure) => {
                        eos.stage.commit_answered(None);
                        let reason = RenewalReason::Transaction(failure);
                        self.produce.producer().refused(reason, now);
                    }
                }
            }
            Event::TopicsRefreshed { result } => {
                if let Some((source_meta, target_meta, added)) =
                    self.topics.answered(&mut self.slots, result, now)
                {
                    self.take_metadata(Role::Source, source_meta);
                    self.take_metadata(Role::Target, target_meta);
                    self.partitions_added(&added);
                }
            }
            Event::ProgressRead(read) => {
                if let Some(sharing) = &mut self.sharing {
                    sharing.ownership.progress_read(&self.slots, read);
                }
            }
            Event::TakenOver { slots, read } => {
                let Some(sharing) = &mut self.sharing else {
                    return;
                };
                let old = sharing.ownership.taken_over(
                    &mut self.slots,
                    slots,
                    read,
                    self.meta.source(),
                    now,
                );
                log_old_checkpoints(&old);
                // A checkpoint of a topic since deleted and recreated.
                self.positions
                    .detect_recreated_topics(&mut self.slots, self.meta.source());
            }
        }
    }

    /// Takes a new snapshot of one cluster: a source snapshot is checked for
    /// recreated topics first, and fetch windows of brokers that lead none of
    /// our partitions any more are closed.
    fn take_metadata(&mut self, role: Role, metadata: Metadata) {
        self.slots
            .leaders_moved(role, self.meta.get(role), &metadata);
        if role == Role::Source {
            self.positions
                .detect_recreated_topics(&mut self.slots, &metadata);
        }
        self.meta.set(role, metadata);
        if role == Role::Source {
            self.fetch.keep_windows_of(&self.slots, &self.meta);
        }
    }

    /// A sync of the flow's consumer groups with the offset maps as they
    /// are now (see `group_sync.rs`).
    fn sync_groups(&self) -> impl Future<Output = Result<SyncReport, GroupError>> {
        let (source, target, config) = (
            self.source.clone(),
            self.target.clone(),
            self.config.clone(),
        );
        let copied = group_sync::copied_partitions(&self.slots, self.exactly_once.is_some());
        let mm2_checkpoints = self.mm2_checkpoints.clone();
        async move {
            let select = |group: &str| {
                config
                    .groups
                    .as_ref()
                    .is_some_and(|settings| settings.selects(group))
            };
            groups::sync(
                &source,
                &target,
                &select,
                &copied,
                mm2_checkpoints.as_deref(),
            )
            .await
        }
    }

    /// The last group sync, once the copy ended: the groups then stand
    /// where this run's copy of their data ends.
    async fn final_group_sync(&mut self) {
        if self.group_sync.is_none() {
            return;
        }
        // A periodic sync under way commits older translations; its answer
        // comes first, so the final one is the last word.
        while self
            .group_sync
            .as_ref()
            .is_some_and(GroupSyncSchedule::in_flight)
        {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
        let result = self.sync_groups().await;
        if let Some(schedule) = &mut self.group_sync {
            schedule.answered(&result, Instant::now());
        }
    }

    /// Spawns a request whose answer comes back as an event.
    fn spawn<F>(&self, request: F)
    where
        F: Future<Output = Event> + Send + 'static,
    {
        let events = self.events_tx.clone();
        // In the flow's span, as the engine's own events are.
        let request = async move {
            // The engine may have finished; its answer is then not needed.
            let _ = events.send(request.await);
        };
        tokio::spawn(request.in_current_span());
    }

    /// Whether checkpoints are written without waiting for the interval:
    /// half the memory budget waits for them (a checkpoint releases what it
    /// covers), or the flow drains.
    fn checkpoint_urgent(&self) -> bool {
        self.held() > self.fetch.budget(&self.config.replication) / 2 || self.draining.is_some()
    }

    /// Bytes held against the memory budget (see [`fetch::held`]).
    fn held(&self) -> usize {
        let exactly_once = self.config.replication.exactly_once;
        fetch::held(
            self.slots.queued_bytes(exactly_once),
            self.source.frame_memory(),
        )
    }

    /// The last checkpoint, awaited here: a few tries, since it decides how
    /// much a restart sends again. Returns what could not be stored.
    async fn final_checkpoint(&mut self) -> Option<UnsavedCheckpoints> {
        while self.checkpoint.in_flight() {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
        let mut reason = self.checkpoint.failure().map(ToString::to_string);
        // Exactly-once checkpoints are only ever written by a commit: what
        // was not committed is copied again, and never counted as copied.
        if self.exactly_once.is_some() {
            reason = Some("the last transaction was not committed".to_owned());
        }
        if reason.is_none() {
            for attempt in 1..=FINAL_CHECKPOINT_TRIES {
                let write = self.checkpoint.dirty(&self.slots);
                if write.entries.is_empty() {
                    return None;
                }
                if !self.lease().holds() {
                    reason = Some(lease_ended(self.checkpoints.topic()).to_string());
                    break;
                }
                let written = self.checkpoints.write(&write.entries).await;
                checkpoints::stored(&mut self.slots, write.stored_part(written.stored));
                match written.result {
                    Ok(()) => return None,
                    Err(e) if e.is_retriable() && attempt < FINAL_CHECKPOINT_TRIES => {
                        tracing::warn!(error = %e, attempt, "final checkpoint write failed");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        reason = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        let left = self.checkpoint.dirty(&self.slots);
        if left.written.is_empty() {
            return None;
        }
        let offsets = left
            .written
            .iter()
            .map(|&(id, committed)| committed.saturating_sub(self.slots[id].state.checkpointed))
            .sum::<i64>();
        let unsaved = UnsavedCheckpoints {
            flow: self.config.name.clone(),
            partitions: left.written.len(),
            offsets: u64::try_from(offsets).unwrap_or_default(),
            reason: reason.unwrap_or_default(),
        };
        tracing::error!("{unsaved}");
        Some(unsaved)
    }

    /// Stops fetching; what is in flight lands, then the loop ends.
    fn begin_drain(&mut self, why: &str) {
        if self.draining.is_some() {
            return;
        }
        tracing::info!("{why}: letting in-flight batches land");
        let timeout = Duration::from_millis(self.config.replication.shutdown_timeout_ms);
        self.draining = Some(Instant::now() + timeout);
        for slot in self.slots.all_mut() {
            slot.state.drop_unsent();
        }
    }

    fn is_done(&self) -> bool {
        let Some(deadline) = self.draining else {
            return false;
        };
        if self.fenced.is_some() {
            return true;
        }
        let produces = self.produce.in_flight();
        let committed = self
            .exactly_once
            .as_ref()
            .is_none_or(|eos| eos.stage.is_idle());
        if produces == 0 && !self.slots.any_failed() && committed {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                requests = produces,
                "shutdown timeout: batches still unacknowledged are sent again after a restart"
            );
            return true;
        }
        false
    }

    /// Ends the run when there is nothing left to do: caught up, or every
    /// partition stopped.
    fn check_finished(&mut self) {
        // A flow without partitions yet waits for the topic refresh to find some.
        if self.slots.all_stopped() {
            self.begin_drain("every partition stopped");
            return;
        }
        // Sharing, what this instance owns once it has it all in hand, and
        // what the others own as they stored it.
        let others_done = self.sharing.as_ref().is_none_or(|sharing| {
            sharing.ownership.settled(&self.slots, self.meta.source())
                && sharing.ownership.others_caught_up(&self.slots)
        });
        if self.options.until_caught_up && others_done && self.slots.caught_up() {
            self.begin_drain("caught up with the source");
        }
    }

    /// Where the flow is, for its view.
    fn phase(&self) -> FlowPhase {
        if self.draining.is_some() {
            FlowPhase::Draining
        } else if self.observer.paused() {
            FlowPhase::Paused
        } else {
            FlowPhase::Running
        }
    }

    /// Publishes the flow's view (see `view.rs`): `at_once`, or when due.
    fn publish_view(&mut self, phase: FlowPhase, at_once: bool) {
        let (in_flight_bytes, budget_bytes) =
            (self.held(), self.fetch.budget(&self.config.replication));
        let inputs = FlowInputs {
            config: &self.config,
            phase,
            slots: &self.slots,
            counters: &self.counters,
            in_flight_bytes,
            budget_bytes,
            owner: self
                .sharing
                .as_ref()
                .map(|sharing| sharing.member.membership().member_id()),
            until_caught_up: self.options.until_caught_up,
            throttle_bytes_per_sec: self.fetch.throttle().rate().map(ByteRate::bytes_per_second),
        };
        let now = Instant::now();
        if at_once {
            self.observer.publish(inputs, now);
        } else {
            self.observer.publish_if_due(inputs, now);
        }
    }

    fn summary(&self) -> Summary {
        let stopped = self
            .slots
            .all()
            .filter_map(|s| match &s.status {
                Status::Stopped(error) => Some(PartitionProblem {
                    flow: self.config.name.clone(),
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    reason: error.to_string(),
                }),
                _ => None,
            })
            .collect();
        let mut summary = Summary::new(
            self.topics.topic_count(),
            self.slots.len(),
            &self.counters,
            self.started.elapsed(),
            stopped,
        );
        summary.deleted_topics = deleted_topics(&self.slots);
        summary.throttle = self.fetch.throttle().rate();
        summary.fenced.extend(self.fenced.clone());
        if self.config.instances.share {
            summary
                .owned
                .push(owned_partitions(&self.config.name, &self.slots));
        }
        if self.options.until_caught_up {
            summary.source_ends = self
                .slots
                .all()
                .filter(|s| s.status.is_copying())
                .map(|s| {
                    let partition = FlowPartition {
                        flow: self.config.name.clone(),
                        topic: s.topic.to_string(),
                        partition: s.partition,
                    };
                    (partition, s.state.committed())
                })
                .collect();
        }
        summary.groups = self
            .group_sync
            .as_ref()
            .and_then(|schedule| schedule.last().cloned());
        summary
    }
}

/// The next event of the flow's group member; never, when the flow's
/// instances do not share it (or the member stopped).
async fn next_member_event(sharing: &mut Option<Sharing>) -> Result<MemberEvent, MembershipError> {
    match sharing {
        Some(sharing) if !sharing.stopped => sharing.member.next_event().await,
        _ => std::future::pending().await,
    }
}

/// A checkpoint write not sent: this instance's lease on its partitions
/// ended first. Tried again, by then for the partitions it still owns.
fn lease_ended(topic: &str) -> CheckpointError {
    CheckpointError::NotReady {
        topic: topic.to_owned(),
        reason: "this instance's lease on its partitions ended before the write went out".into(),
    }
}
