//! The landing check: whether an old batch whose answer was lost is on the
//! target, read from the target's log before the batch is resent.
//!
//! A resend under the same producer id and sequence is how a lost answer is
//! normally resolved: the broker answers "duplicate" for a batch it has. But
//! a broker forgets a producer `producer.id.expiration.ms` after the
//! maxTimestamp of its last batch, which for a copy is the source's
//! CreateTime: copying data older than that (a backfill, a migration of old
//! topics), the target may have forgotten us by the time the resend comes,
//! and takes it as a new batch, a duplicate. So such a batch is looked for
//! first where it would be: the target offset our acknowledged data ends at
//! (the partition's offset map knows it). Old data goes one batch at a time,
//! so only this batch of ours can follow there.
//!
//! - A batch there with our producer id, epoch and the batch's sequence: it
//!   landed, and is acknowledged at that offset.
//! - The log ends there (the high watermark): it did not land, and is resent.
//! - Other data there: someone else writes the target partition, and
//!   whether ours is further on cannot be told within one read; the
//!   partition stops rather than risk a duplicate.
//!
//! A consumer read sees up to the high watermark only: an append not yet
//! replicated when the check reads is not seen, and its resend can then be
//! a duplicate if the target forgets us in between. The check narrows the
//! window to that; it does not close it.

use std::sync::Arc;

use bytes::Bytes;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::ResponseError;

use super::error::{Cause, Refusal, RefusalKind};
use super::metadata::MetadataView;
use super::partition::LandingCheck;
use super::slots::{SlotId, Slots};
use super::stats::Counters;
use crate::batch::{split_batches, Fetched};
use crate::cluster::{
    fetch_request, response_partitions, Cluster, ClusterError, PartitionFetch, Role,
};

/// Bytes read after our copy's end: far more than one batch of ours.
const READ_BYTES: i32 = 1024 * 1024;

/// A landing check to start: the partition, what to look for, where.
#[derive(Debug)]
pub(super) struct LandingRequest {
    pub(super) slot: SlotId,
    pub(super) check: LandingCheck,
    broker: i32,
    fetch: PartitionFetch,
    producer: (i64, i16),
}

/// What the target's log shows after our copy's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Our batch, at this target offset.
    Landed(i64),
    /// Nothing: the log ends where our copy does.
    Absent,
    /// Another producer's batch at this offset, and ours not within the read.
    Foreign(i64),
    /// The log ends before our copy does: the target lost acknowledged data.
    Shorter,
}

/// The answer to a [`LandingRequest`].
#[derive(Debug)]
pub(super) struct LandingAnswer {
    pub(super) slot: SlotId,
    pub(super) check: LandingCheck,
    pub(super) result: Result<Seen, LandingError>,
}

/// Why the target's log could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum LandingError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the target answered the read with {0:?}")]
    Refused(ResponseError),
    #[error("the target's answer did not name the partition")]
    Missing,
}

/// The checks due now: every partition whose first unacknowledged batch is
/// old and of unknown fate, not already being checked, with a known leader.
/// Each is marked as being checked.
pub(super) fn due_checks(
    slots: &mut Slots,
    meta: &MetadataView,
    stale_before_ms: i64,
    producer: (i64, i16),
    now: Instant,
) -> Vec<LandingRequest> {
    let mut due = Vec::new();
    for (id, slot) in slots.iter_mut() {
        if slot.checking_landing || slot.produce_backoff.waiting(now) {
            continue;
        }
        let Some(check) = slot.state.landing_check(stale_before_ms) else {
            continue;
        };
        let target = meta.target();
        let (Some(broker), Some(topic)) = (
            target.leader(&slot.target_topic, slot.partition),
            target.topics.get(&*slot.target_topic),
        ) else {
            meta.want_refresh(Role::Target);
            continue;
        };
        slot.checking_landing = true;
        due.push(LandingRequest {
            slot: id,
            check,
            broker,
            fetch: PartitionFetch {
                topic: slot.target_topic.to_string(),
                topic_id: topic.id,
                partition: slot.partition,
                offset: check.target_offset,
                last_fetched_epoch: -1,
                leader_epoch: -1,
                max_bytes: READ_BYTES,
            },
            producer,
        });
    }
    due
}

/// Reads the target's log after our copy's end and looks for the batch.
pub(super) async fn look(target: Arc<Cluster>, request: LandingRequest) -> LandingAnswer {
    let LandingRequest {
        slot,
        check,
        broker,
        fetch,
        producer,
    } = request;
    let result = read(&target, broker, fetch, producer, check.sequence).await;
    LandingAnswer {
        slot,
        check,
        result,
    }
}

async fn read(
    target: &Cluster,
    broker: i32,
    fetch: PartitionFetch,
    producer: (i64, i16),
    sequence: i32,
) -> Result<Seen, LandingError> {
    let names = crate::cluster::TopicNames::from_iter([(fetch.topic_id, fetch.topic.clone())]);
    // Read uncommitted: the batch is ours, not a transaction's.
    let request = fetch_request(&[fetch], 0, Duration::ZERO, READ_BYTES);
    let response = target.send(broker, request).await?;
    let (_, data) = response_partitions(response, &names)
        .next()
        .ok_or(LandingError::Missing)?;
    match data.error_code.err() {
        None => Ok(find(&data.records.unwrap_or_default(), producer, sequence)),
        Some(ResponseError::OffsetOutOfRange) => Ok(Seen::Shorter),
        Some(error) => Err(LandingError::Refused(error)),
    }
}

