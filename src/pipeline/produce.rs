//! The produce stage: Produce requests to each target broker, one batch per
//! partition per request (Kafka's rule), many partitions per request, and up
//! to `max_in_flight_requests` requests pipelined on each connection.
//!
//! Every batch is written as kafka-mirror's own idempotent producer (the
//! producer id from InitProducerId, a sequence per partition), so a retried
//! batch that had in fact landed is dropped by the broker as a duplicate, and
//! a batch that would land after a lost one is refused: pipelining keeps order.
//! [`classify`] is the one place that decides what a produce error means.
//!
//! When the target stops taking our producer id (fenced, its state for us
//! gone, or its sequences for a partition persistently disagreeing with ours),
//! the engine gets a new one from InitProducerId, as Kafka's own producer bumps
//! its epoch. It does so only once every batch whose fate is unknown (a
//! timeout, a lost connection) has been resolved under the old id: a batch the
//! broker may have appended is resent with its old id and sequence until the
//! answer is "written" or "not written", so nothing lands twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;

use super::engine::{Engine, Event, Status};
use super::MirrorError;
use crate::cluster::{produce_request, Cluster, ClusterError, Role};
use crate::config::RefusedBatchPolicy;
use crate::net::splice::{Splice, Splices};

/// Stop adding partitions to a Produce request past this size (one batch is
/// always added, whatever its size).
const PRODUCE_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// The broker waits this long for the in-sync replicas (acks=all).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Out-of-order answers in a row for a partition's first unacknowledged batch
/// before it is stopped: the broker's sequence state no longer matches ours.
const OUT_OF_ORDER_LIMIT: u32 = 5;
/// Whole batches a partition resends after the target refused them as corrupt
/// (damage on the way there) before it stops: past that, the target cannot
/// read what the source stored, and resending will not change it.
const CORRUPT_RESEND_LIMIT: u32 = 3;

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
    /// Not written: the broker no longer takes our producer id and epoch.
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
        Some(
            ResponseError::UnknownProducerId
            | ResponseError::InvalidProducerEpoch
            | ResponseError::ProducerFenced,
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

impl Engine {
    /// Starts Produce requests on every target broker with room for more.
    pub(super) fn start_produces(&mut self, now: Instant) {
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        let mut leaderless = false;
        for (i, slot) in self.slots.iter().enumerate() {
            let may_send = matches!(slot.status, Status::Copying | Status::CheckingLoss { .. })
                || (matches!(slot.status, Status::Resolving { .. }) && !slot.state.is_empty());
            if !may_send || slot.produce_backoff.waiting(now) {
                continue;
            }
            match self.target_meta.leader(&slot.target_topic, slot.partition) {
                Some(leader) => by_leader.entry(leader).or_default().push(i),
                None => leaderless = true,
            }
        }
        if leaderless {
            self.want_refresh(Role::Target);
        }
        let limit = self.config.replication.max_in_flight_requests;
        let (producer_id, producer_epoch) = (self.producer.id, self.producer.epoch);
        let resolving_only = self.producer.renewal.is_some();
        for (broker, slots) in by_leader {
            while self.produces_in_flight.get(&broker).copied().unwrap_or(0) < limit {
                let mut sent = Vec::new();
                let mut topics: BTreeMap<Arc<str>, Vec<(i32, Splice)>> = BTreeMap::new();
                let mut size = 0;
                for &i in &slots {
                    if size >= PRODUCE_REQUEST_BYTES {
                        break;
                    }
                    let slot = &mut self.slots[i];
                    let Some(outgoing) =
                        slot.state
                            .next_to_send(producer_id, producer_epoch, resolving_only)
                    else {
                        continue;
                    };
                    size += outgoing.splice.value().len();
                    sent.push((i, outgoing.entry));
                    topics
                        .entry(slot.target_topic.clone())
                        .or_default()
                        .push((slot.partition, outgoing.splice));
                }
                if sent.is_empty() {
                    break;
                }
                let (request, splices) =
                    produce_request(&self.target_meta, topics, PRODUCE_TIMEOUT_MS);
                *self.produces_in_flight.entry(broker).or_default() += 1;
                self.produce_lane(broker).submit(request, splices, sent);
            }
        }
    }

    /// The lane that queues Produce requests to one broker in order.
    fn produce_lane(&mut self, broker: i32) -> &ProduceLane {
        let (target, events) = (self.target.clone(), self.events_tx.clone());
        self.produce_lanes
            .entry(broker)
            .or_insert_with(|| ProduceLane::start(target, broker, events))
    }

    pub(super) fn on_produced(
        &mut self,
        broker: i32,
        sent: Vec<(usize, u64)>,
        result: Result<ProduceResponse, ClusterError>,
    ) {
        if let Some(count) = self.produces_in_flight.get_mut(&broker) {
            *count -= 1;
        }
        let now = Instant::now();
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(broker, error = %e, "Produce failed; resending after a metadata refresh");
                self.counters.produce_retries += 1;
                for (i, entry) in sent {
                    self.slots[i].state.failed(entry, true);
                    self.slots[i].produce_backoff.fail(now);
                }
                self.want_refresh(Role::Target);
                return;
            }
        };
        let mut answers: HashMap<(String, i32), (i16, Option<String>)> = HashMap::new();
        for topic in response.responses {
            let name = if topic.topic_id.is_nil() {
                topic.name.0.to_string()
            } else {
                self.target_names
                    .get(&topic.topic_id)
                    .cloned()
                    .unwrap_or_default()
            };
            for p in topic.partition_responses {
                let message = p.error_message.map(|m| m.to_string());
                answers.insert((name.clone(), p.index), (p.error_code, message));
            }
        }
        let mut retried = false;
        for (i, entry) in sent {
            let key = (
                self.slots[i].target_topic.to_string(),
                self.slots[i].partition,
            );
            let (code, message) = answers.remove(&key).unwrap_or((
                ResponseError::UnknownServerError.code(),
                Some("partition missing from the answer".into()),
            ));
            let error = code.err();
            let slot = &mut self.slots[i];
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
            match outcome {
                Outcome::Landed => {
                    let slot = &mut self.slots[i];
                    let acked = slot.state.acked(entry);
                    slot.produce_backoff.reset();
                    slot.out_of_order_streak = 0;
                    slot.corrupt_refusals = 0;
                    self.counters.records += acked.records as u64;
                    self.counters.bytes += acked.bytes as u64;
                    self.counters.batches += u64::from(acked.bytes > 0);
                }
                Outcome::Retry {
                    refresh,
                    maybe_written,
                } => {
                    retried = true;
                    let slot = &mut self.slots[i];
                    tracing::debug!(topic = %slot.topic, partition = slot.partition, ?error, "Produce refused; resending");
                    slot.state.failed(entry, maybe_written);
                    slot.produce_backoff.fail(now);
                    if refresh {
                        self.want_refresh(Role::Target);
                    }
                }
                Outcome::OutOfOrder => {
                    retried = true;
                    let slot = &mut self.slots[i];
                    // Behind an earlier failed batch this is expected; for the
                    // first unacknowledged batch it means the broker lost our state.
                    if slot.state.is_first_unacked(entry) {
                        slot.out_of_order_streak += 1;
                    }
                    // Refused, so not written.
                    slot.state.failed(entry, false);
                    slot.produce_backoff.fail(now);
                    if slot.out_of_order_streak >= OUT_OF_ORDER_LIMIT {
                        slot.out_of_order_streak = 0;
                        let reason = self.refusal(i, entry, error, message.as_deref());
                        self.renew_producer(reason);
                    }
                }
                Outcome::IdentityRefused => {
                    retried = true;
                    let slot = &mut self.slots[i];
                    slot.state.failed(entry, false);
                    slot.produce_backoff.fail(now);
                    let reason = self.refusal(i, entry, error, message.as_deref());
                    self.renew_producer(reason);
                }
                Outcome::RefusedByTopic => {
                    let reason = self.refusal(i, entry, error, message.as_deref());
                    match self.config.replication.on_refused_batch {
                        RefusedBatchPolicy::Stop => {
                            self.slots[i].state.failed(entry, false);
                            self.stop(i, format!("{reason}; change the target topic's settings, or restart with --on-refused-batch skip"));
                        }
                        RefusedBatchPolicy::Skip => {
                            tracing::warn!("{reason}; skipped (on_refused_batch = skip)");
                            let records = self.slots[i].state.skip_refused(entry);
                            self.counters.refused_batches_skipped += 1;
                            self.counters.refused_records_skipped += records as u64;
                        }
                    }
                }
                Outcome::Corrupt => {
                    let cause = match self.slots[i].state.verify_crc(entry) {
                        Err(damage) => format!("the source sent it damaged: {damage}"),
                        Ok(()) => format!(
                            "refused {CORRUPT_RESEND_LIMIT} times though its CRC matches: \
                             the target cannot read what the source stored"
                        ),
                    };
                    let refusal = self.refusal(i, entry, error, message.as_deref());
                    let reason = format!("{refusal}; {cause}");
                    self.slots[i].state.failed(entry, false);
                    self.stop(i, reason);
                }
                Outcome::Fatal => {
                    let reason = self.refusal(i, entry, error, message.as_deref());
                    self.slots[i].state.failed(entry, false);
                    self.stop(i, reason);
                }
            }
        }
        if retried {
            self.counters.produce_retries += 1;
        }
    }

    /// Words for a batch the target refused.
    fn refusal(
        &self,
        i: usize,
        entry: u64,
        error: Option<ResponseError>,
        message: Option<&str>,
    ) -> String {
        let slot = &self.slots[i];
        let range = slot
            .state
            .entry_range(entry)
            .map(|(start, end)| format!("source offsets {start}..{}", end - 1))
            .unwrap_or_else(|| "a batch".to_owned());
        let error = error.map_or_else(|| "no error code".to_owned(), |e| format!("{e:?}"));
        format!(
            "target refused {range} of {}-{}: {error}{}",
            slot.topic,
            slot.partition,
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        )
    }
}

