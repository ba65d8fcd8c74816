//! The fetch-to-produce pipeline: from source partition leaders to target
//! partition leaders, batch by batch, in order, within one memory budget.
//!
//! ```text
//! source broker ──Fetch (all its partitions)──▶ fetch.rs ──split, CRC, filter──▶ partition queue
//!      ▲                                                                          │ (partition.rs)
//!      │ next fetch offset                                                        ▼
//! checkpoint.rs ◀── acknowledged prefix ── produce.rs ◀── head batches of ready partitions
//!                                              │
//!                                              └──Produce (one batch per partition)──▶ target broker
//! ```
//!
//! One task (`engine::Engine`) per flow owns every partition's state of that
//! flow and decides what to send; requests run as spawned tasks whose answers
//! come back as events. No locks guard the pipeline state, so every ordering
//! decision is made in one place. [`run`] starts one engine per flow and
//! combines their summaries; flows writing the same cluster share one [`Cluster`].
//!
//! Each stage owns its own state and is a plain value: its methods take the
//! partition table (`slots.rs`) and what they read (config, metadata), and
//! return the requests to start, or apply an answer. The engine only sends
//! the requests and routes each answer back to the stage that asked, so a
//! stage is read, and unit-tested, without a broker or the engine. Stages
//! import the shared vocabulary (slots, errors, counters), never the engine
//! nor each other's state.
//!
//! - `engine.rs`: the event loop, spawning, draining and shutdown, the summary.
//! - `event.rs`: the answers that come back to the engine.
//! - `slots.rs`: the partition table; `partition.rs`: one partition's queue,
//!   sequences and acknowledgements.
//! - `error.rs`: [`PartitionError`](error::PartitionError), why a partition stopped.
//! - `metadata.rs`: both clusters' metadata, topic names by id, refreshes.
//! - `startup.rs`: select topics, create target topics, load checkpoints, get a
//!   producer id, join the group of the flow's instances; where a partition starts.
//!   Meanwhile it asks the source for start and end offsets and opens the fetch
//!   connections, so a long round trip is paid few times before the first Fetch.
//! - `lifecycle.rs`: new topics and partitions, and changed configs, while running.
//! - `fetch.rs`: one Fetch in flight per source fetcher carrying all its
//!   partitions (`fetch_window.rs`: how many fetchers a broker gets);
//!   `intake.rs`: one partition's fetched records into its queue.
//! - `produce.rs`: up to `max_in_flight_requests` Produce requests per target
//!   broker, one batch per partition each; `producer.rs`: kafka-mirror's own
//!   idempotent producer id and its renewal; `lane.rs`: the per-broker queue
//!   that puts them on the wire in order; `landing.rs`: whether an old
//!   batch whose answer was lost is on the target, read before resending it.
//! - `positions.rs`: start offsets, and data the source lost before it was
//!   copied or after (`epochs.rs`: the source leader epochs of what was
//!   fetched, which find where a truncated source log diverges from the copy).
//! - `checkpoints.rs`: when checkpoints are written, and which.
//! - `offsets.rs`: the `offsets` command, groups listed with the stored maps;
//!   `failover.rs`: the `failover` command, a planned cutover of the groups;
//!   `failback.rs`: the `failback` command, what was written on the target
//!   since copied back, and the groups with it.
//! - `group_sync.rs`: when consumer groups' offsets are synced onto the
//!   target, with the partitions' offset maps.
//! - `ownership.rs`: which partitions this instance copies while the
//!   instances of its name share them, hand-overs, take-overs and the lease.
//! - `throttle.rs`: the token buckets of `max_bytes_per_sec` in front of
//!   the Fetches, per flow and for the process.
//! - `stats.rs`: counters and the run summary.
//! - `status.rs`: the `status` command, each flow's instances and their lag.
//!
//! One batch's path: `fetch.rs` asks for its partition in a Fetch; the answer
//! comes back as `Event::FetchAnswered` and `intake.rs` splits, filters and
//! (if it must) re-encodes it into the partition's queue (`partition.rs`);
//! `produce.rs` takes it as the partition's next batch with a new header and
//! our sequence, `lane.rs` sends it; `Event::ProduceAnswered` acknowledges it
//! in the queue; `checkpoints.rs` stores the acknowledged offset, and the
//! queue releases the batch, and with it the Fetch response's memory.

