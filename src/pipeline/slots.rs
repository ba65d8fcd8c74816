//! The partition table: one [`Slot`] per source partition of the flow, named
//! by a [`SlotId`], and looked up by `(topic, partition)` without allocating.
//!
//! A slot is the record every stage reads and writes for its partition (its
//! queue in [`PartitionState`], its [`Status`], its backoffs); the table only
//! keeps them and their index. Stopping a partition is here because every
//! stage can stop one, and it must happen one way: logged, with its unsent
//! batches dropped, and only once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::epochs::EpochHistory;
use super::error::PartitionError;
use super::partition::PartitionState;
use super::stats::Tally;
use crate::backoff::Backoff;
use crate::cluster::{Metadata, OffsetSpec, Role};

/// A partition's place in the [`Slots`] table. Stable for the run: slots are
/// added, never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SlotId(u32);

impl SlotId {
    /// The position in the table, for spreading partitions over fetchers.
    pub(super) fn index(self) -> usize {
        self.0 as usize
    }
}

/// A slot and an offset of it: a fetch position asked, a checkpoint written.
pub(super) type SlotOffset = (SlotId, i64);

/// What a partition is doing.
#[derive(Debug)]
pub(super) enum Status {
    /// Its start offset is being looked up (no checkpoint, or a reset).
    Resolving { spec: OffsetSpec, asked: bool },
    /// Copying batches.
    Copying,
    /// The source said its fetch offset is out of range: finding out why.
    CheckingLoss { asked: bool },
    /// The source's log diverged from the copy at `to` (truncated below what
    /// was copied): the batches already sent land first, then copying
    /// starts again at `to`.
    Rewinding { to: i64 },
    /// Stopped with an error an operator must act on.
    Stopped(PartitionError),
    /// Its source topic was deleted while running: nothing more is fetched;
    /// what was sent still lands and is checkpointed. Not a failure.
    Deleted,
    /// Not this instance's to copy (another instance of the mirror's name
    /// copies it, or nobody was given it yet): never fetched nor produced,
    /// and nothing of it is queued.
    Unowned,
    /// Being handed over to another instance: nothing more is fetched and
    /// its unsent batches are dropped; what was sent lands and is
    /// checkpointed (exactly-once: committed), then it is [`Status::Unowned`].
    Revoking,
}

impl Status {
    pub(super) fn is_stopped(&self) -> bool {
        matches!(self, Status::Stopped(_))
    }

    pub(super) fn is_copying(&self) -> bool {
        matches!(self, Status::Copying)
    }
}

/// A partition's wait after a failed Fetch or Produce: 50 ms doubling up to 5 s.
const PARTITION_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// One source partition and everything the pipeline knows about it.
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
    /// The source leader epochs of what was fetched.
    pub(super) epochs: EpochHistory,
    pub(super) status: Status,
    /// Part of a Fetch in flight.
    pub(super) fetching: bool,
    /// A landing check (`landing.rs`) of its first batch is in flight.
    pub(super) checking_landing: bool,
    pub(super) fetch_backoff: Backoff,
    pub(super) produce_backoff: Backoff,
    /// With `until_caught_up`: the source's end offset at the start of the run.
    pub(super) caught_up_at: Option<i64>,
    /// Where the partition starts without a checkpoint: the flow's start
    /// position, or for a partition that appeared while running, its
    /// earliest offset (all it holds is new since the run began).
    pub(super) fresh_start: OffsetSpec,
    /// Refusals in a row for our producer id, or out of order for the
    /// first unacknowledged batch.
    pub(super) refusal_streak: u32,
    /// Batches the target refused as corrupt since the last one it took,
    /// though they left whole.
    pub(super) corrupt_refusals: u32,
    /// Batch bytes the target acknowledged, all told: what weighs the
    /// partition when instances share the partitions.
    pub(super) bytes_copied: u64,
    /// What its batches came to, for the per-topic totals shown while running.
    pub(super) tally: Tally,
    /// The source's end offset as the latest Fetch answer gave it: the high
    /// watermark, or the last stable offset under read_committed.
    pub(super) source_end: Option<i64>,
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
        let (base, max) = PARTITION_BACKOFF;
        Slot {
            topic,
            target_topic,
            partition,
            source_topic_id,
            state: PartitionState::new(offset),
            epochs: EpochHistory::default(),
            status,
            fetching: false,
            checking_landing: false,
            fetch_backoff: Backoff::new(base, max),
            produce_backoff: Backoff::new(base, max),
            caught_up_at: None,
            fresh_start: OffsetSpec::Earliest,
            refusal_streak: 0,
            corrupt_refusals: 0,
            bytes_copied: 0,
            tally: Tally::default(),
            source_end: None,
        }
    }

    /// A partition of the flow that is not copied here yet
    /// ([`Status::Unowned`]); started, it starts from its checkpoint or, if
    /// it has none, at `fresh_start`.
    pub(super) fn unowned(
        topic: Arc<str>,
        target_topic: Arc<str>,
        partition: i32,
        source_topic_id: Uuid,
        fresh_start: OffsetSpec,
    ) -> Self {
        Slot {
            fresh_start,
            ..Slot::new(
                topic,
                target_topic,
                partition,
                source_topic_id,
                0,
                Status::Unowned,
            )
        }
    }

    /// Whether the partition's batches may go to the target: it copies, or
    /// it has batches of an old position or topic to settle before it moves.
    pub(super) fn may_produce(&self) -> bool {
        matches!(
            self.status,
            Status::Copying | Status::CheckingLoss { .. } | Status::Rewinding { .. }
        ) || (matches!(
            self.status,
            Status::Resolving { .. } | Status::Deleted | Status::Revoking
        ) && !self.state.is_empty())
    }

    /// An error of this partition.
    pub(super) fn error(&self, cause: super::error::Cause) -> PartitionError {
        PartitionError::new(self.topic.clone(), self.partition, cause)
    }

    /// Stops the partition with an error an operator must act on; the first
    /// error stays. Other partitions go on; what was acknowledged is still
    /// checkpointed.
    pub(super) fn stop(&mut self, error: PartitionError) {
        if self.status.is_stopped() {
            return;
        }
        tracing::error!(topic = %self.topic, partition = self.partition, "partition stopped: {error}");
        self.status = Status::Stopped(error);
        self.state.drop_unsent();
    }
}

