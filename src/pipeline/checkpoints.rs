//! When checkpoints are written, and which: every `checkpoints.interval_ms`,
//! sooner when memory runs short (a checkpoint releases what it covers) or
//! the flow drains, and only the partitions whose acknowledged offset moved
//! since their last stored checkpoint. One write in flight at a time.
//!
//! [`CheckpointSchedule`] decides and returns the entries to write; the
//! engine writes them (`crate::checkpoint`) and reports the outcome.

use std::time::{Duration, Instant};

use super::slots::{SlotOffset, Slots, Status};
use crate::checkpoint::{Checkpoint, CheckpointError};

/// Checkpoints to store, and the `(slot, offset)` each stands for.
#[derive(Debug, Default)]
pub(super) struct CheckpointWrite {
    pub(super) entries: Vec<(String, i32, Checkpoint)>,
    pub(super) written: Vec<SlotOffset>,
}

/// The checkpoint writer's own state.
#[derive(Debug)]
pub(super) struct CheckpointSchedule {
    interval: Duration,
    /// The source cluster's id, stored with each checkpoint.
    source_cluster: Option<String>,
    in_flight: bool,
    last_write: Instant,
}

impl CheckpointSchedule {
    pub(super) fn new(interval: Duration, source_cluster: Option<String>, now: Instant) -> Self {
        CheckpointSchedule {
            interval,
            source_cluster,
            in_flight: false,
            last_write: now,
        }
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
        if self.in_flight || (now.duration_since(self.last_write) < self.interval && !urgent) {
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
            if matches!(slot.status, Status::Resolving { .. }) {
                continue;
            }
            let committed = slot.state.committed();
            if committed == slot.state.checkpointed {
                continue;
            }
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
                },
            ));
            write.written.push((id, committed));
        }
        write
    }

    /// A write answered: what it stored releases the batches it covers; a
    /// failed one is tried again at the next occasion.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        written: Vec<SlotOffset>,
        result: Result<(), CheckpointError>,
    ) {
        self.in_flight = false;
        match result {
            Ok(()) => stored(slots, written),
            Err(e) => tracing::warn!(error = %e, "checkpoint write failed; retrying"),
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
    use crate::pipeline::slots::SlotId;
    use crate::pipeline::testing::{batch, slot};
    use uuid::Uuid;

    /// Partition 0 copied a batch the target acknowledged, 1 did nothing,
    /// 2 acknowledged one but is resolving a reset.
    fn table() -> (Slots, [SlotId; 3]) {
        let mut slots = Slots::default();
        let ids = [0, 1, 2].map(|p| slots.push(slot("t", Uuid::from_u128(5), p, 100)));
        for &id in &[ids[0], ids[2]] {
            slots[id].state.push_batch(batch(100, 3));
            slots[id].epochs.fetched(4, 100);
            let sent = slots[id].state.next_to_send(7, 0, false).expect("batch");
            slots[id].state.acked(sent.entry);
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
        assert_eq!(write.written, [(ids[0], 103)]);
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
        assert!(
            schedule.due(&slots, true, now).is_none(),
            "one write at a time"
        );

        schedule.answered(&mut slots, write.written, Ok(()));
        assert_eq!(slots[ids[0]].state.checkpointed, 103);
        assert_eq!(slots[ids[0]].state.held_bytes(), 0, "the batch is released");
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
        let write = schedule.due(&slots, false, later).expect("due");
        let failed = Err(CheckpointError::NotReady {
            topic: "checkpoints".into(),
            reason: "no leader yet".into(),
        });
        schedule.answered(&mut slots, write.written, failed);
        assert_eq!(slots[ids[0]].state.checkpointed, 100);
        let again = schedule.due(&slots, true, later).expect("again");
        assert_eq!(again.written, [(ids[0], 103)]);
    }
}
