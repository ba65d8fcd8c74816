//! Where each partition copies from, and what happens when the source no
//! longer has that place.
//!
//! - Start positions: a partition without a checkpoint looks up the source's
//!   earliest or latest offset, or the first offset at a timestamp.
//! - Data loss: an out-of-range Fetch means retention deleted data before it
//!   was copied, or the source lost data that was copied; a diverging epoch
//!   in a Fetch answer (KIP-320) means an unclean leader election truncated
//!   the source's log below what was copied; a changed topic id means the
//!   source topic was deleted and recreated. Each is reported with the exact
//!   range and handled by the `on_data_loss` policy: stop the partition
//!   (default) or report, count and copy on. Never silently.
//!
//! The state of a lookup is the partition's [`Status`] (`Resolving`,
//! `CheckingLoss`), so [`Positions`] holds only the policy: it says which
//! lookups are due and applies their answers; the engine sends them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::{Cause, PartitionError};
use super::metadata::MetadataView;
use super::slots::{Slot, SlotId, Slots, Status};
use super::stats::Counters;
use crate::cluster::{Metadata, OffsetResult, OffsetSpec, Role};
use crate::config::DataLossPolicy;

/// Offset lookups to send: start positions by spec, and partitions whose
/// fetch offset the source refused.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    pub(super) resolve: HashMap<OffsetSpec, Vec<SlotId>>,
    pub(super) loss: Vec<SlotId>,
}

/// How long start offsets looked up during start-up stand in for a lookup
/// of the engine's own: long enough for the target's side of start-up, short
/// enough that "earliest" has hardly moved.
const START_OFFSETS_FRESH_FOR: Duration = Duration::from_secs(5);

/// Start offsets looked up during start-up, beside the target's side of it,
/// so that over a long round trip the first Fetch need not wait for a
/// lookup of its own. Each is used once, by a partition starting by the
/// same spec.
#[derive(Debug)]
pub(super) struct StartOffsets {
    spec: OffsetSpec,
    offsets: HashMap<(String, i32), i64>,
    looked_up: Instant,
}

impl StartOffsets {
    pub(super) fn new(
        spec: OffsetSpec,
        offsets: HashMap<(String, i32), i64>,
        looked_up: Instant,
    ) -> Self {
        StartOffsets {
            spec,
            offsets,
            looked_up,
        }
    }

    /// The offset looked up for `slot` by `spec`, if still fresh.
    fn take(&mut self, slot: &Slot, spec: OffsetSpec, now: Instant) -> Option<i64> {
        if spec != self.spec || now.duration_since(self.looked_up) > START_OFFSETS_FRESH_FOR {
            return None;
        }
        self.offsets
            .remove(&(slot.topic.to_string(), slot.partition))
    }
}

/// The start-position and data-loss stage.
#[derive(Debug)]
pub(super) struct Positions {
    on_data_loss: DataLossPolicy,
    start_offsets: Option<StartOffsets>,
}

impl Positions {
    pub(super) fn new(on_data_loss: DataLossPolicy, start_offsets: Option<StartOffsets>) -> Self {
        Positions {
            on_data_loss,
            start_offsets,
        }
    }

    /// A selected source topic whose id changed was deleted and created again:
    /// its offsets restarted, so copying on from the old position would skip
    /// or mix data. Reported, never silently appended to the old copy.
    ///
    /// With `continue`, the partition keeps the old topic's id until what it
    /// had fetched of the old topic has landed and is checkpointed (under
    /// that id); the start of the new topic is then looked up, and its id
    /// taken with the answer ([`resolved`](Self::resolved)). A partition
    /// already resolving its start is left to that.
    pub(super) fn detect_recreated_topics(&self, slots: &mut Slots, metadata: &Metadata) {
        for (_, slot) in slots.iter_mut() {
            let Some(topic) = metadata.topics.get(&*slot.topic) else {
                continue;
            };
            let settled = matches!(
                slot.status,
                Status::Copying | Status::CheckingLoss { .. } | Status::Deleted
            );
            if !settled || topic.id.is_nil() {
                continue;
            }
            if topic.id == slot.source_topic_id {
                if matches!(slot.status, Status::Deleted) {
                    // Listed again under its id: a broker that was behind.
                    tracing::info!(topic = %slot.topic, partition = slot.partition, "source topic listed again; copying on");
                    slot.status = Status::Copying;
                }
                continue;
            }
            let error = slot.error(Cause::TopicRecreated {
                copied_from: slot.source_topic_id,
                now: topic.id,
            });
            match self.on_data_loss {
                DataLossPolicy::Stop => slot.stop(error),
                DataLossPolicy::Continue => {
                    tracing::error!(topic = %slot.topic, partition = slot.partition, "{}; copying the new topic from its start (on_data_loss = continue)", error.problem());
                    slot.status = Status::Resolving {
                        spec: OffsetSpec::Earliest,
                        asked: false,
                    };
                    slot.state.drop_unsent();
                }
            }
        }
    }

