//! The group offset sync stage: when the flow syncs consumer groups
//! (`[groups]`, `--groups`), every `sync_interval_ms` the selected groups'
//! committed offsets are translated through the partitions' offset maps and
//! committed on the target ([`crate::groups::sync`]), and once more when the
//! run ends, so a `--until-caught-up` run leaves every group where its copy
//! of the data ends.
//!
//! The maps go as far as the target acknowledged each partition's data in
//! order (the offset the next checkpoint stores), so a translation never
//! points past data that is on the target. [`GroupSyncSchedule`] owns when
//! a sync is due and what the last one reported; the sync itself is a
//! spawned task whose answer comes back as an event.

use std::fmt;
use std::time::Instant;

use super::slots::{Slots, Status};
use crate::cluster::GroupError;
use crate::config::GroupSync;
use crate::groups::{CopiedPartitions, SyncReport};

/// When the next sync of a flow's groups is due, and what the last one said.
#[derive(Debug)]
pub(super) struct GroupSyncSchedule {
    settings: GroupSync,
    next: Instant,
    in_flight: bool,
    last: Option<GroupsSynced>,
}

/// What the last sync did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsSynced {
    /// Groups whose offsets were committed.
    pub synced: usize,
    /// Groups left alone: they have members on the target.
    pub active: usize,
    /// Groups committed at the end of the copy, short of their source offsets.
    pub behind: usize,
    /// Groups that could not be read or committed.
    pub failed: usize,
    /// One line per group that reads a copied partition, then one for
    /// MirrorMaker 2's checkpoints when they are written.
    pub lines: Vec<String>,
    /// Why the whole sync failed (a cluster's groups could not be listed).
    pub error: Option<String>,
}

impl GroupsSynced {
    fn of(result: &Result<SyncReport, GroupError>) -> Self {
        match result {
            Ok(report) => GroupsSynced {
                synced: report.synced().count(),
                active: report.skipped().count(),
                behind: report.behind().count(),
                failed: report.failed().count(),
                lines: report.to_string().lines().map(str::to_owned).collect(),
                error: None,
            },
            Err(e) => GroupsSynced {
                error: Some(e.to_string()),
                ..GroupsSynced::default()
            },
        }
    }
}

impl GroupsSynced {
    /// Another flow's sync, in the same summary.
    pub(super) fn add(&mut self, other: GroupsSynced) {
        self.synced += other.synced;
        self.active += other.active;
        self.behind += other.behind;
        self.failed += other.failed;
        self.lines.extend(other.lines);
        self.error = self.error.take().or(other.error);
    }

    /// Whether some group's offsets could not be synced.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.error.is_some()
    }
}

/// The summary's lines: the counts, then one line per group.
impl fmt::Display for GroupsSynced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.error {
            writeln!(f, "GROUPS NOT SYNCED: {error}")?;
        }
        writeln!(
            f,
            "groups: {} synced, {} left alone (active on the target), {} behind the copy, {} failed",
            self.synced, self.active, self.behind, self.failed
        )?;
        for line in &self.lines {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl GroupSyncSchedule {
    /// A schedule whose first sync is due one interval from `now`: the
    /// partitions have nothing copied before that.
    pub(super) fn new(settings: GroupSync, now: Instant) -> Self {
        GroupSyncSchedule {
            next: now + settings.interval(),
            settings,
            in_flight: false,
            last: None,
        }
    }

    /// Whether a sync should start now; if so it counts as started.
    pub(super) fn start_if_due(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.next {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// Whether a sync is under way.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// A sync ended: the next is due one interval later.
    pub(super) fn answered(&mut self, result: &Result<SyncReport, GroupError>, now: Instant) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "consumer group offset sync failed; trying again at the next interval");
        }
        self.in_flight = false;
        self.next = now + self.settings.interval();
        self.last = Some(GroupsSynced::of(result));
    }

    /// What the last sync did.
    pub(super) fn last(&self) -> Option<&GroupsSynced> {
        self.last.as_ref()
    }
}

/// Every partition's target topic and offset map, as far as the target
/// acknowledged its data in order; with `committed_only` (exactly-once), as
/// far as it is committed: a group must never be moved past data that an
/// abort could still make invisible.
pub(super) fn copied_partitions(slots: &Slots, committed_only: bool) -> CopiedPartitions {
    let mut copied = CopiedPartitions::new();
    // Another instance syncs the groups' offsets of the partitions it copies.
    for slot in slots.all().filter(|s| !matches!(s.status, Status::Unowned)) {
        let map = if committed_only {
            slot.state.committed_offset_map()
        } else {
            slot.state.offset_map().clone()
        };
        copied.insert(
            slot.topic.to_string(),
            slot.partition,
            slot.target_topic.to_string(),
            map,
        );
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorConfig;
    use crate::offset_map::Translation;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::{batch, slot};
    use std::time::Duration;
    use uuid::Uuid;

    fn settings(interval_ms: u64) -> GroupSync {
        let text = format!(
            "[source]\nbootstrap_servers = \"127.0.0.1:1\"\n\
             [target]\nbootstrap_servers = \"127.0.0.1:2\"\n\
             [groups]\ninclude = \"app-.*\"\nsync_interval_ms = {interval_ms}\n"
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        flows[0].groups.clone().expect("groups synced")
    }

    #[test]
    fn a_sync_is_due_each_interval_and_never_two_at_once() {
        let now = Instant::now();
        let mut schedule = GroupSyncSchedule::new(settings(1000), now);
        assert!(!schedule.start_if_due(now), "nothing copied yet");
        let due = now + Duration::from_secs(1);
        assert!(schedule.start_if_due(due));
        assert!(
            !schedule.start_if_due(due + Duration::from_secs(5)),
            "one in flight"
        );
        schedule.answered(&Ok(SyncReport::default()), due);
        assert_eq!(schedule.last(), Some(&GroupsSynced::default()));
        assert!(!schedule.start_if_due(due + Duration::from_millis(999)));
        assert!(schedule.start_if_due(due + Duration::from_secs(1)));
    }

    #[test]
    fn the_maps_go_as_far_as_the_target_acknowledged() {
        let mut slots = Slots::default();
        let id = slots.push(slot("orders", Uuid::nil(), 0, 0));
        slots[id].state.push_batch(batch(0, 10));
        slots[id].state.push_batch(batch(10, 5));
        let copied = copied_partitions(&slots, false);
        let partition = copied.get("orders", 0).expect("listed");
        assert_eq!(partition.target_topic, "copy.orders");
        assert_eq!(partition.map.translate(0), Translation::NothingCopied);

        // The first batch landed at target offset 100; the second is not sent yet.
        let first = slots[id]
            .state
            .next_to_send(Writer::idempotent(7, 0), false)
            .expect("a batch");
        slots[id].state.acked(first.entry, 100);
        let copied = copied_partitions(&slots, false);
        let map = &copied.get("orders", 0).expect("listed").map;
        assert_eq!(map.translate(5), Translation::Exact(105));
        assert_eq!(
            map.translate(12),
            Translation::Behind {
                target: 110,
                missing: 2
            }
        );
    }
}
