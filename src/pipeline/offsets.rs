//! `kafka-mirror offsets`: where each selected consumer group stands on both
//! clusters, and what a sync would commit, without committing anything.
//!
//! The offset maps come from the flow's stored checkpoints (the map of a
//! partition is stored with its checkpoint), so the listing needs no
//! running mirror and shows what a failover would find right now. The plan
//! per group is the one a sync commits from ([`crate::groups::group_offsets`]).
//! It sends Metadata, ListGroups, OffsetFetch, ListOffsets and Fetch (of the
//! checkpoint topic) only, and writes nothing anywhere.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::{MirrorError, Targets};
use crate::checkpoint::CheckpointStore;
use crate::cluster::Cluster;
use crate::config::{Flow, MirrorConfig};
use crate::groups::{self, CopiedPartitions, GroupOffsets};
use crate::offset_map::{OffsetMap, Translation};

/// The groups of every flow.
#[derive(Debug, Clone, Serialize)]
pub struct Offsets {
    /// One entry per flow, in config order.
    pub flows: Vec<FlowOffsets>,
}

/// The selected groups of one flow that read a copied partition.
#[derive(Debug, Clone, Serialize)]
pub struct FlowOffsets {
    /// The flow's name.
    pub name: String,
    /// Its groups, by id.
    pub groups: Vec<GroupOffsets>,
}

/// Reads every flow's stored offset maps and selected groups.
pub async fn offsets(config: MirrorConfig) -> Result<Offsets, MirrorError> {
    config.validate()?;
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let Some(settings) = &flow.groups else {
            return Err(MirrorError::NoGroups { flow: flow.name });
        };
        let (source, target) = targets.flow_clusters(&flow)?;
        let copied = stored_copies(&flow, &source, &target).await?;
        let select = |group: &str| settings.selects(group);
        let groups = groups::group_offsets(&source, &target, &select, &copied).await?;
        flows.push(FlowOffsets {
            name: flow.name,
            groups,
        });
    }
    Ok(Offsets { flows })
}

/// The offset maps the flow's checkpoints hold for the source topics it
/// selects: what is on the target as of the last stored checkpoint.
pub(super) async fn stored_copies(
    flow: &Flow,
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
) -> Result<CopiedPartitions, MirrorError> {
    let mut copied = CopiedPartitions::new();
    let Some(store) = CheckpointStore::open_existing(
        target.clone(),
        &flow.checkpoints.topic,
        &flow.checkpoint_name,
    )
    .await?
    else {
        return Ok(copied);
    };
    let stored = store.load().await?;
    let source_meta = source.metadata().await?;
    for (name, topic) in &source_meta.topics {
        if topic.error.is_some() || !flow.selects(name, topic.internal) {
            continue;
        }
        let target_topic = flow.target_topic(name);
        for &partition in topic.partitions.keys() {
            let Some(checkpoint) = stored.get(&(target_topic.clone(), partition)) else {
                continue;
            };
            // Without a usable map only what comes after the checkpoint is
            // known: older offsets report themselves as before the map's reach.
            let map = checkpoint
                .stored_map()
                .unwrap_or_else(|| OffsetMap::starting_at(checkpoint.next_offset));
            copied.insert(name.clone(), partition, target_topic.clone(), map);
        }
    }
    Ok(copied)
}

impl fmt::Display for Offsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            writeln!(f, "flow {}: {} groups", flow.name, flow.groups.len())?;
            for group in &flow.groups {
                write_group(f, group, "  ")?;
            }
        }
        Ok(())
    }
}

/// One group's lines, each starting with `indent`.
pub(super) fn write_group(
    f: &mut fmt::Formatter<'_>,
    group: &GroupOffsets,
    indent: &str,
) -> fmt::Result {
    let state = group
        .target_state
        .as_ref()
        .map_or_else(|| "not on the target".to_owned(), ToString::to_string);
    writeln!(f, "{indent}group {} (target: {state})", group.group)?;
    for listed in &group.partitions {
        let p = &listed.offsets;
        let translated = match p.translation {
            Translation::Exact(offset) => offset.to_string(),
            Translation::Behind { target, missing } => {
                format!("{target} (end of the copy, {missing} offsets short)")
            }
            Translation::TooOld { from } => {
                format!("none (the copy's map starts at {from})")
            }
            Translation::NothingCopied => "none (nothing copied yet)".to_owned(),
        };
        let target_committed = p
            .target_committed
            .map_or_else(|| "none".to_owned(), |o| o.to_string());
        let not_copied = listed
            .not_copied
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        writeln!(
            f,
            "{indent}  {}-{}: source committed {} -> {}-{} at {translated}; \
                         target committed {target_committed}; not copied {not_copied}; {}",
            p.source_topic,
            p.partition,
            p.source_committed,
            p.target_topic,
            p.partition,
            action_text(p.action)
        )?;
    }
    Ok(())
}

/// What a sync would do with a partition, in words.
fn action_text(action: groups::PartitionAction) -> &'static str {
    match action {
        groups::PartitionAction::Commit => "a sync commits the translation",
        groups::PartitionAction::InPlace => "in place",
        groups::PartitionAction::TargetAhead => "the target is ahead, kept",
        groups::PartitionAction::Untranslatable => "left alone",
    }
}
