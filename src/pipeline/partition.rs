//! One partition's place in the pipeline: its ordered queue of batches, the
//! producer sequences it has handed out, and how far the target has it.
//!
//! Pure state, no I/O, so every ordering rule is unit-tested here:
//!
//! - batches leave in source order, only from among the first
//!   [`Writer::window`] the target has not acknowledged, failed ones
//!   included, and only one until the target has acknowledged a first batch
//!   of ours (before that the broker takes any sequence, so nothing could
//!   refuse a batch that overtook a failed one). An idempotent writer's
//!   window is [`MAX_IN_FLIGHT`], the broker's idempotence window: a batch
//!   that may have landed is still among the five it remembers when resent.
//!   A transactional writer's may be deeper, because it never resends such
//!   a batch: the broker would answer a resend from further back than five
//!   "out of order", not "duplicate", so [`PartitionState::failed`] asks
//!   for the transaction to fail instead (aborted by an epoch bump, every
//!   partition back at its committed checkpoint:
//!   [`PartitionState::rewind_to_checkpoint`]);
//! - a batch gets its producer sequence when first sent and keeps it on every
//!   retry, so the broker drops a duplicate and refuses a gap;
//! - after a failure the partition waits until every batch sent before the
//!   failure has an answer, then resends the failed ones in order;
//! - a batch whose fate is unknown (a request sent, its answer lost or a
//!   timeout) stays so until the target answers it definitely ("written" or
//!   "duplicate"), whatever later attempts were told: it is resent only with
//!   the producer id, epoch and sequence it was sent with (KIP-360), and
//!   never when the window is deeper than the broker's;
//! - when the target stops taking our producer id (fenced, or its sequence
//!   state for us lost), a new one is used only once no batch may have been
//!   written under the old one without our knowing: [`PartitionState::unresolved`]
//!   says whether one might, and [`PartitionState::new_producer`] restarts the
//!   sequences;
//! - the checkpointable offset is the end of the longest acknowledged prefix,
//!   and a batch's memory is released only once a checkpoint covers it, so
//!   everything a crash could make us send again is inside the memory budget;
//! - the [`OffsetMap`] records where the source offsets of that prefix
//!   landed on the target, fed in source order as the prefix grows (answers
//!   come out of order across pipelined requests), so it always ends at the
//!   checkpointable offset and is stored with the checkpoint.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::batch::{
    increment_sequence, BatchError, OffsetRun, ProducerStamp, RecordBatch, TimestampType,
};
use crate::offset_map::OffsetMap;

/// Kafka keeps the sequence state of the last five batches per producer and
/// partition; more in flight would make a retried duplicate undetectable.
pub(crate) const MAX_IN_FLIGHT: usize = 5;

/// What a failed batch needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// To be sent again, in order, with its sequence.
    Resend,
    /// It may be on the target, and more of our batches may have landed
    /// after it than the broker remembers: a resend could not tell, so the
    /// transaction it is in must fail (and be copied again).
    FailTransaction,
}

/// Where a batch is on its way to the target.
#[derive(Debug)]
enum EntryState {
    /// Fetched, never sent.
    Queued,
    /// Sent in a request not yet answered.
    InFlight { sent_in_round: u64 },
    /// Its request failed: to be sent again, same bytes, same sequence.
    Failed,
    /// On the target (or nothing to send: a skipped control or aborted batch).
    Acked,
}

/// The source offsets of the records an entry carries.
#[derive(Debug)]
enum Carried {
    /// None reach the target: a skipped range, or a refused batch skipped.
    Nothing,
    /// The entry's records, at consecutive source offsets from this one: a
    /// batch forwarded whole, or re-encoded without gaps between its records.
    From(i64),
    /// A re-encoded batch whose records compaction left with gaps between
    /// them: the runs of consecutive source offsets, in order.
    Runs(Box<[OffsetRun]>),
}

/// A source batch, or a skipped range, in source order.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// The source offset after this entry: the checkpoint once it is acknowledged.
    next_offset: i64,
    /// Bytes it holds against the memory budget.
    size: usize,
    records: i32,
    /// Where its records were on the source.
    carried: Carried,
    /// The target offset its first record landed at, once acknowledged;
    /// `None` while unknown (or when the target did not say).
    landed_at: Option<i64>,
    state: EntryState,
    /// The source batch, until the target has it. Only the source bytes are
    /// kept: each send writes a new 61-byte header to go in front of them.
    batch: Option<RecordBatch>,
    /// Our producer sequence, handed out at the first send and kept for retries.
    sequence: Option<i32>,
    /// An attempt may have been appended without our hearing (a timeout, a
    /// lost connection). Only a resend under the same producer id, epoch and
    /// sequence can tell, because the broker then answers "duplicate"; an
    /// answer to a later attempt that refuses it ("not leader", "out of
    /// order") says nothing about the earlier one, so this stays set until
    /// the batch is acknowledged.
    fate_unknown: bool,
}

/// A batch handed to the sender: the source batch as it came, and the new
/// header that goes on the wire in place of its first 61 bytes. How the two
/// are put on the wire is the sender's business.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The entry, to report the outcome against.
    pub(crate) entry: u64,
    /// The source batch, untouched (shares the Fetch response's memory).
    pub(crate) batch: RecordBatch,
    /// Its header as produced: base offset 0, our producer id, epoch and
    /// sequence, the transactional bit cleared, the CRC patched.
    pub(crate) header: Bytes,
}

/// Who the target sees writing a batch: kafka-mirror's producer id and
/// epoch, and whether the batch belongs to its open transaction
/// (exactly-once mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Writer {
    pub(crate) id: i64,
    pub(crate) epoch: i16,
    pub(crate) transactional: bool,
    /// How many of a partition's batches may be in flight, counted from
    /// its first unacknowledged one: [`MAX_IN_FLIGHT`] for an idempotent
    /// writer, which resolves a lost answer by resending within the broker's
    /// duplicate window; a transactional writer's setting
    /// (`transaction_max_in_flight_batches`), since it resolves one by
    /// aborting the transaction.
    pub(crate) window: usize,
}

#[cfg(test)]
impl Writer {
    /// An idempotent producer's writes, outside any transaction.
    pub(crate) const fn idempotent(id: i64, epoch: i16) -> Self {
        Writer {
            id,
            epoch,
            transactional: false,
            window: MAX_IN_FLIGHT,
        }
    }

    /// A transactional producer's writes, `window` batches deep.
    pub(crate) const fn transactional(id: i64, epoch: i16, window: usize) -> Self {
        Writer {
            id,
            epoch,
            transactional: true,
            window,
        }
    }
}

/// The state of one source partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    entries: VecDeque<Entry>,
    next_entry_id: u64,
    /// The next source offset to fetch.
    pub(crate) fetch_offset: i64,
    /// The offset stored in the latest acknowledged checkpoint.
    pub(crate) checkpointed: i64,
    /// Offset the next skipped range or batch starts from when the queue is empty.
    acked_through: i64,
    /// The next producer sequence to hand out.
    next_sequence: i32,
    /// Bumped at every failure; batches sent before it must all be answered
    /// before anything is resent.
    round: u64,
    /// Bytes held by entries (fetched and not yet checkpointed).
    held: usize,
    /// Of those, the bytes of entries the target acknowledged.
    acked_held: usize,
    /// Whether the target acknowledged a batch of ours on this partition. Until
    /// then only one batch is in flight: a broker with no state for our
    /// producer accepts *any* first sequence, so a second batch could land
    /// before a first one that failed, and the first could never follow it.
    established: bool,
    /// Where the acknowledged prefix landed on the target: it ends at
    /// [`committed`](Self::committed).
    offset_map: OffsetMap,
    /// The id of the first entry not in the offset map yet.
    unmapped: u64,
    /// The newest record timestamp of the batches acknowledged so far: how
    /// old the oldest record not yet copied is at most, when none is fetched.
    copied_timestamp: Option<i64>,
    /// How many batches the window of the last send held: deeper than
    /// [`MAX_IN_FLIGHT`], a lost answer fails the transaction.
    window: usize,
    /// Exactly-once: the transaction (its number) in which the target last
    /// acknowledged a batch of ours on this partition. While it is open the
    /// target keeps our producer's state whatever the data's age: Kafka never
    /// expires a producer with a transaction open on the partition.
    acked_in_transaction: Option<u64>,
}