mod acl_sync;
mod checkpoints;
mod engine;
mod epochs;
mod error;
mod event;
mod failback;
mod failover;
mod fetch;
mod fetch_window;
mod group_sync;
#[cfg(test)]
mod idempotence_tests;
mod intake;
mod landing;
mod lane;
mod lifecycle;
mod metadata;
mod offsets;
mod ownership;
mod partition;
mod partition_start;
mod plan;
mod positions;
mod produce;
mod producer;
mod slots;
mod startup;
mod stats;
mod status;
#[cfg(test)]
mod testing;
mod throttle;
mod transaction;
mod verify;
mod view;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

pub use engine::RunOptions;
pub use failback::{
    failback, Failback, FlowFailback, ForwardCheckpoints, NotOnB, Outcome, PartitionFailback, Start,
};
pub use failover::{failover, Failover, FlowFailover, GroupsOutcome, Missing, SwitchOptions};
pub use group_sync::GroupsSynced;
pub use offsets::{offsets, FlowOffsets, Offsets};
pub use plan::{plan, AclPlan, FlowPlan, Plan, PlannedTopic};
pub use stats::{
    FlowPartition, FlowTotals, OwnedPartitions, PartitionProblem, Summary, UnsavedCheckpoints,
};
pub use status::{status, FlowStatus, MemberStatus, PartitionLag, StatusReport};
pub use verify::{
    verify, verify_observed, Difference, DifferenceKind, FlowCheckProgress, FlowVerify,
    PartitionVerify, SideSummary, VerifyError, VerifyOptions, VerifyProgress, VerifyReport,
};
#[cfg(feature = "test-support")]
pub use view::test_support::SyntheticFlow;

use crate::checkpoint::CheckpointError;
use crate::cluster::{Cluster, ClusterError, Role};
use crate::config::{ClusterConfig, Flow, MirrorConfig};
use crate::observe::Board;
use crate::topics::TopicError;
use throttle::TokenBucket;

