//! Group offset sync: consumer groups continue on the target where they
//! stopped on the source.
//!
//! For each source group the selector picks, the offsets it committed on
//! partitions the mirror copies are translated through the partition's
//! [`OffsetMap`] and committed for the same group on the target, keeping the
//! commit metadata. Three rules keep a group's consumers safe:
//!
//! - only a group without members on the target is written (listed Empty or
//!   Dead, or not there at all); a commit the coordinator refuses because
//!   members joined meanwhile counts the same: skipped, active;
//! - a target offset never moves backwards: a partition is committed only
//!   where the translation is past the target's committed offset, or the
//!   target has none;
//! - an offset past what is copied translates to the end of the copy, never
//!   ahead of the data, and the group is reported behind.
//!
//! Partitions the map cannot translate (before its reach, or nothing copied
//! yet) are left alone and reported. The `offsets` command's listing
//! ([`group_offsets`]) is the same plan, read without committing. What a
//! sync leaves on the target is also written as MirrorMaker 2's
//! checkpoints ([`mm2`]), for the tools that read those.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::cluster::{
    Cluster, CommitOutcome, CommittedOffset, CommittedOffsets, GroupClient, GroupError, GroupState,
    OffsetSpec,
};
use crate::offset_map::{OffsetMap, Translation};

pub mod mm2;

/// What the mirror copied: each source partition's target topic and offset map.
#[derive(Debug, Clone, Default)]
pub struct CopiedPartitions {
    /// By source topic, then partition.
    topics: BTreeMap<String, BTreeMap<i32, CopiedPartition>>,
}

/// One copied source partition.
#[derive(Debug, Clone)]
pub struct CopiedPartition {
    /// The topic's name on the target (the replication policy applied).
    pub target_topic: String,
    /// Where the partition's copied offsets landed.
    pub map: OffsetMap,
}

impl CopiedPartitions {
    /// Nothing copied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `source_topic`-`partition` is copied to `target_topic`
    /// (same partition), with its map; replaces what was there.
    pub fn insert(
        &mut self,
        source_topic: impl Into<String>,
        partition: i32,
        target_topic: impl Into<String>,
        map: OffsetMap,
    ) {
        let copied = CopiedPartition {
            target_topic: target_topic.into(),
            map,
        };
        self.topics
            .entry(source_topic.into())
            .or_default()
            .insert(partition, copied);
    }

    /// A source partition's copy, if the mirror copies it.
    pub fn get(&self, source_topic: &str, partition: i32) -> Option<&CopiedPartition> {
        self.topics.get(source_topic)?.get(&partition)
    }
}

/// What the sync does with one partition of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionAction {
    /// Commit the translation: the target has no offset, or an older one.
    Commit,
    /// The target's committed offset already is the translation.
    InPlace,
    /// The target's committed offset is past the translation: kept, never
    /// moved back.
    TargetAhead,
    /// The map cannot translate the offset: left alone.
    Untranslatable,
}

/// Where the translation of a committed offset resumes on the target, if
/// anywhere: the copy's end for an offset past it.
fn resume_at(translation: Translation) -> Option<i64> {
    match translation {
        Translation::Exact(target) | Translation::Behind { target, .. } => Some(target),
        Translation::TooOld { .. } | Translation::NothingCopied => None,
    }
}

/// The action for one partition: commit only where the translation is past
/// the target's committed offset, or the target has none.
pub fn partition_action(
    translation: Translation,
    target_committed: Option<i64>,
) -> PartitionAction {
    match (resume_at(translation), target_committed) {
        (None, _) => PartitionAction::Untranslatable,
        (Some(_), None) => PartitionAction::Commit,
        (Some(to), Some(at)) if to > at => PartitionAction::Commit,
        (Some(to), Some(at)) if to == at => PartitionAction::InPlace,
        (Some(_), Some(_)) => PartitionAction::TargetAhead,
    }
}

/// One partition of a group, on both clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    /// The source topic.
    pub source_topic: String,
    /// The partition (the same on both clusters).
    pub partition: i32,
    /// The group's committed offset on the source.
    pub source_committed: i64,
    /// The metadata committed with it, which the target commit keeps.
    #[serde(skip)]
    pub metadata: Option<String>,
    /// The topic's name on the target.
    pub target_topic: String,
    /// What the source offset means on the target.
    #[serde(serialize_with = "serialize_translation")]
    pub translation: Translation,
    /// The group's committed offset on the target, if any (before the sync).
    pub target_committed: Option<i64>,
    /// What the sync does with it.
    pub action: PartitionAction,
}

