//! `kafka-mirror failback`: after a failover from A to B, copies back to A
//! what was written on B since, and moves the groups back, so the pair
//! switches back without copying everything again.
//!
//! It runs the flow backwards ([`Flow::failback`]: B's copies into the A
//! topics they came from) with the normal engine until caught up, under a
//! checkpoint name of its own. Each partition starts where the A->B copy
//! ends on B (the end of the stored A->B offset map): what follows on B was
//! written there after the failover. Its offset map starts as the inverse
//! of the A->B map, so a group that read on B translates back exactly,
//! whether it stopped in the old data or in the new. These starts are
//! written as the B->A checkpoints before the engine starts (everything
//! before them is on A, and the map says where), so the engine starts as
//! it resumes any copy, and an interrupted failback resumes from what it
//! stored. A B->A checkpoint behind the end of the A->B copy is from an
//! earlier round trip and is replaced.
//!
//! The engine's final group sync moves the flow's groups to A (groups
//! without members on A, never backwards). Then the A->B checkpoints are
//! rewritten, so that the A->B mirror, restarted, copies neither the
//! copied-back records nor the old data again: each starts after the last
//! copied-back record, its map extended with the inverse of the copy back
//! (A offsets of those records to their B origins).
//!
//! Offsets on A after the A->B checkpoint (written just before the
//! disaster, never copied) are reported, never dropped silently. Where B
//! holds new records they are not copied to B later: B's log already goes
//! on differently, and a map must rise on both sides. Where B got nothing
//! new, the A->B checkpoint is left as it was and the restarted mirror
//! copies them in order.
//!
//! The A->B checkpoint is taken for where the copy ends on B: a mirror
//! stopped without its final checkpoint (killed, its host lost) leaves
//! records on B past it that came from A, and they are copied back as new,
//! at most what its `in_flight_bytes` held, as a restart after a crash
//! repeats them. Stop the A->B mirror cleanly (SIGTERM) when failing over.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::engine::RunOptions;
use super::failover::{active_groups, SwitchOptions};
use super::lifecycle::selected_partitions;
use super::offsets::write_group;
use super::startup::{self, offsets_of};
use super::stats::Summary;
use super::{MirrorError, Targets};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::cluster::{Cluster, GroupState, OffsetSpec};
use crate::config::{Flow, MirrorConfig, StartPosition};
use crate::groups::{self, CopiedPartitions, GroupOffsets};
use crate::observe::Board;
use crate::offset_map::{OffsetMap, Run};

/// What `failback` found and did, per flow.
#[derive(Debug)]
pub struct Failback {
    /// Whether the copy back was to run.
    pub applied: bool,
    /// One entry per flow of the config (each an A->B flow), in config order.
    pub flows: Vec<FlowFailback>,
}

/// One A->B flow's failback.
#[derive(Debug)]
pub struct FlowFailback {
    /// The A->B flow's name.
    pub name: String,
    /// B: the cluster copied back from (the flow's target).
    pub from: String,
    /// A: the cluster copied back to (the flow's source).
    pub to: String,
    /// A's bootstrap servers, where the consumers and producers go back to.
    pub to_bootstrap: String,
    /// Selected groups that still have members on B.
    pub active_on_b: Vec<(String, GroupState)>,
    /// Every partition copied back, B topic order.
    pub partitions: Vec<PartitionFailback>,
    /// What a group sync would commit on A now (the plan only).
    pub groups: Vec<GroupOffsets>,
    /// What the copy back did, once it ran.
    pub outcome: Option<Outcome>,
}

/// One partition's way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFailback {
    /// The topic on B.
    pub topic: String,
    /// The topic on A it is copied back into.
    pub origin: String,
    /// The partition (the same on both).
    pub partition: i32,
    /// Where the copy back starts on B.
    pub start: Start,
    /// B's end offset when the failback began.
    pub b_end: i64,
    /// A's offsets after the A->B copy that B never got.
    pub not_on_b: Option<NotOnB>,
}