/// kafka-mirror's producer id and epoch on the target, and whether a new one
/// is due.
#[derive(Debug)]
pub(super) struct ProducerIdentity {
    pub(super) id: i64,
    pub(super) epoch: i16,
    /// Set when the target stopped taking this identity; `None` otherwise.
    renewal: Option<Renewal>,
}

#[derive(Debug)]
enum Renewal {
    /// Resolving every batch of unknown fate under the old identity.
    Resolving { reason: String, not_before: Instant },
    /// InitProducerId in flight.
    Asking,
}

/// Wait between a failed InitProducerId and the next.
const RENEWAL_BACKOFF: Duration = Duration::from_secs(1);

impl ProducerIdentity {
    /// The identity the target gave at startup.
    pub(super) fn new((id, epoch): (i64, i16)) -> Self {
        ProducerIdentity {
            id,
            epoch,
            renewal: None,
        }
    }
}

impl Engine {
    /// The target refused our producer identity: stop sending new batches,
    /// resolve the ones of unknown fate, then get a new id.
    fn renew_producer(&mut self, reason: String) {
        if self.producer.renewal.is_none() {
            tracing::warn!(
                producer_id = self.producer.id,
                epoch = self.producer.epoch,
                %reason,
                "the target refused our producer id; getting a new one once in-flight batches are answered"
            );
            self.producer.renewal = Some(Renewal::Resolving {
                reason,
                not_before: Instant::now(),
            });
        }
    }

