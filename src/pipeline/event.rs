//! The answers that come back to the engine: one [`Event`] per request it
//! started, each carrying what the stage that asked needs to apply it.
//! Partitions travel as [`SlotId`]s.

use std::collections::HashMap;

use super::error::PartitionError;
use super::fetch::FetchReply;
use super::landing::LandingAnswer;
use super::lifecycle::Refreshed;
use super::produce::ProduceReply;
use super::slots::{SlotId, SlotOffset};
use super::MirrorError;
use crate::checkpoint::CheckpointError;
use crate::cluster::{ClusterError, GroupError, Metadata, OffsetResult, Role};
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
        reason: PartitionError,
        result: Result<(i64, i16), MirrorError>,
    },
    TopicsRefreshed {
        result: Result<Refreshed, MirrorError>,
    },
    LandingChecked(LandingAnswer),
    GroupsSynced {
        result: Result<SyncReport, GroupError>,
    },
}