/// An old batch of unknown fate to look for on the target before resending
/// it: the target offset our acknowledged data ends at, where it would be,
/// and the producer sequence it was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LandingCheck {
    pub(crate) entry: u64,
    pub(crate) target_offset: i64,
    pub(crate) sequence: i32,
}

/// What an acknowledgement or failure did to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// Records newly acknowledged.
    pub(crate) records: i64,
    /// Bytes newly acknowledged.
    pub(crate) bytes: usize,
}

impl PartitionState {
    /// A partition that starts copying at `offset`.
    pub(crate) fn new(offset: i64) -> Self {
        PartitionState {
            entries: VecDeque::new(),
            next_entry_id: 0,
            fetch_offset: offset,
            checkpointed: offset,
            acked_through: offset,
            next_sequence: 0,
            round: 0,
            held: 0,
            acked_held: 0,
            established: false,
            offset_map: OffsetMap::starting_at(offset),
            unmapped: 0,
            copied_timestamp: None,
            window: MAX_IN_FLIGHT,
            acked_in_transaction: None,
        }
    }

    /// Restarts copying from another offset (after a reported data loss or reset).
    /// Only valid when nothing is queued or in flight. The offset map starts
    /// again there: the offsets before it are another topic's, or records
    /// the source no longer holds, or were never copied.
    pub(crate) fn restart_at(&mut self, offset: i64) {
        debug_assert!(self.is_empty());
        self.fetch_offset = offset;
        self.acked_through = offset;
        self.offset_map = OffsetMap::starting_at(offset);
    }

    /// Starts the partition at `offset` (its checkpoint's, or a start
    /// position to look up), whose copy so far `map` describes: nothing is
    /// queued, and nothing before `offset` is this run's to send. Entry ids
    /// and the producer sequence go on from where they were, so that an
    /// answer to a batch sent before (the partition was copied here, then
    /// by another instance, and is back) matches nothing, and the target
    /// takes our next batch as following our last.
    pub(crate) fn start_at(&mut self, offset: i64, map: OffsetMap) {
        debug_assert!(self.is_empty() && map.end() == offset);
        self.fetch_offset = offset;
        self.checkpointed = offset;
        self.acked_through = offset;
        self.offset_map = map;
        self.unmapped = self.next_entry_id;
        self.established = false;
    }

    /// Where the source offsets copied so far landed on the target: the
    /// map ends at [`committed`](Self::committed).
    pub(crate) fn offset_map(&self) -> &OffsetMap {
        &self.offset_map
    }

    /// The offset map as far as the last stored checkpoint (exactly-once:
    /// the last commit), without what was acknowledged since.
    pub(crate) fn committed_offset_map(&self) -> OffsetMap {
        let mut map = self.offset_map.clone();
        map.truncate(self.acked_through);
        map
    }

    /// The stored checkpoint is of a topic since deleted and recreated: the
    /// first checkpoint of the new one is written even at the same offset.
    pub(crate) fn forget_checkpoint(&mut self) {
        // Offsets are never negative, so any acknowledged offset differs.
        self.checkpointed = -1;
    }

    /// Bytes this partition holds against the memory budget: all it holds
    /// (fetched and not yet checkpointed);
    /// in exactly-once mode, only what the target has not acknowledged. An
    /// acknowledged batch's memory is freed at once; in idempotent mode it
    /// still counts until a checkpoint covers it, which bounds what a crash
    /// sends again, whereas an aborted transaction's records are fetched
    /// again, and holding them back would only shrink the transactions.
    pub(crate) fn budgeted_bytes(&self, exactly_once: bool) -> usize {
        if exactly_once {
            self.held - self.acked_held
        } else {
            self.held
        }
    }

