//! Exactly-once mode's transactions: what the open transaction holds, when
//! it is committed, and what may be written meanwhile.
//!
//! A transaction runs so: a partition is added (AddPartitionsToTxn) before
//! its first batch in it, the checkpoint topic's partition with the first
//! ones; batches are produced as in idempotent mode (pipelined, sequences
//! going on across transactions under one epoch), but up to
//! `transaction_max_in_flight_batches` in flight per partition rather than
//! five: a batch whose answer was lost is not resent, the transaction fails
//! (`partition.rs`). Once `transaction_interval_ms` is up, or the flow drains, or it
//! has caught up with the source (nothing left to send: committing then
//! shows the data at once), no new batch is sent; the
//! requests in flight are answered (batches of unknown fate resent until
//! the target says where they are, in a window of five or fewer); then the checkpoints of the acknowledged
//! prefix go into the transaction and EndTxn commits it. Only then do the
//! checkpoints count as stored, so all a
//! crash leaves behind is uncommitted, invisible to read_committed readers,
//! and copied again from the last committed checkpoints.
//!
//! A failure of the transaction itself (an AddPartitionsToTxn or commit that
//! cannot succeed, a Produce refusal of our epoch, a lost answer in a window
//! deeper than five) goes through the producer
//! renewal (`producer.rs`): InitProducerId bumps our epoch, which aborts the
//! open transaction, and every partition goes back to its committed
//! checkpoint. When the target answers the renewal with PRODUCER_FENCED,
//! another instance of the same name has taken our transactional id: the
//! flow stops without writing anything more.
//!
//! While instances share the mirror's partitions, each writes under the
//! transactional id of the *writer slot* the group gave it
//! (`kafka-mirror.<name>.<slot>`, see `crate::assignment`); taking a slot
//! (InitProducerId on its id) fences whoever held it before and aborts what
//! that one left open. Given another slot, an instance first aborts what is
//! open under its old one ([`WriterSlot`]). Fenced on its slot while
//! sharing, it gives its partitions up and joins again; not sharing
//! (`instances.share = false`, one id for all instances), it stops.
//!
//! [`TransactionStage`] decides; the engine sends the requests
//! (`crate::cluster::TransactionCoordinator`) and reports their outcomes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::Slots;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, TransactionStamp};
use crate::cluster::{TransactionCoordinator, TransactionError};
use crate::config::Flow;

/// A target partition, by topic name.
pub(super) type TargetPartition = (Arc<str>, i32);

/// The transactional id of a flow's exactly-once writes: one per mirror
/// name and flow and writer slot (`None` without sharing: one for all
/// instances), so that a new holder fences the one before.
pub(super) fn transactional_id(flow: &Flow, slot: Option<i32>) -> String {
    match slot {
        Some(slot) => format!("kafka-mirror.{}.{slot}", flow.checkpoint_name),
        None => format!("kafka-mirror.{}", flow.checkpoint_name),
    }
}

/// Why the open transaction failed; it is aborted by the renewal that follows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransactionFailure {
    /// The target did not add partitions to it.
    #[error("adding partitions to the transaction failed: {0}")]
    AddPartitions(TransactionError),
    /// Its checkpoints could not be written.
    #[error("writing the transaction's checkpoints failed: {0}")]
    Checkpoints(CheckpointError),
    /// EndTxn failed.
    #[error("committing the transaction failed: {0}")]
    Commit(TransactionError),
    /// A batch's answer was lost (a timeout, a dropped connection) with more
    /// of its partition's batches in flight than the target remembers to
    /// recognise a resend (`transaction_max_in_flight_batches` above 5):
    /// only aborting makes sure nothing lands twice.
    #[error(
        "the answer to a batch of {topic} partition {partition} was lost with more than 5 of \
         its batches in flight; the transaction is aborted rather than the batch resent"
    )]
    AnswerLost { topic: Arc<str>, partition: i32 },
    /// This instance's lease on its partitions ended before the request
    /// went out: they may be another instance's by now.
    #[error(
        "this instance's lease on its partitions ended before the transaction's request went out"
    )]
    LeaseEnded,
}