impl PartitionOffsets {
    /// The target offset a commit writes: the translation.
    fn resume_at(&self) -> Option<i64> {
        resume_at(self.translation)
    }
}

/// The group's partitions of copied topics, translated and compared with
/// the target's committed offsets (keyed by target topic names).
pub fn plan_group(
    source: &CommittedOffsets,
    target: &CommittedOffsets,
    copied: &CopiedPartitions,
) -> Vec<PartitionOffsets> {
    source
        .iter()
        .filter_map(|((topic, partition), committed)| {
            let copy = copied.get(topic, *partition)?;
            let translation = copy.map.translate(committed.offset);
            let target_committed = target
                .get(&(copy.target_topic.clone(), *partition))
                .map(|c| c.offset);
            Some(PartitionOffsets {
                source_topic: topic.clone(),
                partition: *partition,
                source_committed: committed.offset,
                metadata: committed.metadata.clone(),
                target_topic: copy.target_topic.clone(),
                translation,
                target_committed,
                action: partition_action(translation, target_committed),
            })
        })
        .collect()
}

/// What the sync does with a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Commit these offsets (target topics) on the target.
    Commit(CommittedOffsets),
    /// Something to commit, but the group has members on the target (its state).
    SkipActive(String),
    /// Nothing to commit.
    Nothing,
}

/// The decision for a group: its plan and its state on the target (`None`
/// when the target does not list it). A state the broker does not report
/// is tried: the coordinator refuses the commit if the group has members.
pub fn decide(target_state: Option<&GroupState>, plan: &[PartitionOffsets]) -> Decision {
    let commits: CommittedOffsets = plan
        .iter()
        .filter(|p| p.action == PartitionAction::Commit)
        .filter_map(|p| {
            let committed = CommittedOffset {
                offset: p.resume_at()?,
                metadata: p.metadata.clone(),
            };
            Some(((p.target_topic.clone(), p.partition), committed))
        })
        .collect();
    match target_state {
        _ if commits.is_empty() => Decision::Nothing,
        Some(GroupState::Active(state)) => Decision::SkipActive(state.clone()),
        Some(GroupState::Empty | GroupState::Dead | GroupState::Unreported) | None => {
            Decision::Commit(commits)
        }
    }
}

/// What became of one group.
#[derive(Debug)]
pub enum GroupOutcome {
    /// Offsets committed on the target, this many partitions.
    Synced {
        /// Partitions committed.
        partitions: usize,
    },
    /// Nothing to commit: the target is there already, or ahead.
    Unchanged,
    /// Left alone: the group has members on the target.
    Active {
        /// Its state there, or the coordinator's refusal.
        state: String,
    },
    /// A request failed; the next sync tries again.
    Failed(GroupError),
}

/// One group's sync.
#[derive(Debug)]
pub struct GroupReport {
    /// The group id.
    pub group: String,
    /// What became of it.
    pub outcome: GroupOutcome,
    /// Its partitions of copied topics (empty when the group could not be read).
    pub partitions: Vec<PartitionOffsets>,
}

impl GroupReport {
    /// Partitions committed past what is copied, and the source offsets
    /// (records, markers) still to copy up to them, in all.
    pub fn behind(&self) -> Option<(usize, i64)> {
        let missing: Vec<i64> = self
            .partitions
            .iter()
            .filter_map(|p| match p.translation {
                Translation::Behind { missing, .. } => Some(missing),
                _ => None,
            })
            .collect();
        (!missing.is_empty()).then(|| (missing.len(), missing.iter().sum()))
    }

    /// The partitions left alone because the map cannot translate them.
    pub fn untranslatable(&self) -> impl Iterator<Item = &PartitionOffsets> {
        self.partitions
            .iter()
            .filter(|p| p.action == PartitionAction::Untranslatable)
    }

