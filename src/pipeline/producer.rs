//! kafka-mirror's producer identity on the target, and its renewal.
//!
//! When the target stops taking our producer id (fenced, its state for us
//! gone, or its sequences for a partition persistently disagreeing with
//! ours), a new one is taken from InitProducerId, as Kafka's own producer
//! bumps its epoch.
//!
//! An idempotent producer renews only once every batch whose fate is unknown
//! (a timeout, a lost connection) has been resolved under the old id: a
//! batch the broker may have appended is resent with its old id and sequence
//! until the answer is "written" or "not written", so nothing lands twice.
//!
//! A transactional producer (exactly-once mode) need not wait: the renewal
//! bumps its transactional id's epoch, which aborts the open transaction, so
//! nothing written since the last commit is visible, and every partition goes
//! back to its committed checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{DescribeConfigsRequest, InitProducerIdRequest, ProducerId};
use kafka_protocol::protocol::StrBytes;

use super::error::PartitionError;
use super::partition::{Writer, MAX_IN_FLIGHT};
use super::slots::Slots;
use super::stats::Counters;
use super::transaction::TransactionFailure;
use super::MirrorError;
use crate::cluster::{Cluster, Metadata};

/// Why the producer is renewed: what the renewal is logged with.
#[derive(Debug, thiserror::Error)]
pub(super) enum RenewalReason {
    /// The target refused a partition's batch under our identity.
    #[error(transparent)]
    Refused(PartitionError),
    /// Exactly-once: the open transaction failed, and is aborted.
    #[error(transparent)]
    Transaction(TransactionFailure),
    /// This instance lost its partitions with batches in flight: none may
    /// be sent again under this identity, nor follow them in its sequences.
    #[error("this instance lost its partitions to another member of its group")]
    Lost,
    /// Exactly-once while sharing: the group gave this instance a writer
    /// slot (this one) whose transactional id it does not hold yet.
    #[error("the group gave this instance writer slot {0}")]
    NewSlot(i32),
}

/// Wait between a failed InitProducerId and the next.
const RENEWAL_BACKOFF: Duration = Duration::from_secs(1);

/// kafka-mirror's producer id and epoch on the target, and whether a new one
/// is due.
#[derive(Debug)]
pub(super) struct ProducerIdentity {
    pub(super) id: i64,
    pub(super) epoch: i16,
    /// Exactly-once: the transactional id whose open transaction batches go into.
    transactional_id: Option<Arc<str>>,
    /// How many of a partition's batches may be in flight ([`Writer::window`]).
    window: usize,
    /// Set when the target stopped taking this identity; `None` otherwise.
    renewal: Option<Renewal>,
}

#[derive(Debug)]
enum Renewal {
    /// Resolving every batch of unknown fate under the old identity.
    Resolving {
        reason: RenewalReason,
        not_before: Instant,
    },
    /// InitProducerId in flight.
    Asking,
}

impl ProducerIdentity {
    /// The idempotent identity the target gave at startup.
    pub(super) fn new((id, epoch): (i64, i16)) -> Self {
        ProducerIdentity {
            id,
            epoch,
            transactional_id: None,
            window: MAX_IN_FLIGHT,
            renewal: None,
        }
    }

    /// The identity the target gave our transactional id at startup, with
    /// up to `window` batches of a partition in flight.
    pub(super) fn transactional(
        producer: (i64, i16),
        transactional_id: Arc<str>,
        window: usize,
    ) -> Self {
        ProducerIdentity {
            transactional_id: Some(transactional_id),
            window,
            ..ProducerIdentity::new(producer)
        }
    }

    /// Exactly-once while sharing: no identity until the group gives this
    /// instance a writer slot and the renewal that follows takes its
    /// transactional id; no partition is copied before.
    pub(super) fn transactional_pending(window: usize) -> Self {
        ProducerIdentity::transactional((-1, -1), "".into(), window)
    }

    /// Exactly-once: batches go into the transactions of another
    /// transactional id from now on (a writer slot switched to).
    pub(super) fn set_transactional_id(&mut self, id: Arc<str>) {
        self.transactional_id = Some(id);
    }

    /// Whether batches go into a transaction (exactly-once mode).
    pub(super) fn is_transactional(&self) -> bool {
        self.transactional_id.is_some()
    }

    /// Exactly-once: the transactional id, which Produce requests name.
    pub(super) fn transactional_id(&self) -> Option<&Arc<str>> {
        self.transactional_id.as_ref()
    }