/// Where a partition's copy back starts on B, and why there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the A->B copy's end: what follows on B was written there.
    AfterCopy(i64),
    /// Where this failback stopped before (its stored B->A checkpoint).
    Resumed(i64),
    /// The A->B mirror never copied into the partition: B's records are
    /// all B's own, copied from its start.
    FromStart,
    /// The A->B checkpoint holds no map of copied records, so where its
    /// copy ends on B is unknown: nothing of B's from this offset (its
    /// end) on is copied back.
    Unknown(i64),
}

/// Offsets on A after the A->B copy's end that B never got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOnB {
    /// The first.
    pub from: i64,
    /// After the last; `None` when the copy back's map no longer reaches
    /// its start (it keeps the latest points only), so where the
    /// copied-back records begin on A is not known.
    pub to: Option<i64>,
    /// B got nothing new in the partition: the A->B checkpoint stays, and
    /// the restarted A->B mirror copies these in order.
    pub copied_later: bool,
}

/// What the copy back did.
#[derive(Debug)]
pub struct Outcome {
    /// The engine's run summary (data copied, the final group sync).
    pub summary: Summary,
    /// Partitions whose B end is past what was copied back: written on B
    /// during the failback, or the timeout ran out. `(topic, partition,
    /// copied to, B's end)`.
    pub left_on_b: Vec<(String, i32, i64, i64)>,
    /// What became of the A->B checkpoints.
    pub forward: ForwardCheckpoints,
}

/// The A->B checkpoints after the copy back.
#[derive(Debug)]
pub enum ForwardCheckpoints {
    /// Rewritten for these partitions (B topic, partition, next A offset).
    Rewritten(Vec<(String, i32, i64)>),
    /// Left as they were: the copy back is not complete.
    Kept,
    /// Left as they were: they changed during the failback, so an A->B
    /// mirror is running.
    Changed(Vec<(String, i32)>),
    /// The rewrite failed: the A->B mirror must not be restarted before a
    /// failback that completes.
    Failed(String),
}

impl FlowFailback {
    /// Whether the copy back may run: no selected group has members on B.
    pub fn is_ready(&self) -> bool {
        self.active_on_b.is_empty()
    }

    /// Whether the copy back ran to the end, groups synced and the A->B
    /// checkpoints rewritten.
    pub fn is_complete(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| {
            o.summary.unsaved_checkpoints.is_empty()
                && o.summary.stopped.is_empty()
                && o.left_on_b.is_empty()
                && !o.summary.groups.as_ref().is_some_and(|g| g.has_failures())
                && matches!(o.forward, ForwardCheckpoints::Rewritten(_))
        })
    }
}

/// Plans and (with `apply`) runs every flow's failback.
pub async fn failback(
    config: MirrorConfig,
    options: SwitchOptions,
) -> Result<Failback, MirrorError> {
    config.validate()?;
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let mut back = flow.failback();
        // Partitions the A->B mirror never copied hold only B's own records.
        back.replication.start_position = StartPosition::Earliest;
        let (b, a) = targets.flow_clusters(&back)?;
        flows.push(flow_failback(&flow, back, &b, &a, options).await?);
    }
    Ok(Failback {
        applied: options.apply,
        flows,
    })
}

