//! When checkpoints are written, and which: every `checkpoints.interval_ms`,
//! sooner when memory runs short (a checkpoint releases what it covers) or
//! the flow drains, and only the partitions whose acknowledged offset moved
//! since their last stored checkpoint. One write in flight at a time.
//!
//! [`CheckpointSchedule`] decides and returns the entries to write; the
//! engine writes them (`crate::checkpoint`) and reports the outcome. A write
//! that failed for a reason that may pass (a leader moving) is tried again
//! after a backoff; any other failure ends the flow's run, since its memory
//! budget is only given back by stored checkpoints.

use std::time::{Duration, Instant};

use super::slots::{SlotOffset, Slots};
use crate::backoff::Backoff;
use crate::checkpoint::{Checkpoint, CheckpointError};

/// Checkpoints to store, and the `(slot, offset)` each stands for.
#[derive(Debug, Default)]
pub(super) struct CheckpointWrite {
    pub(super) entries: Vec<(String, i32, Checkpoint)>,
    pub(super) written: Vec<SlotOffset>,
}

impl CheckpointWrite {
    /// What the first `count` entries, the part of the write that was
    /// stored, stand for.
    pub(super) fn stored_part(mut self, count: usize) -> Vec<SlotOffset> {
        self.written.truncate(count);
        self.written
    }
}

/// The checkpoint writer's own state.
#[derive(Debug)]
pub(super) struct CheckpointSchedule {
    interval: Duration,
    /// The source cluster's id, stored with each checkpoint.
    source_cluster: Option<String>,
    in_flight: bool,
    last_write: Instant,
    /// Spaces out the tries of a write that keeps failing.
    backoff: Backoff,
    /// A failure that trying again cannot mend: no more writes.
    failure: Option<CheckpointError>,
}

impl CheckpointSchedule {
    pub(super) fn new(interval: Duration, source_cluster: Option<String>, now: Instant) -> Self {
        CheckpointSchedule {
            interval,
            source_cluster,
            in_flight: false,
            last_write: now,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            failure: None,
        }
    }

    /// The failure that stopped the writes, if one did.
    pub(super) fn failure(&self) -> Option<&CheckpointError> {
        self.failure.as_ref()
    }

    /// Whether a write is in flight.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The write to start now, if one is due and anything moved; marked in flight.
    /// `urgent`: memory is short or the flow drains, so the interval is not waited.
    pub(super) fn due(
        &mut self,
        slots: &Slots,
        urgent: bool,
        now: Instant,
    ) -> Option<CheckpointWrite> {
        if self.in_flight
            || self.failure.is_some()
            || self.backoff.waiting(now)
            || (now.duration_since(self.last_write) < self.interval && !urgent)
        {
            return None;
        }
        let write = self.dirty(slots);
        if write.entries.is_empty() {
            return None;
        }
        self.in_flight = true;
        self.last_write = now;
        Some(write)
    }

    /// Checkpoints that moved since the last stored ones.
    pub(super) fn dirty(&self, slots: &Slots) -> CheckpointWrite {
        let mut write = CheckpointWrite::default();
        for (id, slot) in slots.iter() {
            // A partition resolving its start after a reset still has the old
            // topic's batches to settle: they are checkpointed under its id,
            // or the reset would wait for them for ever.
            let committed = slot.state.committed();
            if committed == slot.state.checkpointed {
                continue;
            }
            let offset_map = slot.state.offset_map();
            debug_assert_eq!(
                offset_map.end(),
                committed,
                "{}-{}",
                slot.topic,
                slot.partition
            );
            // Keyed by the target topic: a changed naming policy writes new
            // target topics, which must be copied from the start.
            write.entries.push((
                slot.target_topic.to_string(),
                slot.partition,
                Checkpoint {
                    next_offset: committed,
                    topic_id: slot.source_topic_id,
                    source_cluster: self.source_cluster.clone(),
                    leader_epoch: slot.epochs.before(committed),
                    offset_map: Some(offset_map.stored()),
                },
            ));
            write.written.push((id, committed));
        }
        write
    }

    /// A write answered: what it stored (`stored`, the leading part of the
    /// write) releases the batches it covers. A failed rest is tried again
    /// after the backoff if that may succeed; otherwise writes stop and
    /// [`failure`](Self::failure) says why.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        stored_part: Vec<SlotOffset>,
        result: Result<(), CheckpointError>,
        now: Instant,
    ) {
        self.in_flight = false;
        stored(slots, stored_part);
        match result {
            Ok(()) => self.backoff.reset(),
            Err(e) if e.is_retriable() => {
                self.backoff.fail(now);
                tracing::warn!(error = %e, "checkpoint write failed; retrying");
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoints cannot be stored; stopping");
                self.failure = Some(e);
            }
        }
    }
}