    /// Asks for the new producer id once no batch is in flight or of unknown fate.
    pub(super) fn start_producer_renewal(&mut self, now: Instant) {
        let Some(Renewal::Resolving { not_before, .. }) = &self.producer.renewal else {
            return;
        };
        // A stopped partition sends nothing more in this run, so its batches
        // of unknown fate can never be resolved; they do not hold up the others.
        let unresolved = self
            .slots
            .iter()
            .any(|slot| !matches!(slot.status, Status::Stopped(_)) && slot.state.unresolved());
        if *not_before > now || self.produces_in_flight.values().any(|&n| n > 0) || unresolved {
            return;
        }
        let Some(Renewal::Resolving { reason, .. }) =
            self.producer.renewal.replace(Renewal::Asking)
        else {
            return;
        };
        let target = self.target.clone();
        self.spawn(async move {
            Event::ProducerRenewed {
                reason,
                result: init_producer_id(&target).await,
            }
        });
    }

    pub(super) fn on_producer_renewed(
        &mut self,
        reason: String,
        result: Result<(i64, i16), MirrorError>,
    ) {
        match result {
            Ok((id, epoch)) => {
                tracing::info!(
                    old_producer_id = self.producer.id,
                    producer_id = id,
                    epoch,
                    "new producer id; unacknowledged batches are sent again from sequence 0"
                );
                self.producer = ProducerIdentity::new((id, epoch));
                for slot in &mut self.slots {
                    if !matches!(slot.status, Status::Stopped(_)) {
                        slot.state.new_producer();
                        slot.out_of_order_streak = 0;
                    }
                }
                self.counters.producer_renewals += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "InitProducerId failed; retrying");
                self.producer.renewal = Some(Renewal::Resolving {
                    reason,
                    not_before: Instant::now() + RENEWAL_BACKOFF,
                });
            }
        }
    }
}

