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
//! One task (`engine::Engine`) owns every partition's state and decides what
//! to send; requests run as spawned tasks whose answers come back as events.
//! No locks guard the pipeline state, so every ordering decision is made in one
//! place, and the stages are plain methods that can be read (and tested) alone.
//!
//! - `startup.rs`: select topics, create target topics, load checkpoints, get a producer id.
//! - `fetch.rs`: one Fetch in flight per source broker carrying all its partitions.
//! - `produce.rs`: up to `max_in_flight_requests` Produce requests per target
//!   broker, one batch per partition each, as kafka-mirror's own idempotent producer.
//! - `partition.rs`: per-partition ordering, sequences, acknowledgements.
//! - `positions.rs`: start offsets, and data the source lost before it was copied.
//! - `stats.rs`: counters and the run summary.

mod engine;
mod fetch;
mod partition;
mod positions;
mod produce;
mod startup;
mod stats;

use std::future::Future;

pub use engine::RunOptions;
pub use stats::{PartitionProblem, Summary};

use crate::checkpoint::CheckpointError;
use crate::cluster::ClusterError;
use crate::config::MirrorConfig;
use crate::topics::TopicError;

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
    /// No source topic matches the selection.
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
    /// The target refused to give the mirror a producer id.
    #[error("target cluster refused InitProducerId: {0}")]
    ProducerId(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Runs the mirror until `shutdown` resolves (or, with `until_caught_up`,
/// until the target holds everything the source held at the start), then lets
/// in-flight batches land, stores the checkpoints and returns the summary.
pub async fn run(
    config: MirrorConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, MirrorError> {
    config.validate()?;
    let engine = startup::start(config, options).await?;
    Ok(engine.run(shutdown).await)
}