    /// The batches not yet acknowledged: what keeps Fetch responses alive.
    pub(crate) fn batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.entries.iter().filter_map(|e| e.batch.as_ref())
    }

    /// Moves the batches not yet acknowledged that `which` picks into memory
    /// of their own, so that they no longer keep the Fetch responses they
    /// came in alive; returns the bytes copied.
    pub(crate) fn detach_batches(&mut self, mut which: impl FnMut(&RecordBatch) -> bool) -> usize {
        let mut copied = 0;
        for batch in self.entries.iter_mut().filter_map(|e| e.batch.as_mut()) {
            if which(batch) {
                copied += batch.len();
                batch.detach();
            }
        }
        copied
    }

    /// Whether nothing is queued, in flight or waiting for a checkpoint.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a fetched batch forwarded whole (its records at consecutive
    /// source offsets from its base offset); it moves the fetch position past it.
    pub(crate) fn push_batch(&mut self, batch: RecordBatch) {
        let next_offset = batch.next_offset();
        let carried = Carried::From(batch.base_offset());
        self.push(next_offset, carried, Some(batch));
    }

    /// Appends a re-encoded batch that stands for the source range up to
    /// `next_offset` (a renumbered compacted or trimmed batch, whose own
    /// offset range is shorter than the source batch's it replaces); its
    /// records had the source offsets of `source_runs`, in order.
    pub(crate) fn push_reencoded(
        &mut self,
        batch: RecordBatch,
        source_runs: Vec<OffsetRun>,
        next_offset: i64,
    ) {
        debug_assert_eq!(
            source_runs.iter().map(|r| i64::from(r.count)).sum::<i64>(),
            i64::from(batch.records_count())
        );
        let carried = match source_runs[..] {
            [one] => Carried::From(one.first),
            _ => Carried::Runs(source_runs.into_boxed_slice()),
        };
        self.push(next_offset, carried, Some(batch));
    }

    /// Records that the source range up to `next_offset` holds nothing to send
    /// (a control batch, an aborted transaction, an empty batch, a reported loss).
    ///
    /// A skip holds no bytes, so the memory budget never stops a run of them:
    /// one that follows an entry already done (a skip, an acknowledged batch)
    /// widens that entry instead of queueing one, so skips are never more
    /// than the batches between them, whatever the length of the run behind
    /// a batch the target has not taken yet.
    pub(crate) fn push_skip(&mut self, next_offset: i64) {
        match self.entries.back_mut() {
            Some(last) if last.batch.is_none() && matches!(last.state, EntryState::Acked) => {
                last.next_offset = next_offset;
                self.fetch_offset = next_offset;
                // Already in the map: the map covers the wider range too.
                if last.id < self.unmapped {
                    map_through(&mut self.offset_map, next_offset);
                }
            }
            _ => {
                self.push(next_offset, Carried::Nothing, None);
                self.map_acknowledged();
            }
        }
    }

    /// Appends an entry: a batch to send, or with none, a range already done.
    fn push(&mut self, next_offset: i64, carried: Carried, batch: Option<RecordBatch>) {
        let id = self.next_entry_id;
        self.next_entry_id += 1;
        let (size, records) = batch
            .as_ref()
            .map_or((0, 0), |b| (b.len(), b.records_count()));
        self.held += size;
        self.fetch_offset = next_offset;
        self.entries.push_back(Entry {
            id,
            next_offset,
            size,
            records,
            carried,
            landed_at: None,
            state: if batch.is_some() {
                EntryState::Queued
            } else {
                EntryState::Acked
            },
            batch,
            sequence: None,
            fate_unknown: false,
        });
    }

    /// The next batch to send, if the ordering rules allow one now. Stamps it
    /// with our producer id and the next sequence when it is sent the first time.
    /// With `resolving_only`, only a batch that may already be on the target
    /// is sent (again): the producer id is about to change.
    pub(crate) fn next_to_send(
        &mut self,
        writer: Writer,
        resolving_only: bool,
    ) -> Option<Outgoing> {
        let limit = if self.established { writer.window } else { 1 };
        // The window: `limit` batches from the first one not acknowledged,
        // those acknowledged after it included. So, five deep, a batch that
        // may have landed is still among the last five the broker remembers
        // for us when it is resent, however often it fails meanwhile.
        let first = self
            .entries
            .iter()
            .position(|e| !matches!(e.state, EntryState::Acked))?;
        let window: Vec<usize> = (first..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                // Skipped ranges are no batches of ours.
                !matches!(e.state, EntryState::Acked) || e.sequence.is_some()
            })
            .take(limit)
            .collect();
        let mut failed = None;
        let mut queued = None;
        let mut last_unknown = None;
        for &i in &window {
            match self.entries[i].state {
                // Answers to batches sent before the last failure are still due.
                EntryState::InFlight { sent_in_round } if sent_in_round < self.round => {
                    return None
                }
                EntryState::Failed => {
                    failed = failed.or(Some(i));
                    if self.entries[i].fate_unknown {
                        last_unknown = Some(i);
                    }
                }
                EntryState::Queued => queued = queued.or(Some(i)),
                EntryState::InFlight { .. } | EntryState::Acked => {}
            }
        }
        // Deeper, its resend cannot tell: the transaction fails instead.
        if limit > MAX_IN_FLIGHT && last_unknown.is_some() {
            return None;
        }
        let position = if resolving_only {
            // Only what may be on the target, and the failed batches before
            // it, which the broker needs first to tell its fate.
            failed.filter(|&first| last_unknown.is_some_and(|last| first <= last))
        } else {
            failed.or(queued)
        }?;
        let round = self.round;
        self.window = limit;
        let entry = &mut self.entries[position];
        let base_sequence = match entry.sequence {
            Some(sequence) => sequence,
            None => {
                let sequence = self.next_sequence;
                self.next_sequence = increment_sequence(sequence, entry.records);
                entry.sequence = Some(sequence);
                sequence
            }
        };
        let batch = entry.batch.as_ref()?;
        let header = batch.produce_header(ProducerStamp {
            producer_id: writer.id,
            producer_epoch: writer.epoch,
            base_sequence,
            transactional: writer.transactional,
        });
        let batch = batch.clone();
        entry.state = EntryState::InFlight {
            sent_in_round: round,
        };
        Some(Outgoing {
            entry: entry.id,
            batch,
            header,
        })
    }

    /// The target acknowledged the batch (or already had it: a duplicate
    /// sequence), its first record at `target_base_offset`, the base offset
    /// of the Produce answer (which a broker gives for a duplicate too);
    /// negative when the target did not say, and the batch is then taken to
    /// follow the one before it on the target.
    pub(crate) fn acked(&mut self, entry: u64, target_base_offset: i64) -> Acknowledged {
        self.acknowledge(entry, target_base_offset, |state| {
            matches!(state, EntryState::InFlight { .. })
        })
    }

    /// Acknowledges the entry if `was` accepts its state.
    fn acknowledge(
        &mut self,
        entry: u64,
        target_base_offset: i64,
        was: impl Fn(&EntryState) -> bool,
    ) -> Acknowledged {
        let (acknowledged, newest) = match self.entry_mut(entry) {
            Some(e) if was(&e.state) => {
                e.state = EntryState::Acked;
                let newest = e.batch.take().map(|batch| batch.max_timestamp());
                e.fate_unknown = false;
                e.landed_at = (target_base_offset >= 0).then_some(target_base_offset);
                let acknowledged = Acknowledged {
                    records: i64::from(e.records),
                    bytes: e.size,
                };
                (acknowledged, newest)
            }
            _ => {
                return Acknowledged {
                    records: 0,
                    bytes: 0,
                }
            }
        };
        self.copied_timestamp = self.copied_timestamp.max(newest);
        self.acked_held += acknowledged.bytes;
        self.established = true;
        self.map_acknowledged();
        acknowledged
    }

    /// Adds the entries the acknowledged prefix gained to the offset map,
    /// in source order.
    fn map_acknowledged(&mut self) {
        let Some(front) = self.entries.front().map(|e| e.id) else {
            return;
        };
        let mut index = usize::try_from(self.unmapped.saturating_sub(front)).unwrap_or(usize::MAX);
        while let Some(entry) = self.entries.get(index) {
            if !matches!(entry.state, EntryState::Acked) {
                break;
            }
            map_entry(&mut self.offset_map, entry);
            self.unmapped = entry.id + 1;
            index += 1;
        }
    }

    /// The first unacknowledged batch, if it may be on the target without our
    /// knowing and is old enough that the target may have forgotten our
    /// producer (its maxTimestamp before `stale_before_ms`): a resend would
    /// then be taken as a new batch, so the target's log is read first, from
    /// where our acknowledged data ends on it. Old data goes one batch at a
    /// time ([`must_wait_for_old_data`](Self::must_wait_for_old_data)), so
    /// this batch is the only one of ours that can follow there. `None` too
    /// when that target offset is unknown (nothing acknowledged in this map).
    pub(crate) fn landing_check(&self, stale_before_ms: i64) -> Option<LandingCheck> {
        let first = self
            .entries
            .iter()
            .find(|e| !matches!(e.state, EntryState::Acked))?;
        let old = first
            .batch
            .as_ref()
            .is_some_and(|batch| batch.max_timestamp() < stale_before_ms);
        if !(old && first.fate_unknown && matches!(first.state, EntryState::Failed)) {
            return None;
        }
        Some(LandingCheck {
            entry: first.id,
            target_offset: self.offset_map.copied_end()?.target,
            sequence: first.sequence?,
        })
    }

    /// The landing check found the batch on the target, at `target_offset`.
    pub(crate) fn found_on_target(&mut self, entry: u64, target_offset: i64) -> Acknowledged {
        self.acknowledge(entry, target_offset, |state| {
            matches!(state, EntryState::Failed)
        })
    }

    /// The landing check read the target's log to its end without finding
    /// the batch: no attempt of it was appended, so it is resent like any
    /// failed batch (as new, should the target have forgotten our producer).
    pub(crate) fn not_on_target(&mut self, entry: u64) {
        if let Some(e) = self.entry_mut(entry) {
            e.fate_unknown = false;
        }
    }

    /// The batch's request failed in a way a resend can fix; `maybe_written`
    /// if the broker may have appended it all the same. A batch whose fate
    /// was already unknown stays so: this answer is about this attempt only.
    /// Sent with a window deeper than the broker's duplicate window, a batch
    /// that may have been written is not resent: the transaction must fail.
    pub(crate) fn failed(&mut self, entry: u64, maybe_written: bool) -> Recovery {
        let deep = self.window > MAX_IN_FLIGHT;
        let in_doubt = match self.entry_mut(entry) {
            Some(e) if matches!(e.state, EntryState::InFlight { .. }) => {
                e.state = EntryState::Failed;
                e.fate_unknown |= maybe_written;
                e.fate_unknown
            }
            _ => return Recovery::Resend,
        };
        self.round += 1;
        if deep && in_doubt {
            Recovery::FailTransaction
        } else {
            Recovery::Resend
        }
    }

    /// The target refused the batch for its topic settings and it is to be
    /// skipped: the batch counts as done, and since the broker never took its
    /// sequences, the batches after it take them over (those already sent get
    /// an out-of-order answer and are resent with the new ones). Returns the
    /// records skipped.
    pub(crate) fn skip_refused(&mut self, entry: u64) -> i32 {
        let Some(e) = self.entry_mut(entry) else {
            return 0;
        };
        if !matches!(e.state, EntryState::InFlight { .. }) {
            return 0;
        }
        // Refused for what it is: no attempt of it was ever appended.
        let size = e.size;
        e.state = EntryState::Acked;
        e.batch = None;
        e.fate_unknown = false;
        e.carried = Carried::Nothing;
        let (records, refused_sequence) = (e.records, e.sequence);
        self.acked_held += size;
        if let Some(freed) = refused_sequence {
            let mut next = freed;
            for later in self.entries.iter_mut().filter(|l| l.id > entry) {
                if later.sequence.is_some() {
                    later.sequence = Some(next);
                    next = increment_sequence(next, later.records);
                }
            }
            self.next_sequence = next;
        }
        self.round += 1;
        self.map_acknowledged();
        records
    }

    /// Whether a batch is in flight or may be on the target without our
    /// knowing: while one is, the producer id must not change, or its resend
    /// under a new id could land twice.
    pub(crate) fn unresolved(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, EntryState::InFlight { .. }) || e.fate_unknown)
    }

    /// The first batch that may be on the target without our knowing, if any.
    pub(crate) fn first_of_unknown_fate(&self) -> Option<u64> {
        self.entries.iter().find(|e| e.fate_unknown).map(|e| e.id)
    }

    /// The target gave us a new producer id: every batch it has not
    /// acknowledged is sent again in order with sequences from 0, one at a
    /// time until the first acknowledgement (the broker has no state for the
    /// new id). Only valid when nothing is [`unresolved`](Self::unresolved).
    pub(crate) fn new_producer(&mut self) {
        debug_assert!(!self.unresolved());
        for entry in &mut self.entries {
            if !matches!(entry.state, EntryState::Acked) {
                entry.state = EntryState::Queued;
                entry.sequence = None;
            }
        }
        self.next_sequence = 0;
        self.established = false;
        self.round += 1;
    }

    /// Exactly-once: the transaction that held everything after the last
    /// committed checkpoint was aborted, and the target gave a new epoch.
    /// Forgets all of it (queued, in flight, acknowledged: none of it is
    /// visible) and fetches again from the checkpoint, with sequences from 0.
    /// Returns that offset.
    pub(crate) fn rewind_to_checkpoint(&mut self) -> i64 {
        let from = self.acked_through;
        self.entries.clear();
        self.held = 0;
        self.acked_held = 0;
        self.fetch_offset = from;
        self.offset_map.truncate(from);
        self.unmapped = self.next_entry_id;
        self.next_sequence = 0;
        self.established = false;
        self.round += 1;
        from
    }

    /// Whether the failed entry is the first one the target has not
    /// acknowledged: if so, an out-of-order answer for it cannot be explained
    /// by an earlier failed batch.
    pub(crate) fn is_first_unacked(&self, entry: u64) -> bool {
        self.entries
            .iter()
            .find(|e| !matches!(e.state, EntryState::Acked))
            .is_some_and(|e| e.id == entry)
    }

    /// The source offset and range of an entry, for error messages.
    pub(crate) fn entry_range(&self, entry: u64) -> Option<(i64, i64)> {
        let position = self.index_of(entry)?;
        let start = if position == 0 {
            self.acked_through
        } else {
            self.entries[position - 1].next_offset
        };
        Some((start, self.entries[position].next_offset))
    }

    /// Checks the CRC of an entry's source batch, as the source sent it:
    /// after the target refused the batch as corrupt, whether the damage
    /// came with it from the source (`Err`) or happened on the way to the
    /// target. An entry without a batch has nothing to check.
    pub(crate) fn verify_crc(&self, entry: u64) -> Result<(), BatchError> {
        let index = self.index_of(entry);
        match index.and_then(|i| self.entries[i].batch.as_ref()) {
            Some(batch) => batch.verify_crc(),
            None => Ok(()),
        }
    }

    /// Whether the partition must send one batch at a time because the
    /// target may forget our producer at any moment: a batch is in flight and
    /// the first batch not acknowledged was written before `stale_before_ms`
    /// (its maxTimestamp, the source's CreateTime, is what the broker expires
    /// producer state by). A broker that forgot us takes any sequence, so a
    /// batch behind a refused one would land in its place. Not once a batch
    /// landed in `open_transaction`, the transaction open now (exactly-once):
    /// the target keeps our producer until that transaction ends.
    pub(crate) fn must_wait_for_old_data(
        &self,
        stale_before_ms: i64,
        open_transaction: Option<u64>,
    ) -> bool {
        if open_transaction.is_some() && open_transaction == self.acked_in_transaction {
            return false;
        }
        let mut unacked = self
            .entries
            .iter()
            .filter(|e| !matches!(e.state, EntryState::Acked));
        let old = unacked
            .clone()
            .find_map(|e| e.batch.as_ref())
            .is_some_and(|batch| batch.max_timestamp() < stale_before_ms);
        old && unacked.any(|e| matches!(e.state, EntryState::InFlight { .. }))
    }

    /// Exactly-once: the target acknowledged a batch of this partition in
    /// the transaction numbered `transaction` (see
    /// [`must_wait_for_old_data`](Self::must_wait_for_old_data)).
    pub(crate) fn acked_in(&mut self, transaction: u64) {
        self.acked_in_transaction = Some(transaction);
    }

    /// The timestamp of the oldest record fetched and not yet acknowledged:
    /// its batch's first (in a LogAppendTime batch, the append time).
    pub(crate) fn oldest_unacked_timestamp(&self) -> Option<i64> {
        self.entries
            .iter()
            .filter(|e| !matches!(e.state, EntryState::Acked))
            .find_map(|e| e.batch.as_ref())
            .map(|batch| match batch.timestamp_type() {
                TimestampType::LogAppendTime => batch.max_timestamp(),
                TimestampType::CreateTime => batch.base_timestamp(),
            })
    }

    /// The newest record timestamp acknowledged so far: a record not yet
    /// copied is at most this old, when none is fetched.
    pub(crate) fn copied_timestamp(&self) -> Option<i64> {
        self.copied_timestamp
    }

    /// Whether batches wait to be sent: new ones, or failed ones again.
    pub(crate) fn has_unsent(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, EntryState::Queued | EntryState::Failed))
    }

    /// Whether failed batches wait to be sent again.
    pub(crate) fn has_failed(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.state, EntryState::Failed))
    }

    /// The next source offset to copy, counting only what the target acknowledged
    /// with everything before it acknowledged too.
    pub(crate) fn committed(&self) -> i64 {
        self.entries
            .iter()
            .take_while(|e| matches!(e.state, EntryState::Acked))
            .last()
            .map_or(self.acked_through, |e| e.next_offset)
    }

    /// A checkpoint at `offset` is stored: release the entries it covers.
    /// Returns the bytes released.
    pub(crate) fn checkpoint_stored(&mut self, offset: i64) -> usize {
        self.checkpointed = offset;
        let mut released = 0;
        while let Some(front) = self.entries.front() {
            if !matches!(front.state, EntryState::Acked) || front.next_offset > offset {
                break;
            }
            released += front.size;
            self.acked_through = front.next_offset;
            self.entries.pop_front();
        }
        self.held -= released;
        self.acked_held -= released;
        released
    }

    /// Drops every batch that was never sent (shutdown: they are fetched again
    /// after a restart). Returns the bytes released.
    pub(crate) fn drop_unsent(&mut self) -> usize {
        let Some(first) = self
            .entries
            .iter()
            .position(|e| matches!(e.state, EntryState::Queued))
        else {
            return 0;
        };
        let released: usize = self.entries.iter().skip(first).map(|e| e.size).sum();
        self.entries.truncate(first);
        self.held -= released;
        // Keep ids contiguous from the front: `entry_mut` indexes by them.
        self.next_entry_id = self.entries.back().map_or(self.next_entry_id, |e| e.id + 1);
        self.fetch_offset = self
            .entries
            .back()
            .map_or(self.acked_through, |e| e.next_offset);
        released
    }

    /// Where entry `id` is in the queue: ids are consecutive from the front.
    fn index_of(&self, id: u64) -> Option<usize> {
        let front = self.entries.front()?.id;
        let index = usize::try_from(id.checked_sub(front)?).ok()?;
        (index < self.entries.len()).then_some(index)
    }

    fn entry_mut(&mut self, id: u64) -> Option<&mut Entry> {
        let index = self.index_of(id)?;
        self.entries.get_mut(index)
    }
}

