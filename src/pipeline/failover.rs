//! `kafka-mirror failover`: a planned cutover of a flow's consumer groups to
//! the target.
//!
//! The mirror keeps running meanwhile (this command copies nothing): it
//! checks that the selected groups have no members on the source (their
//! consumers are stopped, so their committed offsets are final), waits until
//! the stored checkpoints cover everything the source holds, then syncs the
//! groups one last time with the offset maps stored in those checkpoints,
//! and says what the operator does next. Without `--apply` it only reports
//! how ready the cutover is and what the sync would commit.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::selected_partitions;
use super::offsets::{stored_copies, write_group};
use super::{MirrorError, Targets};
use crate::cluster::{Cluster, GroupClient, GroupState, OffsetSpec};
use crate::config::{Flow, MirrorConfig};
use crate::groups::mm2::Mm2Checkpoints;
use crate::groups::{self, CopiedPartitions, GroupOffsets, SyncReport};

/// How often the stored checkpoints are read again while waiting.
const POLL: Duration = Duration::from_secs(2);

/// What `failover` and `failback` are asked to do.
#[derive(Debug, Clone, Copy)]
pub struct SwitchOptions {
    /// Do it (otherwise only report what would be done).
    pub apply: bool,
    /// How long to wait: failover for the copy to cover the source,
    /// failback for the copy back, which stops where it got to.
    pub timeout: Duration,
}

/// What `failover` found and did, per flow.
#[derive(Debug)]
pub struct Failover {
    /// Whether the groups were to be synced.
    pub applied: bool,
    /// One entry per flow, in config order.
    pub flows: Vec<FlowFailover>,
}

/// One flow's cutover.
#[derive(Debug)]
pub struct FlowFailover {
    /// The flow's name.
    pub name: String,
    /// The source cluster's alias.
    pub source: String,
    /// The target cluster's alias.
    pub target: String,
    /// The target's bootstrap servers, where the consumers go.
    pub target_bootstrap: String,
    /// Copied topics: source name to target name.
    pub topics: BTreeMap<String, String>,
    /// Selected groups that still have members on the source.
    pub active_on_source: Vec<(String, GroupState)>,
    /// Partitions whose copy does not reach the source's end.
    pub missing: Vec<Missing>,
    /// What was done with the groups.
    pub groups: GroupsOutcome,
}

/// A partition the stored checkpoints do not cover to the source's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next source offset the checkpoints say is copied (`None`: none stored).
    pub copied_to: Option<i64>,
    /// The source's end offset.
    pub source_end: i64,
}

/// The groups, synced or only planned.
#[derive(Debug)]
pub enum GroupsOutcome {
    /// The last sync ran.
    Synced(SyncReport),
    /// Not synced: what a sync would commit.
    Planned(Vec<GroupOffsets>),
}

impl FlowFailover {
    /// Whether the cutover can go ahead: no member on the source, nothing missing.
    pub fn is_ready(&self) -> bool {
        self.active_on_source.is_empty() && self.missing.is_empty()
    }
}

impl Failover {
    /// Whether every flow was ready and, with `--apply`, every group synced.
    pub fn is_complete(&self) -> bool {
        self.flows.iter().all(|flow| {
            flow.is_ready()
                && match &flow.groups {
                    GroupsOutcome::Synced(report) => report.failed().next().is_none(),
                    GroupsOutcome::Planned(_) => true,
                }
        })
    }
}

/// Checks, waits and (with `apply`) syncs every flow's groups.
pub async fn failover(
    config: MirrorConfig,
    options: SwitchOptions,
) -> Result<Failover, MirrorError> {
    config.validate()?;
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let Some(settings) = flow.groups.clone() else {
            return Err(MirrorError::NoGroups { flow: flow.name });
        };
        let select = |group: &str| settings.selects(group);
        let (source, target) = targets.flow_clusters(&flow)?;
        let active_on_source = active_groups(&source, &select).await?;
        let deadline = Instant::now() + options.timeout;
        let (copied, missing) = loop {
            let copied = stored_copies(&flow, &source, &target).await?;
            let missing = missing(&flow, &source, &copied).await?;
            let wait = options.apply && active_on_source.is_empty() && !missing.is_empty();
            if !wait || Instant::now() >= deadline {
                break (copied, missing);
            }
            tokio::time::sleep(POLL).await;
        };
        let ready = active_on_source.is_empty() && missing.is_empty();
        let groups = if options.apply && ready {
            let mm2 = Mm2Checkpoints::for_flow(&flow, target.clone());
            let report = groups::sync(&source, &target, &select, &copied, mm2.as_ref()).await?;
            GroupsOutcome::Synced(report)
        } else {
            GroupsOutcome::Planned(groups::group_offsets(&source, &target, &select, &copied).await?)
        };
        let source_meta = source.metadata().await?;
        flows.push(FlowFailover {
            topics: source_meta
                .topics
                .iter()
                .filter(|(name, topic)| flow.selects(name, topic.internal))
                .map(|(name, _)| (name.clone(), flow.target_topic(name)))
                .collect(),
            target_bootstrap: flow.target.bootstrap_servers.clone(),
            name: flow.name,
            source: flow.source_alias,
            target: flow.target_alias,
            active_on_source,
            missing,
            groups,
        });
    }
    Ok(Failover {
        applied: options.apply,
        flows,
    })
}

