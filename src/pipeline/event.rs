//! The answers that come back to the engine: one [`Event`] per request it
//! started, each carrying what the stage that asked needs to apply it.
//! Partitions travel as [`SlotId`]s.

use std::collections::HashMap;
use std::sync::Arc;

use super::fetch::FetchReply;
use super::landing::LandingAnswer;
use super::lifecycle::Refreshed;
use super::ownership::TakeOverRead;
use super::produce::ProduceReply;
use super::producer::RenewalReason;
use super::slots::{SlotId, SlotOffset};
use super::transaction::{TargetPartition, TransactionFailure};
use super::MirrorError;
use crate::checkpoint::CheckpointError;
use crate::cluster::{
    ClusterError, GroupError, Metadata, OffsetResult, Role, TransactionCoordinator,
};
use crate::groups::SyncReport;

/// The answer to a request the engine started.
#[derive(Debug)]
pub(super) enum Event {
    FetchAnswered(FetchReply),
    ProduceAnswered(ProduceReply),
    CheckpointWritten {
        written: Vec<SlotOffset>,
        result: Result<(), CheckpointError>,
    },
    MetadataRefreshed {
        role: Role,
        result: Result<Metadata, ClusterError>,
    },
    OffsetsResolved {
        slots: Vec<SlotId>,
        results: HashMap<(String, i32), OffsetResult>,
    },
    LossChecked {
        slots: Vec<SlotId>,
        earliest: HashMap<(String, i32), OffsetResult>,
        latest: HashMap<(String, i32), OffsetResult>,
    },
    ProducerRenewed {
        reason: RenewalReason,
        result: Result<(i64, i16), MirrorError>,
        /// Exactly-once while sharing: the writer slot switched to, and its
        /// transactional id's coordinator.
        switched: Option<(i32, Arc<TransactionCoordinator>)>,
    },
    /// Exactly-once: partitions added to the open transaction, or not.
    PartitionsAdded {
        partitions: Vec<TargetPartition>,
        result: Result<(), TransactionFailure>,
    },
    /// Exactly-once: the open transaction committed with the checkpoints
    /// `written` (the checkpoint partition's next sequence), or failed.
    TransactionCommitted {
        written: Vec<SlotOffset>,
        result: Result<i32, TransactionFailure>,
    },
    TopicsRefreshed {
        result: Result<Refreshed, MirrorError>,
    },
    /// The checkpoints read to take these partitions over from another
    /// instance (see `ownership.rs`).
    TakenOver {
        slots: Vec<SlotId>,
        read: TakeOverRead,
    },
    /// Until caught up: the checkpoints stored by the other instances.
    ProgressRead(TakeOverRead),
    LandingChecked(LandingAnswer),
    GroupsSynced {
        result: Result<SyncReport, GroupError>,
    },
}