/// Every partition of the flow.
#[derive(Debug, Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    /// Slot by source topic, then partition: looked up by `&str`.
    index: HashMap<Arc<str>, HashMap<i32, SlotId>>,
}

impl Slots {
    /// Adds a partition; the table must not hold it yet.
    pub(super) fn push(&mut self, slot: Slot) -> SlotId {
        let id = SlotId(u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
        debug_assert!(self.find(&slot.topic, slot.partition).is_none());
        self.index
            .entry(slot.topic.clone())
            .or_default()
            .insert(slot.partition, id);
        self.slots.push(slot);
        id
    }

    /// The slot of a source partition.
    pub(super) fn find(&self, topic: &str, partition: i32) -> Option<SlotId> {
        self.index.get(topic)?.get(&partition).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every slot id, in table order.
    pub(super) fn ids(&self) -> impl Iterator<Item = SlotId> {
        (0..self.slots.len()).map(|i| SlotId(i as u32))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (SlotId, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, slot)| (SlotId(i as u32), slot))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (SlotId, &mut Slot)> {
        self.slots
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| (SlotId(i as u32), slot))
    }

    /// The slots themselves, for folds over every partition.
    pub(super) fn all(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    pub(super) fn all_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut()
    }

    /// Whether a partition that may write has batches waiting to be sent.
    pub(super) fn any_unsent(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.may_produce() && s.state.has_unsent())
    }

    /// Bytes the partition queues hold against the memory budget
    /// ([`PartitionState::budgeted_bytes`](super::partition::PartitionState::budgeted_bytes)).
    pub(super) fn queued_bytes(&self, exactly_once: bool) -> usize {
        self.slots
            .iter()
            .map(|s| s.state.budgeted_bytes(exactly_once))
            .sum()
    }

    /// `(topic, partition)` of each slot, as the offset lookups key them.
    pub(super) fn keys(&self, ids: &[SlotId]) -> Vec<(String, i32)> {
        ids.iter()
            .map(|&id| (self[id].topic.to_string(), self[id].partition))
            .collect()
    }

    /// Whether every partition is stopped (and there is at least one).
    pub(super) fn all_stopped(&self) -> bool {
        !self.slots.is_empty() && self.slots.iter().all(|s| s.status.is_stopped())
    }

    /// Whether a partition that is not stopped has batches of unknown fate or
    /// in flight. A stopped partition sends nothing more in this run, so its
    /// batches can never be resolved; they do not hold up the others.
    pub(super) fn any_unresolved(&self) -> bool {
        self.slots
            .iter()
            .any(|s| !s.status.is_stopped() && s.state.unresolved())
    }