/// A failure that stops the whole mirror (partition-level problems only stop
/// their partition and are reported in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// A cluster could not be reached or queried at start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Target topics could not be made ready.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// Checkpoints could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// No source topic matches the selection of a run that stops when caught up.
    #[error("no topic on the source cluster matches topics.include `{include}`{}", exclude.as_deref().map(|e| format!(" and not topics.exclude `{e}`")).unwrap_or_default())]
    NoTopics {
        /// The include regex.
        include: String,
        /// The exclude regex.
        exclude: Option<String>,
    },
    /// The checkpoints were written while mirroring another source cluster.
    #[error(
        "checkpoints of mirror `{mirror}` were written for source cluster {stored}, but the source is cluster {current}: \
         use another mirror name (the `name` key) for a different source"
    )]
    WrongSourceCluster {
        /// The mirror name.
        mirror: String,
        /// The cluster id in the checkpoints.
        stored: String,
        /// The cluster id of the configured source.
        current: String,
    },
    /// A command about consumer groups with none selected.
    #[error("flow `{flow}` selects no consumer groups: pass --groups REGEX or set groups.include")]
    NoGroups {
        /// The flow's name.
        flow: String,
    },
    /// A command that works on what a mirror copied found no checkpoint of it.
    #[error(
        "no checkpoints of mirror `{mirror}` in `{topic}` on cluster {cluster}: failback copies back \
         what was written there after a copy of this mirror; check the config and --name"
    )]
    NoCheckpoints {
        /// The mirror's checkpoint name.
        mirror: String,
        /// The checkpoint topic.
        topic: String,
        /// The cluster looked at.
        cluster: String,
    },
    /// ACLs could not be read or written.
    #[error(transparent)]
    Acls(#[from] crate::cluster::AclError),
    /// Consumer groups could not be listed or read.
    #[error(transparent)]
    Groups(#[from] crate::cluster::GroupError),
    /// The target refused to give the mirror a producer id.
    #[error("target cluster refused InitProducerId: {0}")]
    ProducerId(String),
    /// Exactly-once: the target's transaction coordinator refused or failed.
    #[error(transparent)]
    Transaction(#[from] crate::cluster::TransactionError),
    /// The group of the mirror's instances could not be joined, or another
    /// process took this one's place in it.
    #[error(transparent)]
    Membership(#[from] Box<crate::cluster::membership::MembershipError>),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A partition could not be read for `verify`.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// One flow of several could not start.
    #[error("flow `{flow}`: {source}")]
    Flow {
        /// The flow's name.
        flow: String,
        /// Why it could not start.
        #[source]
        source: Box<MirrorError>,
    },
}

impl MirrorError {
    /// Whether another producer took over our transactional id.
    pub(crate) fn is_fenced(&self) -> bool {
        matches!(self, MirrorError::Transaction(e) if e.is_fenced())
    }
}

/// Runs every flow until `shutdown` resolves (or, with `until_caught_up`,
/// until each target holds everything its source held at the start), then
/// lets in-flight batches land, stores the checkpoints and returns the
/// summary of all flows. A flow that cannot start stops the whole run before
/// any data is copied.
pub async fn run(
    config: MirrorConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, MirrorError> {
    run_observed(config, options, &Board::new(), shutdown).await
}

/// [`run`], with each flow's view published on `board` (for the HTTP
/// endpoint, the metrics and the progress display), and `board` marked
/// finished once the run ends.
pub async fn run_observed(
    config: MirrorConfig,
    options: RunOptions,
    board: &Board,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, MirrorError> {
    let result = run_flows(config, options, board, shutdown).await;
    board.finish();
    result
}

async fn run_flows(
    config: MirrorConfig,
    options: RunOptions,
    board: &Board,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, MirrorError> {
    let flows = config.flows()?;
    let several = flows.len() > 1;
    let process_throttle = TokenBucket::shared(
        config.process.max_bytes_per_sec,
        config.replication.partition_fetch_bytes,
        std::time::Instant::now(),
    );
    let mut targets = Targets::default();
    let mut engines = Vec::new();
    let mut acl_syncs = AbortOnDrop::default();
    for flow in flows {
        let name = flow.name.clone();
        let handle = board.register(&name);
        let started = async {
            let (source, target) = targets.flow_clusters(&flow)?;
            let acls = acl_sync::spawn(&flow, &source, &target, options.until_caught_up);
            let engine = startup::start(
                flow,
                source,
                target,
                options,
                handle,
                process_throttle.clone(),
            )
            .await?;
            Ok::<_, MirrorError>((engine, acls))
        };
        match started.await {
            Ok((engine, acls)) => {
                acl_syncs.0.extend(acls);
                engines.push((name, engine));
            }
            Err(e) if several => {
                return Err(MirrorError::Flow {
                    flow: name,
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        }
    }
    let (stop, stopped) = watch::channel(false);
    let running: Vec<_> = engines
        .into_iter()
        .map(|(name, engine)| {
            let mut stopped = stopped.clone();
            let until_stopped = async move {
                // An error means the sender is gone: the run is over either way.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            (name, tokio::spawn(engine.run(until_stopped)))
        })
        .collect();
    tokio::pin!(shutdown);
    let mut shutdown_seen = false;
    let mut summaries = Vec::new();
    for (name, mut engine) in running {
        let summary = loop {
            tokio::select! {
                joined = &mut engine => break joined,
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    let _ = stop.send(true);
                }
            }
        };
        match summary {
            Ok(summary) => summaries.push((name, summary)),
            // Nothing aborts an engine task, so it only fails by panicking:
            // a bug, surfaced as one.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if options.until_caught_up {
        // A run that ends once caught up still does its one ACL sync whole.
        acl_syncs.finish().await;
    }
    Ok(Summary::combine(summaries))
}

/// Background tasks that end with the run, however it ends.
#[derive(Debug, Default)]
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Waits for every task to end by itself.
    async fn finish(mut self) {
        for task in std::mem::take(&mut self.0) {
            // A task that panicked has already said why.
            let _ = task.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One target [`Cluster`] per cluster alias: flows that write the same
/// cluster share its connections, where their Produce requests pipeline
/// well. Each flow reads over connections of its own instead: a Fetch waits
/// up to `fetch_max_wait_ms` for data and a broker answers one connection's
/// requests in order, so flows sharing a source connection would wait behind
/// each other's fetches (and a cluster both read and written, as in
/// active-active, would hold its produces behind them).
#[derive(Debug, Default)]
struct Targets {
    clusters: HashMap<String, Arc<Cluster>>,
}

impl Targets {
    /// A flow's own source cluster and its (shared) target cluster.
    fn flow_clusters(&mut self, flow: &Flow) -> Result<(Arc<Cluster>, Arc<Cluster>), MirrorError> {
        let source = Cluster::new(
            Role::Source,
            flow.source.bootstrap_list(),
            flow.source.connector(&flow.source_key)?,
        );
        let target = self.get(&flow.target_alias, &flow.target, &flow.target_key)?;
        Ok((source, target))
    }

    fn get(
        &mut self,
        alias: &str,
        config: &ClusterConfig,
        key: &str,
    ) -> Result<Arc<Cluster>, MirrorError> {
        if let Some(cluster) = self.clusters.get(alias) {
            return Ok(cluster.clone());
        }
        let cluster = Cluster::new(
            Role::Target,
            config.bootstrap_list(),
            config.connector(key)?,
        );
        self.clusters.insert(alias.to_owned(), cluster.clone());
        Ok(cluster)
    }
}