/// Checkpoints are stored: each partition releases the batches they cover.
pub(super) fn stored(slots: &mut Slots, written: Vec<SlotOffset>) {
    for (id, offset) in written {
        slots[id].state.checkpoint_stored(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::OffsetSpec;
    use crate::offset_map::{OffsetMap, Translation};
    use crate::pipeline::partition::Writer;
    use crate::pipeline::slots::{SlotId, Status};
    use crate::pipeline::testing::{batch, slot};
    use uuid::Uuid;

    /// Partition 0 copied a batch the target acknowledged (at its offset 0),
    /// 1 did nothing, 2 acknowledged one and is resolving a reset (its topic
    /// recreated): the reset waits for that batch to be checkpointed, so it
    /// is written.
    fn table() -> (Slots, [SlotId; 3]) {
        let mut slots = Slots::default();
        let ids = [0, 1, 2].map(|p| slots.push(slot("t", Uuid::from_u128(5), p, 100)));
        for &id in &[ids[0], ids[2]] {
            slots[id].state.push_batch(batch(100, 3));
            slots[id].epochs.fetched(4, 100);
            let sent = slots[id]
                .state
                .next_to_send(Writer::idempotent(7, 0), false)
                .expect("batch");
            slots[id].state.acked(sent.entry, 0);
        }
        slots[ids[2]].status = Status::Resolving {
            spec: OffsetSpec::Earliest,
            asked: false,
        };
        (slots, ids)
    }

    #[test]
    fn only_partitions_that_moved_are_written() {
        let (mut slots, ids) = table();
        let now = Instant::now();
        let mut schedule = CheckpointSchedule::new(Duration::from_secs(5), Some("src".into()), now);
        assert!(
            schedule.due(&slots, false, now).is_none(),
            "the interval has not passed"
        );
        let write = schedule.due(&slots, true, now).expect("memory is short");
        assert_eq!(write.written, [(ids[0], 103), (ids[2], 103)]);
        let (topic, partition, checkpoint) = &write.entries[0];
        assert_eq!(
            (topic.as_str(), *partition),
            ("copy.t", 0),
            "keyed by the target topic"
        );
        assert_eq!(checkpoint.next_offset, 103);
        assert_eq!(checkpoint.source_cluster.as_deref(), Some("src"));
        assert_eq!(
            checkpoint.leader_epoch,
            Some(4),
            "the source epoch of the last batch copied"
        );
        let stored = checkpoint.offset_map.as_ref().expect("the offset map");
        let map = OffsetMap::from_stored(stored, 103).expect("ends at the checkpoint");
        assert_eq!(
            (100..=103).map(|c| map.translate(c)).collect::<Vec<_>>(),
            [0, 1, 2, 3].map(Translation::Exact),
            "where each source offset landed"
        );
        assert!(
            schedule.due(&slots, true, now).is_none(),
            "one write at a time"
        );

        schedule.answered(&mut slots, write.written, Ok(()), now);
        assert_eq!(slots[ids[0]].state.checkpointed, 103);
        assert_eq!(
            slots[ids[0]].state.budgeted_bytes(false),
            0,
            "the batch is released"
        );
        assert!(
            schedule.dirty(&slots).entries.is_empty(),
            "nothing moved since"
        );
    }

    #[test]
    fn a_failed_write_is_tried_again() {
        let (mut slots, ids) = table();
        let now = Instant::now();
        let mut schedule = CheckpointSchedule::new(Duration::from_secs(5), None, now);
        let later = now + Duration::from_secs(5);
        schedule.due(&slots, false, later).expect("due");
        let failed = Err(CheckpointError::NotReady {
            topic: "checkpoints".into(),
            reason: "no leader yet".into(),
        });
        schedule.answered(&mut slots, Vec::new(), failed, later);
        assert_eq!(slots[ids[0]].state.checkpointed, 100);
        assert!(
            schedule.due(&slots, true, later).is_none(),
            "not before the backoff"
        );
        let after = later + Duration::from_millis(100);
        let again = schedule.due(&slots, true, after).expect("again");
        assert_eq!(again.written, [(ids[0], 103), (ids[2], 103)]);
        assert!(schedule.failure().is_none());
    }

    #[test]
    fn a_failure_that_cannot_pass_stops_the_writes() {
        let (mut slots, ids) = table();
        let now = Instant::now();
        let mut schedule = CheckpointSchedule::new(Duration::from_secs(5), None, now);
        schedule.due(&slots, true, now).expect("due");
        let refused = Err(CheckpointError::TooLarge {
            topic: "checkpoints".into(),
            bytes: 2_000_000,
            limit: 1_048_588,
        });
        schedule.answered(&mut slots, Vec::new(), refused, now);
        assert!(schedule.failure().is_some());
        let later = now + Duration::from_secs(60);
        assert!(schedule.due(&slots, true, later).is_none(), "never again");
        assert_eq!(slots[ids[0]].state.checkpointed, 100);
        assert_eq!(
            schedule.dirty(&slots).written,
            [(ids[0], 103), (ids[2], 103)]
        );
    }

    #[test]
    fn what_a_failed_write_stored_is_released() {
        let (mut slots, ids) = table();
        let now = Instant::now();
        let mut schedule = CheckpointSchedule::new(Duration::from_secs(5), None, now);
        let write = schedule.due(&slots, true, now).expect("due");
        let failed = Err(CheckpointError::NotReady {
            topic: "checkpoints".into(),
            reason: "no leader yet".into(),
        });
        // Both entries' batch was stored before the failure.
        schedule.answered(&mut slots, write.written, failed, now);
        assert_eq!(slots[ids[0]].state.checkpointed, 103);
        assert_eq!(
            slots[ids[0]].state.budgeted_bytes(false),
            0,
            "the batch is released"
        );
        assert!(schedule.dirty(&slots).entries.is_empty());
    }
}