/// One flow's failback: survey, then (with `apply`, once ready) copy back,
/// check and rewrite the A->B checkpoints.
async fn flow_failback(
    flow: &Flow,
    back: Flow,
    b: &Arc<Cluster>,
    a: &Arc<Cluster>,
    options: SwitchOptions,
) -> Result<FlowFailback, MirrorError> {
    let select = |group: &str| back.groups.as_ref().is_some_and(|g| g.selects(group));
    let active_on_b = match &back.groups {
        Some(_) => active_groups(b, &select).await?,
        None => Vec::new(),
    };
    let forward_store =
        CheckpointStore::open_existing(b.clone(), &flow.checkpoints.topic, &flow.checkpoint_name)
            .await?
            .ok_or_else(|| MirrorError::NoCheckpoints {
                mirror: flow.checkpoint_name.clone(),
                topic: flow.checkpoints.topic.clone(),
                cluster: flow.target_alias.clone(),
            })?;
    let forward = forward_store.load().await?;
    if forward.is_empty() {
        return Err(MirrorError::NoCheckpoints {
            mirror: flow.checkpoint_name.clone(),
            topic: flow.checkpoints.topic.clone(),
            cluster: flow.target_alias.clone(),
        });
    }
    let stored_back = match CheckpointStore::open_existing(
        a.clone(),
        &back.checkpoints.topic,
        &back.checkpoint_name,
    )
    .await?
    {
        Some(store) => store.load().await?,
        None => HashMap::new(),
    };
    let b_meta = b.metadata().await?;
    let a_meta = a.metadata().await?;
    let b_partitions = selected_partitions(&back, &b_meta);
    let isolation = back.replication.isolation_level.wire_value();
    // B's end offsets: before the copy back, and after it for what it left.
    let b_ends_now = || async {
        let b_meta = b.metadata().await?;
        let partitions = b_partitions.clone();
        offsets_of(b, &b_meta, partitions, OffsetSpec::Latest, isolation).await
    };
    let b_ends = b_ends_now().await?;
    // A's topics that exist; every offset A holds counts, open
    // transactions included.
    let a_partitions: Vec<(String, i32)> = b_partitions
        .iter()
        .map(|(topic, p)| (back.target_topic(topic), *p))
        .filter(|(topic, p)| a_meta.partition(topic, *p).is_some())
        .collect();
    let a_ends = offsets_of(a, &a_meta, a_partitions.clone(), OffsetSpec::Latest, 0).await?;
    let a_starts = offsets_of(a, &a_meta, a_partitions, OffsetSpec::Earliest, 0).await?;

    let mut partitions = Vec::new();
    let mut starts = Vec::new();
    let mut maps = CopiedPartitions::new();
    for (topic, partition) in &b_partitions {
        let origin = back.target_topic(topic);
        let key = (origin.clone(), *partition);
        let b_end = b_ends[&(topic.clone(), *partition)];
        let way = Way::of(
            forward.get(&(topic.clone(), *partition)),
            stored_back.get(&key),
            b_end,
        );
        let not_on_b = way.not_on_b(
            a_starts.get(&key).copied().unwrap_or(0),
            a_ends.get(&key).copied().unwrap_or(0),
            b_end,
        );
        if let Some(map) = way.map.clone() {
            maps.insert(topic.clone(), *partition, origin.clone(), map);
        }
        if let Some(map) = way.to_write {
            let checkpoint = Checkpoint {
                next_offset: map.end(),
                topic_id: b_meta.topics[topic].id,
                source_cluster: b_meta.cluster_id.clone(),
                leader_epoch: None,
                offset_map: Some(map.stored()),
            };
            starts.push((origin.clone(), *partition, checkpoint));
        }
        partitions.push(PartitionFailback {
            topic: topic.clone(),
            origin,
            partition: *partition,
            start: way.start,
            b_end,
            not_on_b,
        });
    }
    let mut failback = FlowFailback {
        name: flow.name.clone(),
        from: back.source_alias.clone(),
        to: back.target_alias.clone(),
        to_bootstrap: back.target.bootstrap_servers.clone(),
        active_on_b,
        partitions,
        groups: Vec::new(),
        outcome: None,
    };
    if !options.apply || !failback.is_ready() {
        if back.groups.is_some() {
            failback.groups = groups::group_offsets(b, a, &select, &maps).await?;
        }
        return Ok(failback);
    }

    // The starts, stored as B->A checkpoints: the engine resumes from them.
    let back_store = CheckpointStore::open(
        a.clone(),
        &back.checkpoints.topic,
        &back.checkpoint_name,
        back.replication.replication_factor,
    )
    .await?;
    back_store.write(&starts).await.result?;
    let engine = startup::start(
        back.clone(),
        b.clone(),
        a.clone(),
        RunOptions {
            until_caught_up: true,
        },
        Board::new().register(&back.name),
        // The flow's own max_bytes_per_sec holds going back too.
        None,
    )
    .await?;
    let summary = engine.run(tokio::time::sleep(options.timeout)).await;

    let copied_back = back_store.load().await?;
    let b_ends = b_ends_now().await?;
    let mut left_on_b = Vec::new();
    for (topic, partition) in &b_partitions {
        let end = b_ends[&(topic.clone(), *partition)];
        let copied_to = copied_back
            .get(&(back.target_topic(topic), *partition))
            .map_or(0, |c| c.next_offset);
        if copied_to < end {
            left_on_b.push((topic.clone(), *partition, copied_to, end));
        }
    }
    let copy_complete = left_on_b.is_empty()
        && summary.stopped.is_empty()
        && summary.unsaved_checkpoints.is_empty();
    let forward = if copy_complete {
        rewrite_forward(flow, &back, b, a, &forward_store, &forward, &copied_back).await?
    } else {
        ForwardCheckpoints::Kept
    };
    failback.outcome = Some(Outcome {
        summary,
        left_on_b,
        forward,
    });
    Ok(failback)
}

