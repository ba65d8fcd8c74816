//! The intake of one partition's fetched records: split them into batches,
//! up-convert old-format messages, drop what must not be forwarded (control
//! batches, aborted transactions, batches compaction emptied, data before
//! the fetch position), re-encode what the target would refuse or misread,
//! and queue the rest in the partition's [`PartitionState`].
//!
//! Plain functions over one [`Slot`] and the counters, apart from the fetch
//! stage that calls them: this is where the bytes of a real Fetch response
//! meet the rules of the target, so it is tested on captured frames.
//!
//! [`PartitionState`]: super::partition::PartitionState

use bytes::Bytes;

use super::error::{Cause, PartitionError};
use super::slots::Slot;
use super::stats::{Counters, Skipped};
use crate::batch::{
    split_batches, trim, AbortedTransactions, BatchError, BatchFate, Fetched, LegacyMessages,
    RecordBatch, Reencoded, TimestampType,
};

/// Takes a partition's fetched `records` into its queue; `aborted` is the
/// response's aborted-transactions list (empty for READ_UNCOMMITTED).
/// Returns the bytes of the complete batches taken in (queued or skipped),
/// without the cut-off tail a Fetch brings again. `Err` is why the
/// partition must stop; what came before the failing batch is queued.
pub(super) fn take_records(
    slot: &mut Slot,
    records: &Bytes,
    mut aborted: AbortedTransactions,
    counters: &mut Counters,
) -> Result<usize, PartitionError> {
    let mut batches = split_batches(records);
    for item in &mut batches {
        match item {
            Ok(Fetched::Batch(batch)) => {
                // The source's own batches carry the leader epoch they were
                // written in; up-converted old-format messages have none.
                if batch.next_offset() > slot.state.fetch_offset {
                    slot.epochs
                        .fetched(batch.partition_leader_epoch(), batch.base_offset());
                }
                take_batch(slot, batch, &mut aborted, counters)?
            }
            Ok(Fetched::Legacy(messages)) => take_legacy(slot, &messages, &mut aborted, counters)?,
            Err(e) => return Err(unusable(slot, e)),
        }
    }
    Ok(records.len() - batches.unsplit_len())
}

/// Up-converts old-format entries and takes each resulting batch.
fn take_legacy(
    slot: &mut Slot,
    messages: &LegacyMessages,
    aborted: &mut AbortedTransactions,
    counters: &mut Counters,
) -> Result<(), PartitionError> {
    let batches = messages.up_convert().map_err(|error| {
        slot.error(Cause::UpConvert {
            magic: messages.magic(),
            offset: messages.base_offset(),
            error,
        })
    })?;
    counters.up_converted(&mut slot.tally, batches.len());
    for batch in batches {
        take_batch(slot, batch, aborted, counters)?;
    }
    Ok(())
}