/// Adds an acknowledged entry to `map`: its records at consecutive target
/// offsets from where the first landed, then the rest of its source range as
/// holding nothing copied.
fn map_entry(map: &mut OffsetMap, entry: &Entry) {
    let whole;
    let runs: &[OffsetRun] = match &entry.carried {
        Carried::Nothing => &[],
        Carried::From(first) => {
            whole = [OffsetRun {
                first: *first,
                count: entry.records,
            }];
            &whole
        }
        Carried::Runs(runs) => runs,
    };
    if !runs.is_empty() {
        // Unknown: right after the last record copied, as the target appends
        // our batches of the partition in source order.
        let Some(mut target) = entry
            .landed_at
            .or_else(|| map.copied_end().map(|end| end.target))
        else {
            // Nothing copied before it to follow either: the map restarts
            // after it, and reports the offsets before as out of its reach
            // rather than guess them.
            *map = OffsetMap::starting_at(entry.next_offset);
            return;
        };
        for run in runs {
            map.copied(run.first, target, i64::from(run.count));
            target += i64::from(run.count);
        }
    }
    map_through(map, entry.next_offset);
}

/// The map covers the source range up to `next`, nothing copied in what is
/// not yet covered. A `next` below the map's end means the source's log went
/// back (truncated, copied on with `on_data_loss = continue`): its offsets
/// from there will hold other records, so the map starts again there.
fn map_through(map: &mut OffsetMap, next: i64) {
    if next < map.end() {
        *map = OffsetMap::starting_at(next);
    } else {
        map.skipped_to(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset_map::Translation;
    use crate::pipeline::testing::batch;
    use kafka_protocol::records::RecordBatchDecoder;

    /// A partition at offset 10 whose first batch (offset 9, sequence 0) the
    /// target acknowledged, so pipelining is allowed.
    fn established() -> PartitionState {
        let mut p = PartitionState::new(9);
        p.push_batch(batch(9, 1));
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first batch");
        p.acked(first.entry, first.batch.base_offset());
        p
    }

    /// A transactional writer 32 batches deep.
    const DEEP: Writer = Writer::transactional(7, 1, 32);

    /// [`established`] by `writer`, with batches of 2 records from offset
    /// 10 to `end` queued.
    fn established_by(writer: Writer, end: i64) -> PartitionState {
        let mut p = PartitionState::new(9);
        p.push_batch(batch(9, 1));
        let first = p.next_to_send(writer, false).expect("first batch");
        p.acked(first.entry, first.batch.base_offset());
        for base in (10..end).step_by(2) {
            p.push_batch(batch(base, 2));
        }
        p
    }

    /// Sends every batch the rules allow `writer` now.
    fn send_all_as(p: &mut PartitionState, writer: Writer) -> Vec<Outgoing> {
        std::iter::from_fn(|| p.next_to_send(writer, false)).collect()
    }

    #[test]
    fn a_transactional_window_goes_past_the_brokers_five() {
        let mut fresh = PartitionState::new(10);
        for base in (10..20).step_by(2) {
            fresh.push_batch(batch(base, 2));
        }
        assert_eq!(
            send_all_as(&mut fresh, DEEP).len(),
            1,
            "one until the target acknowledged a first batch"
        );

        let mut p = established_by(DEEP, 90);
        let sent = send_all_as(&mut p, DEEP);
        assert_eq!(sent.len(), 32, "32 before any answer");
        let bases: Vec<i64> = sent.iter().map(|o| o.batch.base_offset()).collect();
        let sequences: Vec<i32> = sent.iter().map(sequence_of).collect();
        assert_eq!(
            bases,
            (10..74).step_by(2).collect::<Vec<_>>(),
            "source order"
        );
        assert_eq!(sequences, (1..65).step_by(2).collect::<Vec<_>>());
        // Each answer opens room for one more, from the first unacknowledged.
        p.acked(sent[1].entry, 12);
        assert!(
            p.next_to_send(DEEP, false).is_none(),
            "the first is not answered"
        );
        p.acked(sent[0].entry, 10);
        assert_eq!(send_all_as(&mut p, DEEP).len(), 2);

        let mut idempotent = established_by(Writer::idempotent(7, 1), 90);
        assert_eq!(
            send_all_as(&mut idempotent, Writer::idempotent(7, 1)).len(),
            MAX_IN_FLIGHT,
            "an idempotent writer stays within the broker's five"
        );
    }

    #[test]
    fn a_lost_answer_in_a_deep_window_fails_the_transaction() {
        let mut p = established_by(DEEP, 90);
        p.checkpoint_stored(p.committed());
        let sent = send_all_as(&mut p, DEEP);
        // The target refused one before appending it: resent in order.
        assert_eq!(p.failed(sent[2].entry, false), Recovery::Resend);
        // Another one's answer is lost: it may have landed, and 29 more of
        // ours after it, so a resend would be answered out of order.
        assert_eq!(p.failed(sent[3].entry, true), Recovery::FailTransaction);
        for later in &sent[4..] {
            p.failed(later.entry, false);
        }
        p.acked(sent[0].entry, 10);
        p.acked(sent[1].entry, 12);
        assert!(
            p.next_to_send(DEEP, false).is_none() && p.next_to_send(DEEP, true).is_none(),
            "nothing is resent, the refused batch before it neither"
        );
        assert!(p.unresolved(), "no commit either");
        // The renewal aborts the transaction: back to the checkpoint.
        assert_eq!(p.rewind_to_checkpoint(), 10);
        p.push_batch(batch(10, 2));
        let again = p
            .next_to_send(Writer { epoch: 2, ..DEEP }, false)
            .expect("copied again");
        assert_eq!((again.batch.base_offset(), sequence_of(&again)), (10, 0));
    }

    #[test]
    fn five_deep_a_lost_answer_is_resolved_by_a_resend_in_a_transaction_too() {
        let shallow = Writer::transactional(7, 1, MAX_IN_FLIGHT);
        let mut p = established_by(shallow, 30);
        let sent = send_all_as(&mut p, shallow);
        assert_eq!(sent.len(), MAX_IN_FLIGHT);
        assert_eq!(p.failed(sent[0].entry, true), Recovery::Resend);
        for later in &sent[1..] {
            p.acked(later.entry, -1);
        }
        let again = p.next_to_send(shallow, false).expect("resent");
        assert_eq!(
            (again.entry, sequence_of(&again)),
            (sent[0].entry, sequence_of(&sent[0]))
        );
    }

    /// The batch as the target receives it.
    fn wire(outgoing: &Outgoing) -> Bytes {
        let body = &outgoing.batch.as_bytes()[outgoing.header.len()..];
        [&outgoing.header[..], body].concat().into()
    }

    fn sequence_of(outgoing: &Outgoing) -> i32 {
        let set = RecordBatchDecoder::decode(&mut wire(outgoing)).expect("decode");
        set.records[0].sequence
    }

    /// After a CORRUPT_MESSAGE answer, the entry's source batch tells where
    /// the damage happened; the batch sent carries it, under a patched CRC.
    #[test]
    fn an_entry_is_checked_against_the_source_batch_it_holds() {
        let mut p = established();
        p.push_batch(batch(10, 2));
        let mut damaged = batch(12, 2).as_bytes().to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        p.push_batch(RecordBatch::parse(damaged.into()).expect("parse"));
        let whole = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("whole batch");
        let hurt = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("damaged batch");
        assert!(p.verify_crc(whole.entry).is_ok());
        assert!(matches!(
            p.verify_crc(hurt.entry),
            Err(BatchError::CrcMismatch {
                base_offset: 12,
                ..
            })
        ));
        let sent = RecordBatch::parse(wire(&hurt)).expect("parse");
        assert!(sent.verify_crc().is_err(), "the damage leaves with it");
        p.acked(whole.entry, whole.batch.base_offset());
        assert!(p.verify_crc(whole.entry).is_ok(), "nothing left to check");
    }

    #[test]
    fn only_the_picked_batches_are_copied_out() {
        let mut p = PartitionState::new(10);
        let (first, second) = (batch(10, 2), batch(12, 2));
        let addresses = [first.as_bytes().as_ptr(), second.as_bytes().as_ptr()];
        let second_len = second.len();
        p.push_batch(first);
        p.push_batch(second);
        let copied = p.detach_batches(|batch| batch.base_offset() == 12);
        assert_eq!(copied, second_len);
        let now: Vec<*const u8> = p.batches().map(|b| b.as_bytes().as_ptr()).collect();
        assert_eq!(now[0], addresses[0], "left in place");
        assert_ne!(now[1], addresses[1], "copied");
        assert_eq!(
            p.budgeted_bytes(false),
            2 * second_len,
            "the budget still counts both"
        );
    }

    #[test]
    fn a_renumbered_batch_checkpoints_past_the_source_range_it_replaces() {
        // Source batch 20..=29 after compaction kept 2 records (23 and 27),
        // renumbered 20..=21.
        let mut p = PartitionState::new(20);
        let kept = [23, 27].map(|first| OffsetRun { first, count: 1 });
        p.push_reencoded(batch(20, 2), kept.to_vec(), 30);
        assert_eq!(p.fetch_offset, 30);
        let sent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        assert_eq!(p.acked(sent.entry, sent.batch.base_offset()).records, 2);
        assert_eq!(p.committed(), 30);
        // Sequences count the records sent, not the source offsets.
        p.push_batch(batch(30, 1));
        assert_eq!(
            sequence_of(
                &p.next_to_send(Writer::idempotent(7, 1), false)
                    .expect("next")
            ),
            2
        );
    }

    #[test]
    fn sends_in_order_with_our_sequences_and_at_most_five_in_flight() {
        let mut p = PartitionState::new(10);
        for i in 0..7 {
            p.push_batch(batch(10 + i * 3, 3));
        }
        assert_eq!(p.fetch_offset, 31);
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first batch");
        assert!(
            p.next_to_send(Writer::idempotent(7, 1), false).is_none(),
            "one batch at a time until the target knows our producer"
        );
        assert_eq!(p.acked(first.entry, first.batch.base_offset()).records, 3);
        let sent: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(sent.len(), MAX_IN_FLIGHT);
        let sequences: Vec<i32> = sent.iter().map(sequence_of).collect();
        assert_eq!(sequence_of(&first), 0);
        assert_eq!(sequences, [3, 6, 9, 12, 15]);
        assert_eq!(
            p.acked(sent[0].entry, sent[0].batch.base_offset()).records,
            3
        );
        let seventh = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("room for one more");
        assert_eq!(sequence_of(&seventh), 18);
        assert_eq!(p.committed(), 16);
    }

    #[test]
    fn an_old_batch_of_unknown_fate_is_looked_for_where_our_copy_ends() {
        let (all_old, none_old) = (i64::MAX, i64::MIN);
        let mut p = PartitionState::new(10);
        p.push_batch(batch(10, 2));
        p.push_batch(batch(12, 3));
        p.push_batch(batch(15, 1));
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        p.acked(first.entry, 100);
        let lost = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("second");
        p.failed(lost.entry, true);
        assert_eq!(
            p.landing_check(none_old),
            None,
            "recent data is resent as it is"
        );
        let check = p.landing_check(all_old).expect("old and in doubt");
        assert_eq!(
            check,
            LandingCheck {
                entry: lost.entry,
                target_offset: 102,
                sequence: sequence_of(&lost),
            }
        );
        // Found there: acknowledged at that offset, and mapped.
        assert_eq!(p.found_on_target(check.entry, 102).records, 3);
        assert_eq!(p.landing_check(all_old), None);
        assert_eq!(p.committed(), 15);
        assert_eq!(p.offset_map().translate(13), Translation::Exact(103));

        // Not found: resent as any failed batch, and no longer in doubt.
        let third = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("third");
        p.failed(third.entry, true);
        let check = p.landing_check(all_old).expect("in doubt");
        p.not_on_target(check.entry);
        assert_eq!(p.landing_check(all_old), None);
        assert!(!p.unresolved());
        let resent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resent");
        assert_eq!(wire(&resent), wire(&third));
    }

    #[test]
    fn no_landing_check_without_a_known_end_on_the_target_or_a_doubt() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        let lost = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        p.failed(lost.entry, true);
        assert_eq!(
            p.landing_check(i64::MAX),
            None,
            "where it would be is unknown"
        );

        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        p.push_batch(batch(2, 2));
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        p.acked(first.entry, 0);
        let refused = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("second");
        p.failed(refused.entry, false);
        assert_eq!(p.landing_check(i64::MAX), None, "refused before the append");
    }

    #[test]
    fn failure_waits_for_earlier_answers_then_resends_same_bytes_in_order() {
        let mut p = established();
        for i in 0..4 {
            p.push_batch(batch(10 + i * 2, 2));
        }
        let sent: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(sent.len(), 4);
        p.failed(sent[1].entry, true);
        assert!(
            p.next_to_send(Writer::idempotent(7, 1), false).is_none(),
            "answers for 2 and 3 still due"
        );
        p.acked(sent[0].entry, sent[0].batch.base_offset());
        p.failed(sent[2].entry, true);
        assert!(p.next_to_send(Writer::idempotent(7, 1), false).is_none());
        p.failed(sent[3].entry, true);
        let resent: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(resent.len(), 3);
        for (again, first) in resent.iter().zip(&sent[1..]) {
            assert_eq!(again.entry, first.entry);
            assert_eq!(
                wire(again),
                wire(first),
                "a retry keeps its sequence and bytes"
            );
        }
        for o in &resent {
            p.acked(o.entry, o.batch.base_offset());
        }
        assert_eq!(p.committed(), 18);
    }

    #[test]
    fn a_late_success_after_a_lost_answer_is_kept() {
        let mut p = established();
        p.push_batch(batch(10, 1));
        p.push_batch(batch(11, 1));
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        let b = p.next_to_send(Writer::idempotent(7, 1), false).expect("b");
        p.failed(a.entry, true);
        p.acked(b.entry, b.batch.base_offset());
        assert_eq!(p.committed(), 10, "b is on the target but a is not yet");
        assert!(p.is_first_unacked(a.entry));
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend a");
        assert_eq!(again.entry, a.entry);
        p.acked(a.entry, a.batch.base_offset());
        assert_eq!(p.committed(), 12);
    }

    #[test]
    fn skips_advance_the_checkpoint_only_behind_acknowledged_batches() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        p.push_skip(3);
        assert_eq!(p.committed(), 0);
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        assert!(
            p.next_to_send(Writer::idempotent(7, 1), false).is_none(),
            "a skip is never sent"
        );
        p.acked(a.entry, a.batch.base_offset());
        assert_eq!(p.committed(), 3);
        let size = p.budgeted_bytes(false);
        assert!(size > 0);
        assert_eq!(p.checkpoint_stored(3), size);
        assert_eq!(p.budgeted_bytes(false), 0);
        assert!(p.is_empty());
        assert_eq!(p.committed(), 3);
    }

    /// A long run of control, aborted or empty batches behind a batch the
    /// target has not taken yet holds no bytes, so the budget never stops it:
    /// the queue must stay short however long the run.
    #[test]
    fn a_run_of_skipped_ranges_behind_an_unanswered_batch_stays_bounded() {
        let mut p = established();
        p.push_batch(batch(10, 1));
        let stuck = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("in flight");
        for next in 12..100_012 {
            p.push_skip(next);
        }
        assert_eq!(p.fetch_offset, 100_011);
        assert!(
            p.entries.len() <= 3,
            "{} entries queued behind one batch",
            p.entries.len()
        );
        p.push_batch(batch(100_011, 2));
        p.push_skip(100_020);
        p.acked(stuck.entry, stuck.batch.base_offset());
        assert_eq!(p.committed(), 100_011, "the skips count once acknowledged");
        let next = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("the batch after the skips");
        assert_eq!(p.entry_range(next.entry), Some((100_011, 100_013)));
        p.acked(next.entry, next.batch.base_offset());
        assert_eq!(p.committed(), 100_020);
        p.checkpoint_stored(100_020);
        assert!(p.is_empty());
    }

    #[test]
    fn checkpoint_releases_only_what_it_covers() {
        let mut p = established();
        p.push_batch(batch(10, 2));
        p.push_batch(batch(12, 2));
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        let b = p.next_to_send(Writer::idempotent(7, 1), false).expect("b");
        p.acked(a.entry, a.batch.base_offset());
        p.acked(b.entry, b.batch.base_offset());
        let before = p.budgeted_bytes(false);
        let released = p.checkpoint_stored(12);
        assert!(released > 0 && released < before);
        assert_eq!(p.committed(), 14);
        assert_eq!(p.checkpointed, 12);
    }

    #[test]
    fn shutdown_drops_unsent_batches_and_rewinds_the_fetch_position() {
        let mut p = PartitionState::new(0);
        for i in 0..3 {
            p.push_batch(batch(i, 1));
        }
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        assert!(p.drop_unsent() > 0);
        assert_eq!(p.fetch_offset, 1);
        assert!(p.next_to_send(Writer::idempotent(7, 1), false).is_none());
        p.acked(a.entry, a.batch.base_offset());
        assert_eq!(p.committed(), 1);
    }

    #[test]
    fn a_new_producer_waits_for_unknown_fates_then_resends_from_sequence_zero() {
        let mut p = established();
        for base in 10..14 {
            p.push_batch(batch(base, 1));
        }
        let sent: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(sent.len(), 4);
        // The first is refused for our producer id (not written), the second
        // times out (maybe written), the last two are still unanswered.
        p.failed(sent[0].entry, false);
        p.failed(sent[1].entry, true);
        assert!(p.unresolved());
        p.failed(sent[2].entry, false);
        p.failed(sent[3].entry, false);
        assert!(p.unresolved(), "the timed-out batch may be on the target");

        // While resolving, the maybe-written batch goes out again with its
        // sequence, behind the failed batch before it (the broker needs that
        // one first to place it); nothing new goes.
        let resolve = |p: &mut PartitionState| -> Vec<Outgoing> {
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), true)).collect()
        };
        let first_try = resolve(&mut p);
        let entries: Vec<u64> = first_try.iter().map(|o| o.entry).collect();
        assert_eq!(entries, [sent[0].entry, sent[1].entry]);
        assert_eq!(
            wire(&first_try[1]),
            wire(&sent[1]),
            "same sequence, same bytes"
        );
        // Refused again, and so out of order behind it: that answers this
        // attempt only, not whether the timed-out one landed.
        p.failed(first_try[0].entry, false);
        p.failed(first_try[1].entry, false);
        assert!(p.unresolved(), "the first send may still be on the target");
        let second_try = resolve(&mut p);
        assert_eq!(second_try.len(), 2);
        // The broker takes the first now, and the second had landed: "duplicate".
        p.acked(second_try[0].entry, second_try[0].batch.base_offset());
        assert_eq!(
            p.acked(second_try[1].entry, second_try[1].batch.base_offset())
                .records,
            1
        );
        assert!(!p.unresolved());

        p.new_producer();
        let first = p
            .next_to_send(Writer::idempotent(8, 0), false)
            .expect("first under the new id");
        assert_eq!(first.entry, sent[2].entry, "source order is kept");
        assert_eq!(sequence_of(&first), 0);
        assert!(
            p.next_to_send(Writer::idempotent(8, 0), false).is_none(),
            "one in flight until the new id is acknowledged"
        );
        p.acked(first.entry, first.batch.base_offset());
        let rest: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(8, 0), false)).collect();
        let entries: Vec<u64> = rest.iter().map(|o| o.entry).collect();
        assert_eq!(entries, vec![sent[3].entry]);
        assert_eq!(sequence_of(&rest[0]), 1);
    }

    #[test]
    fn a_batch_of_unknown_fate_holds_the_window_until_answered() {
        let mut p = established();
        for base in 10..20 {
            p.push_batch(batch(base, 1));
        }
        let sent: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(sent.len(), MAX_IN_FLIGHT);
        // The first one's answer is lost; the four after it land.
        p.failed(sent[0].entry, true);
        for later in &sent[1..] {
            p.acked(later.entry, later.batch.base_offset());
        }
        // A fifth batch after it would push it out of the five the broker
        // remembers, and its resend could no longer be told a duplicate.
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend");
        assert_eq!(again.entry, sent[0].entry);
        assert!(
            p.next_to_send(Writer::idempotent(7, 1), false).is_none(),
            "nothing past the window"
        );
        p.failed(again.entry, false);
        assert!(
            p.unresolved(),
            "a refused resend says nothing of the first send"
        );
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend");
        p.acked(again.entry, again.batch.base_offset());
        assert!(!p.unresolved());
        let next: Vec<Outgoing> =
            std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect();
        assert_eq!(next.len(), MAX_IN_FLIGHT);
        assert_eq!(sequence_of(&next[0]), 6);
    }

    #[test]
    fn a_skipped_refused_batch_gives_its_sequences_to_the_batches_after_it() {
        let mut p = established();
        p.push_batch(batch(10, 3));
        p.push_batch(batch(13, 2));
        p.push_batch(batch(15, 1));
        let refused = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("refused batch");
        let behind = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch behind it");
        assert_eq!((sequence_of(&refused), sequence_of(&behind)), (1, 4));
        assert_eq!(p.skip_refused(refused.entry), 3);
        // The one behind was sent with sequence 4; the broker answers out of order.
        p.failed(behind.entry, false);
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend");
        assert_eq!(again.entry, behind.entry);
        assert_eq!(sequence_of(&again), 1, "takes the refused batch's sequence");
        let last = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("last");
        assert_eq!(sequence_of(&last), 3);
        p.acked(again.entry, again.batch.base_offset());
        p.acked(last.entry, last.batch.base_offset());
        assert_eq!(p.committed(), 16, "the skipped range is done too");
    }

    #[test]
    fn unknown_or_repeated_answers_change_nothing() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 1));
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        assert_eq!(p.acked(a.entry + 10, 0).records, 0);
        assert_eq!(p.acked(a.entry, a.batch.base_offset()).records, 1);
        assert_eq!(
            p.acked(a.entry, a.batch.base_offset()).records,
            0,
            "a second answer is not counted twice"
        );
        p.failed(a.entry, true);
        assert!(!p.has_failed());
    }

    /// Sends every batch the rules allow now.
    fn send_all(p: &mut PartitionState) -> Vec<Outgoing> {
        std::iter::from_fn(|| p.next_to_send(Writer::idempotent(7, 1), false)).collect()
    }

    /// Where a consumer that committed each of `offsets` resumes on the target.
    fn translated(p: &PartitionState, offsets: std::ops::RangeInclusive<i64>) -> Vec<Translation> {
        offsets.map(|c| p.offset_map().translate(c)).collect()
    }

    /// `Exact` for each target offset.
    fn exact(targets: &[i64]) -> Vec<Translation> {
        targets.iter().map(|&t| Translation::Exact(t)).collect()
    }

    #[test]
    fn answers_out_of_order_feed_the_offset_map_in_source_order() {
        // The target held 1,000 records before: ours land from 1,000 on.
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        p.acked(first.entry, 1000);
        for (base, records) in [(2, 3), (5, 4), (9, 1)] {
            p.push_batch(batch(base, records));
        }
        let sent = send_all(&mut p);
        assert_eq!(sent.len(), 3);
        p.acked(sent[2].entry, 1009);
        p.acked(sent[1].entry, 1005);
        assert_eq!(p.committed(), 2);
        assert_eq!(p.offset_map().end(), 2, "nothing past the first gap");
        assert_eq!(
            p.offset_map().translate(5),
            Translation::Behind {
                target: 1002,
                missing: 3
            }
        );
        p.acked(sent[0].entry, 1002);
        assert_eq!((p.committed(), p.offset_map().end()), (10, 10));
        assert_eq!(p.offset_map().points().count(), 1, "one shift throughout");
        let all: Vec<i64> = (1000..=1010).collect();
        assert_eq!(translated(&p, 0..=10), exact(&all));
    }

    #[test]
    fn an_aborted_transaction_rewinds_to_the_committed_checkpoint() {
        let transactional = Writer::transactional(7, 1, MAX_IN_FLIGHT);
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        let first = p.next_to_send(transactional, false).expect("first");
        assert!(first.header[21 + 1] & 0x10 != 0, "the transactional bit");
        p.acked(first.entry, 0);
        p.checkpoint_stored(p.committed());
        // The next transaction: one batch acknowledged, one in flight, a
        // third queued; then it is aborted.
        for (base, records) in [(2, 3), (5, 4), (9, 1)] {
            p.push_batch(batch(base, records));
        }
        let sent = send_all(&mut p);
        p.acked(sent[0].entry, 2);
        assert_eq!(p.offset_map().end(), 5);
        let acked = sent[0].batch.len();
        assert_eq!(
            p.budgeted_bytes(true),
            p.budgeted_bytes(false) - acked,
            "an acknowledged batch's memory is not held back for the commit"
        );

        assert_eq!(p.rewind_to_checkpoint(), 2);
        assert!(p.is_empty());
        assert_eq!(p.budgeted_bytes(false), 0);
        assert_eq!((p.fetch_offset, p.committed()), (2, 2));
        assert_eq!(p.offset_map().end(), 2, "the aborted copy is forgotten");
        // Late answers to what was sent before are ignored.
        assert_eq!(p.acked(sent[1].entry, 5).records, 0);
        // Fetched again, and sent under the new epoch from sequence 0.
        p.push_batch(batch(2, 3));
        let again = p
            .next_to_send(
                Writer {
                    epoch: 2,
                    ..transactional
                },
                false,
            )
            .expect("again");
        assert_eq!(&again.header[53..57], &0i32.to_be_bytes());
        p.acked(again.entry, 9);
        assert_eq!(p.offset_map().translate(3), Translation::Exact(10));
        assert_eq!(p.offset_map().translate(1), Translation::Exact(1));
    }

    #[test]
    fn a_skipped_range_maps_to_the_record_after_it() {
        // Records 0..3, their commit marker at 3, then records 4..6; the
        // marker is fetched while the batch before it is in flight.
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 3));
        let a = p.next_to_send(Writer::idempotent(7, 1), false).expect("a");
        p.push_skip(4);
        assert_eq!(p.offset_map().end(), 0);
        p.acked(a.entry, 0);
        assert_eq!(
            p.offset_map().end(),
            4,
            "the marker is covered once acknowledged"
        );
        p.push_batch(batch(4, 2));
        let b = p.next_to_send(Writer::idempotent(7, 1), false).expect("b");
        p.acked(b.entry, 3);
        // A marker after everything acknowledged widens what is covered at once.
        p.push_skip(7);
        assert_eq!((p.committed(), p.offset_map().end()), (7, 7));
        assert_eq!(p.offset_map().points().count(), 2);
        assert_eq!(translated(&p, 0..=7), exact(&[0, 1, 2, 3, 3, 4, 5, 5]));
    }

    #[test]
    fn a_duplicate_answer_maps_the_batch_where_it_first_landed() {
        let mut p = PartitionState::new(40);
        p.push_batch(batch(40, 1));
        let first = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("first");
        p.acked(first.entry, 0);
        p.push_batch(batch(41, 2));
        p.push_batch(batch(43, 2));
        let sent = send_all(&mut p);
        // The first one landed at 1 but its answer was lost; the second
        // landed after it, at 3.
        p.failed(sent[0].entry, true);
        p.acked(sent[1].entry, 3);
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend");
        // The broker recognises the resend and answers with its offset.
        p.acked(again.entry, 1);
        assert_eq!(p.offset_map().points().count(), 1);
        assert_eq!(translated(&p, 40..=45), exact(&[0, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn a_batch_whose_offset_the_target_did_not_give_follows_the_one_before() {
        let mut p = established();
        p.push_batch(batch(10, 3));
        p.push_skip(14);
        p.push_batch(batch(14, 2));
        let sent = send_all(&mut p);
        // Answered first, but mapped after the batch before it.
        p.acked(sent[1].entry, -1);
        p.acked(sent[0].entry, 10);
        assert_eq!(
            translated(&p, 9..=16),
            exact(&[9, 10, 11, 12, 13, 13, 14, 15])
        );

        // With nothing copied before it either, the map starts after it
        // rather than guess.
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 2));
        let sent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        p.acked(sent.entry, -1);
        assert_eq!(p.offset_map().end(), 2);
        assert_eq!(p.offset_map().translate(1), Translation::TooOld { from: 2 });
    }

    #[test]
    fn a_compacted_batch_maps_record_by_record() {
        // Source batch 10..=19 after compaction: records at 11, 12, 15 and 19.
        let kept = vec![
            OffsetRun {
                first: 11,
                count: 2,
            },
            OffsetRun {
                first: 15,
                count: 1,
            },
            OffsetRun {
                first: 19,
                count: 1,
            },
        ];
        let mut p = PartitionState::new(10);
        p.push_reencoded(batch(10, 4), kept, 20);
        p.push_batch(batch(20, 2));
        let sent = send_all(&mut p);
        p.acked(sent[0].entry, 100);
        let rest = send_all(&mut p);
        p.acked(rest[0].entry, 104);
        assert_eq!((p.committed(), p.offset_map().end()), (22, 22));
        // A consumer that committed an offset compaction emptied resumes at
        // the next record kept.
        let targets = [
            100, 100, 101, 102, 102, 102, 103, 103, 103, 103, 104, 105, 106,
        ];
        assert_eq!(translated(&p, 10..=22), exact(&targets));
        assert_eq!(
            p.offset_map().points().count(),
            3,
            "the record at 19 and the batch after it are one run"
        );
    }

    #[test]
    fn a_refused_batch_skipped_maps_to_nothing() {
        let mut p = established();
        p.push_batch(batch(10, 3));
        p.push_batch(batch(13, 2));
        let sent = send_all(&mut p);
        p.skip_refused(sent[0].entry);
        p.failed(sent[1].entry, false);
        let again = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("resend");
        p.acked(again.entry, 10);
        assert_eq!(translated(&p, 10..=15), exact(&[10, 10, 10, 10, 11, 12]));
    }

    #[test]
    fn a_restart_continues_the_stored_map() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 5));
        let sent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        p.acked(sent.entry, 300);
        p.push_skip(6);
        let stored = p.offset_map().stored();

        let mut resumed = PartitionState::new(0);
        let map = OffsetMap::from_stored(&stored, 6).expect("a map");
        resumed.start_at(6, map);
        assert_eq!(resumed.offset_map(), p.offset_map());
        resumed.push_batch(batch(6, 2));
        let sent = resumed
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        resumed.acked(sent.entry, 305);
        assert_eq!(
            translated(&resumed, 0..=8),
            exact(&[300, 301, 302, 303, 304, 305, 305, 306, 307])
        );
    }

    /// A partition copied here, handed to another instance and back starts
    /// at the checkpoint the other stored, and its producer sequence goes
    /// on. Lost with a batch in flight (its queue dropped), the answer to
    /// that batch acknowledges nothing once it is started again.
    #[test]
    fn a_partition_started_again_goes_on_and_ignores_old_answers() {
        let writer = Writer::idempotent(7, 1);
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 5));
        let first = p.next_to_send(writer, false).expect("batch");
        p.acked(first.entry, 0);
        p.checkpoint_stored(5);
        assert!(p.is_empty(), "handed over cleanly");

        p.start_at(20, OffsetMap::starting_at(20));
        assert_eq!(
            (p.fetch_offset, p.checkpointed, p.committed()),
            (20, 20, 20)
        );
        p.push_batch(batch(20, 3));
        let lost = p.next_to_send(writer, false).expect("batch");
        assert_eq!(sequence_of(&lost), 5, "the sequence goes on");
        assert_eq!(p.rewind_to_checkpoint(), 20, "lost");

        p.start_at(30, OffsetMap::starting_at(30));
        p.push_batch(batch(30, 3));
        let next = p.next_to_send(writer, false).expect("batch");
        assert_eq!(p.acked(lost.entry, 9).records, 0, "an old answer");
        assert_eq!(p.committed(), 30);
        assert_eq!(p.acked(next.entry, 40).records, 3);
        assert_eq!(p.committed(), 33);
        assert_eq!(p.offset_map().translate(31), Translation::Exact(41));
    }

    #[test]
    fn a_plain_copy_stays_one_point_across_a_restart() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 4));
        let sent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        p.acked(sent.entry, 0);
        let map = OffsetMap::from_stored(&p.offset_map().stored(), 4).expect("a map");
        let mut resumed = PartitionState::new(0);
        resumed.start_at(4, map);
        resumed.push_batch(batch(4, 4));
        let sent = resumed
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        resumed.acked(sent.entry, 4);
        assert_eq!(resumed.offset_map().points().count(), 1);
        assert_eq!(resumed.offset_map().translate(6), Translation::Exact(6));
    }

    #[test]
    fn a_new_start_or_a_source_gone_back_starts_the_map_again() {
        let mut p = PartitionState::new(0);
        p.push_batch(batch(0, 10));
        let sent = p
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("batch");
        p.acked(sent.entry, 0);
        // The source lost 6..10 (on_data_loss = continue copies on from 6).
        p.push_skip(6);
        assert_eq!((p.committed(), p.offset_map().end()), (6, 6));
        assert_eq!(
            p.offset_map().translate(3),
            Translation::TooOld { from: 6 },
            "offsets the source reuses are not translated from the old copy"
        );
        p.checkpoint_stored(6);
        p.restart_at(50);
        assert_eq!(p.offset_map(), &OffsetMap::starting_at(50));
    }
}
