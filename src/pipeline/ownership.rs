//! Which partitions this instance copies while the instances of its name
//! share them (`instances.share`, the default): the group on the target
//! (`cluster::membership`) gives each member its partitions, and this stage
//! turns each of its decisions into partition states.
//!
//! - **Assigned.** A partition revoked stops fetching and drops its unsent
//!   batches ([`Status::Revoking`]); once what it sent has landed and its
//!   checkpoint is stored (exactly-once: committed with them), it is
//!   [`Status::Unowned`], and once every revoked partition is, the member
//!   says so and joins again, so another member can be given them.
//!   A partition given to this instance is *taken over*: the checkpoints are
//!   read again once every transaction open on the checkpoint topic is
//!   decided (`CheckpointStore::load_stable`), so whatever the previous
//!   owner stored last, committed or not, is known; then it starts as at
//!   startup (`partition_start::start_partition`).
//! - **Lost.** The member is out of the group: its partitions may be
//!   another member's already, so they stop at once, everything not stored
//!   dropped, and the producer is renewed (exactly-once: which aborts the
//!   open transaction).
//! - **Until caught up.** A run with `--until-caught-up` ends once its own
//!   partitions are caught up *and* the checkpoints of every other one
//!   stored by the instances that own them are: one such run copies the
//!   whole flow even while the group still counts an instance that is gone
//!   (killed, its session not over yet), whose partitions come to it later.
//! - **Lease.** Every write for a partition (Produce, checkpoint, the
//!   transaction's requests) goes only while the member's lease holds
//!   ([`Lease`]): the coordinator cannot have given the partitions to
//!   another member before then. A process stalled past it (SIGSTOP, a long
//!   pause) loses its partitions before it writes again.
//!
//! [`Ownership`] decides; the engine runs the member, reads the checkpoints
//! and routes the answers here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::error::Cause;
use super::partition_start::{start_partition, OtherSource, Started};
use super::slots::{SlotId, Slots, Status};
use super::stats::OwnedPartitions;
use crate::assignment::{Assignment, TopicPartition};
use crate::backoff::Backoff;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cluster::Metadata;

/// How far back the bytes a partition copied count for its weight in the
/// group's assignment.
const RECENT_BYTES_WINDOW: Duration = Duration::from_secs(60);
/// How often a run until caught up reads how far the other instances are.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Until when this instance may write for the partitions it owns: carried
/// into every write's task and checked again right before it goes out, so
/// that a process stalled between deciding a write and sending it does not
/// send it once its partitions may be another instance's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lease(Option<Instant>);

impl Lease {
    /// A lease ending at `end`; none (`None`) never ends: the instance
    /// shares nothing, or owns nothing to write for.
    pub(super) fn until(end: Option<Instant>) -> Self {
        Lease(end)
    }

    /// Whether a write may still go now.
    pub(super) fn holds(&self) -> bool {
        self.0.is_none_or(|end| Instant::now() < end)
    }
}

/// The checkpoints a take-over read, for the partitions it was for.
pub(super) type TakeOverRead = Result<HashMap<(String, i32), Checkpoint>, CheckpointError>;

/// What this instance owns, and the hand-overs under way.
#[derive(Debug)]
pub(super) struct Ownership {
    /// The generation of the last assignment; -1 when none holds.
    generation: i32,
    /// Whether an assignment came at all: until then nothing is copied.
    assigned_once: bool,
    /// The partitions of the last assignment (those revoked not included),
    /// by source topic.
    assigned: BTreeSet<TopicPartition>,
    /// Partitions being handed over.
    revoking: BTreeSet<SlotId>,
    /// The last assignment revoked partitions, and the member has not been
    /// told yet that they are handed over.
    revocation_pending: bool,
    /// The generation a take-over read in flight was started in.
    reading: Option<i32>,
    /// Spaces out take-over reads that failed.
    backoff: Backoff,
    /// Each partition's [`Slot::bytes_copied`](super::slots::Slot) when the
    /// current window of recent bytes began.
    window_start: (Instant, HashMap<SlotId, u64>),
    /// Until caught up: the stored checkpoints of the partitions other
    /// instances copy, as last read.
    elsewhere: HashMap<SlotId, i64>,
    /// Until caught up: a read of them in flight, and when the next may go.
    progress: (bool, Instant),
}

impl Ownership {
    /// Nothing owned yet: the first assignment decides.
    pub(super) fn new(now: Instant) -> Self {
        Ownership {
            generation: -1,
            assigned_once: false,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            revocation_pending: false,
            reading: None,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            window_start: (now, HashMap::new()),
            elsewhere: HashMap::new(),
            progress: (false, now),
        }
    }

