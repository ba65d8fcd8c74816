//! The produce stage: Produce requests to each target broker, one batch per
//! partition per request (Kafka's rule), many partitions per request, and up
//! to `max_in_flight_requests` requests pipelined on each connection (in
//! exactly-once mode, at least a partition's window,
//! `transaction_max_in_flight_batches`, so that it can fill it).
//!
//! Every batch is written as kafka-mirror's own idempotent producer
//! ([`ProducerIdentity`]: the producer id from InitProducerId, a sequence
//! per partition), so a retried batch that had in fact landed is dropped by
//! the broker as a duplicate, and a batch that would land after a lost one
//! is refused: pipelining keeps order. [`classify`] is the one place that
//! decides what a produce error means; [`ProduceStage::answered`] applies it.
//!
//! [`ProduceStage`] owns the requests in flight per broker and the producer
//! identity. It decides and returns [`ProduceJob`]s; putting them on the
//! wire in order is the engine's per-broker lane (`lane.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error::{Cause, PartitionError, Refusal, RefusalKind, CORRUPT_RESEND_LIMIT};
use super::metadata::MetadataView;
use super::ownership::Lease;
use super::partition::{Outgoing, Recovery};
use super::producer::{ProducerIdentity, RenewalReason};
use super::slots::{Slot, SlotId, Slots};
use super::stats::{Counters, Skipped};
use super::transaction::{TransactionFailure, TransactionStage};
use crate::cluster::{produce_request, ClusterError, Role};
use crate::config::{RefusedBatchPolicy, ReplicationConfig};
use crate::net::splice::{Splice, Splices};

/// Stop adding partitions to a Produce request past this size (one batch is
/// always added, whatever its size).
const PRODUCE_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Kafka's default `producer.id.expiration.ms`, used until the target says otherwise.
pub(super) const KAFKA_PRODUCER_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// How much sooner than the target's expiry data counts as old.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10 * 60);
/// The broker waits this long for the in-sync replicas (acks=all).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Refusals in a row of a partition's batches, for our producer id or (for its
/// first unacknowledged batch) out of order, before the broker's sequence
/// state is taken to no longer match ours.
const OUT_OF_ORDER_LIMIT: u32 = 5;

/// What a produce answer means for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// On the target (including a duplicate the broker recognised).
    Landed,
    /// Send again, after a metadata refresh when `refresh` is set.
    /// `maybe_written`: the broker may have appended it all the same.
    Retry { refresh: bool, maybe_written: bool },
    /// The sequence does not follow the last one the broker has.
    OutOfOrder,
    /// Not written: the broker no longer takes our producer id and epoch
    /// (or, in a transaction, the transaction).
    IdentityRefused,
    /// Not written: the target topic's settings refuse this batch.
    RefusedByTopic,
    /// Not written: the batch fails its CRC on the target. Our copy of the
    /// source batch tells whether it came damaged from the source.
    Corrupt,
    /// Cannot succeed by retrying.
    Fatal,
}
/// Decides what a produce error code means.
fn classify(error: Option<ResponseError>) -> Outcome {
    match error {
        None | Some(ResponseError::DuplicateSequenceNumber) => Outcome::Landed,
        Some(ResponseError::OutOfOrderSequenceNumber) => Outcome::OutOfOrder,
        // The last two come only in a transaction (exactly-once): the
        // renewal that follows aborts it.
        Some(
            ResponseError::UnknownProducerId
            | ResponseError::InvalidProducerEpoch
            | ResponseError::ProducerFenced
            | ResponseError::InvalidTxnState
            | ResponseError::TransactionAbortable,
        ) => Outcome::IdentityRefused,
        Some(
            ResponseError::MessageTooLarge
            | ResponseError::RecordListTooLarge
            | ResponseError::InvalidTimestamp
            | ResponseError::InvalidRecord,
        ) => Outcome::RefusedByTopic,
        Some(ResponseError::CorruptMessage) => Outcome::Corrupt,
        // Refused before the append.
        Some(
            ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::UnknownTopicId
            | ResponseError::FencedLeaderEpoch,
        ) => Outcome::Retry {
            refresh: true,
            maybe_written: false,
        },
        Some(
            ResponseError::NotEnoughReplicas
            | ResponseError::ThrottlingQuotaExceeded
            | ResponseError::ConcurrentTransactions,
        ) => Outcome::Retry {
            refresh: false,
            maybe_written: false,
        },
        // The leader may have appended it and lost track (a timeout waiting for
        // the replicas, a failing disk, a dropped connection).
        Some(
            ResponseError::RequestTimedOut
            | ResponseError::NotEnoughReplicasAfterAppend
            | ResponseError::NetworkException,
        ) => Outcome::Retry {
            refresh: false,
            maybe_written: true,
        },
        Some(error) if error.is_retriable() => Outcome::Retry {
            refresh: true,
            maybe_written: true,
        },
        Some(_) => Outcome::Fatal,
    }
}

/// One partition's answer in a Produce response: error code, error message,
/// and the target offset of the batch's first record (-1 when not given).
type PartitionAnswer = (i16, Option<String>, i64);

/// A Produce request to send to `broker`, its splices, and the `(slot,
/// entry)` of each batch in it.
#[derive(Debug)]
pub(super) struct ProduceJob {
    pub(super) broker: i32,
    pub(super) request: ProduceRequest,
    pub(super) splices: Splices,
    pub(super) sent: Vec<(SlotId, u64)>,
    /// Goes out only while this holds.
    pub(super) lease: Lease,
}

/// The answer to a [`ProduceJob`].
#[derive(Debug)]
pub(super) struct ProduceReply {
    pub(super) broker: i32,
    /// Slots and the entry of each that the request carried.
    pub(super) sent: Vec<(SlotId, u64)>,
    pub(super) result: Result<ProduceResponse, NoAnswer>,
}

/// Why a [`ProduceJob`] has no answer.
#[derive(Debug)]
pub(super) enum NoAnswer {
    /// It failed on its way, or its answer was lost: the broker may have
    /// appended it all the same.
    Failed(ClusterError),
    /// It never went out: this instance's lease on its partitions ended
    /// first (see `ownership.rs`).
    LeaseEnded,
}

/// What the stage reads and owns nothing of.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProduceContext<'a> {
    pub(super) config: &'a ReplicationConfig,
    pub(super) meta: &'a MetadataView,
    /// Exactly-once: the open transaction, which says which partitions may
    /// be written now.
    pub(super) transaction: Option<&'a TransactionStage>,
    /// Until when this instance may write its partitions.
    pub(super) lease: Lease,
}

/// The produce stage's own state.
#[derive(Debug)]
pub(super) struct ProduceStage {
    /// The target's `producer.id.expiration.ms`: how long after a batch's
    /// maxTimestamp the target may forget our producer on that partition.
    forgets_producers_after: Duration,
    /// Requests in flight per target broker.
    in_flight: HashMap<i32, usize>,
    producer: ProducerIdentity,
}