    /// The lookups due now, each partition marked asked. A partition whose
    /// start offset start-up looked up starts there at once instead.
    pub(super) fn due_lookups(
        &mut self,
        slots: &mut Slots,
        meta: &MetadataView,
        now: Instant,
    ) -> Lookups {
        let mut lookups = Lookups::default();
        for (id, slot) in slots.iter_mut() {
            if slot.fetch_backoff.waiting(now) || slot.fetching {
                continue;
            }
            match &mut slot.status {
                // A reset waits until what was in flight has landed and is checkpointed.
                Status::Resolving { spec, asked } if !*asked && slot.state.is_empty() => {
                    let spec = *spec;
                    let looked_up = self.start_offsets.as_mut();
                    match looked_up.and_then(|offsets| offsets.take(slot, spec, now)) {
                        Some(offset) => start_at(slot, meta, offset, spec),
                        None => {
                            slot.status = Status::Resolving { spec, asked: true };
                            lookups.resolve.entry(spec).or_default().push(id);
                        }
                    }
                }
                Status::CheckingLoss { asked } if !*asked => {
                    *asked = true;
                    lookups.loss.push(id);
                }
                // What was sent before the source diverged has landed and is
                // checkpointed: copy on from where the source now goes on.
                Status::Rewinding { to } if slot.state.is_empty() => {
                    tracing::info!(topic = %slot.topic, partition = slot.partition, offset = *to, "copying on from where the source's log diverged");
                    slot.state.restart_at(*to);
                    slot.status = Status::Copying;
                }
                _ => {}
            }
        }
        lookups
    }

    /// Start offsets answered: copying begins there, or the lookup is
    /// retried after a backoff.
    pub(super) fn resolved(
        &self,
        slots: &mut Slots,
        meta: &MetadataView,
        ids: Vec<SlotId>,
        mut results: HashMap<(String, i32), OffsetResult>,
        now: Instant,
    ) {
        for id in ids {
            let slot = &mut slots[id];
            let Status::Resolving { spec, .. } = slot.status else {
                continue;
            };
            match results.remove(&(slot.topic.to_string(), slot.partition)) {
                Some(Ok(offset)) => start_at(slot, meta, offset, spec),
                other => {
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, result = ?other, "cannot look up the start offset yet; retrying");
                    slot.status = Status::Resolving { spec, asked: false };
                    slot.fetch_backoff.fail(now);
                    meta.want_refresh(Role::Source);
                }
            }
        }
    }

    /// The source refused a fetch offset: data was deleted before it was
    /// copied (retention ran ahead), or the source lost data the mirror
    /// already copied; `earliest` and `latest` are the source's offsets now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn loss_checked(
        &self,
        slots: &mut Slots,
        meta: &MetadataView,
        counters: &mut Counters,
        ids: Vec<SlotId>,
        mut earliest: HashMap<(String, i32), OffsetResult>,
        mut latest: HashMap<(String, i32), OffsetResult>,
        now: Instant,
    ) {
        for id in ids {
            let slot = &mut slots[id];
            // Since asked, the partition may have been reset (its topic
            // recreated: the answer is the new topic's) or stopped.
            if !matches!(slot.status, Status::CheckingLoss { .. }) {
                continue;
            }
            let key = (slot.topic.to_string(), slot.partition);
            let (first, end) = match (earliest.remove(&key), latest.remove(&key)) {
                (Some(Ok(first)), Some(Ok(end))) => (first, end),
                other => {
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, result = ?other, "cannot look up the source's offsets yet; retrying");
                    slot.status = Status::CheckingLoss { asked: false };
                    slot.fetch_backoff.fail(now);
                    meta.want_refresh(Role::Source);
                    continue;
                }
            };
            let at = slot.state.fetch_offset;
            if at < first {
                counters.offsets_lost += (first - at) as u64;
                let error = slot.error(Cause::DeletedBeforeCopied {
                    from: at,
                    to: first - 1,
                });
                self.apply_loss_policy(slot, error, first);
            } else if at > end {
                let error = slot.error(Cause::SourceTruncated {
                    next: at,
                    log_end: end,
                });
                self.apply_loss_policy(slot, error, end);
            } else {
                // In range again: a leader change raced the fetch, or the
                // leader has no record of the epoch sent (it answers out of
                // range then). Fetch again, without it.
                slot.status = Status::Copying;
                slot.epochs.forget();
                slot.fetch_backoff.fail(now);
            }
        }
    }

    /// Stops the partition, or with `on_data_loss = continue` reports the
    /// loss and copies on from `resume_at`.
    fn apply_loss_policy(&self, slot: &mut Slot, error: PartitionError, resume_at: i64) {
        match self.on_data_loss {
            DataLossPolicy::Stop => slot.stop(error),
            DataLossPolicy::Continue => {
                tracing::error!(topic = %slot.topic, partition = slot.partition, "{}; continuing from offset {resume_at} (on_data_loss = continue)", error.problem());
                slot.state.push_skip(resume_at);
                slot.epochs.forget();
                slot.status = Status::Copying;
            }
        }
    }
}