    /// The partitions the group shares: every partition of the flow but
    /// those of topics deleted on the source.
    pub(super) fn group_partitions(slots: &Slots) -> BTreeSet<TopicPartition> {
        slots
            .all()
            .filter(|slot| !matches!(slot.status, Status::Deleted))
            .map(|slot| (slot.topic.to_string(), slot.partition))
            .collect()
    }

    /// The slots this instance copies now (hand-overs under way included).
    pub(super) fn owned(slots: &Slots) -> Vec<SlotId> {
        slots
            .iter()
            .filter(|(_, slot)| !matches!(slot.status, Status::Unowned | Status::Deleted))
            .map(|(id, _)| id)
            .collect()
    }

    /// A generation's assignment: revoked partitions start their hand-over;
    /// partitions given are taken over by [`Ownership::take_over_due`].
    pub(super) fn assigned(&mut self, slots: &mut Slots, generation: i32, assignment: &Assignment) {
        self.generation = generation;
        self.assigned_once = true;
        self.assigned.clone_from(&assignment.partitions);
        self.revocation_pending |= !assignment.revoke.is_empty();
        for (topic, partition) in &assignment.revoke {
            let Some(id) = slots.find(topic, *partition) else {
                continue;
            };
            let slot = &mut slots[id];
            match slot.status {
                Status::Unowned => continue,
                // A stopped partition sends nothing more: what it has
                // stored is all it hands over.
                Status::Stopped(_) => {}
                _ => {
                    slot.status = Status::Revoking;
                    slot.state.drop_unsent();
                }
            }
            self.revoking.insert(id);
        }
    }

    /// The slots to take over now, if a take-over read may start: assigned
    /// here, not copied yet, and listed by the source. Marks the read in
    /// flight.
    pub(super) fn take_over_due(
        &mut self,
        slots: &Slots,
        source: &Metadata,
        now: Instant,
    ) -> Option<Vec<SlotId>> {
        if self.reading.is_some() || self.backoff.waiting(now) {
            return None;
        }
        let ids = self.to_take_over(slots, source);
        if ids.is_empty() {
            return None;
        }
        self.reading = Some(self.generation);
        Some(ids)
    }

    fn to_take_over(&self, slots: &Slots, source: &Metadata) -> Vec<SlotId> {
        self.assigned
            .iter()
            .filter(|(topic, _)| source.topics.contains_key(topic))
            .filter_map(|(topic, partition)| slots.find(topic, *partition))
            .filter(|&id| matches!(slots[id].status, Status::Unowned))
            .collect()
    }

    /// The take-over read answered: the partitions still assigned here and
    /// not copied start from the checkpoints read (or their fresh start).
    /// A read begun before the last assignment is not used: another member
    /// may have copied a partition in between. Returns the partitions that
    /// started from a checkpoint written before offset maps were kept.
    pub(super) fn taken_over(
        &mut self,
        slots: &mut Slots,
        ids: Vec<SlotId>,
        read: TakeOverRead,
        source: &Metadata,
        now: Instant,
    ) -> Vec<String> {
        let Some(generation) = self.reading.take() else {
            return Vec::new();
        };
        let stored = match read {
            Ok(stored) if generation == self.generation => stored,
            Ok(_) => return Vec::new(),
            Err(e) if e.is_retriable() => {
                tracing::warn!(error = %e, "cannot read the checkpoints of the partitions to take over; retrying");
                self.backoff.fail(now);
                return Vec::new();
            }
            Err(e) => {
                let reason = e.to_string();
                for id in ids {
                    if matches!(slots[id].status, Status::Unowned) {
                        let cause = Cause::CheckpointUnreadable {
                            reason: reason.clone(),
                        };
                        let error = slots[id].error(cause);
                        slots[id].stop(error);
                    }
                }
                return Vec::new();
            }
        };
        self.backoff.reset();
        let mut old_checkpoints = Vec::new();
        for id in ids {
            let slot = &mut slots[id];
            let key = (slot.topic.to_string(), slot.partition);
            let Some(topic) = source.topics.get(&key.0) else {
                continue;
            };
            if !self.assigned.contains(&key) || !matches!(slot.status, Status::Unowned) {
                continue;
            }
            let checkpoint = stored.get(&(slot.target_topic.to_string(), slot.partition));
            match start_partition(slot, topic.id, checkpoint, source.cluster_id.as_deref()) {
                Ok(Started::FromOldCheckpoint) => {
                    old_checkpoints.push(format!("{}-{}", slot.topic, slot.partition));
                }
                Ok(_) => {}
                Err(OtherSource { stored, current }) => {
                    let error = slot.error(Cause::OtherSourceCluster { stored, current });
                    slot.stop(error);
                }
            }
        }
        old_checkpoints
    }