/// Writes `entries` into the open transaction, from `sequence` on the
/// checkpoint partition, and commits it. Returns the checkpoint
/// partition's next sequence.
pub(super) async fn commit(
    store: &CheckpointStore,
    coordinator: &TransactionCoordinator,
    (producer_id, epoch): (i64, i16),
    entries: &[(String, i32, Checkpoint)],
    sequence: i32,
) -> Result<i32, TransactionFailure> {
    let mut next_sequence = sequence;
    if !entries.is_empty() {
        let stamp = TransactionStamp {
            transactional_id: coordinator.transactional_id(),
            producer_id,
            epoch,
            sequence,
        };
        let (written, next) = store.write_in_transaction(entries, stamp).await;
        written.result.map_err(TransactionFailure::Checkpoints)?;
        next_sequence = next;
    }
    coordinator
        .end((producer_id, epoch), true)
        .await
        .map_err(TransactionFailure::Commit)?;
    Ok(next_sequence)
}

/// Exactly-once while sharing: the writer slot whose transactional id this
/// instance writes under, and the one the group gave it last; they differ
/// while the switch (a producer renewal) is due or under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WriterSlot {
    held: Option<i32>,
    given: Option<i32>,
}

impl WriterSlot {
    /// The slot of a new assignment. Returns whether it is not the one
    /// held: a switch is due.
    pub(super) fn given(&mut self, slot: Option<i32>) -> bool {
        self.given = slot;
        self.switch_to().is_some()
    }

    /// The slot to switch to, if the group gave one not held.
    pub(super) fn switch_to(&self) -> Option<i32> {
        self.given.filter(|&slot| self.held != Some(slot))
    }

    /// Whether the group gave a slot: without one, no transactional id may
    /// be taken.
    pub(super) fn known(&self) -> bool {
        self.given.is_some()
    }

    /// The slot's transactional id is this instance's now.
    pub(super) fn switched(&mut self, slot: i32) {
        self.held = Some(slot);
    }

    /// Another instance took the slot held: neither is this one's now.
    pub(super) fn fenced(&mut self) {
        *self = WriterSlot::default();
    }
}

/// Where the open transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Batches are sent into it.
    Open,
    /// Due for commit: only what may already be in it is sent again, until
    /// nothing is in flight or of unknown fate.
    Closing,
    /// The checkpoints and EndTxn are in flight.
    Committing,
}

/// Round trips to the target a transaction stays open at least under load.
/// A commit stops sending for about three (the requests in flight answered,
/// the checkpoints written, EndTxn), so across a long link a transaction of
/// only `transaction_interval_ms` would spend most of its time committing
/// and never fill a partition's window.
const OPEN_ROUND_TRIPS: u32 = 10;

/// The open transaction's state.
#[derive(Debug)]
pub(super) struct TransactionStage {
    interval: Duration,
    /// The checkpoint topic's partition, in every transaction.
    checkpoints: TargetPartition,
    phase: Phase,
    /// Target partitions added to the open transaction.
    added: HashSet<TargetPartition>,
    /// An AddPartitionsToTxn in flight.
    adding: bool,
    /// When the transaction's first partitions were added.
    opened: Option<Instant>,
    /// The next producer sequence on the checkpoint topic's partition.
    checkpoint_sequence: i32,
    /// Counts the transactions ended (committed or aborted): names the one
    /// open now.
    number: u64,
}

impl TransactionStage {
    /// No transaction open yet; `checkpoint_topic` holds the flow's checkpoints.
    pub(super) fn new(interval: Duration, checkpoint_topic: &str) -> Self {
        TransactionStage {
            interval,
            checkpoints: (checkpoint_topic.into(), 0),
            phase: Phase::Open,
            added: HashSet::new(),
            adding: false,
            opened: None,
            checkpoint_sequence: 0,
            number: 0,
        }
    }

    /// The partitions to add to the transaction now: those of partitions
    /// with a batch to send that it does not hold yet (with the checkpoint
    /// topic's, when the transaction is new). Marks the request in flight.
    pub(super) fn partitions_to_add(&mut self, slots: &Slots) -> Option<Vec<TargetPartition>> {
        if self.phase != Phase::Open || self.adding {
            return None;
        }
        let mut wanted: Vec<TargetPartition> = slots
            .all()
            .filter(|slot| slot.may_produce() && slot.state.has_unsent())
            .map(|slot| (slot.target_topic.clone(), slot.partition))
            .filter(|partition| !self.added.contains(partition))
            .collect();
        if wanted.is_empty() {
            return None;
        }
        if !self.added.contains(&self.checkpoints) {
            wanted.push(self.checkpoints.clone());
        }
        self.adding = true;
        Some(wanted)
    }