/// The source's leader answered a Fetch with a diverging epoch: the largest
/// leader epoch it has up to the one of our last fetched batch is `epoch`,
/// and ends at `end_offset`, before our fetch position. An unclean leader
/// election truncated its log, and the offsets from where it diverges from
/// the copy now hold other records, or none yet.
///
/// Batches fetched from there on and never sent are dropped: they have no
/// producer sequence yet, so nothing the target knows of our sequences
/// changes. Batches already sent stay, and are resent until they land
/// (dropping one whose outcome is unknown could leave a gap in the
/// sequences, or make the next batch a "duplicate" of it): they are part of
/// the range reported as copied and gone, counted, and handled by the
/// `on_data_loss` policy. With `continue`, copying starts again at the
/// divergence point once they have landed and are checkpointed, so the
/// target then holds what the source holds from there on.
pub(super) fn source_diverged(
    slot: &mut Slot,
    policy: DataLossPolicy,
    counters: &mut Counters,
    epoch: i32,
    end_offset: i64,
) {
    let from = slot.epochs.divergence(epoch, end_offset);
    if from >= slot.state.fetch_offset {
        // Nothing fetched differs: the leader could not use the epoch sent.
        tracing::warn!(topic = %slot.topic, partition = slot.partition, epoch, end_offset, "source answered a diverging epoch past the fetch position; fetching again without an epoch");
        slot.epochs.forget();
        return;
    }
    slot.state.drop_unsent();
    let sent_to = slot.state.fetch_offset;
    slot.epochs.rewind(from.min(sent_to));
    if sent_to <= from {
        tracing::info!(topic = %slot.topic, partition = slot.partition, from, "the source's log diverges past what was sent to the target; fetching again from offset {sent_to}");
        return;
    }
    counters.offsets_truncated += (sent_to - from) as u64;
    let error = slot.error(Cause::SourceDiverged {
        from,
        to: sent_to - 1,
        epoch,
    });
    match policy {
        DataLossPolicy::Stop => slot.stop(error),
        DataLossPolicy::Continue => {
            tracing::error!(topic = %slot.topic, partition = slot.partition, "{}; copying on from offset {from} once the batches sent have landed (on_data_loss = continue)", error.problem());
            slot.status = Status::Rewinding { to: from };
        }
    }
}