    /// Whether the sync changed, or wanted to change, something: what is
    /// logged at info.
    fn is_news(&self) -> bool {
        matches!(
            self.outcome,
            GroupOutcome::Synced { .. } | GroupOutcome::Active { .. }
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for GroupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {:?}: ", self.group)?;
        match &self.outcome {
            GroupOutcome::Synced { partitions } => {
                write!(f, "synced {partitions} partition{}", plural(*partitions))?
            }
            GroupOutcome::Unchanged => f.write_str("unchanged")?,
            GroupOutcome::Active { state } => write!(f, "skipped, active on the target ({state})")?,
            GroupOutcome::Failed(error) => write!(f, "failed: {error}")?,
        }
        if let Some((partitions, missing)) = self.behind() {
            write!(
                f,
                "; behind: {missing} offsets not copied yet in {partitions} partition{}",
                plural(partitions)
            )?;
        }
        let ahead = self
            .partitions
            .iter()
            .filter(|p| p.action == PartitionAction::TargetAhead)
            .count();
        if ahead > 0 {
            write!(
                f,
                "; {ahead} partition{} ahead on the target, kept",
                plural(ahead)
            )?;
        }
        let mut untranslatable = self.untranslatable().peekable();
        if untranslatable.peek().is_some() {
            f.write_str("; not translatable:")?;
            for (i, p) in untranslatable.enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(
                    f,
                    "{sep}{}-{} at {} (",
                    p.source_topic, p.partition, p.source_committed
                )?;
                match p.translation {
                    Translation::TooOld { from } => write!(f, "the copy starts at {from})")?,
                    _ => f.write_str("nothing copied yet)")?,
                }
            }
        }
        Ok(())
    }
}

/// One sync of every selected group.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// The groups that read copied partitions, or could not be read.
    pub groups: Vec<GroupReport>,
    /// What the sync wrote to MirrorMaker 2's checkpoints, when the flow
    /// writes them ([`mm2::Mm2Checkpoints::write`]).
    pub mm2_checkpoints: Option<mm2::Mm2Written>,
}

impl SyncReport {
    /// Groups whose offsets were committed.
    pub fn synced(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups
            .iter()
            .filter(|g| matches!(g.outcome, GroupOutcome::Synced { .. }))
    }

    /// Groups left alone because they have members on the target.
    pub fn skipped(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups
            .iter()
            .filter(|g| matches!(g.outcome, GroupOutcome::Active { .. }))
    }

    /// Groups committed past what is copied.
    pub fn behind(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups.iter().filter(|g| g.behind().is_some())
    }

    /// Groups whose sync failed.
    pub fn failed(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups
            .iter()
            .filter(|g| matches!(g.outcome, GroupOutcome::Failed(_)))
    }
}

/// One line per group, then the MirrorMaker 2 checkpoints written.
impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for group in &self.groups {
            writeln!(f, "{group}")?;
        }
        if let Some(written) = &self.mm2_checkpoints {
            writeln!(f, "{written}")?;
        }
        Ok(())
    }
}

/// Both clusters' group clients, the selected source groups and the
/// target's group states: what a sync and a listing read first.
struct Survey {
    source: GroupClient,
    target: GroupClient,
    groups: Vec<String>,
    target_states: HashMap<String, GroupState>,
}