    /// The target added `partitions` to the transaction (`ok`), or refused;
    /// a refusal is the producer renewal's to mend.
    pub(super) fn added(&mut self, partitions: Vec<TargetPartition>, ok: bool, now: Instant) {
        self.adding = false;
        if ok {
            self.added.extend(partitions);
            self.opened.get_or_insert(now);
        }
    }

    /// Whether a batch of this target partition may be sent now: it is in
    /// the transaction, and the commit has not begun.
    pub(super) fn may_send(&self, partition: &TargetPartition) -> bool {
        self.phase != Phase::Committing && self.added.contains(partition)
    }

    /// Whether only batches that may already be in the transaction are sent:
    /// it is due for commit.
    pub(super) fn closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// Whether the transaction is due for commit: open for the interval (and
    /// at least [`OPEN_ROUND_TRIPS`] of the target's `round_trip`), or
    /// `now_wanted` (the flow drains, or it is caught up). If so, no new
    /// batch is sent into it from now on.
    pub(super) fn close_if_due(
        &mut self,
        now_wanted: bool,
        round_trip: Option<Duration>,
        now: Instant,
    ) {
        let interval = round_trip.map_or(self.interval, |round_trip| {
            self.interval.max(round_trip * OPEN_ROUND_TRIPS)
        });
        let due = self
            .opened
            .is_some_and(|opened| now_wanted || now.duration_since(opened) >= interval);
        if self.phase == Phase::Open && due {
            self.phase = Phase::Closing;
        }
    }

    /// Whether the commit may start: the transaction is closing, and nothing
    /// of it is in flight or of unknown fate (`settled`). Returns the
    /// producer sequence its checkpoints start at, and marks the commit in
    /// flight.
    pub(super) fn start_commit(&mut self, settled: bool) -> Option<i32> {
        if self.phase != Phase::Closing || self.adding || !settled {
            return None;
        }
        self.phase = Phase::Committing;
        Some(self.checkpoint_sequence)
    }

    /// The commit's outcome: committed, with the checkpoints' next sequence;
    /// or failed, which the producer renewal mends (an abort).
    pub(super) fn commit_answered(&mut self, committed: Option<i32>) {
        if let Some(next_sequence) = committed {
            self.checkpoint_sequence = next_sequence;
        }
        self.reset();
    }

    /// The producer renewal bumped our epoch: whatever was open is aborted,
    /// and sequences start again from 0.
    pub(super) fn renewed(&mut self) {
        self.checkpoint_sequence = 0;
        self.reset();
    }

    /// Whether an AddPartitionsToTxn or the commit is in flight: a renewal
    /// waits for them.
    pub(super) fn request_in_flight(&self) -> bool {
        self.adding || self.phase == Phase::Committing
    }

    /// Whether no transaction is open.
    pub(super) fn is_idle(&self) -> bool {
        self.added.is_empty() && !self.request_in_flight()
    }

    /// Which transaction is open: a new number after every commit or abort.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    fn reset(&mut self) {
        self.phase = Phase::Open;
        self.added.clear();
        self.opened = None;
        self.number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::slots::SlotId;
    use crate::pipeline::testing::{batch, slot};
    use uuid::Uuid;

    const INTERVAL: Duration = Duration::from_millis(100);

    fn table() -> (Slots, [SlotId; 2]) {
        let mut slots = Slots::default();
        let ids = [0, 1].map(|p| slots.push(slot("t", Uuid::from_u128(5), p, 0)));
        (slots, ids)
    }

    fn key(partition: i32) -> TargetPartition {
        ("copy.t".into(), partition)
    }