    /// Who the target sees writing our batches.
    pub(super) fn writer(&self) -> Writer {
        Writer {
            id: self.id,
            epoch: self.epoch,
            transactional: self.is_transactional(),
            window: self.window,
        }
    }

    /// Whether a renewal is under way: then only batches that may already be
    /// on the target are sent (again), under the old identity.
    pub(super) fn renewing(&self) -> bool {
        self.renewal.is_some()
    }

    /// The target refused this identity: stop sending new batches, resolve
    /// the ones of unknown fate, then get a new id.
    pub(super) fn refused(&mut self, reason: RenewalReason, now: Instant) {
        if self.renewal.is_none() {
            // A writer slot the group gives is routine (every start while
            // sharing in exactly-once mode); the rest are failures.
            if let RenewalReason::NewSlot(slot) = reason {
                tracing::info!(slot, "taking the writer slot's transactional id");
            } else {
                tracing::warn!(
                    producer_id = self.id,
                    epoch = self.epoch,
                    %reason,
                    "getting a new producer id once in-flight batches are answered"
                );
            }
            self.renewal = Some(Renewal::Resolving {
                reason,
                not_before: now,
            });
        }
    }

    /// Whether InitProducerId should be asked now: a renewal is waiting, no
    /// Produce is in flight and (for an idempotent producer) no batch's fate
    /// is unknown. If so, the renewal is marked asking and its reason
    /// returned (it comes back with the answer).
    pub(super) fn due(
        &mut self,
        slots: &Slots,
        produces_in_flight: bool,
        now: Instant,
    ) -> Option<RenewalReason> {
        let Some(Renewal::Resolving { not_before, .. }) = &self.renewal else {
            return None;
        };
        if *not_before > now
            || produces_in_flight
            || (!self.is_transactional() && slots.any_unresolved())
        {
            return None;
        }
        match self.renewal.replace(Renewal::Asking) {
            Some(Renewal::Resolving { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    /// InitProducerId answered: with a new identity, every partition that is
    /// not stopped sends its unacknowledged batches again from sequence 0 (a
    /// transactional producer's partitions go back to their committed
    /// checkpoints first); after a failure the renewal waits and asks again.
    pub(super) fn renewed(
        &mut self,
        slots: &mut Slots,
        counters: &mut Counters,
        reason: RenewalReason,
        result: Result<(i64, i16), MirrorError>,
        now: Instant,
    ) {
        match result {
            Ok((id, epoch)) => {
                tracing::info!(
                    old_producer_id = self.id,
                    producer_id = id,
                    epoch,
                    "new producer id; unacknowledged batches are sent again from sequence 0"
                );
                *self = ProducerIdentity {
                    transactional_id: self.transactional_id.take(),
                    window: self.window,
                    ..ProducerIdentity::new((id, epoch))
                };
                for slot in slots.all_mut() {
                    if slot.status.is_stopped() {
                        continue;
                    }
                    if self.is_transactional() {
                        let from = slot.state.rewind_to_checkpoint();
                        slot.epochs.rewind(from);
                    } else {
                        slot.state.new_producer();
                    }
                    slot.refusal_streak = 0;
                }
                counters.producer_renewals += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "InitProducerId failed; retrying");
                self.renewal = Some(Renewal::Resolving {
                    reason,
                    not_before: now + RENEWAL_BACKOFF,
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

/// DescribeConfigs' resource type of a broker.
const BROKER_RESOURCE: i8 = 4;

/// The target's `producer.id.expiration.ms`, read from one of its brokers:
/// how long the target remembers our sequences on a partition after the
/// maxTimestamp of our last batch there. `None` when it cannot be read (an
/// ACL, an old broker): the caller keeps Kafka's default.
pub(super) async fn producer_expiry(
    target: &Arc<Cluster>,
    metadata: &Metadata,
) -> Option<Duration> {
    const KEY: &str = "producer.id.expiration.ms";
    let broker = metadata.brokers.keys().min()?;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(broker.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str(KEY)]))]);
    let response = match target.send_any(request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the target's {KEY}; assuming Kafka's default");
            return None;
        }
    };
    let result = response.results.into_iter().next()?;
    if let Some(error) = result.error_code.err() {
        tracing::debug!(
            ?error,
            "cannot read the target's {KEY}; assuming Kafka's default"
        );
        return None;
    }
    let value = result
        .configs
        .into_iter()
        .find(|c| c.name.as_str() == KEY)?
        .value?;
    value.parse::<u64>().ok().map(Duration::from_millis)
}