/// Rewrites the A->B checkpoints of the partitions that got records back,
/// unless they changed since the failback read them (an A->B mirror runs).
async fn rewrite_forward(
    flow: &Flow,
    back: &Flow,
    b: &Arc<Cluster>,
    a: &Arc<Cluster>,
    store: &CheckpointStore,
    before: &HashMap<(String, i32), Checkpoint>,
    copied_back: &HashMap<(String, i32), Checkpoint>,
) -> Result<ForwardCheckpoints, MirrorError> {
    let now = store.load().await?;
    let changed: Vec<(String, i32)> = now
        .iter()
        .filter(|(key, checkpoint)| before.get(*key) != Some(*checkpoint))
        .map(|(key, _)| key.clone())
        .collect();
    if !changed.is_empty() {
        return Ok(ForwardCheckpoints::Changed(changed));
    }
    let a_meta = a.metadata().await?;
    let mut entries = Vec::new();
    for ((origin, partition), checkpoint) in copied_back {
        // Without its map, where the copied-back records came from is unknown.
        let (Some(back_map), Some(topic_id)) = (
            checkpoint.stored_map(),
            a_meta.topics.get(origin).map(|t| t.id),
        ) else {
            return Ok(ForwardCheckpoints::Failed(format!(
                "the {}->{} checkpoint of {origin}-{partition} holds no usable offset map",
                back.source_alias, back.target_alias
            )));
        };
        let topic = flow.target_topic(origin);
        let old = now.get(&(topic.clone(), *partition)).map(|c| {
            c.stored_map()
                .unwrap_or_else(|| OffsetMap::starting_at(c.next_offset))
        });
        let Some(map) = forward_after(old.as_ref(), &back_map) else {
            continue;
        };
        entries.push((
            topic,
            *partition,
            Checkpoint {
                next_offset: map.end(),
                topic_id,
                source_cluster: a_meta.cluster_id.clone(),
                leader_epoch: None,
                offset_map: Some(map.stored()),
            },
        ));
    }
    entries.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    let writer = CheckpointStore::open(
        b.clone(),
        &flow.checkpoints.topic,
        &flow.checkpoint_name,
        back.replication.replication_factor,
    )
    .await?;
    let written = writer.write(&entries).await;
    Ok(match written.result {
        Ok(()) => ForwardCheckpoints::Rewritten(
            entries
                .into_iter()
                .map(|(topic, partition, c)| (topic, partition, c.next_offset))
                .collect(),
        ),
        Err(e) => ForwardCheckpoints::Failed(format!(
            "{} of {} A->B checkpoints rewritten: {e}",
            written.stored,
            entries.len()
        )),
    })
}

/// How one partition goes back: where it starts, the map it starts with,
/// and the B->A checkpoint to store first, if any.
#[derive(Debug, PartialEq)]
struct Way {
    start: Start,
    /// The B->A map the copy back starts with (`None`: none yet, it
    /// starts from B's start).
    map: Option<OffsetMap>,
    /// A B->A checkpoint to write before copying: the start and its map.
    to_write: Option<OffsetMap>,
    /// The A->B map, when there is one.
    forward: Option<OffsetMap>,
    /// The A->B checkpoint's next offset.
    forward_next: Option<i64>,
}