impl ProduceStage {
    /// A stage writing as the producer the target gave at startup.
    pub(super) fn new(producer: ProducerIdentity) -> Self {
        ProduceStage {
            in_flight: HashMap::new(),
            producer,
            forgets_producers_after: KAFKA_PRODUCER_EXPIRY,
        }
    }

    /// The target's `producer.id.expiration.ms`, when it is not Kafka's default.
    pub(super) fn with_producer_expiry(mut self, expiry: Duration) -> Self {
        self.forgets_producers_after = expiry;
        self
    }

    /// Batches written before this wall-clock time (ms since the epoch) are
    /// old enough for the target to forget our producer soon after it
    /// appends them: the expiry, less a margin for the time a batch spends
    /// on its way and for clocks that disagree.
    pub(super) fn stale_before_ms(&self) -> i64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let expiry = self.forgets_producers_after;
        let margin = (expiry / 2).min(EXPIRY_MARGIN);
        let expiry_ms =
            i64::try_from(expiry.saturating_sub(margin).as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(expiry_ms)
    }

    /// Produce requests in flight, over all brokers.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.values().sum()
    }

    /// The producer identity, whose renewal the engine drives.
    pub(super) fn producer(&mut self) -> &mut ProducerIdentity {
        &mut self.producer
    }

    /// The Produce requests to start now: on every target broker with room
    /// for more, each carrying the next batch of every partition that may
    /// send one.
    pub(super) fn start(
        &mut self,
        slots: &mut Slots,
        cx: ProduceContext<'_>,
        now: Instant,
    ) -> Vec<ProduceJob> {
        let mut by_leader: BTreeMap<i32, Vec<SlotId>> = BTreeMap::new();
        let mut leaderless = false;
        for (id, slot) in slots.iter() {
            if !slot.may_produce() || slot.produce_backoff.waiting(now) {
                continue;
            }
            let in_transaction =
                |t: &TransactionStage| t.may_send(&(slot.target_topic.clone(), slot.partition));
            if !cx.transaction.is_none_or(in_transaction) {
                continue;
            }
            match cx.meta.target().leader(&slot.target_topic, slot.partition) {
                Some(leader) => by_leader.entry(leader).or_default().push(id),
                None => leaderless = true,
            }
        }
        if leaderless {
            cx.meta.want_refresh(Role::Target);
        }
        let writer = self.producer.writer();
        // Each request carries one batch of a partition: a partition's
        // window needs as many requests on the connection.
        let limit = if writer.transactional {
            cx.config.max_in_flight_requests.max(writer.window)
        } else {
            cx.config.max_in_flight_requests
        };
        // A transactional producer's renewal aborts all it wrote: nothing is
        // worth sending until it is done.
        if writer.transactional && self.producer.renewing() {
            return Vec::new();
        }
        let resolving_only =
            self.producer.renewing() || cx.transaction.is_some_and(TransactionStage::closing);
        let stale_before_ms = self.stale_before_ms();
        let open_transaction = cx.transaction.map(TransactionStage::number);
        let mut jobs = Vec::new();
        for (broker, ids) in by_leader {
            let in_flight = self.in_flight.entry(broker).or_default();
            while *in_flight < limit {
                let mut sent = Vec::new();
                let mut topics: BTreeMap<Arc<str>, Vec<(i32, Splice)>> = BTreeMap::new();
                let mut size = 0;
                for &id in &ids {
                    if size >= PRODUCE_REQUEST_BYTES {
                        break;
                    }
                    let slot = &mut slots[id];
                    if slot.checking_landing
                        || slot
                            .state
                            .must_wait_for_old_data(stale_before_ms, open_transaction)
                        || slot.state.landing_check(stale_before_ms).is_some()
                    {
                        continue;
                    }
                    let Some(Outgoing {
                        entry,
                        batch,
                        header,
                    }) = slot.state.next_to_send(writer, resolving_only)
                    else {
                        continue;
                    };
                    // The new header goes on the wire in place of the
                    // batch's own, the records by reference.
                    let Some(splice) = Splice::new(batch.as_bytes().clone(), header) else {
                        // A parsed batch always holds a whole header; were
                        // it not so, resending would not help either.
                        slot.state.failed(entry, false);
                        continue;
                    };
                    size += batch.len();
                    sent.push((id, entry));
                    topics
                        .entry(slot.target_topic.clone())
                        .or_default()
                        .push((slot.partition, splice));
                }
                if sent.is_empty() {
                    break;
                }
                let (mut request, splices) =
                    produce_request(cx.meta.target(), topics, PRODUCE_TIMEOUT_MS);
                if let Some(id) = self.producer.transactional_id() {
                    request.transactional_id =
                        Some(TransactionalId(StrBytes::from_string(id.to_string())));
                }
                *in_flight += 1;
                jobs.push(ProduceJob {
                    broker,
                    request,
                    splices,
                    sent,
                    lease: cx.lease,
                });
            }
        }
        jobs
    }

    /// Applies a Produce answer to each batch it carried.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        cx: ProduceContext<'_>,
        counters: &mut Counters,
        reply: ProduceReply,
        now: Instant,
    ) {
        let ProduceReply {
            broker,
            sent,
            result,
        } = reply;
        if let Some(count) = self.in_flight.get_mut(&broker) {
            *count -= 1;
        }
        let response = match result {
            Ok(response) => response,
            Err(NoAnswer::LeaseEnded) => {
                for (id, entry) in sent {
                    slots[id].state.failed(entry, false);
                }
                return;
            }
            Err(NoAnswer::Failed(e)) => {
                tracing::warn!(broker, error = %e, "Produce failed; resending after a metadata refresh");
                counters.produce_retries += 1;
                for (id, entry) in sent {
                    self.failed(&mut slots[id], entry, true, now);
                    slots[id].produce_backoff.fail(now);
                }
                cx.meta.want_refresh(Role::Target);
                return;
            }
        };
        // Each partition's answer, by target topic and partition.
        let mut answers: HashMap<String, HashMap<i32, PartitionAnswer>> = HashMap::new();
        let names = cx.meta.names(Role::Target);
        for topic in response.responses {
            let Some(name) = names.resolve(topic.topic_id, &topic.name) else {
                continue;
            };
            let partitions = answers.entry(name.to_string()).or_default();
            for p in topic.partition_responses {
                let message = p.error_message.map(|m| m.to_string());
                partitions.insert(p.index, (p.error_code, message, p.base_offset));
            }
        }
        let mut retried = false;
        for (id, entry) in sent {
            let slot = &mut slots[id];
            let (code, message, base_offset) = answers
                .get_mut(&*slot.target_topic)
                .and_then(|partitions| partitions.remove(&slot.partition))
                .unwrap_or((
                    ResponseError::UnknownServerError.code(),
                    Some("partition missing from the answer".into()),
                    -1,
                ));
            let error = code.err();
            // Which batch got which answer: what a reordering on the target
            // is traced back with.
            tracing::debug!(
                broker,
                topic = %slot.topic,
                partition = slot.partition,
                range = ?slot.state.entry_range(entry),
                base_offset,
                ?error,
                "Produce answered"
            );
            let outcome = match classify(error) {
                // Whole as it came from the source: damaged on the way to the
                // target, and refused before the append.
                Outcome::Corrupt
                    if slot.corrupt_refusals < CORRUPT_RESEND_LIMIT
                        && slot.state.verify_crc(entry).is_ok() =>
                {
                    slot.corrupt_refusals += 1;
                    tracing::warn!(
                        topic = %slot.topic,
                        partition = slot.partition,
                        "the target refused a batch as corrupt that left whole; resending"
                    );
                    Outcome::Retry {
                        refresh: false,
                        maybe_written: false,
                    }
                }
                outcome => outcome,
            };
            let refused = |slot: &Slot, kind| refusal(slot, entry, error, message.clone(), kind);
            match outcome {
                Outcome::Landed => {
                    if base_offset < 0 {
                        // DUPLICATE_SEQUENCE_NUMBER from an old broker.
                        tracing::debug!(
                            topic = %slot.topic,
                            partition = slot.partition,
                            ?error,
                            "the target did not say where the batch landed; \
                             taking it to follow the batch before it"
                        );
                    }
                    let acked = slot.state.acked(entry, base_offset);
                    if let Some(transaction) = cx.transaction.filter(|_| acked.bytes > 0) {
                        slot.state.acked_in(transaction.number());
                    }
                    slot.produce_backoff.reset();
                    slot.refusal_streak = 0;
                    slot.corrupt_refusals = 0;
                    slot.bytes_copied += acked.bytes as u64;
                    counters.landed(&mut slot.tally, acked);
                }
                Outcome::Retry {
                    refresh,
                    maybe_written,
                } => {
                    retried = true;
                    tracing::debug!(topic = %slot.topic, partition = slot.partition, ?error, "Produce refused; resending");
                    self.failed(slot, entry, maybe_written, now);
                    slot.produce_backoff.fail(now);
                    if refresh {
                        cx.meta.want_refresh(Role::Target);
                    }
                }
                Outcome::OutOfOrder => {
                    retried = true;
                    // Behind an earlier failed batch this is expected; for the
                    // first unacknowledged batch it means the broker lost our state.
                    if slot.state.is_first_unacked(entry) {
                        slot.refusal_streak += 1;
                    }
                    // This attempt was not written; an earlier one may have been.
                    slot.state.failed(entry, false);
                    slot.produce_backoff.fail(now);
                    if slot.refusal_streak >= OUT_OF_ORDER_LIMIT {
                        self.sequences_refused(slot, entry, error, message, now);
                    }
                }
                Outcome::IdentityRefused => {
                    retried = true;
                    slot.refusal_streak += 1;
                    slot.state.failed(entry, false);
                    slot.produce_backoff.fail(now);
                    // With a batch in doubt, its resends under this id may
                    // still be answered; a few refusals in a row say they won't.
                    let in_doubt = slot.state.first_of_unknown_fate().is_some();
                    if in_doubt && slot.refusal_streak < OUT_OF_ORDER_LIMIT {
                        let reason = refused(slot, RefusalKind::ProducerIdentity);
                        self.producer.refused(RenewalReason::Refused(reason), now);
                    } else {
                        self.sequences_refused(slot, entry, error, message, now);
                    }
                }
                Outcome::RefusedByTopic => {
                    let error = refused(slot, RefusalKind::ByTopic);
                    match cx.config.on_refused_batch {
                        RefusedBatchPolicy::Stop => {
                            slot.state.failed(entry, false);
                            slot.stop(error);
                        }
                        RefusedBatchPolicy::Skip => {
                            tracing::warn!(
                                topic = %slot.topic,
                                partition = slot.partition,
                                "{}; skipped (on_refused_batch = skip)",
                                error.problem()
                            );
                            let records = slot.state.skip_refused(entry);
                            counters.skipped(&mut slot.tally, Skipped::Refused);
                            counters.refused_records_skipped += records as u64;
                        }
                    }
                }
                Outcome::Corrupt => {
                    let damage = slot.state.verify_crc(entry).err();
                    let error = refused(slot, RefusalKind::Corrupt { damage });
                    slot.state.failed(entry, false);
                    slot.stop(error);
                }
                Outcome::Fatal => {
                    let error = refused(slot, RefusalKind::Fatal);
                    slot.state.failed(entry, false);
                    slot.stop(error);
                }
            }
        }
        if retried {
            counters.produce_retries += 1;
        }
    }

    /// The batch's attempt failed and is to be resent; `maybe_written` if
    /// the broker may have appended it all the same. In a window deeper
    /// than the broker's duplicate window, such a batch fails the open
    /// transaction instead: the renewal aborts it and every partition goes
    /// back to its committed checkpoint.
    fn failed(&mut self, slot: &mut Slot, entry: u64, maybe_written: bool, now: Instant) {
        if slot.state.failed(entry, maybe_written) == Recovery::FailTransaction {
            let failure = TransactionFailure::AnswerLost {
                topic: slot.topic.clone(),
                partition: slot.partition,
            };
            self.producer
                .refused(RenewalReason::Transaction(failure), now);
        }
    }

    /// The target no longer takes the partition's sequences under our
    /// producer id: a new id is due. Unless a batch of the partition may
    /// already be on the target: no answer under the old id tells any more
    /// whether it is, and resending it under a new one could write it twice,
    /// so the partition stops instead (KIP-360 bumps the epoch only with no
    /// batch in doubt). A transactional producer renews all the same: the
    /// new epoch aborts the transaction the batch is in.
    fn sequences_refused(
        &mut self,
        slot: &mut Slot,
        entry: u64,
        error: Option<ResponseError>,
        message: Option<String>,
        now: Instant,
    ) {
        slot.refusal_streak = 0;
        // A transactional producer's renewal aborts whatever is in doubt.
        let doubt = slot
            .state
            .first_of_unknown_fate()
            .filter(|_| !self.producer.is_transactional());
        match doubt {
            Some(doubt) => {
                let error = refusal(slot, doubt, error, message, RefusalKind::OutcomeUnknown);
                slot.stop(error);
            }
            None => {
                let reason = refusal(slot, entry, error, message, RefusalKind::ProducerIdentity);
                self.producer.refused(RenewalReason::Refused(reason), now);
            }
        }
    }
}