impl Survey {
    async fn open(
        source: &Arc<Cluster>,
        target: &Arc<Cluster>,
        select: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Self, GroupError> {
        let mut source = GroupClient::new(source.clone()).await?;
        let mut target = GroupClient::new(target.clone()).await?;
        let groups = synced_groups(&source, select).await?;
        let target_states = target
            .list_groups()
            .await?
            .into_iter()
            .map(|g| (g.id, g.state))
            .collect();
        let ids: Vec<&str> = groups.iter().map(String::as_str).collect();
        source.find_coordinators(&ids).await;
        target.find_coordinators(&ids).await;
        Ok(Survey {
            source,
            target,
            groups,
            target_states,
        })
    }

    /// The group's partitions of copied topics; empty when it committed none.
    async fn plan(
        &mut self,
        group: &str,
        copied: &CopiedPartitions,
    ) -> Result<Vec<PartitionOffsets>, GroupError> {
        let source = self.source.committed_offsets(group).await?;
        if !source.keys().any(|(t, p)| copied.get(t, *p).is_some()) {
            return Ok(Vec::new());
        }
        let target = self.target.committed_offsets(group).await?;
        Ok(plan_group(&source, &target, copied))
    }

    /// Plans, decides and commits one group; `None` for a group that reads
    /// nothing copied.
    async fn sync_group(&mut self, group: &str, copied: &CopiedPartitions) -> Option<GroupReport> {
        let report = |outcome, partitions| GroupReport {
            group: group.to_owned(),
            outcome,
            partitions,
        };
        let plan = match self.plan(group, copied).await {
            Ok(plan) if plan.is_empty() => return None,
            Ok(plan) => plan,
            Err(error) => return Some(report(GroupOutcome::Failed(error), Vec::new())),
        };
        let outcome = match decide(self.target_states.get(group), &plan) {
            Decision::Nothing => GroupOutcome::Unchanged,
            Decision::SkipActive(state) => GroupOutcome::Active { state },
            Decision::Commit(offsets) => match self.target.commit(group, &offsets).await {
                Ok(CommitOutcome::Committed) => GroupOutcome::Synced {
                    partitions: offsets.len(),
                },
                Ok(CommitOutcome::GroupActive(error)) => GroupOutcome::Active {
                    state: format!("members joined during the sync: {error}"),
                },
                Err(error) => GroupOutcome::Failed(error),
            },
        };
        Some(report(outcome, plan))
    }
}

/// The source's groups a sync covers: those `select` picks, of the kinds
/// that keep committed offsets.
pub async fn synced_groups(
    source: &GroupClient,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<String>, GroupError> {
    Ok(source
        .list_groups()
        .await?
        .into_iter()
        .filter(|g| g.commits_offsets() && select(&g.id))
        .map(|g| g.id)
        .collect())
}

/// Syncs the offsets of every source group `select` picks (by id: the
/// configured filter; `Sync`, so the sync can run on a spawned task) onto
/// the target, by the rules of the module docs. A group that cannot be read
/// or committed is reported failed and the others still sync; failing to
/// list either cluster's groups fails the sync. Groups that read no copied
/// partition are left out of the report. With `mm2`, MirrorMaker 2's
/// checkpoints of what the target groups now hold are written after the
/// commits (see [`mm2`]).
pub async fn sync(
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
    select: &(dyn Fn(&str) -> bool + Sync),
    copied: &CopiedPartitions,
    mm2: Option<&mm2::Mm2Checkpoints>,
) -> Result<SyncReport, GroupError> {
    let mut survey = Survey::open(source, target, select).await?;
    let mut report = SyncReport::default();
    for group in std::mem::take(&mut survey.groups) {
        let Some(group_report) = survey.sync_group(&group, copied).await else {
            continue;
        };
        match group_report.outcome {
            GroupOutcome::Failed(_) => tracing::warn!("{group_report}"),
            _ if group_report.is_news() => tracing::info!("{group_report}"),
            _ => tracing::debug!("{group_report}"),
        }
        report.groups.push(group_report);
    }
    if let Some(mm2) = mm2 {
        report.mm2_checkpoints = Some(mm2.write(&report).await);
    }
    Ok(report)
}

/// One group as the `offsets` command lists it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOffsets {
    /// The group id.
    pub group: String,
    /// Its state on the target (`None`: the target has no such group).
    #[serde(serialize_with = "serialize_state")]
    pub target_state: Option<GroupState>,
    /// Its partitions of copied topics.
    pub partitions: Vec<ListedPartition>,
}

/// One partition as the `offsets` command lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedPartition {
    /// The group's offsets on both clusters and the translation.
    #[serde(flatten)]
    pub offsets: PartitionOffsets,
    /// Source offsets not copied yet: the source's log end minus the end
    /// of what the map covers; `None` when the log end could not be read.
    pub not_copied: Option<i64>,
}

/// What the `offsets` command prints: per selected group and partition of a
/// copied topic, the source committed offset, its translation, the
/// target's committed offset and how much is not copied yet. The same plan
/// a sync commits from; nothing is committed.
pub async fn group_offsets(
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
    select: &(dyn Fn(&str) -> bool + Sync),
    copied: &CopiedPartitions,
) -> Result<Vec<GroupOffsets>, GroupError> {
    let mut survey = Survey::open(source, target, select).await?;
    let mut plans = Vec::new();
    for group in std::mem::take(&mut survey.groups) {
        let plan = survey.plan(&group, copied).await?;
        if !plan.is_empty() {
            plans.push((group, plan));
        }
    }
    let mut partitions: Vec<(String, i32)> = plans
        .iter()
        .flat_map(|(_, plan)| plan.iter().map(|p| (p.source_topic.clone(), p.partition)))
        .collect();
    partitions.sort();
    partitions.dedup();
    let ends = source
        .list_offsets(survey.source.metadata(), &partitions, OffsetSpec::Latest, 0)
        .await;
    Ok(plans
        .into_iter()
        .map(|(group, plan)| GroupOffsets {
            target_state: survey.target_states.get(&group).cloned(),
            group,
            partitions: plan
                .into_iter()
                .map(|offsets| {
                    let end = ends.get(&(offsets.source_topic.clone(), offsets.partition));
                    let copied_end = copied
                        .get(&offsets.source_topic, offsets.partition)
                        .map(|c| c.map.end());
                    let not_copied = match (end, copied_end) {
                        (Some(Ok(end)), Some(copied_end)) => Some((end - copied_end).max(0)),
                        _ => None,
                    };
                    ListedPartition {
                        offsets,
                        not_copied,
                    }
                })
                .collect(),
        })
        .collect())
}