impl Way {
    /// A partition's way back, from its A->B checkpoint (on B), its B->A
    /// checkpoint (on A, from a failback before) and B's end offset.
    fn of(forward: Option<&Checkpoint>, back: Option<&Checkpoint>, b_end: i64) -> Way {
        let forward_map = forward.and_then(Checkpoint::stored_map);
        let copied_end = forward_map.as_ref().and_then(OffsetMap::copied_end);
        // A failback that began before the A->B copy's end is from an
        // earlier round trip: its progress does not count.
        let current = back.filter(|c| copied_end.is_none_or(|end| c.next_offset >= end.target));
        let (start, map, to_write) = match (current, forward, copied_end) {
            (Some(back), _, _) => {
                let map = back
                    .stored_map()
                    .unwrap_or_else(|| OffsetMap::starting_at(back.next_offset));
                (Start::Resumed(back.next_offset), Some(map), None)
            }
            (None, Some(_), Some(end)) => {
                let inverse = forward_map.as_ref().and_then(OffsetMap::inverse);
                (Start::AfterCopy(end.target), inverse.clone(), inverse)
            }
            (None, Some(_), None) => {
                let map = OffsetMap::starting_at(b_end);
                (Start::Unknown(b_end), Some(map.clone()), Some(map))
            }
            (None, None, _) => (Start::FromStart, None, None),
        };
        Way {
            start,
            map,
            to_write,
            forward: forward_map,
            forward_next: forward.map(|c| c.next_offset),
        }
    }

    /// The offsets on A after the A->B copy that B never got: from the A->B
    /// checkpoint (A's start without one) to the first copied-back record,
    /// or A's end when none is copied back yet.
    fn not_on_b(&self, a_start: i64, a_end: i64, b_end: i64) -> Option<NotOnB> {
        let from = self.forward_next.unwrap_or(a_start).max(a_start);
        let copied_back = self
            .map
            .as_ref()
            .map(|map| new_runs(self.forward.as_ref(), map));
        let (to, some_back) = match copied_back {
            Some(None) => (None, true),
            Some(Some(runs)) if !runs.is_empty() => (Some(runs[0].target), true),
            _ => (Some(a_end), false),
        };
        let to_copy = match self.start {
            Start::AfterCopy(at) | Start::Resumed(at) => b_end > at,
            Start::FromStart => b_end > 0,
            Start::Unknown(_) => false,
        };
        match to {
            Some(to) if to <= from => None,
            to => Some(NotOnB {
                from,
                to,
                copied_later: !some_back && !to_copy,
            }),
        }
    }
}

/// The runs of the B->A map `back` that the A->B map `forward` does not
/// cover: the records copied back (all of them when the A->B map has
/// none). `None` when `back` no longer reaches the first of them.
fn new_runs(forward: Option<&OffsetMap>, back: &OffsetMap) -> Option<Vec<Run>> {
    let Some(start) = forward.and_then(OffsetMap::copied_end).map(|e| e.target) else {
        return Some(back.runs().collect());
    };
    (back.from() <= start).then(|| back.runs().filter(|run| run.source >= start).collect())
}

/// The A->B map once the records of the B->A map `back` are on A: `old`
/// (the A->B map) followed by the copied-back records, each mapped to the
/// B record it came from; `None` when nothing was copied back. What lies
/// between on A (offsets B never got) maps to nothing. When the A->B map
/// has no copies, or `back` no longer reaches the start of the copy back,
/// the map starts at the first copied-back record it knows.
fn forward_after(old: Option<&OffsetMap>, back: &OffsetMap) -> Option<OffsetMap> {
    let (runs, continues) = match new_runs(old, back) {
        Some(runs) => (runs, old.is_some_and(|m| m.copied_end().is_some())),
        None => (back.runs().collect(), false),
    };
    let first = runs.first()?;
    let mut map = match old {
        Some(old) if continues && first.target >= old.end() => old.clone(),
        _ => OffsetMap::starting_at(first.target),
    };
    for run in &runs {
        map.copied(run.target, run.source, run.count);
    }
    // After the last copied-back record: the restarted mirror goes on there.
    Some(map)
}

