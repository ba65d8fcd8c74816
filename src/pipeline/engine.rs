//! The engine: the one task that owns all partition state of one flow and
//! runs the loop "start what may start, wait for an answer, apply it".
//!
//! Requests are spawned tasks that send their answer back as an [`Event`];
//! nothing else touches the state, so there are no locks on the data path and
//! the order of decisions is the order of events.
//!
//! There is one engine per flow rather than one for all flows: a flow is then
//! exactly the single-copy pipeline this engine already was (its own producer
//! id, memory budget, checkpoints and summary), a stopped or slow flow cannot
//! stall another's loop, and flows writing the same cluster still share its
//! connections through one `Arc<Cluster>` (see `Targets` in `mod.rs`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{FetchResponse, ProduceResponse};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::fetch_window::FetchWindow;
use super::partition::{Backoff, PartitionState};
use super::produce::ProducerIdentity;
use super::stats::{Counters, PartitionProblem, Summary};
use super::MirrorError;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::cluster::{
    Cluster, ClusterError, FetchSession, Metadata, OffsetResult, OffsetSpec, Role,
};
use crate::config::Flow;

/// How a run ends besides a shutdown signal.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once the target holds everything the source held when the run began.
    pub until_caught_up: bool,
}

/// What a partition is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    /// Its start offset is being looked up (no checkpoint, or a reset).
    Resolving { spec: OffsetSpec, asked: bool },
    /// Copying batches.
    Copying,
    /// The source said its fetch offset is out of range: finding out why.
    CheckingLoss { asked: bool },
    /// Stopped with an error an operator must act on.
    Stopped(String),
}

/// One source partition and everything the engine knows about it.
#[derive(Debug)]
pub(super) struct Slot {
    /// The source topic.
    pub(super) topic: Arc<str>,
    /// The target topic it is copied into (named by the flow's policy).
    pub(super) target_topic: Arc<str>,
    pub(super) partition: i32,
    /// The source topic id the copied data came from.
    pub(super) source_topic_id: Uuid,
    pub(super) state: PartitionState,
    pub(super) status: Status,
    /// Part of a Fetch in flight.
    pub(super) fetching: bool,
    pub(super) fetch_backoff: Backoff,
    pub(super) produce_backoff: Backoff,
    /// With `until_caught_up`: the source's end offset at the start of the run.
    pub(super) caught_up_at: Option<i64>,
    /// Out-of-order answers in a row for the first unacknowledged batch.
    pub(super) out_of_order_streak: u32,
    /// Batches the target refused as corrupt since the last one it took,
    /// though they left whole.
    pub(super) corrupt_refusals: u32,
}

impl Slot {
    /// A partition about to be copied from `offset`.
    pub(super) fn new(
        topic: Arc<str>,
        target_topic: Arc<str>,
        partition: i32,
        source_topic_id: Uuid,
        offset: i64,
        status: Status,
    ) -> Self {
        Slot {
            topic,
            target_topic,
            partition,
            source_topic_id,
            state: PartitionState::new(offset),
            status,
            fetching: false,
            fetch_backoff: Backoff::default(),
            produce_backoff: Backoff::default(),
            caught_up_at: None,
            out_of_order_streak: 0,
            corrupt_refusals: 0,
        }
    }
}

/// One of a source broker's fetchers: `(broker, n)`, `n` below the count of
/// the broker's [`FetchWindow`]. Each has its own connection and fetch
/// session, and a partition goes to the same one while the count holds.
pub(super) type Fetcher = (i32, usize);

/// The answer to a request the engine started.
#[derive(Debug)]
pub(super) enum Event {
    Fetched {
        fetcher: Fetcher,
        /// Slots asked for and the offset asked.
        asked: Vec<(usize, i64)>,
        reserved: usize,
        /// From sending the Fetch to its answer.
        elapsed: Duration,
        result: Result<FetchResponse, ClusterError>,
    },
    Produced {
        broker: i32,
        /// Slots and the entry of each that the request carried.
        sent: Vec<(usize, u64)>,
        result: Result<ProduceResponse, ClusterError>,
    },
    Checkpointed {
        written: Vec<(usize, i64)>,
        result: Result<(), CheckpointError>,
    },
    Metadata {
        role: Role,
        result: Result<Metadata, ClusterError>,
    },
    Resolved {
        slots: Vec<usize>,
        results: HashMap<(String, i32), OffsetResult>,
    },
    LossChecked {
        slots: Vec<usize>,
        earliest: HashMap<(String, i32), OffsetResult>,
        latest: HashMap<(String, i32), OffsetResult>,
    },
    ProducerRenewed {
        reason: String,
        result: Result<(i64, i16), MirrorError>,
    },
    TopicsRefreshed {
        result: Result<super::lifecycle::Refreshed, MirrorError>,
    },
}