    /// Partitions being handed over whose batches have all landed and
    /// whose checkpoint is stored are no longer this instance's. Returns
    /// true once the last of them went (at once if none was copied here
    /// yet): the member may say the revocation is done.
    pub(super) fn settle_revocations(&mut self, slots: &mut Slots) -> bool {
        if !self.revocation_pending {
            return false;
        }
        self.revoking.retain(|&id| {
            let slot = &mut slots[id];
            let settled = match slot.status {
                Status::Stopped(_) => slot.state.committed() == slot.state.checkpointed,
                _ => slot.state.is_empty(),
            };
            if settled {
                // What a stopped partition never sent is dropped with it.
                slot.state.rewind_to_checkpoint();
                slot.status = Status::Unowned;
            }
            !settled
        });
        self.revocation_pending = !self.revoking.is_empty();
        !self.revocation_pending
    }

    /// Whether partitions are being handed over: checkpoints (or the
    /// commit) of them should not wait for their interval.
    pub(super) fn revoking(&self) -> bool {
        !self.revoking.is_empty()
    }

    /// The member is out of the group: every partition it copied stops at
    /// once, all not stored dropped. Returns whether it copied any (the
    /// producer is then renewed: what was in flight must not be resent
    /// under it, nor follow in its sequences).
    pub(super) fn lost(&mut self, slots: &mut Slots) -> bool {
        self.generation = -1;
        self.assigned.clear();
        self.revoking.clear();
        self.revocation_pending = false;
        let mut owned_any = false;
        for slot in slots.all_mut() {
            if matches!(slot.status, Status::Unowned | Status::Deleted) {
                continue;
            }
            owned_any = true;
            slot.state.rewind_to_checkpoint();
            slot.status = Status::Unowned;
        }
        owned_any
    }

    /// Whether this instance has what it was assigned in hand: an
    /// assignment came, nothing is being taken over or handed over.
    pub(super) fn settled(&self, slots: &Slots, source: &Metadata) -> bool {
        self.assigned_once
            && self.reading.is_none()
            && self.revoking.is_empty()
            && self.to_take_over(slots, source).is_empty()
    }

    /// Until caught up, with this instance's own partitions caught up:
    /// whether the stored checkpoints of the others should be read (one
    /// read at a time, one a [`PROGRESS_INTERVAL`]). Marks it in flight.
    pub(super) fn progress_read_due(&mut self, slots: &Slots, now: Instant) -> bool {
        let (reading, next) = self.progress;
        if reading || now < next || self.others_caught_up(slots) {
            return false;
        }
        self.progress = (true, now + PROGRESS_INTERVAL);
        true
    }

    /// The stored checkpoints read: how far the partitions of other
    /// instances are copied.
    pub(super) fn progress_read(&mut self, slots: &Slots, read: TakeOverRead) {
        self.progress.0 = false;
        let stored = match read {
            Ok(stored) => stored,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read how far the other instances are");
                return;
            }
        };
        for (id, slot) in slots.iter() {
            let key = (slot.target_topic.to_string(), slot.partition);
            if let Some(checkpoint) = stored.get(&key) {
                self.elsewhere.insert(id, checkpoint.next_offset);
            }
        }
    }

    /// Whether every partition another instance copies (or none does) is
    /// stored as far as the source's end when this run began.
    pub(super) fn others_caught_up(&self, slots: &Slots) -> bool {
        slots
            .iter()
            .filter(|(_, slot)| matches!(slot.status, Status::Unowned))
            .all(|(id, slot)| match slot.caught_up_at {
                None | Some(0) => true,
                Some(end) => self.elsewhere.get(&id).is_some_and(|&at| at >= end),
            })
    }

    /// Every [`RECENT_BYTES_WINDOW`], the bytes each owned partition copied
    /// in the window just ended, for the member to report at its next join.
    pub(super) fn recent_bytes_due(
        &mut self,
        slots: &Slots,
        now: Instant,
    ) -> Option<BTreeMap<TopicPartition, u64>> {
        let (started, at_start) = &self.window_start;
        if now.duration_since(*started) < RECENT_BYTES_WINDOW {
            return None;
        }
        let recent = slots
            .iter()
            .filter_map(|(id, slot)| {
                let before = at_start.get(&id).copied().unwrap_or(0);
                let bytes = slot.bytes_copied.saturating_sub(before);
                (bytes > 0).then(|| ((slot.topic.to_string(), slot.partition), bytes))
            })
            .collect();
        let totals = slots.iter().map(|(id, s)| (id, s.bytes_copied)).collect();
        self.window_start = (now, totals);
        Some(recent)
    }
}