impl fmt::Display for Failback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            let state = match &flow.outcome {
                _ if !flow.is_ready() => "NOT READY",
                None => "ready",
                Some(_) if flow.is_complete() => "done",
                Some(_) => "INCOMPLETE",
            };
            writeln!(
                f,
                "flow {}: failback {} -> {}: {state}",
                flow.name, flow.from, flow.to
            )?;
            for (group, state) in &flow.active_on_b {
                writeln!(
                    f,
                    "  group {group} has members on {} ({state}): stop its consumers first",
                    flow.from
                )?;
            }
            write_partitions(f, flow)?;
            match &flow.outcome {
                None => {
                    if !flow.groups.is_empty() {
                        writeln!(
                            f,
                            "  the groups now, translated with the maps the copy back starts with:"
                        )?;
                        for group in &flow.groups {
                            write_group(f, group, "    ")?;
                        }
                    }
                }
                Some(outcome) => write_outcome(f, flow, outcome)?,
            }
        }
        Ok(())
    }
}

/// Where each partition starts, and what B never got.
fn write_partitions(f: &mut fmt::Formatter<'_>, flow: &FlowFailback) -> fmt::Result {
    for p in &flow.partitions {
        let name = format!("{}-{}", p.topic, p.partition);
        let home = if p.origin == p.topic {
            String::new()
        } else {
            format!(" into {}-{}", p.origin, p.partition)
        };
        let to = |from: i64| match p.b_end {
            end if end > from => format!("{from}..{end} ({} offsets)", end - from),
            _ => format!("nothing (ends at {from})"),
        };
        match p.start {
            Start::AfterCopy(at) => writeln!(
                f,
                "  {name}: after the {}->{} copy's end, {}{home}",
                flow.to,
                flow.from,
                to(at)
            )?,
            Start::Resumed(at) => writeln!(
                f,
                "  {name}: resuming an earlier failback, {}{home}",
                to(at)
            )?,
            Start::FromStart => writeln!(
                f,
                "  {name}: never copied {}->{}: all of it{home}",
                flow.to, flow.from
            )?,
            Start::Unknown(at) => writeln!(
                f,
                "  {name}: NOT COPIED BACK: the {}->{} checkpoint holds no map of copied \
                 records, so where its copy ends on {} is unknown; only what {} gets from \
                 offset {at} on is copied",
                flow.to, flow.from, flow.from, flow.from
            )?,
        }
        if let Some(lost) = p.not_on_b {
            let range = match lost.to {
                Some(to) => format!("{}..{} ({} offsets)", lost.from, to, to - lost.from),
                None => format!("from {} to where the copy back begins (unknown)", lost.from),
            };
            let fate = if lost.copied_later {
                format!(
                    "nothing new on {}: the restarted {}->{} mirror copies them",
                    flow.from, flow.to, flow.from
                )
            } else {
                format!(
                    "not copied to {}, where newer records come first; check them",
                    flow.from
                )
            };
            writeln!(
                f,
                "    {}-{} on {} holds offsets {range} that {} never got: {fate}",
                p.origin, p.partition, flow.to, flow.from
            )?;
        }
    }
    Ok(())
}