/// A start offset is known: copying begins there.
fn start_at(slot: &mut Slot, meta: &MetadataView, offset: i64, spec: OffsetSpec) {
    tracing::info!(topic = %slot.topic, partition = slot.partition, offset, ?spec, "starting position");
    slot.state.restart_at(offset);
    // The offset is the topic's the source lists now: after a reset, a new
    // topic, which no stored checkpoint describes.
    if let Some(topic) = meta.source().topics.get(&*slot.topic) {
        if !topic.id.is_nil() && topic.id != slot.source_topic_id {
            slot.source_topic_id = topic.id;
            slot.state.forget_checkpoint();
        }
    }
    slot.epochs.forget();
    slot.status = Status::Copying;
    slot.fetch_backoff.reset();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::checkpoints::{self, CheckpointSchedule};
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::{batch, metadata, slot};
    use uuid::Uuid;

    const OLD: Uuid = Uuid::from_u128(1);
    const NEW: Uuid = Uuid::from_u128(2);

    /// A partition whose Fetch at `at` was out of range, with the source now
    /// holding `first..end`: what the loss check leaves.
    fn checked(policy: DataLossPolicy, at: i64, first: i64, end: i64) -> (Slots, Counters) {
        let mut slots = Slots::default();
        let id = slots.push(slot("t", OLD, 0, at));
        slots[id].status = Status::CheckingLoss { asked: false };
        let mut positions = Positions::new(policy, None);
        let now = Instant::now();
        let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), now);
        assert_eq!(lookups.loss, [id]);
        assert!(
            positions
                .due_lookups(&mut slots, &MetadataView::default(), now)
                .loss
                .is_empty(),
            "asked once"
        );
        let counters = answer_loss_check(&positions, &mut slots, lookups.loss, first, end, now);
        (slots, counters)
    }

    /// Answers the loss check of partition `t`-0 with the source holding
    /// `first..end`; returns the counters it moved.
    fn answer_loss_check(
        positions: &Positions,
        slots: &mut Slots,
        asked: Vec<SlotId>,
        first: i64,
        end: i64,
        now: Instant,
    ) -> Counters {
        let key = ("t".to_owned(), 0);
        let mut counters = Counters::default();
        positions.loss_checked(
            slots,
            &MetadataView::default(),
            &mut counters,
            asked,
            HashMap::from([(key.clone(), Ok(first))]),
            HashMap::from([(key, Ok(end))]),
            now,
        );
        counters
    }

    fn stopped(slots: &Slots) -> String {
        let (_, slot) = slots.iter().next().expect("slot");
        match &slot.status {
            Status::Stopped(error) => error.to_string(),
            other => panic!("not stopped: {other:?}"),
        }
    }

    #[test]
    fn data_deleted_before_it_was_copied_is_reported_with_its_range() {
        let (slots, counters) = checked(DataLossPolicy::Stop, 10, 25, 40);
        assert_eq!(
            stopped(&slots),
            "source offsets 10..24 (15 offsets) of t-0 were deleted by the source before they \
             were copied (retention ran ahead of the mirror); restart with --on-data-loss \
             continue to copy on from offset 25"
        );
        assert_eq!(counters.offsets_lost, 15);

        let (slots, counters) = checked(DataLossPolicy::Continue, 10, 25, 40);
        let (_, slot) = slots.iter().next().expect("slot");
        assert!(slot.status.is_copying());
        assert_eq!(
            slot.state.fetch_offset, 25,
            "copies on from the source's first offset"
        );
        assert_eq!(
            slot.state.committed(),
            25,
            "the lost range is not copied again"
        );
        assert_eq!(counters.offsets_lost, 15, "counted either way");
    }

    #[test]
    fn a_source_that_lost_copied_data_is_reported() {
        let (slots, counters) = checked(DataLossPolicy::Stop, 50, 0, 40);
        assert!(stopped(&slots).starts_with(
            "the mirror's next offset 50 of t-0 is past the source's log end 40: the source lost \
             data that was already copied"
        ));
        assert_eq!(counters.offsets_lost, 0);
        let (slots, _) = checked(DataLossPolicy::Continue, 50, 0, 40);
        let (_, slot) = slots.iter().next().expect("slot");
        assert_eq!(
            slot.state.fetch_offset, 40,
            "copies on from the source's end"
        );
    }

    #[test]
    fn an_offset_back_in_range_is_fetched_again() {
        let (slots, counters) = checked(DataLossPolicy::Stop, 30, 25, 40);
        let (_, slot) = slots.iter().next().expect("slot");
        assert!(slot.status.is_copying());
        assert_eq!(slot.state.fetch_offset, 30);
        assert_eq!(counters.offsets_lost, 0);
    }

    #[test]
    fn a_recreated_source_topic_stops_or_restarts_from_its_start() {
        let renamed = metadata("t", NEW, &[(0, Some(1))]);
        let mut slots = Slots::default();
        slots.push(slot("t", OLD, 0, 500));
        Positions::new(DataLossPolicy::Stop, None).detect_recreated_topics(&mut slots, &renamed);
        assert!(stopped(&slots).contains(&format!(
            "was deleted and recreated since its data was copied (topic id {OLD} is now {NEW})"
        )));

        let mut slots = Slots::default();
        let id2 = slots.push(slot("t", OLD, 0, 500));
        slots[id2].state.push_batch(batch(500, 2));
        Positions::new(DataLossPolicy::Continue, None)
            .detect_recreated_topics(&mut slots, &renamed);
        let restarted = &slots[id2];
        assert_eq!(
            restarted.source_topic_id, OLD,
            "the new id is taken with the new start (see below)"
        );
        assert!(matches!(
            restarted.status,
            Status::Resolving {
                spec: OffsetSpec::Earliest,
                asked: false
            }
        ));
        assert!(
            restarted.state.is_empty(),
            "the old topic's unsent batches are dropped"
        );

        // A nil id (an old broker) or the same id changes nothing.
        let mut slots = Slots::default();
        slots.push(slot("t", OLD, 0, 500));
        let positions = Positions::new(DataLossPolicy::Stop, None);
        positions.detect_recreated_topics(&mut slots, &metadata("t", Uuid::nil(), &[]));
        positions.detect_recreated_topics(&mut slots, &metadata("t", OLD, &[]));
        assert!(slots.all().all(|s| s.status.is_copying()));
    }

    /// The sequence the code allows: the source topic is recreated while
    /// batches of the old one are acknowledged but not yet checkpointed, or
    /// still in flight. The reset waits for them to be checkpointed, so they
    /// must be (under the old topic's id); then the new topic is copied from
    /// its start, and its first checkpoint is written even where its offset
    /// equals the old topic's.
    #[test]
    fn a_topic_recreated_with_old_batches_unsettled_is_copied_once_they_settle() {
        let mut slots = Slots::default();
        let id = slots.push(slot("t", OLD, 0, 500));
        let state = &mut slots[id].state;
        state.push_batch(batch(500, 2));
        let acked = state
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        state.acked(acked.entry, acked.batch.base_offset());
        state.push_batch(batch(502, 2));
        let in_flight = state
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("second");
        state.push_batch(batch(504, 2));

        let mut positions = Positions::new(DataLossPolicy::Continue, None);
        let renamed = metadata("t", NEW, &[(0, Some(1))]);
        positions.detect_recreated_topics(&mut slots, &renamed);
        let now = Instant::now();
        assert!(positions
            .due_lookups(&mut slots, &MetadataView::default(), now)
            .resolve
            .is_empty());
        slots[id]
            .state
            .acked(in_flight.entry, in_flight.batch.base_offset());

        let schedule = CheckpointSchedule::new(Duration::ZERO, None, now);
        let write = schedule.dirty(&slots);
        let written: Vec<(i64, Uuid)> = write
            .entries
            .iter()
            .map(|(_, _, c)| (c.next_offset, c.topic_id))
            .collect();
        assert_eq!(written, [(504, OLD)], "the old topic's copy, under its id");
        checkpoints::stored(&mut slots, write.written);

        let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), now);
        assert_eq!(lookups.resolve.get(&OffsetSpec::Earliest), Some(&vec![id]));
        let mut meta = MetadataView::default();
        meta.set(Role::Source, renamed);
        let answer = HashMap::from([(("t".to_owned(), 0), Ok(0))]);
        positions.resolved(&mut slots, &meta, vec![id], answer, now);
        let slot = &mut slots[id];
        assert!(slot.status.is_copying());
        assert_eq!(slot.source_topic_id, NEW);
        assert_eq!(slot.state.fetch_offset, 0);

        // The new topic holds exactly as many offsets as the old copy had.
        slot.state.push_batch(batch(0, 504));
        let sent = slot
            .state
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("new data");
        slot.state.acked(sent.entry, sent.batch.base_offset());
        let write = schedule.dirty(&slots);
        let written: Vec<(i64, Uuid)> = write
            .entries
            .iter()
            .map(|(_, _, c)| (c.next_offset, c.topic_id))
            .collect();
        assert_eq!(written, [(504, NEW)], "the new topic's first checkpoint");
    }

    /// A loss check sent before the topic was seen recreated answers for the
    /// new topic: it must not move or stop the partition, which is resolving
    /// its start in the new topic.
    #[test]
    fn a_loss_check_answered_after_a_reset_is_ignored() {
        for policy in [DataLossPolicy::Stop, DataLossPolicy::Continue] {
            let mut slots = Slots::default();
            let id = slots.push(slot("t", OLD, 0, 500));
            slots[id].status = Status::CheckingLoss { asked: false };
            let mut positions = Positions::new(policy, None);
            let now = Instant::now();
            let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), now);
            assert_eq!(lookups.loss, [id]);
            let renamed = metadata("t", NEW, &[(0, Some(1))]);
            positions.detect_recreated_topics(&mut slots, &renamed);
            answer_loss_check(&positions, &mut slots, lookups.loss, 0, 50, now);
            let slot = &slots[id];
            assert_eq!(slot.state.fetch_offset, 500, "{policy:?}: not moved");
            match (policy, &slot.status) {
                (DataLossPolicy::Stop, Status::Stopped(e)) => {
                    assert!(matches!(e.cause, Cause::TopicRecreated { .. }), "{e}")
                }
                (DataLossPolicy::Continue, Status::Resolving { .. }) => {}
                (_, other) => panic!("{policy:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_start_position_is_looked_up_once_then_copying_begins_there() {
        let mut slots = Slots::default();
        let id = slots.push(slot("t", OLD, 0, 0));
        slots[id].status = Status::Resolving {
            spec: OffsetSpec::Latest,
            asked: false,
        };
        let mut positions = Positions::new(DataLossPolicy::Stop, None);
        let meta = MetadataView::default();
        let now = Instant::now();
        let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), now);
        assert_eq!(lookups.resolve[&OffsetSpec::Latest], [id]);
        // Not answered: retried after a backoff and a metadata refresh.
        positions.resolved(&mut slots, &meta, vec![id], HashMap::new(), now);
        assert!(positions
            .due_lookups(&mut slots, &MetadataView::default(), now)
            .resolve
            .is_empty());
        let later = now + Duration::from_secs(10);
        let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), later);
        assert_eq!(lookups.resolve[&OffsetSpec::Latest], [id]);
        let answer = HashMap::from([(("t".to_owned(), 0), Ok(1234))]);
        positions.resolved(&mut slots, &meta, vec![id], answer, later);
        assert!(slots[id].status.is_copying());
        assert_eq!(slots[id].state.fetch_offset, 1234);
    }

    /// Start offsets start-up looked up start a partition at once, by the
    /// same spec and while fresh; each is used once.
    #[test]
    fn a_start_offset_looked_up_at_start_up_is_used_once_while_fresh() {
        let mut slots = Slots::default();
        let ids: Vec<_> = (0..3).map(|p| slots.push(slot("t", OLD, p, 0))).collect();
        for &id in &ids {
            slots[id].status = Status::Resolving {
                spec: OffsetSpec::Earliest,
                asked: false,
            };
        }
        slots[ids[2]].status = Status::Resolving {
            spec: OffsetSpec::Latest,
            asked: false,
        };
        let now = Instant::now();
        let looked_up = HashMap::from([(("t".to_owned(), 0), 40), (("t".to_owned(), 2), 90)]);
        let start_offsets = StartOffsets::new(OffsetSpec::Earliest, looked_up, now);
        let mut positions = Positions::new(DataLossPolicy::Stop, Some(start_offsets));
        let meta = MetadataView::default();
        let lookups = positions.due_lookups(&mut slots, &meta, now);
        assert!(slots[ids[0]].status.is_copying());
        assert_eq!(slots[ids[0]].state.fetch_offset, 40);
        // Not looked up at start-up, or by another spec: asked now.
        assert_eq!(lookups.resolve[&OffsetSpec::Earliest], [ids[1]]);
        assert_eq!(lookups.resolve[&OffsetSpec::Latest], [ids[2]]);

        // Reset to its start again: the start-up answer is spent.
        slots[ids[0]].status = Status::Resolving {
            spec: OffsetSpec::Earliest,
            asked: false,
        };
        let lookups = positions.due_lookups(&mut slots, &meta, now);
        assert_eq!(lookups.resolve[&OffsetSpec::Earliest], [ids[0]]);
    }

    #[test]
    fn start_offsets_from_start_up_go_stale() {
        let mut slots = Slots::default();
        let id = slots.push(slot("t", OLD, 0, 0));
        slots[id].status = Status::Resolving {
            spec: OffsetSpec::Earliest,
            asked: false,
        };
        let then = Instant::now();
        let looked_up = HashMap::from([(("t".to_owned(), 0), 40)]);
        let start_offsets = StartOffsets::new(OffsetSpec::Earliest, looked_up, then);
        let mut positions = Positions::new(DataLossPolicy::Stop, Some(start_offsets));
        let later = then + START_OFFSETS_FRESH_FOR + Duration::from_millis(1);
        let lookups = positions.due_lookups(&mut slots, &MetadataView::default(), later);
        assert_eq!(lookups.resolve[&OffsetSpec::Earliest], [id]);
    }
}