/// Checks one fetched batch and queues it (re-encoded if it must be) or
/// skips it.
///
/// The CRC is checked here only when the batch is not sent as it is: the
/// target broker checks the CRC of every batch it appends, and the patched
/// CRC of a produced batch keeps any damage in the records visible to it
/// ([`RecordBatch::produce_header`]), so checking a batch sent as it is
/// would be a second pass over its bytes for nothing. Every other path
/// decides from, or rewrites, bytes the CRC covers, so a damaged batch must
/// be caught before.
fn take_batch(
    slot: &mut Slot,
    batch: RecordBatch,
    aborted: &mut AbortedTransactions,
    counters: &mut Counters,
) -> Result<(), PartitionError> {
    // Bytes that cannot be read are reported as damage when they are.
    let fate = aborted
        .classify(&batch)
        .map_err(|e| unusable(slot, batch.verify_crc().err().unwrap_or(e)))?;
    let position = slot.state.fetch_offset;
    // A batch that ends before the fetch position was asked for earlier
    // (the position fell inside a compressed batch).
    let behind = batch.next_offset() <= position;
    // The position falls inside the batch: the records below it are not
    // to be copied (the source purged them, or the user started later).
    let straddles = batch.base_offset() < position && !behind;
    // Compaction left fewer records than offsets (the target refuses that),
    // or the records' timestamps are the source's append time (a CreateTime
    // target would show the producer's).
    let needs_reencoding = straddles
        || batch.has_offset_gaps()
        || batch.timestamp_type() == TimestampType::LogAppendTime;
    let sent_as_it_is =
        fate == BatchFate::Forward && !behind && batch.records_count() > 0 && !needs_reencoding;
    if !sent_as_it_is {
        batch.verify_crc().map_err(|e| unusable(slot, e))?;
    }
    if behind {
        return Ok(());
    }
    match fate {
        BatchFate::SkipControl => {
            counters.skipped(&mut slot.tally, Skipped::Control);
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::SkipAborted => {
            counters.skipped(&mut slot.tally, Skipped::Aborted);
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::Forward if batch.records_count() == 0 => {
            counters.skipped(&mut slot.tally, Skipped::Empty);
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::Forward if needs_reencoding => {
            // The slow path. The checkpoint still moves past the source
            // batch's range.
            let reencoded = trim(&batch, position).map_err(|error| {
                slot.error(Cause::Reencode {
                    offset: batch.base_offset(),
                    records: batch.records_count(),
                    offsets: i64::from(batch.last_offset_delta()) + 1,
                    timestamp_type: batch.timestamp_type(),
                    error,
                })
            })?;
            counters.reencoded(&mut slot.tally);
            match reencoded {
                Some(Reencoded {
                    batch: kept,
                    source_runs,
                }) => slot
                    .state
                    .push_reencoded(kept, source_runs, batch.next_offset()),
                // Compaction had left no record at or above the position.
                None => slot.state.push_skip(batch.next_offset()),
            }
        }
        BatchFate::Forward => slot.state.push_batch(batch),
    }
    Ok(())
}

/// Why the partition stops on data it cannot use.
fn unusable(slot: &Slot, error: BatchError) -> PartitionError {
    slot.error(Cause::Unusable {
        offset: slot.state.fetch_offset,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset_map::Translation;
    use crate::pipeline::error::Cause;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::{fixture, slot};
    use uuid::Uuid;

    /// Takes a captured partition's records into a partition copying from
    /// `offset`, READ_COMMITTED when `committed`.
    fn take(
        name: &str,
        offset: i64,
        committed: bool,
    ) -> (Slot, Counters, Result<usize, PartitionError>) {
        let data = fixture(name);
        let mut slot = slot("t", Uuid::nil(), 0, offset);
        let mut counters = Counters::default();
        let aborted = match (committed, data.aborted_transactions.as_deref()) {
            (true, Some(list)) => AbortedTransactions::new(list),
            _ => AbortedTransactions::new(&[]),
        };
        let records = data.records.clone().unwrap_or_default();
        let result = take_records(&mut slot, &records, aborted, &mut counters);
        (slot, counters, result)
    }

    /// (base offset, records) of each batch queued, in order.
    fn queued(slot: &Slot) -> Vec<(i64, i32)> {
        slot.state
            .batches()
            .map(|b| (b.base_offset(), b.records_count()))
            .collect()
    }

    #[test]
    fn read_committed_forwards_committed_data_only_and_never_a_marker() {
        let (slot, counters, result) = take("fetch-txn-read-committed", 0, true);
        result.expect("usable");
        // 0..=5 committed, 6 its marker, 7..=12 aborted, 13 the abort
        // marker, 14..=17 committed, 18 its marker.
        assert_eq!(queued(&slot), [(0, 6), (14, 4)]);
        assert_eq!(counters.aborted_batches_skipped, 1);
        assert_eq!(counters.control_batches_skipped, 3);
        assert_eq!(
            slot.state.fetch_offset, 19,
            "the next Fetch starts after the last marker"
        );
    }

    #[test]
    fn read_uncommitted_forwards_the_aborted_data_too() {
        let (slot, counters, result) = take("fetch-txn-read-committed", 0, false);
        result.expect("usable");
        assert_eq!(queued(&slot), [(0, 6), (7, 6), (14, 4)]);
        assert_eq!(counters.aborted_batches_skipped, 0);
        assert_eq!(counters.control_batches_skipped, 3);
    }

    #[test]
    fn batches_before_the_fetch_position_are_dropped() {
        let (slot, counters, result) = take("fetch-txn-read-committed", 7, false);
        result.expect("usable");
        assert_eq!(queued(&slot), [(7, 6), (14, 4)]);
        assert_eq!(
            counters.control_batches_skipped, 2,
            "the marker at 6 was behind"
        );
    }

    #[test]
    fn compacted_gaps_are_renumbered_and_empty_batches_skipped() {
        let (slot, counters, result) = take("fetch-compacted", 16, true);
        result.expect("usable");
        // 16..=19 was emptied; 20, 25, .., 40 each kept 1 record of 5
        // offsets; 45..=49 is whole.
        assert_eq!(counters.empty_batches_skipped, 1);
        assert_eq!(counters.reencoded_batches, 5);
        let batches: Vec<&RecordBatch> = slot.state.batches().collect();
        assert_eq!(batches.len(), 6);
        for b in &batches[..5] {
            assert!(!b.has_offset_gaps(), "renumbered: {}", b.base_offset());
            assert_eq!(b.records_count(), 1);
        }
        assert_eq!(queued(&slot)[5], (45, 5), "forwarded as it came");
        assert_eq!(slot.state.fetch_offset, 50);
    }

    /// A consumer that committed any offset of a compacted partition
    /// resumes on the target at the copy of the first record the source
    /// kept at or after it: the re-encoded batches map record by record.
    #[test]
    fn the_offset_map_of_a_compacted_partition_names_each_kept_record() {
        let (mut slot, _, result) = take("fetch-compacted", 16, true);
        result.expect("usable");
        let records = fixture("fetch-compacted").records.unwrap_or_default();
        let kept: Vec<i64> = source_records(&records)
            .into_iter()
            .map(|(offset, _, _)| offset)
            .filter(|&offset| offset >= 16)
            .collect();
        // An empty target appends them from offset 0, in order.
        let mut target = 0;
        while let Some(sent) = slot.state.next_to_send(Writer::idempotent(7, 1), false) {
            slot.state.acked(sent.entry, target);
            target += i64::from(sent.batch.records_count());
        }
        assert_eq!(target, kept.len() as i64);
        let map = slot.state.offset_map();
        assert_eq!(map.end(), 50);
        for committed in 16..=50 {
            let resume = kept
                .iter()
                .position(|&o| o >= committed)
                .unwrap_or(kept.len());
            assert_eq!(
                map.translate(committed),
                Translation::Exact(resume as i64),
                "committed {committed}"
            );
        }
    }

    #[test]
    fn a_damaged_batch_that_must_be_rewritten_stops_the_partition_at_its_offset() {
        let data = fixture("fetch-compacted");
        let records = data.records.unwrap_or_default();
        // Flip the last byte of the second batch (offsets 20..=24), which
        // needs re-encoding, so its CRC is checked.
        let lens: Vec<usize> = split_batches(&records)
            .map(|b| match b {
                Ok(Fetched::Batch(b)) => b.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut damaged = records.to_vec();
        damaged[lens[0] + lens[1] - 1] ^= 0xff;
        let mut slot = slot("t", Uuid::nil(), 0, 16);
        let mut counters = Counters::default();
        let error = take_records(
            &mut slot,
            &Bytes::from(damaged),
            AbortedTransactions::new(&[]),
            &mut counters,
        )
        .expect_err("damaged");
        assert!(
            matches!(
                error.cause,
                Cause::Unusable {
                    offset: 20,
                    error: BatchError::CrcMismatch {
                        base_offset: 20,
                        ..
                    }
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("unusable data from the source in t-0 at offset 20: "));
        assert!(
            slot.state.batches().next().is_none(),
            "only the empty batch before it was taken"
        );
        assert_eq!(slot.state.fetch_offset, 20);
    }

    /// Source offset, key and value of every data record in `records`, as
    /// Kafka's codec crate decodes them (not this crate).
    fn source_records(records: &Bytes) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
        let mut rest = records.clone();
        let mut out = Vec::new();
        while let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut rest) {
            out.extend(
                set.records
                    .into_iter()
                    .filter(|r| !r.control)
                    .map(|r| (r.offset, r.key, r.value)),
            );
        }
        out
    }

    /// A Fetch from inside a batch (a log start offset after DeleteRecords,
    /// a start position by timestamp) gets the whole batch back: only the
    /// records at or above the position may be queued, or data the source
    /// purged comes back on the target.
    #[test]
    fn a_batch_the_fetch_position_falls_inside_is_trimmed_to_it() {
        for name in ["fetch-none", "fetch-gzip", "fetch-zstd", "fetch-compacted"] {
            let data = fixture(name);
            let records = data.records.clone().unwrap_or_default();
            let all = source_records(&records);
            let (first, end) = (all[0].0, all[all.len() - 1].0 + 1);
            for position in first..=end {
                let (slot, counters, result) = take(name, position, false);
                result.unwrap_or_else(|e| panic!("{name} at {position}: {e}"));
                let mut queued = Vec::new();
                for b in slot.state.batches() {
                    assert!(b.base_offset() >= position, "{name} at {position}: {b:?}");
                    queued.extend(
                        source_records(b.as_bytes())
                            .into_iter()
                            .map(|(_, k, v)| (k, v)),
                    );
                }
                let wanted: Vec<_> = all
                    .iter()
                    .filter(|(offset, _, _)| *offset >= position)
                    .map(|(_, k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(queued, wanted, "{name} at {position}");
                let straddled = split_batches(&records)
                    .filter_map(|b| match b {
                        Ok(Fetched::Batch(b)) => Some(b),
                        _ => None,
                    })
                    .filter(|b| b.base_offset() < position && b.next_offset() > position)
                    .count() as u64;
                if name != "fetch-compacted" {
                    assert_eq!(
                        counters.reencoded_batches, straddled,
                        "{name} at {position}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_batch_from_before_the_log_start_is_trimmed_to_it() {
        use crate::pipeline::testing::batch;
        // One batch of 2,000 records; the source deleted up to 1,499.
        let whole = batch(0, 2000);
        let mut slot = slot("t", Uuid::nil(), 0, 1500);
        let mut counters = Counters::default();
        take_records(
            &mut slot,
            whole.as_bytes(),
            AbortedTransactions::new(&[]),
            &mut counters,
        )
        .expect("usable");
        assert_eq!(queued(&slot), [(1500, 500)]);
        assert_eq!(counters.reencoded_batches, 1);
        assert_eq!(slot.state.fetch_offset, 2000);
    }

    /// What the throttle counts: the complete batches, queued or skipped;
    /// a batch cut off at the end comes again whole with the next Fetch.
    #[test]
    fn counts_the_complete_batches_taken_in() {
        use crate::pipeline::testing::batch;
        let (first, second) = (batch(0, 10), batch(10, 10));
        let mut records = first.as_bytes().to_vec();
        records.extend_from_slice(second.as_bytes());
        records.truncate(first.len() + second.len() / 2);
        let mut slot = slot("t", Uuid::nil(), 0, 0);
        let mut counters = Counters::default();
        let taken = take_records(
            &mut slot,
            &Bytes::from(records),
            AbortedTransactions::new(&[]),
            &mut counters,
        )
        .expect("usable");
        assert_eq!(taken, first.len());
        assert_eq!(queued(&slot), [(0, 10)]);
        assert_eq!(slot.state.fetch_offset, 10);
    }

    /// `batch` with its header edited at `at` and its CRC made to match
    /// again: what a crafted (not a damaged) batch looks like.
    fn crafted(batch: &RecordBatch, at: usize, value: i32) -> Bytes {
        let mut bytes = batch.as_bytes().to_vec();
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.into()
    }

    /// A crafted header with a valid CRC reaches the partition's sequence
    /// arithmetic only if the batch view lets it through: it must stop the
    /// partition with an error, never panic or hand out a sequence.
    #[test]
    fn a_batch_with_a_negative_or_impossible_record_count_stops_the_partition() {
        use crate::pipeline::testing::batch;
        // recordsCount at 57, lastOffsetDelta at 23.
        for (at, value) in [(57, -1), (57, i32::MIN), (57, 4), (23, -2), (23, i32::MIN)] {
            let records = crafted(&batch(0, 3), at, value);
            let mut slot = slot("t", Uuid::nil(), 0, 0);
            let mut counters = Counters::default();
            let result = take_records(
                &mut slot,
                &records,
                AbortedTransactions::new(&[]),
                &mut counters,
            );
            let sent = slot.state.next_to_send(Writer::idempotent(7, 1), false);
            let error = result.expect_err(&format!("field at {at} = {value}"));
            assert!(
                matches!(
                    error.cause,
                    Cause::Unusable {
                        offset: 0,
                        error: BatchError::Corrupt { .. }
                    }
                ),
                "{error}"
            );
            assert!(sent.is_none(), "nothing queued");
        }
    }

    #[test]
    fn old_format_messages_are_up_converted_in_order() {
        for name in ["fetch-v1-none", "fetch-v1-gzip", "fetch-v0-snappy"] {
            let (slot, counters, result) = take(name, 0, true);
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(counters.up_converted_batches > 0, "{name}");
            let mut next = 0;
            for b in slot.state.batches() {
                assert_eq!(b.base_offset(), next, "{name}: contiguous, in order");
                next = b.next_offset();
            }
            assert_eq!(next, 20, "{name}: all 20 messages");
            assert_eq!(slot.state.fetch_offset, 20, "{name}");
        }
    }
}