/// A translation in JSON: `{"exact": 120}`, `{"behind": {"target": 100,
/// "missing": 20}}`, `{"too_old": {"from": 500}}` or `"nothing_copied"`.
fn serialize_translation<S: Serializer>(
    translation: &Translation,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Json {
        Exact(i64),
        Behind { target: i64, missing: i64 },
        TooOld { from: i64 },
        NothingCopied,
    }
    match *translation {
        Translation::Exact(offset) => Json::Exact(offset),
        Translation::Behind { target, missing } => Json::Behind { target, missing },
        Translation::TooOld { from } => Json::TooOld { from },
        Translation::NothingCopied => Json::NothingCopied,
    }
    .serialize(serializer)
}

fn serialize_state<S: Serializer>(
    state: &Option<GroupState>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match state {
        Some(state) => serializer.serialize_some(&state.to_string()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy into a target that held `shift` records before: source
    /// offsets `from..end` landed at `from + shift..`.
    fn shifted(from: i64, end: i64, shift: i64) -> OffsetMap {
        let mut map = OffsetMap::starting_at(from);
        map.copied(from, from + shift, end - from);
        map
    }

    fn committed(entries: &[(&str, i32, i64, &str)]) -> CommittedOffsets {
        entries
            .iter()
            .map(|&(topic, partition, offset, metadata)| {
                let committed = CommittedOffset {
                    offset,
                    metadata: Some(metadata.to_owned()),
                };
                ((topic.to_owned(), partition), committed)
            })
            .collect()
    }

    #[test]
    fn a_target_offset_never_moves_backwards() {
        let exact = Translation::Exact(150);
        assert_eq!(partition_action(exact, None), PartitionAction::Commit);
        assert_eq!(partition_action(exact, Some(149)), PartitionAction::Commit);
        assert_eq!(partition_action(exact, Some(150)), PartitionAction::InPlace);
        assert_eq!(
            partition_action(exact, Some(151)),
            PartitionAction::TargetAhead
        );
        let behind = Translation::Behind {
            target: 150,
            missing: 7,
        };
        assert_eq!(partition_action(behind, Some(100)), PartitionAction::Commit);
        assert_eq!(
            partition_action(behind, Some(200)),
            PartitionAction::TargetAhead
        );
        for untranslatable in [Translation::TooOld { from: 10 }, Translation::NothingCopied] {
            assert_eq!(
                partition_action(untranslatable, None),
                PartitionAction::Untranslatable
            );
        }
    }

    /// The copy of `orders` (renamed `src.orders`) and `logs`, as a sync sees them.
    fn copied() -> CopiedPartitions {
        let mut copied = CopiedPartitions::new();
        copied.insert("orders", 0, "src.orders", shifted(0, 100, 30));
        copied.insert("orders", 1, "src.orders", shifted(0, 80, 5));
        copied.insert("orders", 2, "src.orders", shifted(40, 100, 0));
        copied.insert("logs", 0, "src.logs", OffsetMap::starting_at(0));
        copied
    }

    #[test]
    fn the_plan_translates_copied_partitions_and_keeps_the_metadata() {
        let source = committed(&[
            ("orders", 0, 60, "a"),
            ("orders", 1, 90, "b"),
            ("orders", 2, 10, "c"),
            ("logs", 0, 3, "d"),
            ("not-copied", 0, 5, "e"),
        ]);
        let target = committed(&[("src.orders", 0, 95, "x"), ("orders", 1, 500, "y")]);
        let plan = plan_group(&source, &target, &copied());
        let rows: Vec<_> = plan
            .iter()
            .map(|p| {
                (
                    p.source_topic.as_str(),
                    p.partition,
                    p.target_topic.as_str(),
                    p.translation,
                    p.target_committed,
                    p.action,
                )
            })
            .collect();
        use PartitionAction::*;
        assert_eq!(
            rows,
            [
                (
                    "logs",
                    0,
                    "src.logs",
                    Translation::NothingCopied,
                    None,
                    Untranslatable
                ),
                // The target's "orders" is not the copy: only "src.orders" counts.
                (
                    "orders",
                    0,
                    "src.orders",
                    Translation::Exact(90),
                    Some(95),
                    TargetAhead
                ),
                (
                    "orders",
                    1,
                    "src.orders",
                    Translation::Behind {
                        target: 85,
                        missing: 10
                    },
                    None,
                    Commit
                ),
                (
                    "orders",
                    2,
                    "src.orders",
                    Translation::TooOld { from: 40 },
                    None,
                    Untranslatable
                ),
            ]
        );

        let Decision::Commit(commits) = decide(None, &plan) else {
            panic!("a group missing on the target is committed")
        };
        let expected = committed(&[("src.orders", 1, 85, "b")]);
        assert_eq!(commits, expected);
    }

    #[test]
    fn a_group_with_members_on_the_target_is_skipped() {
        let source = committed(&[("orders", 0, 60, "")]);
        let plan = plan_group(&source, &CommittedOffsets::new(), &copied());
        let stable = GroupState::Active("Stable".into());
        assert_eq!(
            decide(Some(&stable), &plan),
            Decision::SkipActive("Stable".into())
        );
        for inactive in [GroupState::Empty, GroupState::Dead, GroupState::Unreported] {
            assert!(
                matches!(decide(Some(&inactive), &plan), Decision::Commit(c) if c.len() == 1),
                "{inactive:?}"
            );
        }
        // Nothing to commit: an active group is no news.
        let at_translation = committed(&[("src.orders", 0, 90, "")]);
        let plan = plan_group(&source, &at_translation, &copied());
        assert_eq!(decide(Some(&stable), &plan), Decision::Nothing);
        assert_eq!(decide(None, &plan), Decision::Nothing);
    }

    #[test]
    fn the_report_line_says_synced_behind_kept_and_untranslatable() {
        let source = committed(&[
            ("orders", 0, 60, ""),
            ("orders", 1, 90, ""),
            ("orders", 2, 10, ""),
            ("logs", 0, 3, ""),
        ]);
        let target = committed(&[("src.orders", 0, 95, "")]);
        let report = GroupReport {
            group: "billing".into(),
            outcome: GroupOutcome::Synced { partitions: 1 },
            partitions: plan_group(&source, &target, &copied()),
        };
        assert_eq!(report.behind(), Some((1, 10)));
        assert_eq!(
            report.to_string(),
            "group \"billing\": synced 1 partition; behind: 10 offsets not copied yet in 1 \
             partition; 1 partition ahead on the target, kept; not translatable: logs-0 at 3 \
             (nothing copied yet), orders-2 at 10 (the copy starts at 40)"
        );
        let skipped = GroupReport {
            group: "billing".into(),
            outcome: GroupOutcome::Active {
                state: "Stable".into(),
            },
            partitions: Vec::new(),
        };
        assert_eq!(
            skipped.to_string(),
            "group \"billing\": skipped, active on the target (Stable)"
        );
    }

    #[test]
    fn a_listed_partition_in_json() {
        let source = committed(&[("orders", 1, 90, "app note")]);
        let plan = plan_group(&source, &CommittedOffsets::new(), &copied());
        let listed = GroupOffsets {
            group: "billing".into(),
            target_state: Some(GroupState::Empty),
            partitions: vec![ListedPartition {
                offsets: plan[0].clone(),
                not_copied: Some(20),
            }],
        };
        let json = serde_json::to_value(&listed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "group": "billing",
                "target_state": "Empty",
                "partitions": [{
                    "source_topic": "orders",
                    "partition": 1,
                    "source_committed": 90,
                    "target_topic": "src.orders",
                    "translation": {"behind": {"target": 85, "missing": 10}},
                    "target_committed": null,
                    "action": "commit",
                    "not_copied": 20,
                }],
            })
        );
    }
}