/// The selected groups that have members on the source.
pub(super) async fn active_groups(
    source: &Arc<Cluster>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<(String, GroupState)>, MirrorError> {
    let client = GroupClient::new(source.clone()).await?;
    Ok(client
        .list_groups()
        .await?
        .into_iter()
        .filter(|g| g.commits_offsets() && select(&g.id))
        .filter(|g| matches!(g.state, GroupState::Active(_)))
        .map(|g| (g.id, g.state))
        .collect())
}

/// The selected partitions whose stored copy ends before the source does.
async fn missing(
    flow: &Flow,
    source: &Arc<Cluster>,
    copied: &CopiedPartitions,
) -> Result<Vec<Missing>, MirrorError> {
    let metadata = source.metadata().await?;
    let partitions = selected_partitions(flow, &metadata);
    let isolation = flow.replication.isolation_level.wire_value();
    let ends = source
        .list_offsets(&metadata, &partitions, OffsetSpec::Latest, isolation)
        .await;
    let starts = source
        .list_offsets(&metadata, &partitions, OffsetSpec::Earliest, isolation)
        .await;
    let mut missing = Vec::new();
    for (topic, partition) in partitions {
        let key = (topic.clone(), partition);
        let (Some(Ok(end)), Some(Ok(start))) = (ends.get(&key), starts.get(&key)) else {
            // Not known now: reported as wholly missing, and asked again.
            missing.push(Missing {
                topic,
                partition,
                copied_to: None,
                source_end: -1,
            });
            continue;
        };
        let copied_to = copied.get(&topic, partition).map(|c| c.map.end());
        if copied_to.unwrap_or(*start) < *end {
            missing.push(Missing {
                topic,
                partition,
                copied_to,
                source_end: *end,
            });
        }
    }
    Ok(missing)
}

impl fmt::Display for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            writeln!(
                f,
                "flow {}: {} -> {}{}",
                flow.name,
                flow.source,
                flow.target,
                if flow.is_ready() {
                    ": ready"
                } else {
                    ": NOT READY"
                }
            )?;
            for (group, state) in &flow.active_on_source {
                writeln!(
                    f,
                    "  group {group} has members on {} ({state}): stop its consumers first",
                    flow.source
                )?;
            }
            for m in &flow.missing {
                match m.copied_to {
                    _ if m.source_end < 0 => writeln!(
                        f,
                        "  {}-{}: the source's end offset could not be read",
                        m.topic, m.partition
                    )?,
                    Some(copied) => writeln!(
                        f,
                        "  {}-{}: copied to offset {copied} of {} ({} offsets missing)",
                        m.topic,
                        m.partition,
                        m.source_end,
                        m.source_end - copied
                    )?,
                    None => writeln!(
                        f,
                        "  {}-{}: nothing copied yet (the source ends at {})",
                        m.topic, m.partition, m.source_end
                    )?,
                }
            }
            match &flow.groups {
                GroupsOutcome::Synced(report) => {
                    writeln!(f, "  groups synced on {}:", flow.target)?;
                    for line in report.to_string().lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
                GroupsOutcome::Planned(groups) => {
                    writeln!(f, "  the groups now (--apply syncs them once ready):")?;
                    for group in groups {
                        write_group(f, group, "    ")?;
                    }
                }
            }
            if self.applied && flow.is_ready() {
                writeln!(f, "  next:")?;
                writeln!(
                    f,
                    "    1. start the groups' consumers against {} ({})",
                    flow.target, flow.target_bootstrap
                )?;
                let renamed: Vec<String> = flow
                    .topics
                    .iter()
                    .filter(|(source, target)| source != target)
                    .map(|(source, target)| format!("{source} -> {target}"))
                    .collect();
                if !renamed.is_empty() {
                    writeln!(
                        f,
                        "       reading the topics under their target names: {}",
                        renamed.join(", ")
                    )?;
                }
                writeln!(
                    f,
                    "    2. move the producers to {} once the source takes no more writes",
                    flow.target
                )?;
                writeln!(
                    f,
                    "    3. stop this mirror; to come back later, see `kafka-mirror failback`"
                )?;
            }
        }
        Ok(())
    }
}