/// Looks for our batch (producer id, epoch, base sequence) in the records
/// read after our copy's end.
fn find(records: &Bytes, (producer_id, producer_epoch): (i64, i16), sequence: i32) -> Seen {
    let mut first_foreign = None;
    for fetched in split_batches(records) {
        let Ok(Fetched::Batch(batch)) = fetched else {
            continue;
        };
        if batch.producer_id() == producer_id
            && batch.producer_epoch() == producer_epoch
            && batch.base_sequence() == sequence
        {
            return Seen::Landed(batch.base_offset());
        }
        first_foreign.get_or_insert(batch.base_offset());
    }
    first_foreign.map_or(Seen::Absent, Seen::Foreign)
}

/// Applies what the check found: acknowledged where it landed, resent when
/// absent, stopped when it cannot be told; a failed read is tried again
/// after the partition's backoff.
pub(super) fn answered(
    slots: &mut Slots,
    meta: &MetadataView,
    counters: &mut Counters,
    answer: LandingAnswer,
    now: Instant,
) {
    let LandingAnswer {
        slot: id,
        check,
        result,
    } = answer;
    let slot = &mut slots[id];
    slot.checking_landing = false;
    match result {
        Ok(Seen::Landed(offset)) => {
            tracing::info!(
                topic = %slot.topic,
                partition = slot.partition,
                range = ?slot.state.entry_range(check.entry),
                target_offset = offset,
                "a batch whose answer was lost is on the target; not resent"
            );
            let acked = slot.state.found_on_target(check.entry, offset);
            counters.landed(&mut slot.tally, acked);
            counters.found_on_target += 1;
        }
        Ok(Seen::Absent) => {
            tracing::debug!(
                topic = %slot.topic,
                partition = slot.partition,
                range = ?slot.state.entry_range(check.entry),
                "a batch whose answer was lost is not on the target; resending"
            );
            slot.state.not_on_target(check.entry);
        }
        Ok(seen @ (Seen::Foreign(_) | Seen::Shorter)) => {
            let why = match seen {
                Seen::Foreign(offset) => format!(
                    "its answer was lost, and the target partition holds another \
                     producer's data at offset {offset}, where our copy ends"
                ),
                _ => format!(
                    "its answer was lost, and the target partition's log ends before \
                     offset {}, where our copy ends: the target lost acknowledged data",
                    check.target_offset
                ),
            };
            let error = slot.error(Cause::TargetRefused(Refusal {
                range: slot.state.entry_range(check.entry),
                error: None,
                message: Some(why),
                kind: RefusalKind::OutcomeUnknown,
            }));
            slot.stop(error);
        }
        Err(e) => {
            tracing::warn!(
                topic = %slot.topic,
                partition = slot.partition,
                error = %e,
                "cannot read the target to tell whether a batch landed; trying again"
            );
            slot.produce_backoff.fail(now);
            meta.want_refresh(Role::Target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ProducerStamp, RecordBatch};
    use crate::pipeline::testing::batch;
    use bytes::BytesMut;

    /// The target's log after our copy's end: `batch(base, count)` as a
    /// broker stores it, written by `producer` with `sequence`.
    fn stored(base: i64, count: i32, producer: (i64, i16), sequence: i32) -> RecordBatch {
        let source = batch(0, count);
        let header = source.produce_header(ProducerStamp {
            producer_id: producer.0,
            producer_epoch: producer.1,
            base_sequence: sequence,
            transactional: false,
        });
        let mut bytes = BytesMut::from(&source.as_bytes()[..]);
        bytes[..header.len()].copy_from_slice(&header);
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        RecordBatch::parse(bytes.freeze()).expect("a batch")
    }

    fn log(batches: &[RecordBatch]) -> Bytes {
        let mut all = BytesMut::new();
        for batch in batches {
            all.extend_from_slice(batch.as_bytes());
        }
        all.freeze()
    }

    #[test]
    fn our_batch_is_told_by_producer_epoch_and_sequence() {
        let us = (7, 2);
        let ours = stored(100, 5, us, 40);
        assert_eq!(find(&log(&[ours]), us, 40), Seen::Landed(100));
        assert_eq!(find(&Bytes::new(), us, 40), Seen::Absent);
        // Another sequence of ours, another epoch, another producer: not it.
        for other in [
            stored(100, 5, us, 45),
            stored(100, 5, (7, 1), 40),
            stored(100, 5, (8, 2), 40),
        ] {
            assert_eq!(find(&log(&[other]), us, 40), Seen::Foreign(100));
        }
        // Behind another producer's batch, still found.
        let foreign = stored(100, 5, (8, 0), 0);
        let ours_after = stored(105, 5, us, 40);
        assert_eq!(
            find(&log(&[foreign, ours_after]), us, 40),
            Seen::Landed(105)
        );
    }
}