    /// A refresh of `role`'s metadata moved some leaders: a partition whose
    /// leader moved has nothing left to wait for, since its backoff was for
    /// the old leader. Waiting it out meets a leader that has moved again by
    /// then, and again: a backoff grown to its ceiling can fall into step
    /// with leaders that keep moving, and the partition stops copying.
    pub(super) fn leaders_moved(&mut self, role: Role, before: &Metadata, after: &Metadata) {
        for slot in &mut self.slots {
            let (topic, backoff) = match role {
                Role::Source => (&slot.topic, &mut slot.fetch_backoff),
                Role::Target => (&slot.target_topic, &mut slot.produce_backoff),
            };
            let was = before.partition(topic, slot.partition);
            let now = after.partition(topic, slot.partition);
            if was.is_some() && was != now {
                tracing::debug!(?role, %topic, partition = slot.partition, ?was, ?now, "leader moved");
                backoff.reset();
            }
        }
    }

    /// With `until_caught_up`: whether every partition copied here (not
    /// stopped, deleted or another instance's) holds what the source held
    /// when the run began.
    pub(super) fn caught_up(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| {
                !s.status.is_stopped() && !matches!(s.status, Status::Deleted | Status::Unowned)
            })
            .all(|s| {
                s.status.is_copying()
                    && s.caught_up_at.is_some_and(|end| s.state.committed() >= end)
            })
    }

    /// Whether a partition that is not stopped has failed batches to resend.
    pub(super) fn any_failed(&self) -> bool {
        self.slots
            .iter()
            .any(|s| !s.status.is_stopped() && s.state.has_failed())
    }
}

impl std::ops::Index<SlotId> for Slots {
    type Output = Slot;

    fn index(&self, id: SlotId) -> &Slot {
        &self.slots[id.index()]
    }
}

impl std::ops::IndexMut<SlotId> for Slots {
    fn index_mut(&mut self, id: SlotId) -> &mut Slot {
        &mut self.slots[id.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing;

    fn slot(topic: &str, partition: i32) -> Slot {
        testing::slot(topic, Uuid::nil(), partition, 0)
    }

    #[test]
    fn partitions_are_found_by_topic_and_partition() {
        let mut slots = Slots::default();
        let a0 = slots.push(slot("a", 0));
        let b0 = slots.push(slot("b", 0));
        let a1 = slots.push(slot("a", 1));
        assert_eq!(slots.find("a", 1), Some(a1));
        assert_eq!(slots.find("b", 0), Some(b0));
        assert_eq!(slots.find("a", 2), None);
        assert_eq!(slots.find("c", 0), None);
        let listed: Vec<SlotId> = slots.iter().map(|(id, _)| id).collect();
        assert_eq!(listed, [a0, b0, a1]);
        assert_eq!(&*slots[a1].target_topic, "copy.a");
    }

    #[test]
    fn a_leader_move_ends_the_wait_for_the_old_leader() {
        use crate::pipeline::testing::metadata;
        use std::time::Instant;
        let mut slots = Slots::default();
        let moved = slots.push(slot("a", 0));
        let stayed = slots.push(slot("a", 1));
        let now = Instant::now();
        for id in [moved, stayed] {
            for _ in 0..10 {
                slots[id].produce_backoff.fail(now);
                slots[id].fetch_backoff.fail(now);
            }
        }
        let before = metadata("copy.a", Uuid::nil(), &[(0, Some(1)), (1, Some(1))]);
        let after = metadata("copy.a", Uuid::nil(), &[(0, Some(2)), (1, Some(1))]);
        slots.leaders_moved(Role::Target, &before, &after);
        assert!(!slots[moved].produce_backoff.waiting(now));
        assert!(slots[stayed].produce_backoff.waiting(now));
        // The source's leaders did not move: fetches still wait.
        assert!(slots[moved].fetch_backoff.waiting(now));
    }

    #[test]
    fn a_stopped_partition_keeps_its_first_error() {
        use super::super::error::Cause;
        let mut slots = Slots::default();
        let id = slots.push(slot("a", 0));
        let first = slots[id].error(Cause::SourceTruncated {
            next: 9,
            log_end: 5,
        });
        slots[id].stop(first);
        let second = slots[id].error(Cause::DeletedBeforeCopied { from: 0, to: 1 });
        slots[id].stop(second);
        assert!(slots.all_stopped());
        match &slots[id].status {
            Status::Stopped(error) => assert!(matches!(error.cause, Cause::SourceTruncated { .. })),
            other => panic!("{other:?}"),
        }
    }
}