/// Gets a fresh idempotent producer id from the target.
pub(super) async fn init_producer_id(target: &Arc<Cluster>) -> Result<(i64, i16), MirrorError> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let mut last_error = None;
    for attempt in 0..30u32 {
        let response = target.send_any(request.clone()).await?;
        match response.error_code.err() {
            None => return Ok((response.producer_id.0, response.producer_epoch)),
            Some(error) if error.is_retriable() => {
                tracing::debug!(?error, attempt, "InitProducerId not ready; retrying");
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(error) => return Err(MirrorError::ProducerId(format!("{error:?}"))),
        }
    }
    Err(MirrorError::ProducerId(format!(
        "{last_error:?} after 30 attempts"
    )))
}

/// A Produce request, its splices, and the `(slot, entry)` of each batch in it.
type ProduceJob = (ProduceRequest, Splices, Vec<(usize, u64)>);

/// Queues one broker's Produce requests in the order the engine made them.
///
/// Spawning a task per request would let the runtime reorder them on the
/// wire, and a partition's sequences would arrive out of order. One task per
/// broker queues each request on the connection before taking the next, and
/// only the waits for the answers run concurrently.
#[derive(Debug)]
pub(super) struct ProduceLane {
    jobs: mpsc::UnboundedSender<ProduceJob>,
}

impl ProduceLane {
    fn start(target: Arc<Cluster>, broker: i32, events: mpsc::UnboundedSender<Event>) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<ProduceJob>();
        tokio::spawn(async move {
            while let Some((request, splices, sent)) = queue.recv().await {
                match target.enqueue_spliced(broker, request, splices).await {
                    Ok(pending) => {
                        let (target, events) = (target.clone(), events.clone());
                        tokio::spawn(async move {
                            let result = pending.response().await.map_err(|e| target.net_error(e));
                            let _ = events.send(Event::Produced {
                                broker,
                                sent,
                                result,
                            });
                        });
                    }
                    Err(e) => {
                        let _ = events.send(Event::Produced {
                            broker,
                            sent,
                            result: Err(e),
                        });
                    }
                }
            }
        });
        ProduceLane { jobs }
    }

    /// Queues a request; its answer arrives as an [`Event::Produced`].
    fn submit(&self, request: ProduceRequest, splices: Splices, sent: Vec<(usize, u64)>) {
        // The lane task lives as long as this sender: the send cannot fail.
        let _ = self.jobs.send((request, splices, sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
