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
use super::stats::Counters;
use crate::batch::{
    reencode, split_batches, AbortedTransactions, BatchError, BatchFate, Fetched, LegacyMessages,
    RecordBatch, TimestampType,
};

/// Takes a partition's fetched `records` into its queue; `aborted` is the
/// response's aborted-transactions list (empty for READ_UNCOMMITTED). `Err`
/// is why the partition must stop; what came before the failing batch is
/// queued.
pub(super) fn take_records(
    slot: &mut Slot,
    records: &Bytes,
    mut aborted: AbortedTransactions,
    counters: &mut Counters,
) -> Result<(), PartitionError> {
    for item in split_batches(records) {
        match item {
            Ok(Fetched::Batch(batch)) => take_batch(slot, batch, &mut aborted, counters)?,
            Ok(Fetched::Legacy(messages)) => take_legacy(slot, &messages, &mut aborted, counters)?,
            Err(e) => return Err(unusable(slot, e)),
        }
    }
    Ok(())
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
    counters.up_converted_batches += batches.len() as u64;
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
    // A batch that ends before the fetch position was asked for earlier
    // (the position fell inside a compressed batch).
    let behind = batch.next_offset() <= slot.state.fetch_offset;
    // Compaction left fewer records than offsets (the target refuses that),
    // or the records' timestamps are the source's append time (a CreateTime
    // target would show the producer's).
    let needs_reencoding =
        batch.has_offset_gaps() || batch.timestamp_type() == TimestampType::LogAppendTime;
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
            counters.control_batches_skipped += 1;
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::SkipAborted => {
            counters.aborted_batches_skipped += 1;
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::Forward if batch.records_count() == 0 => {
            counters.empty_batches_skipped += 1;
            slot.state.push_skip(batch.next_offset());
        }
        BatchFate::Forward if needs_reencoding => {
            // The slow path. The checkpoint still moves past the source
            // batch's range.
            let reencoded = reencode(&batch).map_err(|error| {
                slot.error(Cause::Reencode {
                    offset: batch.base_offset(),
                    records: batch.records_count(),
                    offsets: i64::from(batch.last_offset_delta()) + 1,
                    timestamp_type: batch.timestamp_type(),
                    error,
                })
            })?;
            counters.reencoded_batches += 1;
            slot.state
                .push_batch_with_next_offset(reencoded, batch.next_offset());
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