    #[test]
    fn partitions_join_with_their_first_batch_and_the_checkpoint_topic_once() {
        let (mut slots, [zero, one]) = table();
        let mut txn = TransactionStage::new(INTERVAL, "checkpoints");
        let now = Instant::now();
        assert_eq!(txn.partitions_to_add(&slots), None, "nothing to send");

        slots[zero].state.push_batch(batch(0, 3));
        let first = txn.partitions_to_add(&slots).expect("partition 0");
        assert_eq!(first, vec![key(0), ("checkpoints".into(), 0)]);
        slots[one].state.push_batch(batch(0, 2));
        assert_eq!(txn.partitions_to_add(&slots), None, "one request at a time");
        assert!(!txn.may_send(&key(0)), "not added until the target says so");
        txn.added(first, true, now);
        assert!(txn.may_send(&key(0)));

        assert_eq!(txn.partitions_to_add(&slots), Some(vec![key(1)]));
        txn.added(vec![key(1)], false, now);
        assert!(!txn.may_send(&key(1)), "refused: not in the transaction");
    }

    #[test]
    fn a_commit_waits_for_the_interval_then_for_every_batch_to_settle() {
        let (mut slots, [zero, _]) = table();
        let mut txn = TransactionStage::new(INTERVAL, "checkpoints");
        let now = Instant::now();
        slots[zero].state.push_batch(batch(0, 3));
        let partitions = txn.partitions_to_add(&slots).expect("add");
        txn.added(partitions, true, now);
        let sent = slots[zero]
            .state
            .next_to_send(Writer::idempotent(7, 0), false);
        assert!(sent.is_some());

        txn.close_if_due(false, None, now + INTERVAL / 2);
        assert!(!txn.closing(), "not yet due");
        // Across a long link it stays open ten round trips.
        let far = Some(INTERVAL);
        txn.close_if_due(false, far, now + INTERVAL * 9);
        assert!(!txn.closing(), "not yet due so far away");
        txn.close_if_due(false, far, now + INTERVAL * 10);
        assert!(txn.closing());
        txn.close_if_due(false, None, now + INTERVAL);
        assert!(txn.closing());
        assert!(txn.may_send(&key(0)), "resends may still go in");
        assert_eq!(txn.start_commit(false), None, "a batch is in flight");
        assert_eq!(txn.start_commit(true), Some(0));
        assert!(!txn.may_send(&key(0)), "nothing is sent while committing");
        assert!(txn.request_in_flight());

        txn.commit_answered(Some(1));
        assert!(txn.is_idle());
        slots[zero].state.push_batch(batch(3, 3));
        let next = txn.partitions_to_add(&slots).expect("a new transaction");
        assert!(next.contains(&("checkpoints".into(), 0)));
        txn.added(next, true, now);
        txn.close_if_due(true, None, now);
        assert_eq!(
            txn.start_commit(true),
            Some(1),
            "the checkpoints' sequence goes on"
        );
    }

    #[test]
    fn a_writer_slot_switches_once_given_and_is_dropped_when_fenced() {
        let mut slot = WriterSlot::default();
        assert!(!slot.known(), "no transactional id before the group says");
        assert!(slot.given(Some(0)), "the first slot");
        assert_eq!(slot.switch_to(), Some(0));
        slot.switched(0);
        assert!(!slot.given(Some(0)), "kept");
        assert!(slot.given(Some(2)), "another one");
        slot.switched(2);
        assert_eq!(slot.switch_to(), None);
        slot.fenced();
        assert!(!slot.known());
        assert!(slot.given(Some(2)), "taken again, even the same number");
    }

    #[test]
    fn a_renewal_aborts_the_transaction_and_restarts_sequences() {
        let (mut slots, [zero, _]) = table();
        let mut txn = TransactionStage::new(INTERVAL, "checkpoints");
        let now = Instant::now();
        slots[zero].state.push_batch(batch(0, 3));
        let partitions = txn.partitions_to_add(&slots).expect("add");
        txn.added(partitions, true, now);
        txn.close_if_due(true, None, now);
        txn.start_commit(true);
        txn.commit_answered(Some(4));
        let partitions = txn.partitions_to_add(&slots).expect("add");
        txn.added(partitions, true, now);
        txn.renewed();
        assert!(txn.is_idle());
        assert!(
            !txn.may_send(&key(0)),
            "added again in the next transaction"
        );
        let partitions = txn.partitions_to_add(&slots).expect("add");
        txn.added(partitions, true, now);
        txn.close_if_due(true, None, now);
        assert_eq!(txn.start_commit(true), Some(0));
    }
}