/// What the copy back did, and what the operator does next.
fn write_outcome(
    f: &mut fmt::Formatter<'_>,
    flow: &FlowFailback,
    outcome: &Outcome,
) -> fmt::Result {
    writeln!(f, "  the copy back:")?;
    for line in outcome.summary.to_string().lines() {
        writeln!(f, "    {line}")?;
    }
    for (topic, partition, copied, end) in &outcome.left_on_b {
        writeln!(
            f,
            "  {topic}-{partition}: copied back to {copied}, but {} ends at {end}: \
             stop the producers on {} and run failback again",
            flow.from, flow.from
        )?;
    }
    match &outcome.forward {
        ForwardCheckpoints::Rewritten(rewritten) => {
            writeln!(
                f,
                "  {}->{} checkpoints rewritten: {} partitions go on after the copied-back records",
                flow.to,
                flow.from,
                rewritten.len()
            )?;
            for (topic, partition, next) in rewritten {
                writeln!(f, "    {topic}-{partition}: from {} offset {next}", flow.to)?;
            }
        }
        ForwardCheckpoints::Kept => writeln!(
            f,
            "  {}->{} checkpoints left as they were: the copy back is not complete; \
             do not restart the {}->{} mirror before a failback that completes",
            flow.to, flow.from, flow.to, flow.from
        )?,
        ForwardCheckpoints::Changed(changed) => writeln!(
            f,
            "  {}->{} checkpoints NOT rewritten: {} of them changed during the failback \
             (e.g. {}-{}); a {}->{} mirror is running: stop it, then run failback again",
            flow.to,
            flow.from,
            changed.len(),
            changed[0].0,
            changed[0].1,
            flow.to,
            flow.from
        )?,
        ForwardCheckpoints::Failed(why) => writeln!(
            f,
            "  {}->{} checkpoints NOT rewritten: {why}; run failback again before \
             restarting the {}->{} mirror",
            flow.to, flow.from, flow.to, flow.from
        )?,
    }
    if flow.is_complete() {
        writeln!(f, "  next:")?;
        writeln!(
            f,
            "    1. start the groups' consumers against {} ({})",
            flow.to, flow.to_bootstrap
        )?;
        writeln!(f, "    2. move the producers back to {}", flow.to)?;
        writeln!(
            f,
            "    3. restart the {}->{} mirror (`kafka-mirror run` with this config)",
            flow.to, flow.from
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset_map::Translation;
    use uuid::Uuid;

    fn checkpoint(map: &OffsetMap) -> Checkpoint {
        Checkpoint {
            next_offset: map.end(),
            topic_id: Uuid::from_u128(7),
            source_cluster: Some("a".into()),
            leader_epoch: Some(1),
            offset_map: Some(map.stored()),
        }
    }

    /// A's records 0..100 with a commit marker at 50, copied to B from 10
    /// (B held 10 records before), and A's offsets 101..104 written after the
    /// last checkpoint.
    fn forward() -> OffsetMap {
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 10, 50);
        map.skipped_to(51);
        map.copied(51, 60, 50);
        map
    }

    #[test]
    fn the_copy_back_starts_after_the_forward_copy_with_its_inverse() {
        let forward = forward();
        let way = Way::of(Some(&checkpoint(&forward)), None, 130);
        assert_eq!(way.start, Start::AfterCopy(110));
        let map = way.to_write.clone().expect("a start to store");
        assert_eq!(map.end(), 110);
        assert_eq!(way.map.as_ref(), Some(&map));
        // A group that read on B translates back exactly, in the old data.
        assert_eq!(map.translate(10), Translation::Exact(0));
        // Everything before the copy of 51 read: at the marker, stepped over.
        assert_eq!(map.translate(60), Translation::Exact(50));
        assert_eq!(map.translate(61), Translation::Exact(52));
        assert_eq!(map.translate(110), Translation::Exact(101));
        assert_eq!(
            way.not_on_b(0, 104, 130),
            Some(NotOnB {
                from: 101,
                to: Some(104),
                copied_later: false,
            })
        );
    }

    #[test]
    fn a_failback_resumes_and_an_older_one_is_replaced() {
        let forward = forward();
        // This failback copied B's 110..120 to A's 104..114.
        let mut back = forward.inverse().expect("copied");
        back.copied(110, 104, 10);
        let way = Way::of(Some(&checkpoint(&forward)), Some(&checkpoint(&back)), 130);
        assert_eq!(way.start, Start::Resumed(120));
        assert_eq!(way.to_write, None);
        // A group that read all of the old data on B and none of the new
        // resumes on A at the offsets B never got; one inside the new data
        // at its copy.
        let map = way.map.as_ref().expect("the stored map");
        assert_eq!(map.translate(110), Translation::Exact(101));
        assert_eq!(map.translate(111), Translation::Exact(105));
        assert_eq!(
            way.not_on_b(0, 114, 130),
            Some(NotOnB {
                from: 101,
                to: Some(104),
                copied_later: false,
            })
        );
        // The A->B copy went on past an older failback's checkpoint.
        let mut further = forward.clone();
        further.copied(101, 110, 30);
        let way = Way::of(Some(&checkpoint(&further)), Some(&checkpoint(&back)), 150);
        assert_eq!(way.start, Start::AfterCopy(140));
        assert!(way.to_write.is_some());
    }

    #[test]
    fn partitions_never_copied_start_at_b_and_unknown_ends_copy_nothing() {
        let way = Way::of(None, None, 30);
        assert_eq!((way.start, way.to_write.clone()), (Start::FromStart, None));
        assert_eq!(
            way.not_on_b(5, 20, 30),
            Some(NotOnB {
                from: 5,
                to: Some(20),
                copied_later: false,
            })
        );
        assert_eq!(way.not_on_b(0, 0, 30), None);
        // Nothing on B: A's records are copied A->B in order later.
        assert_eq!(way.not_on_b(5, 20, 0).map(|n| n.copied_later), Some(true));
        let blind = Checkpoint {
            offset_map: None,
            ..checkpoint(&forward())
        };
        let way = Way::of(Some(&blind), None, 130);
        assert_eq!(way.start, Start::Unknown(130));
        assert_eq!(way.to_write.map(|m| m.end()), Some(130));
    }

    #[test]
    fn the_forward_map_goes_on_after_the_copied_back_records() {
        let forward = forward();
        let mut back = forward.inverse().expect("copied");
        // B's 110..120, a marker at 120, 121..125: landed at A's 104..118.
        back.copied(110, 104, 10);
        back.skipped_to(121);
        back.copied(121, 114, 4);
        let after = forward_after(Some(&forward), &back).expect("records came back");
        assert_eq!(after.end(), 118);
        // The old copy translates as before; A's 101..104 never reached B,
        // and a group there resumes at the first copied-back record's origin.
        assert_eq!(after.translate(51), Translation::Exact(60));
        assert_eq!(after.translate(101), Translation::Exact(110));
        assert_eq!(after.translate(104), Translation::Exact(110));
        // Past B's marker: at it, stepped over.
        assert_eq!(after.translate(114), Translation::Exact(120));
        assert_eq!(after.translate(115), Translation::Exact(122));
        assert_eq!(after.translate(118), Translation::Exact(125));
        // A second failback after the first finds nothing new.
        assert_eq!(forward_after(Some(&after), &back), None);
        // Nothing copied back: the A->B checkpoint stays.
        assert_eq!(
            forward_after(Some(&forward), &forward.inverse().expect("copied")),
            None
        );
    }

    #[test]
    fn a_copy_back_past_the_maps_reach_starts_the_forward_map_anew() {
        let forward = forward();
        let mut back = forward.inverse().expect("copied");
        // One record and one marker each, far more than a map keeps.
        for i in 0..(crate::offset_map::MAX_POINTS as i64 + 10) {
            back.copied(110 + 2 * i, 104 + i, 1);
            back.skipped_to(110 + 2 * i + 2);
        }
        let way = Way::of(Some(&checkpoint(&forward)), Some(&checkpoint(&back)), 2000);
        assert_eq!(
            way.not_on_b(0, 2000, 2000),
            Some(NotOnB {
                from: 101,
                to: None,
                copied_later: false,
            })
        );
        let after = forward_after(Some(&forward), &back).expect("records came back");
        let first = back.runs().next().expect("a run");
        assert_eq!(after.from(), first.target);
        assert_eq!(
            after.translate(first.target - 1),
            Translation::TooOld { from: first.target }
        );
        assert_eq!(after.end(), back.copied_end().expect("copied").target);
    }
}