/// The error for a batch the target refused.
fn refusal(
    slot: &Slot,
    entry: u64,
    error: Option<ResponseError>,
    message: Option<String>,
    kind: RefusalKind,
) -> PartitionError {
    slot.error(Cause::TargetRefused(Refusal {
        range: slot.state.entry_range(entry),
        error,
        message,
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordBatch;
    use crate::cluster::Metadata;
    use crate::net::frame::encode_request;
    use crate::pipeline::error::Cause;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::slots::Status;
    use crate::pipeline::testing::{
        answered_partitions, batch, captured, captured_metadata, metadata, slot,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::collections::BTreeSet;
    use std::time::Duration;
    use uuid::Uuid;

    const TARGET: Uuid = Uuid::from_u128(0x9);

    struct Fixture {
        config: ReplicationConfig,
        meta: MetadataView,
        slots: Slots,
        stage: ProduceStage,
        counters: Counters,
        /// The first partition.
        id: SlotId,
        /// Exactly-once: the open transaction.
        transaction: Option<TransactionStage>,
    }

    /// Batches 0..2, 2..4 and 4..6.
    fn three_batches() -> Vec<RecordBatch> {
        [0, 2, 4].into_iter().map(|base| batch(base, 2)).collect()
    }

    /// Source topic `topic` copied into the target topic of the same name,
    /// with `batches` queued.
    fn mirrored(topic: &str, partition: i32, batches: Vec<RecordBatch>) -> Slot {
        let mut slot = Slot::new(
            topic.into(),
            topic.into(),
            partition,
            Uuid::nil(),
            0,
            Status::Copying,
        );
        for batch in batches {
            slot.state.push_batch(batch);
        }
        slot
    }

    impl Fixture {
        /// One partition `t-0` with batches 0..2, 2..4 and 4..6 queued,
        /// copied into `copy.t`, led by broker 1.
        fn new(config: ReplicationConfig) -> Self {
            let mut slots = Slots::default();
            let id = slots.push(slot("t", Uuid::from_u128(1), 0, 0));
            for batch in three_batches() {
                slots[id].state.push_batch(batch);
            }
            Fixture::of(slots, metadata("copy.t", TARGET, &[(0, Some(1))]), config)
        }

        /// Every partition the captured Produce answers `frames` name,
        /// [`mirrored`] with [`three_batches`]; the target's metadata lists
        /// their topics under the ids the capture recorded, every partition
        /// led by broker 1.
        fn answering(frames: &[&str], config: ReplicationConfig) -> Self {
            let mut slots = Slots::default();
            // Leaders by topic name and id.
            let mut topics: BTreeMap<(String, Uuid), Vec<_>> = BTreeMap::new();
            for (topic, id, partition) in frames.iter().flat_map(|f| answered_partitions(f)) {
                if slots.find(&topic, partition).is_none() {
                    slots.push(mirrored(&topic, partition, three_batches()));
                    topics
                        .entry((topic, id))
                        .or_default()
                        .push((partition, Some(1)));
                }
            }
            let mut target = Metadata::default();
            for ((topic, id), leaders) in topics {
                target.topics.extend(metadata(&topic, id, &leaders).topics);
            }
            Fixture::of(slots, target, config)
        }

        fn of(slots: Slots, target: Metadata, config: ReplicationConfig) -> Self {
            let mut meta = MetadataView::default();
            meta.set(Role::Target, target);
            Fixture {
                config,
                meta,
                id: slots.ids().next().expect("a partition"),
                slots,
                // The captured batches are from 2023: a target that
                // forgot producers by Kafka's default would send them one
                // at a time. These tests are about pipelining, so the
                // target here never forgets (see the test on old data).
                stage: ProduceStage::new(ProducerIdentity::new((7, 0)))
                    .with_producer_expiry(Duration::MAX),
                counters: Counters::default(),
                transaction: None,
            }
        }

        fn start(&mut self, now: Instant) -> Vec<ProduceJob> {
            let cx = ProduceContext {
                config: &self.config,
                meta: &self.meta,
                transaction: self.transaction.as_ref(),
                lease: Lease::default(),
            };
            self.stage.start(&mut self.slots, cx, now)
        }

        /// Sends what may go and answers it with `error` (and a message).
        fn answer(&mut self, error: Option<ResponseError>, now: Instant) -> usize {
            let jobs = self.start(now);
            let count = jobs.len();
            for job in jobs {
                let response = answer_by_id(error, Some("from the broker"));
                self.reply(job, Ok(response), now);
            }
            count
        }

        /// Sends what may go and answers every request with the captured
        /// Produce answer `frame`.
        fn answer_with(&mut self, frame: &str, now: Instant) {
            for job in self.start(now) {
                self.reply_with(job, frame, now);
            }
        }

        /// Answers `job` with the captured Produce answer `frame`.
        fn reply_with(&mut self, job: ProduceJob, frame: &str, now: Instant) {
            self.reply(job, Ok(captured::<ProduceRequest>(frame)), now);
        }

        fn reply(
            &mut self,
            job: ProduceJob,
            result: Result<ProduceResponse, ClusterError>,
            now: Instant,
        ) {
            let cx = ProduceContext {
                config: &self.config,
                meta: &self.meta,
                transaction: self.transaction.as_ref(),
                lease: Lease::default(),
            };
            let reply = ProduceReply {
                broker: job.broker,
                sent: job.sent,
                result: result.map_err(NoAnswer::Failed),
            };
            self.stage
                .answered(&mut self.slots, cx, &mut self.counters, reply, now);
        }

        fn id_of(&self, topic: &str, partition: i32) -> SlotId {
            self.slots.find(topic, partition).expect("a partition")
        }

        fn stopped(&self, id: SlotId) -> &PartitionError {
            match &self.slots[id].status {
                Status::Stopped(error) => error,
                other => panic!("not stopped: {other:?}"),
            }
        }
    }

    /// A Produce v13+ answer naming the target topic by id.
    fn answer_by_id(
        error: Option<ResponseError>,
        message: Option<&'static str>,
    ) -> ProduceResponse {
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_topic_id(TARGET)
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_error_message(message.map(StrBytes::from_static_str))])])
    }

    /// The batches a job carries as the target receives them, by target
    /// topic and partition.
    fn carried(job: &ProduceJob) -> BTreeMap<(String, i32), RecordBatch> {
        const VERSION: i16 = 9;
        let frame = encode_request(1, None, VERSION, &job.request, &job.splices)
            .expect("encode")
            .to_bytes();
        let mut body = frame.slice(4..);
        RequestHeader::decode(&mut body, ApiKey::Produce.request_header_version(VERSION))
            .expect("header");
        let request = ProduceRequest::decode(&mut body, VERSION).expect("request");
        request
            .topic_data
            .into_iter()
            .flat_map(|topic| {
                let name = topic.name.0.to_string();
                topic.partition_data.into_iter().map(move |p| {
                    let batch = RecordBatch::parse(p.records.expect("records")).expect("parse");
                    ((name.clone(), p.index), batch)
                })
            })
            .collect()
    }

    /// The one batch a job carries.
    fn sent(job: &ProduceJob) -> RecordBatch {
        let mut batches = carried(job).into_values();
        match (batches.next(), batches.next()) {
            (Some(batch), None) => batch,
            _ => panic!("not one batch: {:?}", job.sent),
        }
    }

    /// Hand-built: no capture holds an answer naming the topic (Produce
    /// before v13) or DUPLICATE_SEQUENCE_NUMBER, which Kafka 4.4 never sends
    /// (it answers a resent batch as written, `produce-duplicate`).
    #[test]
    fn a_landed_batch_is_counted_and_moves_the_checkpoint() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        let wire = sent(&job);
        assert_eq!(
            (wire.base_offset(), wire.producer_id(), wire.base_sequence()),
            (0, 7, 0)
        );
        // An older broker names the topic, not its id.
        let by_name =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("copy.t")))
                .with_partition_responses(
                    vec![PartitionProduceResponse::default().with_index(0)],
                )]);
        f.reply(job, Ok(by_name), now);
        assert_eq!((f.counters.records, f.counters.batches), (2, 1));
        assert_eq!(f.slots[f.id].state.committed(), 2);
        // Established: the other two go pipelined, a request each; a
        // duplicate is written too.
        assert_eq!(
            f.answer(Some(ResponseError::DuplicateSequenceNumber), now),
            2
        );
        assert_eq!(f.slots[f.id].state.committed(), 6);
        assert_eq!(f.counters.records, 6);
    }

    /// Kafka 4.4 answers these as written: `produce-ok`, four partitions;
    /// `produce-unknown-producer`, a producer id it never issued (it keeps no
    /// list of them); `produce-duplicate`, a byte-identical resend of one of
    /// the last 5 batches.
    #[test]
    fn a_written_answer_acknowledges_every_batch_it_names() {
        for frame in [
            "produce-ok",
            "produce-unknown-producer",
            "produce-duplicate",
        ] {
            let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
            let now = Instant::now();
            let mut jobs = f.start(now);
            assert_eq!(jobs.len(), 1, "{frame}: one request");
            let job = jobs.pop().expect("job");
            let mut named: Vec<(String, i32)> = answered_partitions(frame)
                .into_iter()
                .map(|(topic, _, partition)| (topic, partition))
                .collect();
            named.sort();
            let sent: Vec<(String, i32)> = carried(&job).into_keys().collect();
            assert_eq!(sent, named, "{frame}: a batch per partition");
            f.reply_with(job, frame, now);
            for slot in f.slots.all() {
                assert_eq!(slot.state.committed(), 2, "{frame}: {}", slot.partition);
                assert!(slot.status.is_copying(), "{frame}");
            }
            let count = named.len() as u64;
            assert_eq!((f.counters.batches, f.counters.records), (count, 2 * count));
            assert_eq!(f.counters.produce_retries, 0, "{frame}");
        }
    }

    /// After a lost answer the batch goes again as it was, and Kafka 4.4
    /// answers the resend of a written batch as written (`produce-duplicate`).
    #[test]
    fn a_resend_after_a_lost_answer_is_acknowledged_once() {
        let frame = "produce-duplicate";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        let first = sent(&job).as_bytes().clone();
        let lost = ClusterError::UnknownBroker {
            role: Role::Target,
            broker: 1,
        };
        f.reply(job, Err(lost), now);
        assert!(f.slots[f.id].state.unresolved(), "it may have been written");
        let later = now + Duration::from_secs(1);
        let again = f.start(later).pop().expect("resent");
        assert_eq!(sent(&again).as_bytes(), &first, "same bytes, same sequence");
        f.reply_with(again, frame, later);
        assert!(!f.slots[f.id].state.unresolved());
        assert_eq!(f.slots[f.id].state.committed(), 2);
        assert_eq!((f.counters.batches, f.counters.records), (1, 2), "once");
    }

    /// Exactly-once, a partition fills its window with one request per
    /// batch, past `max_in_flight_requests`; a lost answer there is not
    /// resent but fails the transaction, whose renewal aborts it.
    #[test]
    fn exactly_once_fills_a_deep_window_and_aborts_on_a_lost_answer() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let writer = ProducerIdentity::transactional((7, 0), "kafka-mirror.t".into(), 32);
        f.stage = ProduceStage::new(writer).with_producer_expiry(Duration::MAX);
        for base in (6..80).step_by(2) {
            f.slots[f.id].state.push_batch(batch(base, 2));
        }
        let now = Instant::now();
        assert_eq!(
            f.answer(None, now),
            1,
            "one until the first is acknowledged"
        );
        let jobs = f.start(now);
        assert_eq!(
            jobs.len(),
            32,
            "32 requests on the connection, one batch each"
        );
        let sequences: Vec<i32> = jobs.iter().map(|job| sent(job).base_sequence()).collect();
        assert_eq!(
            sequences,
            (2..66).step_by(2).collect::<Vec<_>>(),
            "in source order"
        );
        let lost = ClusterError::UnknownBroker {
            role: Role::Target,
            broker: 1,
        };
        let mut jobs = jobs.into_iter();
        let first = jobs.next().expect("a job");
        f.reply(first, Err(lost), now);
        assert!(f.stage.producer.renewing(), "the transaction fails");
        let later = now + Duration::from_secs(1);
        assert!(f.start(later).is_empty(), "nothing resent");
        let reason = f
            .stage
            .producer()
            .due(&f.slots, false, later)
            .expect("the renewal aborts at once");
        assert!(
            matches!(
                reason,
                RenewalReason::Transaction(TransactionFailure::AnswerLost { partition: 0, .. })
            ),
            "{reason}"
        );
    }

    /// `produce-not-leader`: one request to node 1 for seq/3 (led by node 0),
    /// seq/9 (no such partition) and on1/0 (led by node 1).
    #[test]
    fn a_leader_refusal_resends_the_same_batch_after_a_metadata_refresh() {
        let frame = "produce-not-leader";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        let first = carried(&job);
        f.reply_with(job, frame, now);
        assert_eq!(f.counters.produce_retries, 1);
        assert_eq!(f.slots[f.id_of("on1", 0)].state.committed(), 2, "written");
        assert_eq!(
            f.meta.due_refreshes(now),
            [Role::Target],
            "leaders looked up again"
        );
        // Only on1/0 goes on (its next batches, pipelined).
        let moving: BTreeSet<(String, i32)> = f
            .start(now)
            .iter()
            .flat_map(|job| carried(job).into_keys())
            .collect();
        assert_eq!(
            moving,
            BTreeSet::from([("on1".to_owned(), 0)]),
            "the refused ones back off"
        );
        let later = now + Duration::from_secs(1);
        let again: BTreeMap<(String, i32), RecordBatch> =
            f.start(later).iter().flat_map(carried).collect();
        for partition in [3, 9] {
            let key = ("seq".to_owned(), partition);
            assert_eq!(
                again[&key].as_bytes(),
                first[&key].as_bytes(),
                "seq/{partition}: same bytes, same sequence"
            );
            assert!(f.slots[f.id_of("seq", partition)].status.is_copying());
        }
    }

    /// Refused by the leader, which is the right one: resent without a
    /// metadata refresh. NOT_ENOUGH_REPLICAS is refused before the append;
    /// REQUEST_TIMED_OUT came after it (`produce-timeout` has a base offset),
    /// so that batch may be on the target.
    #[test]
    fn a_refusal_by_the_right_leader_resends_the_same_batch_without_a_refresh() {
        for (frame, maybe_written) in [
            ("produce-not-enough-replicas", false),
            ("produce-timeout", true),
        ] {
            let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
            let now = Instant::now();
            let job = f.start(now).pop().expect("job");
            let first = sent(&job).as_bytes().clone();
            f.reply_with(job, frame, now);
            assert_eq!(f.counters.produce_retries, 1, "{frame}");
            assert!(f.meta.due_refreshes(now).is_empty(), "{frame}: no refresh");
            assert_eq!(
                f.slots[f.id].state.unresolved(),
                maybe_written,
                "{frame}: whether it may be written"
            );
            assert!(f.start(now).is_empty(), "{frame}: backing off");
            let again = f.start(now + Duration::from_secs(1)).pop().expect("resent");
            assert_eq!(sent(&again).as_bytes(), &first, "{frame}: same bytes");
            assert!(f.slots[f.id].status.is_copying(), "{frame}");
        }
    }

    #[test]
    fn out_of_order_answers_for_the_first_batch_renew_the_producer_id() {
        let frame = "produce-out-of-order";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let mut now = Instant::now();
        let mut first = None;
        for round in 1..=OUT_OF_ORDER_LIMIT {
            let job = f.start(now).pop().expect("the first batch");
            let bytes = sent(&job).as_bytes().clone();
            assert_eq!(
                first.get_or_insert_with(|| bytes.clone()),
                &bytes,
                "resent as it was"
            );
            f.reply_with(job, frame, now);
            assert_eq!(f.stage.producer.renewing(), round == OUT_OF_ORDER_LIMIT);
            now += Duration::from_secs(10);
        }
        assert!(f.slots[f.id].status.is_copying(), "the partition goes on");
        let reason = f
            .stage
            .producer()
            .due(&f.slots, false, now)
            .expect("renewal due");
        let RenewalReason::Refused(reason) = reason else {
            panic!("a refusal: {reason}");
        };
        assert!(matches!(
            reason.cause,
            Cause::TargetRefused(Refusal {
                kind: RefusalKind::ProducerIdentity,
                error: Some(ResponseError::OutOfOrderSequenceNumber),
                ..
            })
        ));
    }

    /// INVALID_PRODUCER_EPOCH is what Kafka 4.4 answers an idempotent
    /// producer's stale epoch (PRODUCER_FENCED is for transactional ids).
    #[test]
    fn a_stale_producer_epoch_renews_the_producer_id() {
        let frame = "produce-stale-epoch";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        f.reply_with(job, frame, now);
        assert!(f.stage.producer.renewing());
        assert!(!f.slots[f.id].state.unresolved(), "refused, so not written");
        let later = now + Duration::from_secs(1);
        assert!(f.start(later).is_empty(), "nothing more under the old id");
        let reason = f
            .stage
            .producer()
            .due(&f.slots, false, later)
            .expect("renewal due");
        let RenewalReason::Refused(reason) = reason else {
            panic!("a refusal: {reason}");
        };
        assert!(matches!(
            reason.cause,
            Cause::TargetRefused(Refusal {
                kind: RefusalKind::ProducerIdentity,
                error: Some(ResponseError::InvalidProducerEpoch),
                ..
            })
        ));
        f.stage.producer().renewed(
            &mut f.slots,
            &mut f.counters,
            RenewalReason::Refused(reason),
            Ok((8, 0)),
            later,
        );
        let job = f.start(later).pop().expect("the same batch, new id");
        let wire = sent(&job);
        assert_eq!(
            (wire.producer_id(), wire.base_sequence(), wire.base_offset()),
            (8, 0, 0)
        );
        assert!(f.slots[f.id].status.is_copying());
    }

    /// `produce-refused-by-topic`: a 2 KB batch to small/0
    /// (`max.message.bytes=1000`), a null key to compacted/0 (compacted), a
    /// good batch to seq/3, in one request.
    #[test]
    fn batches_the_topics_refuse_stop_their_partitions_by_default() {
        let frame = "produce-refused-by-topic";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let now = Instant::now();
        f.answer_with(frame, now);
        let advice = "; change the target topic's settings, or restart with \
                      --on-refused-batch skip";
        assert_eq!(
            f.stopped(f.id_of("small", 0)).to_string(),
            format!("target refused source offsets 0..1 of small-0: MessageTooLarge{advice}")
        );
        assert_eq!(
            f.stopped(f.id_of("compacted", 0)).to_string(),
            format!(
                "target refused source offsets 0..1 of compacted-0: InvalidRecord (One or more \
                 records have been rejected due to 1 record errors in total, and only showing \
                 the first three errors at most: [RecordError(batchIndex=0, message='Compacted \
                 topic cannot accept message without key in topic partition compacted-0')]){advice}"
            )
        );
        assert_eq!(f.slots[f.id_of("seq", 3)].state.committed(), 2);
        let sending: Vec<(String, i32)> = f
            .start(now + Duration::from_secs(10))
            .iter()
            .flat_map(|job| carried(job).into_keys())
            .collect();
        assert!(
            sending.iter().all(|(topic, _)| topic == "seq"),
            "nothing more is sent to the stopped ones: {sending:?}"
        );
        for topic in ["small", "compacted"] {
            assert_eq!(f.slots[f.id_of(topic, 0)].state.committed(), 0, "{topic}");
        }
    }

    #[test]
    fn batches_the_topics_refuse_are_skipped_when_told_so() {
        let frame = "produce-refused-by-topic";
        let config = ReplicationConfig {
            on_refused_batch: RefusedBatchPolicy::Skip,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::answering(&[frame], config);
        let now = Instant::now();
        f.answer_with(frame, now);
        assert_eq!(f.counters.refused_batches_skipped, 2);
        assert_eq!(f.counters.refused_records_skipped, 4);
        let later = now + Duration::from_secs(1);
        let job = f
            .start(later)
            .into_iter()
            .next()
            .expect("the batches after");
        let sequences: Vec<(String, i32, i32)> = carried(&job)
            .into_iter()
            .map(|((topic, partition), batch)| (topic, partition, batch.base_sequence()))
            .collect();
        assert_eq!(
            sequences,
            [
                ("compacted".to_owned(), 0, 0),
                ("seq".to_owned(), 3, 2),
                ("small".to_owned(), 0, 0),
            ],
            "each takes the skipped batch's sequence"
        );
        assert!(f.slots.all().all(|slot| slot.status.is_copying()));
    }

    /// `produce-corrupt`: seq/5's stored CRC was flipped on the way; seq/3,
    /// in the same request, was written.
    #[test]
    fn a_whole_batch_refused_as_corrupt_is_resent_three_times_then_stops() {
        let frame = "produce-corrupt";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let corrupt = f.id_of("seq", 5);
        let mut now = Instant::now();
        for _ in 0..CORRUPT_RESEND_LIMIT {
            f.answer_with(frame, now);
            assert!(f.slots[corrupt].status.is_copying());
            now += Duration::from_secs(10);
        }
        f.answer_with(frame, now);
        assert!(matches!(
            f.stopped(corrupt).cause,
            Cause::TargetRefused(Refusal {
                kind: RefusalKind::Corrupt { damage: None },
                error: Some(ResponseError::CorruptMessage),
                ..
            })
        ));
        assert_eq!(f.slots[corrupt].state.committed(), 0);
        let neighbour = &f.slots[f.id_of("seq", 3)];
        assert_eq!(
            neighbour.state.committed(),
            6,
            "the other partition goes on"
        );
        assert!(neighbour.status.is_copying());
    }

    #[test]
    fn a_batch_damaged_at_the_source_stops_at_once_naming_the_damage() {
        let frame = "produce-corrupt";
        let mut f = Fixture::answering(&[frame], ReplicationConfig::default());
        let id = f.id_of("seq", 5);
        let mut damaged = batch(0, 2).as_bytes().to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let damaged = RecordBatch::parse(damaged.into()).expect("parse");
        f.slots[id] = mirrored("seq", 5, vec![damaged]);
        f.answer_with(frame, Instant::now());
        let message = f.stopped(id).to_string();
        assert!(
            message.starts_with(
                "target refused source offsets 0..1 of seq-5: CorruptMessage; the source sent \
                 it damaged: "
            ),
            "{message}"
        );
    }

    /// The leader change the capture made: node 0 led `moving`/0, was
    /// stopped (node 1 took over at epoch 1) and came back as a follower,
    /// which refuses the batch naming node 1.
    #[test]
    fn after_a_leader_change_the_batch_goes_to_the_new_leader_as_it_was() {
        let mut slots = Slots::default();
        slots.push(mirrored("moving", 0, three_batches()));
        let before = captured_metadata("metadata-before-leader-change");
        let mut f = Fixture::of(slots, before, ReplicationConfig::default());
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        assert_eq!(job.broker, 0, "the leader before");
        let first = sent(&job);
        assert_eq!((first.producer_id(), first.base_sequence()), (7, 0));
        f.reply_with(job, "produce-old-leader", now);
        assert_eq!(f.meta.due_refreshes(now), [Role::Target]);
        assert!(!f.slots[f.id].state.unresolved(), "refused, so not written");
        f.meta.set(
            Role::Target,
            captured_metadata("metadata-after-leader-change"),
        );
        f.meta.refresh_answered(Role::Target, true);
        let later = now + Duration::from_secs(1);
        let job = f.start(later).pop().expect("resent");
        assert_eq!(job.broker, 1, "to the new leader");
        assert_eq!(
            sent(&job).as_bytes(),
            first.as_bytes(),
            "same bytes, same sequence"
        );
        assert!(f.slots[f.id].status.is_copying());
    }

    /// Hand-built: Kafka 4.4 answers neither UNKNOWN_PRODUCER_ID (it keeps
    /// no list of the ids it issued: `produce-unknown-producer` is written)
    /// nor DUPLICATE_SEQUENCE_NUMBER, and the timeout and the refusal must
    /// answer one partition's two pipelined batches.
    #[test]
    fn a_batch_that_may_be_written_blocks_a_new_producer_id_until_resolved() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        f.answer(None, now);
        let mut jobs = f.start(now).into_iter();
        let (timed_out, refused) = (jobs.next().expect("2..4"), jobs.next().expect("4..6"));
        assert_eq!(
            (
                sent(&timed_out).base_sequence(),
                sent(&refused).base_sequence()
            ),
            (2, 4)
        );
        f.reply(
            timed_out,
            Ok(answer_by_id(Some(ResponseError::RequestTimedOut), None)),
            now,
        );
        f.reply(
            refused,
            Ok(answer_by_id(Some(ResponseError::UnknownProducerId), None)),
            now,
        );
        assert!(f.stage.producer.renewing());
        // Not while the timed-out batch may be on the target.
        assert!(f.slots[f.id].state.unresolved());
        let later = now + Duration::from_secs(1);
        assert!(f.stage.producer().due(&f.slots, false, later).is_none());
        // Only that batch goes, again under the old id; it had landed.
        let mut resolving = f.start(later);
        assert_eq!(resolving.len(), 1);
        let job = resolving.pop().expect("resolving");
        assert_eq!(
            (sent(&job).producer_id(), sent(&job).base_sequence()),
            (7, 2)
        );
        f.reply(
            job,
            Ok(answer_by_id(
                Some(ResponseError::DuplicateSequenceNumber),
                None,
            )),
            later,
        );
        let reason = f
            .stage
            .producer()
            .due(&f.slots, false, later)
            .expect("renewal due");
        let RenewalReason::Refused(reason) = reason else {
            panic!("a refusal: {reason}");
        };
        assert!(matches!(
            reason.cause,
            Cause::TargetRefused(Refusal {
                kind: RefusalKind::ProducerIdentity,
                error: Some(ResponseError::UnknownProducerId),
                ..
            })
        ));
        f.stage.producer().renewed(
            &mut f.slots,
            &mut f.counters,
            RenewalReason::Refused(reason),
            Ok((8, 0)),
            later,
        );
        assert_eq!(f.counters.producer_renewals, 1);
        let job = f.start(later).pop().expect("the last batch, new id");
        let wire = sent(&job);
        assert_eq!(
            (wire.producer_id(), wire.base_sequence(), wire.base_offset()),
            (8, 0, 0)
        );
        assert_eq!(f.slots[f.id].state.committed(), 4);
    }

    /// Hand-built: two pipelined batches of one partition, the first refused
    /// by the topic (RECORD_LIST_TOO_LARGE, not captured) and the one behind
    /// it out of order; no capture answers one partition both ways.
    #[test]
    fn a_refused_batch_is_skipped_under_the_batch_behind_it() {
        let config = ReplicationConfig {
            on_refused_batch: RefusedBatchPolicy::Skip,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let now = Instant::now();
        f.answer(None, now);
        let mut jobs = f.start(now).into_iter();
        let (too_large, behind) = (jobs.next().expect("2..4"), jobs.next().expect("4..6"));
        f.reply(
            too_large,
            Ok(answer_by_id(Some(ResponseError::RecordListTooLarge), None)),
            now,
        );
        // The broker never took the refused batch's sequences.
        f.reply(
            behind,
            Ok(answer_by_id(
                Some(ResponseError::OutOfOrderSequenceNumber),
                None,
            )),
            now,
        );
        assert_eq!(f.counters.refused_batches_skipped, 1);
        assert_eq!(f.counters.refused_records_skipped, 2);
        let later = now + Duration::from_secs(1);
        let job = f.start(later).pop().expect("the batch after it");
        assert_eq!(
            sent(&job).base_sequence(),
            2,
            "takes the skipped batch's sequence"
        );
        f.reply(job, Ok(answer_by_id(None, None)), later);
        assert_eq!(
            f.slots[f.id].state.committed(),
            6,
            "the skipped range is done too"
        );
        assert!(f.slots[f.id].status.is_copying());
    }

    /// Hand-built: no capture holds an authorization failure.
    #[test]
    fn other_errors_stop_the_partition_naming_the_error() {
        let mut f = Fixture::new(ReplicationConfig::default());
        f.answer(
            Some(ResponseError::TopicAuthorizationFailed),
            Instant::now(),
        );
        assert_eq!(
            f.stopped(f.id).to_string(),
            "target refused source offsets 0..1 of t-0: TopicAuthorizationFailed (from the broker)"
        );
    }

    #[test]
    fn a_lost_connection_resends_everything_it_carried() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        f.answer(None, now);
        for job in f.start(now) {
            assert_eq!(job.sent.len(), 1, "one batch per partition per request");
            let lost = ClusterError::UnknownBroker {
                role: Role::Target,
                broker: 1,
            };
            f.reply(job, Err(lost), now);
        }
        assert_eq!(f.stage.in_flight(), 0);
        assert!(f.slots[f.id].state.unresolved(), "it may have been written");
        let resent: Vec<i32> = f
            .start(now + Duration::from_secs(1))
            .iter()
            .map(|job| sent(job).base_sequence())
            .collect();
        assert_eq!(resent, [2, 4], "in order, same sequences");
    }

    #[test]
    fn classification() {
        assert_eq!(classify(None), Outcome::Landed);
        assert_eq!(
            classify(Some(ResponseError::DuplicateSequenceNumber)),
            Outcome::Landed
        );
        assert_eq!(
            classify(Some(ResponseError::NotLeaderOrFollower)),
            Outcome::Retry {
                refresh: true,
                maybe_written: false
            }
        );
        assert_eq!(
            classify(Some(ResponseError::NotEnoughReplicasAfterAppend)),
            Outcome::Retry {
                refresh: false,
                maybe_written: true
            }
        );
        assert_eq!(
            classify(Some(ResponseError::RequestTimedOut)),
            Outcome::Retry {
                refresh: false,
                maybe_written: true
            }
        );
        for error in [
            ResponseError::UnknownProducerId,
            ResponseError::InvalidProducerEpoch,
            ResponseError::ProducerFenced,
        ] {
            assert_eq!(classify(Some(error)), Outcome::IdentityRefused);
        }
        assert_eq!(
            classify(Some(ResponseError::OutOfOrderSequenceNumber)),
            Outcome::OutOfOrder
        );
        for error in [
            ResponseError::MessageTooLarge,
            ResponseError::RecordListTooLarge,
            ResponseError::InvalidTimestamp,
            ResponseError::InvalidRecord,
        ] {
            assert_eq!(classify(Some(error)), Outcome::RefusedByTopic);
        }
        assert_eq!(
            classify(Some(ResponseError::CorruptMessage)),
            Outcome::Corrupt
        );
        assert_eq!(
            classify(Some(ResponseError::TopicAuthorizationFailed)),
            Outcome::Fatal
        );
    }

    /// The target forgets our producer once `now - maxTimestamp` of the
    /// last batch we wrote passes its `producer.id.expiration.ms`, and the
    /// timestamps are the source's: copying old data, it may forget us right
    /// after a batch lands, and then it takes any sequence. So old data goes
    /// one batch at a time, and a batch behind a refused one is never sent
    /// (seen against Kafka 4.4: offsets 20..29 written after 10..19 was
    /// refused as corrupt, the target having expired our producer).
    #[test]
    fn old_data_goes_one_batch_at_a_time_so_nothing_overtakes_a_refused_batch() {
        let mut f = Fixture::new(ReplicationConfig::default());
        f.stage = ProduceStage::new(ProducerIdentity::new((7, 0)))
            .with_producer_expiry(Duration::from_secs(2));
        let now = Instant::now();
        assert_eq!(f.answer(None, now), 1, "0..2 lands alone");
        let jobs = f.start(now);
        assert_eq!(jobs.len(), 1, "the 2023 batches are older than the expiry");
        let refused = jobs.into_iter().next().expect("2..4 goes");
        assert!(f.start(now).is_empty(), "4..6 waits for 2..4's answer");
        let refusal = answer_by_id(Some(ResponseError::MessageTooLarge), None);
        f.reply(refused, Ok(refusal), now);
        assert!(f.slots[f.id].status.is_stopped());
        assert!(f.start(now).is_empty(), "nothing goes after the refusal");
        assert_eq!(f.counters.records, 2, "only 0..2 is on the target");

        // The same batches to a target that keeps producers for a day
        // (Kafka's default) are recent enough to pipeline when stamped now.
        let mut recent = crate::pipeline::partition::PartitionState::new(0);
        let stale_before = 1_000;
        recent.push_batch(crate::pipeline::testing::batch(0, 2));
        recent.push_batch(crate::pipeline::testing::batch(2, 2));
        let first = recent
            .next_to_send(Writer::idempotent(7, 0), false)
            .expect("first");
        recent.acked(first.entry, first.batch.base_offset());
        recent
            .next_to_send(Writer::idempotent(7, 0), false)
            .expect("second");
        assert!(
            !recent.must_wait_for_old_data(stale_before, None),
            "batches newer than the threshold pipeline"
        );
        assert!(
            recent.must_wait_for_old_data(i64::MAX, None),
            "the same batches past it wait"
        );
    }

    /// Exactly-once, old data goes one batch at a time only until a batch
    /// of the partition lands in the open transaction: the target keeps a
    /// producer with a transaction open on the partition, whatever its
    /// data's age. The next transaction starts alone again.
    #[test]
    fn exactly_once_pipelines_old_data_once_a_batch_landed_in_the_transaction() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let writer = ProducerIdentity::transactional((7, 0), "kafka-mirror.t".into(), 32);
        f.stage = ProduceStage::new(writer).with_producer_expiry(Duration::from_secs(2));
        for base in (6..20).step_by(2) {
            f.slots[f.id].state.push_batch(batch(base, 2));
        }
        let now = Instant::now();
        let partition = (Arc::<str>::from("copy.t"), 0);
        let mut transaction = TransactionStage::new(Duration::from_secs(1), "checkpoints");
        transaction.added(vec![partition.clone()], true, now);
        f.transaction = Some(transaction);

        assert_eq!(f.answer(None, now), 1, "0..2 goes alone");
        let jobs = f.start(now);
        let sequences: Vec<i32> = jobs.iter().map(|job| sent(job).base_sequence()).collect();
        assert_eq!(
            sequences,
            (2..20).step_by(2).collect::<Vec<_>>(),
            "the 2023 batches after it go together"
        );
        for job in jobs {
            f.reply(job, Ok(answer_by_id(None, None)), now);
        }
        assert_eq!(f.slots[f.id].state.committed(), 20);

        let transaction = f.transaction.as_mut().expect("a transaction");
        transaction.commit_answered(Some(1));
        transaction.added(vec![partition], true, now);
        for base in (20..30).step_by(2) {
            f.slots[f.id].state.push_batch(batch(base, 2));
        }
        assert_eq!(
            f.answer(None, now),
            1,
            "the next transaction's first goes alone"
        );
        assert_eq!(f.start(now).len(), 4, "then the rest together");
    }
}