/// Without sharing, every partition is this instance's: partitions that
/// appear while running start at once, from their fresh start.
pub(super) fn start_unshared(slots: &mut Slots, ids: &[SlotId]) {
    for &id in ids {
        let slot = &mut slots[id];
        if matches!(slot.status, Status::Unowned) {
            let topic_id = slot.source_topic_id;
            // No checkpoint, so no source cluster to compare.
            let _ = start_partition(slot, topic_id, None, None);
        }
    }
}

/// What this instance copies of the flow `flow`, for the summary.
pub(super) fn owned_partitions(flow: &str, slots: &Slots) -> OwnedPartitions {
    let owned = Ownership::owned(slots);
    let names = owned
        .iter()
        .map(|&id| (&*slots[id].topic, slots[id].partition));
    named_partitions(flow, names, slots.len())
}

/// `partitions` of the flow `flow`, which has `of` in all.
pub(super) fn named_partitions<'a>(
    flow: &str,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
    of: usize,
) -> OwnedPartitions {
    OwnedPartitions {
        flow: flow.to_owned(),
        partitions: partitions
            .into_iter()
            .map(|(topic, partition)| format!("{topic}-{partition}"))
            .collect(),
        of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::OffsetSpec;
    use crate::offset_map::OffsetMap;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::slots::Slot;
    use crate::pipeline::testing::{batch, metadata};
    use uuid::Uuid;

    const ID: Uuid = Uuid::from_u128(9);

    fn tp(partition: i32) -> TopicPartition {
        ("t".to_owned(), partition)
    }

    /// Four partitions of `t`, none started.
    fn table() -> (Slots, Metadata) {
        let mut slots = Slots::default();
        for p in 0..4 {
            slots.push(Slot::unowned(
                "t".into(),
                "copy.t".into(),
                p,
                ID,
                OffsetSpec::Earliest,
            ));
        }
        let leaders: Vec<(i32, Option<i32>)> = (0..4).map(|p| (p, Some(1))).collect();
        (slots, metadata("t", ID, &leaders))
    }

    fn assignment(partitions: &[i32], revoke: &[i32]) -> Assignment {
        Assignment {
            partitions: partitions.iter().map(|&p| tp(p)).collect(),
            revoke: revoke.iter().map(|&p| tp(p)).collect(),
            slot: Some(0),
        }
    }

    fn checkpoint(offset: i64) -> Checkpoint {
        Checkpoint {
            next_offset: offset,
            topic_id: ID,
            source_cluster: None,
            leader_epoch: None,
            offset_map: Some(OffsetMap::starting_at(offset).stored()),
        }
    }

    fn id(slots: &Slots, partition: i32) -> SlotId {
        slots.find("t", partition).expect("slot")
    }

    #[test]
    fn partitions_assigned_are_taken_over_from_the_checkpoints_read_after() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        assert!(ownership.take_over_due(&slots, &source, now).is_none());
        assert!(!ownership.settled(&slots, &source), "no assignment yet");

        ownership.assigned(&mut slots, 1, &assignment(&[0, 2], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        assert_eq!(ids, [id(&slots, 0), id(&slots, 2)]);
        assert!(
            ownership.take_over_due(&slots, &source, now).is_none(),
            "one read at a time"
        );
        let stored = HashMap::from([(("copy.t".to_owned(), 0), checkpoint(40))]);
        ownership.taken_over(&mut slots, ids, Ok(stored), &source, now);
        let zero = &slots[id(&slots, 0)];
        assert!(zero.status.is_copying());
        assert_eq!(zero.state.fetch_offset, 40, "from the checkpoint");
        assert!(
            matches!(
                slots[id(&slots, 2)].status,
                Status::Resolving {
                    spec: OffsetSpec::Earliest,
                    ..
                }
            ),
            "no checkpoint: its fresh start"
        );
        assert!(matches!(slots[id(&slots, 1)].status, Status::Unowned));
        assert!(ownership.settled(&slots, &source));
        assert_eq!(Ownership::owned(&slots), [id(&slots, 0), id(&slots, 2)]);
        assert_eq!(
            owned_partitions("f", &slots).to_string(),
            "2 of 4 partitions (t-0, t-2)"
        );
    }

    #[test]
    fn a_read_begun_before_a_newer_assignment_or_failed_is_done_again() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        ownership.assigned(&mut slots, 1, &assignment(&[0, 1], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        // Generation 2 gives 1 to another member and, until the read
        // answers, it may have copied 0 as well in between.
        ownership.assigned(&mut slots, 2, &assignment(&[0], &[]));
        let stale = HashMap::from([(("copy.t".to_owned(), 0), checkpoint(10))]);
        ownership.taken_over(&mut slots, ids, Ok(stale), &source, now);
        assert!(matches!(slots[id(&slots, 0)].status, Status::Unowned));

        let ids = ownership
            .take_over_due(&slots, &source, now)
            .expect("again");
        assert_eq!(ids, [id(&slots, 0)]);
        let failed = Err(CheckpointError::NotReady {
            topic: "checkpoints".into(),
            reason: "a transaction stays open".into(),
        });
        ownership.taken_over(&mut slots, ids, failed, &source, now);
        assert!(
            ownership.take_over_due(&slots, &source, now).is_none(),
            "after a backoff"
        );
        let later = now + Duration::from_secs(1);
        let ids = ownership
            .take_over_due(&slots, &source, later)
            .expect("due");
        let fresh = HashMap::from([(("copy.t".to_owned(), 0), checkpoint(25))]);
        ownership.taken_over(&mut slots, ids, Ok(fresh), &source, later);
        assert_eq!(slots[id(&slots, 0)].state.fetch_offset, 25);
    }

    #[test]
    fn checkpoints_that_cannot_be_read_stop_the_partitions_to_take_over() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        ownership.assigned(&mut slots, 1, &assignment(&[3], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        let corrupt = Err(CheckpointError::Corrupt {
            topic: "checkpoints".into(),
            offset: 7,
            reason: "not JSON".into(),
        });
        ownership.taken_over(&mut slots, ids, corrupt, &source, now);
        let Status::Stopped(error) = &slots[id(&slots, 3)].status else {
            panic!("not stopped");
        };
        assert!(
            error.to_string().starts_with(
                "t-3 cannot be taken over from another instance: its checkpoint cannot be read"
            ),
            "{error}"
        );
        assert!(ownership.take_over_due(&slots, &source, now).is_none());
    }

    /// Partition 0 has a batch in flight and one unsent when it is revoked:
    /// the unsent one is dropped, the other lands and is checkpointed, and
    /// only then is the partition given up, and the revocation done.
    #[test]
    fn a_revoked_partition_is_given_up_once_its_checkpoint_is_stored() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        ownership.assigned(&mut slots, 1, &assignment(&[0, 1], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        let stored = HashMap::from([
            (("copy.t".to_owned(), 0), checkpoint(0)),
            (("copy.t".to_owned(), 1), checkpoint(0)),
        ]);
        ownership.taken_over(&mut slots, ids, Ok(stored), &source, now);
        let zero = id(&slots, 0);
        slots[zero].state.push_batch(batch(0, 3));
        let sent = slots[zero]
            .state
            .next_to_send(Writer::idempotent(7, 0), false)
            .expect("batch");
        slots[zero].state.push_batch(batch(3, 2));

        ownership.assigned(&mut slots, 2, &assignment(&[1], &[0]));
        assert!(matches!(slots[zero].status, Status::Revoking));
        assert!(
            !slots[zero].state.has_unsent(),
            "the unsent batch is dropped"
        );
        assert!(slots[zero].may_produce(), "what was sent still lands");
        assert!(ownership.revoking());
        assert!(!ownership.settle_revocations(&mut slots));

        slots[zero].state.acked(sent.entry, 0);
        assert!(
            !ownership.settle_revocations(&mut slots),
            "not before its checkpoint"
        );
        slots[zero].state.checkpoint_stored(3);
        assert!(
            ownership.settle_revocations(&mut slots),
            "the last one went"
        );
        assert!(matches!(slots[zero].status, Status::Unowned));
        assert!(!ownership.settle_revocations(&mut slots), "said once");
        assert!(slots[id(&slots, 1)].status.is_copying(), "kept copying");
        assert!(ownership.settled(&slots, &source));
    }

    /// Revoked before its take-over read answered, a partition has
    /// nothing to hand over: the revocation is done at once, and the read
    /// does not start it.
    #[test]
    fn a_partition_revoked_before_it_was_taken_over_is_handed_over_at_once() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        ownership.assigned(&mut slots, 1, &assignment(&[0, 1], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        ownership.assigned(&mut slots, 2, &assignment(&[0], &[1]));
        assert!(ownership.settle_revocations(&mut slots));
        assert!(!ownership.settle_revocations(&mut slots), "said once");
        ownership.taken_over(&mut slots, ids, Ok(HashMap::new()), &source, now);
        assert!(matches!(slots[id(&slots, 1)].status, Status::Unowned));
    }

    #[test]
    fn a_lost_member_drops_everything_it_copied() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        ownership.assigned(&mut slots, 1, &assignment(&[0, 3], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        ownership.taken_over(&mut slots, ids, Ok(HashMap::new()), &source, now);
        let three = id(&slots, 3);
        slots[three].status = Status::Copying;
        slots[three].state.push_batch(batch(0, 3));
        slots[three]
            .state
            .next_to_send(Writer::idempotent(7, 0), false)
            .expect("batch");

        assert!(ownership.lost(&mut slots));
        assert!(slots.all().all(|s| matches!(s.status, Status::Unowned)));
        assert!(slots[three].state.is_empty(), "in flight, and dropped");
        assert!(ownership.take_over_due(&slots, &source, now).is_none());
        assert!(!ownership.lost(&mut slots), "nothing left to lose");
    }

    #[test]
    fn recent_bytes_are_what_each_partition_copied_in_the_last_window() {
        let (mut slots, _) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        let (one, two) = (id(&slots, 1), id(&slots, 2));
        slots[one].bytes_copied = 500;
        assert!(ownership.recent_bytes_due(&slots, now).is_none());
        let end = now + RECENT_BYTES_WINDOW;
        let recent = ownership.recent_bytes_due(&slots, end).expect("due");
        assert_eq!(recent, BTreeMap::from([(tp(1), 500)]));
        slots[one].bytes_copied = 800;
        slots[two].bytes_copied = 5;
        let next = ownership
            .recent_bytes_due(&slots, end + RECENT_BYTES_WINDOW)
            .expect("due");
        assert_eq!(next, BTreeMap::from([(tp(1), 300), (tp(2), 5)]));
    }

    /// Partitions 0 and 1 are copied here and caught up; 2 and 3 are
    /// another instance's (one that may be gone): the run goes on until the
    /// checkpoints stored of them reach the source's end at its start.
    #[test]
    fn a_run_until_caught_up_waits_for_the_partitions_of_the_others() {
        let (mut slots, source) = table();
        let now = Instant::now();
        let mut ownership = Ownership::new(now);
        for p in 0..4 {
            let id = id(&slots, p);
            slots[id].caught_up_at = Some(if p == 3 { 0 } else { 50 });
        }
        ownership.assigned(&mut slots, 1, &assignment(&[0, 1], &[]));
        let ids = ownership.take_over_due(&slots, &source, now).expect("due");
        ownership.taken_over(&mut slots, ids, Ok(HashMap::new()), &source, now);
        assert!(!ownership.others_caught_up(&slots));
        assert!(ownership.progress_read_due(&slots, now));
        assert!(!ownership.progress_read_due(&slots, now), "one at a time");
        let behind = HashMap::from([(("copy.t".to_owned(), 2), checkpoint(40))]);
        ownership.progress_read(&slots, Ok(behind));
        assert!(!ownership.others_caught_up(&slots));
        assert!(
            !ownership.progress_read_due(&slots, now),
            "not before the interval"
        );
        let later = now + PROGRESS_INTERVAL;
        assert!(ownership.progress_read_due(&slots, later));
        let done = HashMap::from([(("copy.t".to_owned(), 2), checkpoint(50))]);
        ownership.progress_read(&slots, Ok(done));
        assert!(
            ownership.others_caught_up(&slots),
            "3 was empty at the start: nothing to wait for"
        );
        assert!(!ownership.progress_read_due(&slots, later + PROGRESS_INTERVAL));
    }

    #[test]
    fn the_lease_holds_until_its_end() {
        assert!(Lease::default().holds(), "no end");
        assert!(Lease::until(Some(Instant::now() + Duration::from_secs(60))).holds());
        assert!(!Lease::until(Some(Instant::now())).holds());
    }
}