/// Everything the engine starts from, gathered by `startup.rs`.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) config: Flow,
    pub(super) options: RunOptions,
    pub(super) source: Arc<Cluster>,
    pub(super) target: Arc<Cluster>,
    pub(super) checkpoints: Arc<CheckpointStore>,
    /// kafka-mirror's producer id and epoch on the target.
    pub(super) producer: (i64, i16),
    pub(super) source_meta: Metadata,
    pub(super) target_meta: Metadata,
    pub(super) slots: Vec<Slot>,
    pub(super) topic_count: usize,
}

/// A metadata refresh that someone asked for.
#[derive(Debug, Default)]
struct Refresh {
    wanted: bool,
    in_flight: bool,
    last: Option<Instant>,
}

/// Shortest time between two metadata refreshes of one cluster.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// How often the engine wakes without an event (backoffs, checkpoint interval):
/// the shortest backoff. Each wake looks at every partition, which is what an
/// idle mirror spends its CPU on (5,000 partitions: 2.8% of a core at 20 ms).
const TICK: Duration = Duration::from_millis(50);
/// How often progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// The pipeline's state and its loop.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(super) config: Arc<Flow>,
    pub(super) options: RunOptions,
    pub(super) source: Arc<Cluster>,
    pub(super) target: Arc<Cluster>,
    pub(super) checkpoints: Arc<CheckpointStore>,
    pub(super) producer: ProducerIdentity,
    pub(super) source_cluster_id: Option<String>,
    pub(super) slots: Vec<Slot>,
    pub(super) index: HashMap<(Arc<str>, i32), usize>,
    pub(super) source_meta: Arc<Metadata>,
    pub(super) target_meta: Arc<Metadata>,
    pub(super) source_names: HashMap<Uuid, String>,
    pub(super) target_names: HashMap<Uuid, String>,
    pub(super) fetches_in_flight: HashSet<Fetcher>,
    /// The incremental fetch session of each fetcher.
    pub(super) fetch_sessions: HashMap<Fetcher, FetchSession>,
    /// How many Fetches each source broker gets at once.
    pub(super) fetch_windows: HashMap<i32, FetchWindow>,
    pub(super) produces_in_flight: HashMap<i32, usize>,
    pub(super) produce_lanes: HashMap<i32, super::produce::ProduceLane>,
    /// Bytes reserved by Fetch requests in flight.
    pub(super) reserved: usize,
    pub(super) fetch_cursor: usize,
    pub(super) counters: Counters,
    pub(super) topic_count: usize,
    pub(super) topic_refresh: super::lifecycle::TopicRefresh,
    checkpoint_in_flight: bool,
    last_checkpoint: Instant,
    refresh: [Refresh; 2],
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    pub(super) draining: Option<Instant>,
    started: Instant,
    last_progress: Instant,
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
            source_meta,
            target_meta,
            slots,
            topic_count,
        } = prepared;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.topic.clone(), s.partition), i))
            .collect();
        let now = Instant::now();
        let topic_refresh = super::lifecycle::TopicRefresh::new(now, config.topic_refresh_interval);
        let mut engine = Engine {
            config: Arc::new(config),
            options,
            source,
            target,
            checkpoints,
            producer: ProducerIdentity::new(producer),
            source_cluster_id: source_meta.cluster_id.clone(),
            slots,
            index,
            source_meta: Arc::new(Metadata::default()),
            target_meta: Arc::new(Metadata::default()),
            source_names: HashMap::new(),
            target_names: HashMap::new(),
            fetches_in_flight: HashSet::new(),
            fetch_sessions: HashMap::new(),
            fetch_windows: HashMap::new(),
            produces_in_flight: HashMap::new(),
            produce_lanes: HashMap::new(),
            reserved: 0,
            fetch_cursor: 0,
            counters: Counters::default(),
            topic_count,
            topic_refresh,
            checkpoint_in_flight: false,
            last_checkpoint: now,
            refresh: Default::default(),
            events_tx,
            events_rx,
            draining: None,
            started: now,
            last_progress: now,
        };
        engine.detect_recreated_topics(&source_meta);
        engine.set_metadata(Role::Source, source_meta);
        engine.set_metadata(Role::Target, target_meta);
        engine
    }

    /// Runs until shut down or caught up, then stores the final checkpoints.
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
                _ = tick.tick() => {}
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    self.begin_drain("shutdown requested");
                }
            }
        }
        self.final_checkpoint().await;
        self.summary()
    }

    /// Starts whatever may start now.
    fn dispatch(&mut self) {
        let now = Instant::now();
        self.start_refreshes(now);
        self.start_topic_refresh(now);
        self.start_lookups(now);
        if self.draining.is_none() {
            self.start_fetches(now);
        }
        self.start_produces(now);
        self.start_producer_renewal(now);
        self.start_checkpoint(now);
        if self.draining.is_none() {
            self.check_finished();
        }
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

    fn handle(&mut self, event: Event) {
        match event {
            Event::Fetched {
                fetcher,
                asked,
                reserved,
                elapsed,
                result,
            } => self.on_fetched(fetcher, asked, reserved, elapsed, result),
            Event::Produced {
                broker,
                sent,
                result,
            } => self.on_produced(broker, sent, result),
            Event::Checkpointed { written, result } => self.on_checkpointed(written, result),
            Event::Metadata { role, result } => self.on_metadata(role, result),
            Event::Resolved { slots, results } => self.on_resolved(slots, results),
            Event::LossChecked {
                slots,
                earliest,
                latest,
            } => self.on_loss_checked(slots, earliest, latest),
            Event::ProducerRenewed { reason, result } => self.on_producer_renewed(reason, result),
            Event::TopicsRefreshed { result } => self.on_topics_refreshed(result),
        }
    }

    /// Spawns a request whose answer comes back as an event.
    pub(super) fn spawn<F>(&self, request: F)
    where
        F: Future<Output = Event> + Send + 'static,
    {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            // The engine may have finished; its answer is then not needed.
            let _ = events.send(request.await);
        });
    }

    /// Asks for fresh metadata of one cluster (leaders moved, a broker failed).
    pub(super) fn want_refresh(&mut self, role: Role) {
        self.refresh[role_index(role)].wanted = true;
    }

    fn start_refreshes(&mut self, now: Instant) {
        for role in [Role::Source, Role::Target] {
            let refresh = &mut self.refresh[role_index(role)];
            let recent = refresh
                .last
                .is_some_and(|last| now.duration_since(last) < REFRESH_MIN_INTERVAL);
            if !refresh.wanted || refresh.in_flight || recent {
                continue;
            }
            refresh.wanted = false;
            refresh.in_flight = true;
            refresh.last = Some(now);
            let cluster = match role {
                Role::Source => self.source.clone(),
                Role::Target => self.target.clone(),
            };
            self.spawn(async move {
                Event::Metadata {
                    role,
                    result: cluster.metadata().await,
                }
            });
        }
    }

    fn on_metadata(&mut self, role: Role, result: Result<Metadata, ClusterError>) {
        self.refresh[role_index(role)].in_flight = false;
        match result {
            Ok(metadata) => {
                if role == Role::Source {
                    self.detect_recreated_topics(&metadata);
                }
                self.set_metadata(role, metadata);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata refresh failed; retrying");
                self.want_refresh(role);
            }
        }
    }

    pub(super) fn set_metadata(&mut self, role: Role, metadata: Metadata) {
        let names = metadata
            .topics
            .iter()
            .map(|(name, t)| (t.id, name.clone()))
            .collect();
        match role {
            Role::Source => {
                self.source_names = names;
                // A broker that no longer leads any of our partitions gets no
                // more answers: its window would hold its budget for good.
                let leaders: HashSet<i32> = self
                    .slots
                    .iter()
                    .filter_map(|slot| metadata.leader(&slot.topic, slot.partition))
                    .collect();
                self.fetch_windows
                    .retain(|broker, _| leaders.contains(broker));
                self.source_meta = Arc::new(metadata);
            }
            Role::Target => {
                self.target_names = names;
                self.target_meta = Arc::new(metadata);
            }
        }
    }

    /// Stops a partition with an error an operator must act on. Other
    /// partitions go on; what was acknowledged is still checkpointed.
    pub(super) fn stop(&mut self, slot: usize, reason: String) {
        let s = &mut self.slots[slot];
        if matches!(s.status, Status::Stopped(_)) {
            return;
        }
        tracing::error!(topic = %s.topic, partition = s.partition, "partition stopped: {reason}");
        s.status = Status::Stopped(reason);
        s.state.drop_unsent();
    }

    fn start_checkpoint(&mut self, now: Instant) {
        if self.checkpoint_in_flight {
            return;
        }
        let interval = Duration::from_millis(self.config.checkpoints.interval_ms);
        let pressure = self.held() > self.budget() / 2;
        if now.duration_since(self.last_checkpoint) < interval
            && !pressure
            && self.draining.is_none()
        {
            return;
        }
        let (entries, written) = self.dirty_checkpoints();
        if entries.is_empty() {
            return;
        }
        self.checkpoint_in_flight = true;
        self.last_checkpoint = now;
        let store = self.checkpoints.clone();
        self.spawn(async move {
            let result = store.write(&entries).await;
            Event::Checkpointed { written, result }
        });
    }

    /// Checkpoints that moved since the last stored ones.
    fn dirty_checkpoints(&self) -> (Vec<(String, i32, Checkpoint)>, Vec<SlotOffset>) {
        let mut entries = Vec::new();
        let mut written = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if matches!(slot.status, Status::Resolving { .. }) {
                continue;
            }
            let committed = slot.state.committed();
            if committed == slot.state.checkpointed {
                continue;
            }
            // Keyed by the target topic: a changed naming policy writes new
            // target topics, which must be copied from the start.
            entries.push((
                slot.target_topic.to_string(),
                slot.partition,
                Checkpoint {
                    next_offset: committed,
                    topic_id: slot.source_topic_id,
                    source_cluster: self.source_cluster_id.clone(),
                },
            ));
            written.push((i, committed));
        }
        (entries, written)
    }

    fn on_checkpointed(&mut self, written: Vec<(usize, i64)>, result: Result<(), CheckpointError>) {
        self.checkpoint_in_flight = false;
        match result {
            Ok(()) => {
                for (i, offset) in written {
                    self.slots[i].state.checkpoint_stored(offset);
                }
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint write failed; retrying"),
        }
    }

    /// The last checkpoint, awaited here: a few tries, since it decides how
    /// much a restart sends again.
    async fn final_checkpoint(&mut self) {
        while self.checkpoint_in_flight {
            match self.events_rx.recv().await {
                Some(event) => self.handle(event),
                None => break,
            }
        }
        for attempt in 1..=5 {
            let (entries, written) = self.dirty_checkpoints();
            if entries.is_empty() {
                return;
            }
            match self.checkpoints.write(&entries).await {
                Ok(()) => {
                    for (i, offset) in written {
                        self.slots[i].state.checkpoint_stored(offset);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "final checkpoint write failed");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        tracing::error!("could not store the final checkpoints; a restart will copy again from the last stored ones");
    }

    /// Stops fetching; what is in flight lands, then the loop ends.
    fn begin_drain(&mut self, why: &str) {
        if self.draining.is_some() {
            return;
        }
        tracing::info!("{why}: letting in-flight batches land");
        let timeout = Duration::from_millis(self.config.replication.shutdown_timeout_ms);
        self.draining = Some(Instant::now() + timeout);
        for slot in &mut self.slots {
            slot.state.drop_unsent();
        }
    }

    fn is_done(&self) -> bool {
        let Some(deadline) = self.draining else {
            return false;
        };
        let produces = self.produces_in_flight.values().sum::<usize>();
        let unsent_failures = self
            .slots
            .iter()
            .any(|s| !matches!(s.status, Status::Stopped(_)) && s.state.has_failed());
        if produces == 0 && !unsent_failures {
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
        let mut active = self
            .slots
            .iter()
            .filter(|s| !matches!(s.status, Status::Stopped(_)));
        // A flow without partitions yet waits for the topic refresh to find some.
        if !self.slots.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s.status, Status::Stopped(_)))
        {
            self.begin_drain("every partition stopped");
            return;
        }
        if self.options.until_caught_up
            && active.all(|s| {
                s.status == Status::Copying
                    && s.caught_up_at.is_some_and(|end| s.state.committed() >= end)
            })
        {
            self.begin_drain("caught up with the source");
        }
    }

    /// The memory budget: `in_flight_bytes`, plus `fetch_max_bytes` for each
    /// Fetch the fetch windows added (a long round trip keeps more data on
    /// the way), up to four times `in_flight_bytes`.
    pub(super) fn budget(&self) -> usize {
        let replication = &self.config.replication;
        let added: usize = self.fetch_windows.values().map(FetchWindow::added).sum();
        (replication.in_flight_bytes + added * replication.fetch_max_bytes)
            .min(4 * replication.in_flight_bytes)
    }

    /// Bytes held against the budget: what the partition queues hold
    /// (fetched, not yet checkpointed; summed from the partitions so it cannot
    /// drift), or the source's Fetch responses still in memory if that is
    /// more: a response lives until the last of its batches is acknowledged.
    pub(super) fn held(&self) -> usize {
        self.held_given(self.queued_bytes())
    }

    /// [`Engine::held`] for callers that have summed the queues already.
    pub(super) fn held_given(&self, queued: usize) -> usize {
        queued.max(self.source.frame_memory().live_bytes())
    }

    /// Bytes the partition queues hold (fetched, not yet checkpointed).
    pub(super) fn queued_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.state.held_bytes()).sum()
    }

    fn summary(&self) -> Summary {
        let stopped = self
            .slots
            .iter()
            .filter_map(|s| match &s.status {
                Status::Stopped(reason) => Some(PartitionProblem {
                    flow: self.config.name.clone(),
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect();
        Summary::new(
            self.topic_count,
            self.slots.len(),
            &self.counters,
            self.started.elapsed(),
            stopped,
        )
    }
}

/// A slot and an offset of it.
type SlotOffset = (usize, i64);

fn role_index(role: Role) -> usize {
    match role {
        Role::Source => 0,
        Role::Target => 1,
    }
}
