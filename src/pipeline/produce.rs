//! The produce stage: Produce requests to each target broker, one batch per
//! partition per request (Kafka's rule), many partitions per request, and up
//! to `max_in_flight_requests` requests pipelined on each connection.
//!
//! Every batch is written as kafka-mirror's own idempotent producer (the
//! producer id from InitProducerId, a sequence per partition), so a retried
//! batch that had in fact landed is dropped by the broker as a duplicate, and
//! a batch that would land after a lost one is refused: pipelining keeps order.
//! [`classify`] is the one place that decides what a produce error means.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use tokio::sync::mpsc;

use super::engine::{Engine, Event, Status};
use crate::cluster::{Cluster, ClusterError, Role};

/// Stop adding partitions to a Produce request past this size (one batch is
/// always added, whatever its size).
const PRODUCE_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// The broker waits this long for the in-sync replicas (acks=all).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Out-of-order answers in a row for a partition's first unacknowledged batch
/// before it is stopped: the broker's sequence state no longer matches ours.
const OUT_OF_ORDER_LIMIT: u32 = 5;

/// What a produce answer means for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// On the target (including a duplicate the broker recognised).
    Landed,
    /// Send again, after a metadata refresh when `refresh` is set.
    Retry { refresh: bool },
    /// The sequence does not follow the last one the broker has.
    OutOfOrder,
    /// Cannot succeed by retrying.
    Fatal,
}

/// Decides what a produce error code means.
fn classify(error: Option<ResponseError>) -> Outcome {
    match error {
        None | Some(ResponseError::DuplicateSequenceNumber) => Outcome::Landed,
        Some(ResponseError::OutOfOrderSequenceNumber) => Outcome::OutOfOrder,
        Some(
            ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::UnknownTopicId
            | ResponseError::FencedLeaderEpoch
            | ResponseError::KafkaStorageError,
        ) => Outcome::Retry { refresh: true },
        Some(
            ResponseError::RequestTimedOut
            | ResponseError::NotEnoughReplicas
            | ResponseError::NotEnoughReplicasAfterAppend
            | ResponseError::NetworkException
            | ResponseError::ThrottlingQuotaExceeded
            | ResponseError::ConcurrentTransactions,
        ) => Outcome::Retry { refresh: false },
        Some(error) if error.is_retriable() => Outcome::Retry { refresh: true },
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
        let (producer_id, producer_epoch) = (self.producer_id, self.producer_epoch);
        for (broker, slots) in by_leader {
            while self.produces_in_flight.get(&broker).copied().unwrap_or(0) < limit {
                let mut sent = Vec::new();
                let mut topics: BTreeMap<Arc<str>, Vec<(i32, Bytes)>> = BTreeMap::new();
                let mut size = 0;
                for &i in &slots {
                    if size >= PRODUCE_REQUEST_BYTES {
                        break;
                    }
                    let slot = &mut self.slots[i];
                    let Some(outgoing) = slot.state.next_to_send(producer_id, producer_epoch)
                    else {
                        continue;
                    };
                    size += outgoing.bytes.len();
                    sent.push((i, outgoing.entry));
                    topics
                        .entry(slot.target_topic.clone())
                        .or_default()
                        .push((slot.partition, outgoing.bytes));
                }
                if sent.is_empty() {
                    break;
                }
                let request = self.produce_request(topics);
                *self.produces_in_flight.entry(broker).or_default() += 1;
                self.produce_lane(broker).submit(request, sent);
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

    fn produce_request(&self, topics: BTreeMap<Arc<str>, Vec<(i32, Bytes)>>) -> ProduceRequest {
        let topic_data = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let topic_id = self
                    .target_meta
                    .topics
                    .get(&*topic)
                    .map_or(Uuid::nil(), |t| t.id);
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_topic_id(topic_id)
                    .with_partition_data(
                        partitions
                            .into_iter()
                            .map(|(index, records)| {
                                PartitionProduceData::default()
                                    .with_index(index)
                                    .with_records(Some(records))
                            })
                            .collect(),
                    )
            })
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(topic_data)
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
                    self.slots[i].state.failed(entry);
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
            match classify(error) {
                Outcome::Landed => {
                    let slot = &mut self.slots[i];
                    let acked = slot.state.acked(entry);
                    slot.produce_backoff.reset();
                    slot.out_of_order_streak = 0;
                    self.counters.records += acked.records as u64;
                    self.counters.bytes += acked.bytes as u64;
                    self.counters.batches += u64::from(acked.bytes > 0);
                }
                Outcome::Retry { refresh } => {
                    retried = true;
                    let slot = &mut self.slots[i];
                    tracing::debug!(topic = %slot.topic, partition = slot.partition, ?error, "Produce refused; resending");
                    slot.state.failed(entry);
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
                    if slot.out_of_order_streak >= OUT_OF_ORDER_LIMIT {
                        let reason = self.refusal(i, entry, error, message.as_deref());
                        self.stop(i, reason);
                    } else {
                        let slot = &mut self.slots[i];
                        slot.state.failed(entry);
                        slot.produce_backoff.fail(now);
                    }
                }
                Outcome::Fatal => {
                    let reason = self.refusal(i, entry, error, message.as_deref());
                    self.slots[i].state.failed(entry);
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
        format!(
            "target refused {range} of {}-{}: {error:?}{}",
            slot.topic,
            slot.partition,
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        )
    }
}

/// Queues one broker's Produce requests in the order the engine made them.
///
/// Spawning a task per request would let the runtime reorder them on the
/// wire, and a partition's sequences would arrive out of order. One task per
/// broker queues each request on the connection before taking the next, and
/// only the waits for the answers run concurrently.
#[derive(Debug)]
pub(super) struct ProduceLane {
    jobs: mpsc::UnboundedSender<(ProduceRequest, Vec<(usize, u64)>)>,
}

impl ProduceLane {
    fn start(target: Arc<Cluster>, broker: i32, events: mpsc::UnboundedSender<Event>) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<(ProduceRequest, Vec<(usize, u64)>)>();
        tokio::spawn(async move {
            while let Some((request, sent)) = queue.recv().await {
                match target.enqueue(broker, request).await {
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
    fn submit(&self, request: ProduceRequest, sent: Vec<(usize, u64)>) {
        // The lane task lives as long as this sender: the send cannot fail.
        let _ = self.jobs.send((request, sent));
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
            Outcome::Retry { refresh: true }
        );
        assert_eq!(
            classify(Some(ResponseError::NotEnoughReplicasAfterAppend)),
            Outcome::Retry { refresh: false }
        );
        assert_eq!(
            classify(Some(ResponseError::OutOfOrderSequenceNumber)),
            Outcome::OutOfOrder
        );
        assert_eq!(
            classify(Some(ResponseError::MessageTooLarge)),
            Outcome::Fatal
        );
        assert_eq!(classify(Some(ResponseError::InvalidRecord)), Outcome::Fatal);
        assert_eq!(
            classify(Some(ResponseError::TopicAuthorizationFailed)),
            Outcome::Fatal
        );
    }
}
