//! Kafka transactions on one cluster, the way of transaction version 1
//! (KIP-98), which every 3.x and 4.x broker serves: a transactional id's
//! coordinator, and the three requests a transactional producer sends it.
//!
//! [`TransactionCoordinator`] owns finding the coordinator of one
//! transactional id (FindCoordinator with key type 1, through
//! [`super::coordinator`] like consumer groups), remembering it, and
//! finding it again when it moves or its broker cannot be reached; and
//! InitProducerId (with a transactional id, which aborts that id's open
//! transaction and fences older holders; with the current producer id and
//! epoch from v3 on, KIP-360), AddPartitionsToTxn (each partition before its
//! first Produce in a transaction) and EndTxn (commit or abort). Each is
//! retried for a bounded time while the coordinator moves, loads, is
//! writing the markers of the transaction before (CONCURRENT_TRANSACTIONS)
//! or cannot be reached; what is left is a [`TransactionError`].
//!
//! The Produce requests are the caller's ([`super::produce_request`] with
//! the transactional id set, batches carrying the producer id, epoch, the
//! caller's sequences and the transactional bit), and so is when to commit.
//!
//! Transaction version 2 (KIP-890: partitions added by the Produce itself,
//! a new epoch at every EndTxn) is what a Kafka 4 broker assumes of a
//! client that sends Produce v12+, AddPartitionsToTxn v4+ (a broker's own
//! verification request) or EndTxn v5+. A coordinator caps those APIs on
//! its cluster ([`super::Cluster::cap_version`]) when it is made, so every
//! request to that cluster stays on version 1.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use super::coordinator::{find_coordinators, CoordinatorType, LookupError, Refusal};
use super::{detail, on_partition, Cluster, ClusterError, Metadata};
use crate::backoff::Backoff;

/// The last Produce version of transaction version 1: v12+ makes a Kafka 4
/// broker add the partition to the transaction itself (KIP-890,
/// `AddPartitionsToTxnManager.produceRequestVersionToTransactionSupportedOperation`).
const TRANSACTION_V1_PRODUCE_VERSION: i16 = 11;
/// The last AddPartitionsToTxn version a client sends; v4+ batch many
/// transactional ids for the brokers' own verification.
const CLIENT_ADD_PARTITIONS_VERSION: i16 = 3;
/// The last EndTxn version of transaction version 1; v5 bumps the epoch at
/// every end (KIP-890 part 2).
const TRANSACTION_V1_END_TXN_VERSION: i16 = 4;
/// The first InitProducerId version that carries the current producer id
/// and epoch, to bump that epoch rather than fence it (KIP-360).
const EPOCH_BUMP_INIT_VERSION: i16 = 3;

/// How long one call retries before it gives up: about the time a
/// coordinator takes to move to another broker and load its partition.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// Backoff between retries: Kafka's producer's `retry.backoff.ms` and
/// `retry.backoff.max.ms` defaults.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// The first wait after CONCURRENT_TRANSACTIONS, which lasts only while
/// the markers of the transaction before are written: a few milliseconds
/// on a LAN. Kafka's producer waits 20 ms (`ADD_PARTITIONS_RETRY_BACKOFF_MS`);
/// a mirror commits every 100 ms, and each wait stops the copy.
const CONCURRENT_RETRY_BASE: Duration = Duration::from_millis(5);

/// A transaction request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// Another producer took the transactional id (InitProducerId with it):
    /// this one's transaction is aborted and it must stop writing.
    #[error(
        "transactional id {transactional_id:?}: fenced by a newer producer with the same \
         transactional id ({api:?} answered {error:?})"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// The request that was refused.
        api: ApiKey,
        /// PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH from older coordinators.
        error: ResponseError,
    },
    /// The cluster's ACLs do not let this client use the transactional id.
    #[error(
        "transactional id {transactional_id:?}: not authorized ({api:?} answered \
         TRANSACTIONAL_ID_AUTHORIZATION_FAILED); the principal needs WRITE and DESCRIBE on \
         the transactional id"
    )]
    NotAuthorized {
        /// The transactional id.
        transactional_id: String,
        /// The request that was refused.
        api: ApiKey,
    },
    /// The transaction is not in a state that allows the request, e.g.
    /// EndTxn with no transaction open (no partition added since the last end).
    #[error(
        "transactional id {transactional_id:?}: {api:?} refused: INVALID_TXN_STATE{}",
        detail(message)
    )]
    InvalidState {
        /// The transactional id.
        transactional_id: String,
        /// The request that was refused.
        api: ApiKey,
        /// The broker's own words; may be empty.
        message: String,
    },
    /// The broker refused the request.
    #[error(
        "transactional id {transactional_id:?}: {api:?} refused{}: {error:?}{}",
        on_partition(partition),
        detail(message)
    )]
    Refused {
        /// The transactional id.
        transactional_id: String,
        /// The request that was refused.
        api: ApiKey,
        /// The topic and partition the error is about, when it is about one.
        partition: Option<(String, i32)>,
        /// The broker's error.
        error: ResponseError,
        /// The broker's own words, or what the error means here; may be empty.
        message: String,
    },
    /// The request could not be sent or answered.
    #[error("transactional id {transactional_id:?}: {api:?}: {source}")]
    Cluster {
        /// The transactional id.
        transactional_id: String,
        /// The request.
        api: ApiKey,
        /// The connection or cluster error, naming the cluster and broker.
        #[source]
        source: ClusterError,
    },
    /// Retriable errors went on for longer than a call retries.
    #[error(
        "transactional id {transactional_id:?}: {api:?} still failing after {waited:?}: {last}"
    )]
    TimedOut {
        /// The transactional id.
        transactional_id: String,
        /// The request.
        api: ApiKey,
        /// How long the call retried.
        waited: Duration,
        /// The last error.
        last: Box<TransactionError>,
    },
}

/// How a retriable error is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// After looking the coordinator up again.
    Relocate,
    /// Soon: the transaction before is being completed.
    Concurrent,
    /// After a backoff.
    Later,
}

impl TransactionError {
    /// Whether another producer took the transactional id: stop, and start
    /// again (a new InitProducerId) only from the last committed state.
    pub fn is_fenced(&self) -> bool {
        matches!(self, TransactionError::Fenced { .. })
    }

    fn retry(&self) -> Option<Retry> {
        match self {
            TransactionError::Cluster { source, .. } if source.is_retriable() => {
                Some(Retry::Relocate)
            }
            TransactionError::Refused { error, .. } => match error {
                ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                    Some(Retry::Relocate)
                }
                ResponseError::ConcurrentTransactions => Some(Retry::Concurrent),
                error if error.is_retriable() => Some(Retry::Later),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What a coordinator was found with, and the coordinator found last.
#[derive(Debug, Default)]
struct Located {
    metadata: Metadata,
    coordinator: Option<i32>,
}

/// The transaction requests of one transactional id on one cluster.
#[derive(Debug)]
pub struct TransactionCoordinator {
    cluster: Arc<Cluster>,
    transactional_id: String,
    located: Mutex<Located>,
}

impl TransactionCoordinator {
    /// The coordinator of `transactional_id` on `cluster`, looked up at the
    /// first request. Caps the versions of Produce (v11), AddPartitionsToTxn
    /// and EndTxn to `cluster` at transaction version 1, for every request
    /// to it from now on.
    pub fn new(cluster: Arc<Cluster>, transactional_id: impl Into<String>) -> Self {
        cluster.cap_version(ApiKey::Produce, TRANSACTION_V1_PRODUCE_VERSION);
        cluster.cap_version(ApiKey::AddPartitionsToTxn, CLIENT_ADD_PARTITIONS_VERSION);
        cluster.cap_version(ApiKey::EndTxn, TRANSACTION_V1_END_TXN_VERSION);
        TransactionCoordinator {
            cluster,
            transactional_id: transactional_id.into(),
            located: Mutex::new(Located::default()),
        }
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Takes the transactional id: a producer id and epoch that fence every
    /// earlier holder of the id, whose open transaction the coordinator
    /// aborts first. `timeout` is how long the coordinator lets a
    /// transaction stay open before aborting it (at most the broker's
    /// `transaction.max.timeout.ms`).
    ///
    /// With `current`, this producer's own id and epoch, the coordinator
    /// bumps that epoch (KIP-360, InitProducerId v3+) and refuses with
    /// [`TransactionError::Fenced`] when another producer has taken the id
    /// since; without it, the id is taken whoever holds it.
    pub async fn init_producer_id(
        &self,
        timeout: Duration,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TransactionError> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let api = ApiKey::InitProducerId;
        self.at_coordinator(api, |cluster, broker| async move {
            let build = |version| {
                let request = InitProducerIdRequest::default()
                    .with_transactional_id(Some(self.wire_id()))
                    .with_transaction_timeout_ms(timeout_ms);
                match current {
                    Some((id, epoch)) if version >= EPOCH_BUMP_INIT_VERSION => request
                        .with_producer_id(ProducerId(id))
                        .with_producer_epoch(epoch),
                    _ => request,
                }
            };
            let response = cluster
                .send_built(broker, build)
                .await
                .map_err(|source| self.unreachable(api, source))?;
            match response.error_code.err() {
                None => Ok((response.producer_id.0, response.producer_epoch)),
                Some(error) => Err(self.refused(api, None, error, String::new())),
            }
        })
        .await
    }

    /// Adds these partitions to `producer`'s transaction, in one request;
    /// the first partition added begins a transaction. Each partition must
    /// be added before its first Produce in a transaction; adding one again
    /// is harmless.
    pub async fn add_partitions(
        &self,
        producer: (i64, i16),
        partitions: &[(String, i32)],
    ) -> Result<(), TransactionError> {
        let api = ApiKey::AddPartitionsToTxn;
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.wire_id())
            .with_v3_and_below_producer_id(ProducerId(producer.0))
            .with_v3_and_below_producer_epoch(producer.1)
            .with_v3_and_below_topics(topics_of(partitions));
        self.at_coordinator(api, |cluster, broker| {
            let request = request.clone();
            async move {
                let response = cluster
                    .send(broker, request)
                    .await
                    .map_err(|source| self.unreachable(api, source))?;
                self.read_add_partitions(response)
            }
        })
        .await
    }

    /// Ends `producer`'s transaction: commits it, or aborts it. An end whose
    /// answer was lost is sent again, which the coordinator answers as it
    /// answered the first.
    pub async fn end(&self, producer: (i64, i16), commit: bool) -> Result<(), TransactionError> {
        let api = ApiKey::EndTxn;
        let request = EndTxnRequest::default()
            .with_transactional_id(self.wire_id())
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_committed(commit);
        self.at_coordinator(api, |cluster, broker| {
            let request = request.clone();
            async move {
                let response = cluster
                    .send(broker, request)
                    .await
                    .map_err(|source| self.unreachable(api, source))?;
                match response.error_code.err() {
                    None => Ok(()),
                    Some(error) => Err(self.refused(api, None, error, String::new())),
                }
            }
        })
        .await
    }

    /// Runs `attempt` at the coordinator, looking it up again when it moved
    /// and retrying the retriable errors until [`RETRY_FOR`] has passed.
    async fn at_coordinator<T, F, Fut>(
        &self,
        api: ApiKey,
        mut attempt: F,
    ) -> Result<T, TransactionError>
    where
        F: FnMut(Arc<Cluster>, i32) -> Fut,
        Fut: Future<Output = Result<T, TransactionError>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
        let mut concurrent = Backoff::new(CONCURRENT_RETRY_BASE, RETRY_MAX);
        loop {
            let result = match self.coordinator().await {
                Ok(broker) => attempt(self.cluster.clone(), broker).await,
                Err(error) => Err(error),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let Some(retry) = error.retry() else {
                return Err(error);
            };
            if retry == Retry::Relocate {
                self.located.lock().await.coordinator = None;
            }
            let now = Instant::now();
            let wait = if retry == Retry::Concurrent {
                &mut concurrent
            } else {
                &mut backoff
            };
            wait.fail(now);
            let until = wait.until().unwrap_or(now);
            if until.duration_since(started) > RETRY_FOR {
                return Err(TransactionError::TimedOut {
                    transactional_id: self.transactional_id.clone(),
                    api,
                    waited: now.duration_since(started),
                    last: Box::new(error),
                });
            }
            tracing::debug!(%error, "retrying a transaction request");
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// The coordinator, remembered or looked up (once: the caller retries).
    async fn coordinator(&self) -> Result<i32, TransactionError> {
        let mut located = self.located.lock().await;
        if let Some(broker) = located.coordinator {
            return Ok(broker);
        }
        let api = ApiKey::FindCoordinator;
        let found = find_coordinators(
            &self.cluster,
            &mut located.metadata,
            CoordinatorType::Transaction,
            &[&self.transactional_id],
        )
        .await
        .map_err(|error| match error {
            LookupError::Unreachable(source) => self.unreachable(api, source),
            LookupError::Refused(Refusal { error, message }) => {
                self.refused(api, None, error, message)
            }
        })?;
        let result = found
            .into_iter()
            .find(|(key, _)| *key == self.transactional_id)
            .map(|(_, result)| result);
        match result {
            Some(Ok(broker)) => {
                tracing::debug!(transactional_id = %self.transactional_id, broker, "transaction coordinator found");
                located.coordinator = Some(broker);
                Ok(broker)
            }
            Some(Err(Refusal { error, message })) => Err(self.refused(api, None, error, message)),
            None => Err(self.refused(
                api,
                None,
                ResponseError::CoordinatorNotAvailable,
                "the transactional id is missing from the broker's answer".into(),
            )),
        }
    }

    /// An AddPartitionsToTxn answer (v3 and below): the first partition's
    /// real error, if any. A partition not attempted because of another's
    /// error is not one.
    fn read_add_partitions(
        &self,
        response: AddPartitionsToTxnResponse,
    ) -> Result<(), TransactionError> {
        let api = ApiKey::AddPartitionsToTxn;
        let mut not_attempted = None;
        for topic in response.results_by_topic_v3_and_below {
            for result in topic.results_by_partition {
                let partition = (topic.name.0.to_string(), result.partition_index);
                match result.partition_error_code.err() {
                    None => {}
                    Some(ResponseError::OperationNotAttempted) => {
                        not_attempted.get_or_insert(partition);
                    }
                    Some(error) => {
                        return Err(self.refused(api, Some(partition), error, String::new()))
                    }
                }
            }
        }
        match not_attempted {
            None => Ok(()),
            Some(partition) => Err(self.refused(
                api,
                Some(partition),
                ResponseError::OperationNotAttempted,
                String::new(),
            )),
        }
    }

    fn wire_id(&self) -> TransactionalId {
        TransactionalId(StrBytes::from_string(self.transactional_id.clone()))
    }

    fn unreachable(&self, api: ApiKey, source: ClusterError) -> TransactionError {
        TransactionError::Cluster {
            transactional_id: self.transactional_id.clone(),
            api,
            source,
        }
    }

    /// The error for the broker's answer `error` to `api`.
    fn refused(
        &self,
        api: ApiKey,
        partition: Option<(String, i32)>,
        error: ResponseError,
        message: String,
    ) -> TransactionError {
        let transactional_id = self.transactional_id.clone();
        match error {
            ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => {
                TransactionError::Fenced {
                    transactional_id,
                    api,
                    error,
                }
            }
            ResponseError::TransactionalIdAuthorizationFailed => TransactionError::NotAuthorized {
                transactional_id,
                api,
            },
            ResponseError::InvalidTxnState => TransactionError::InvalidState {
                transactional_id,
                api,
                message,
            },
            error => TransactionError::Refused {
                transactional_id,
                api,
                partition,
                error,
                message,
            },
        }
    }
}

/// `(topic, partition)` pairs as AddPartitionsToTxn's topics, each topic once.
fn topics_of(partitions: &[(String, i32)]) -> Vec<AddPartitionsToTxnTopic> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| &*t.name.0 == topic.as_str()) {
            Some(known) => known.partitions.push(*partition),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::cluster::Role;
    use crate::net::{ConnectionOptions, Connector, NetError};

    fn coordinator() -> TransactionCoordinator {
        let cluster = Cluster::new(
            Role::Target,
            Vec::new(),
            Connector::plain(ConnectionOptions::default()),
        );
        TransactionCoordinator::new(cluster, "mirror-0")
    }

    fn answer(results: &[(&'static str, i32, ResponseError)]) -> AddPartitionsToTxnResponse {
        let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
        for &(topic, partition, error) in results {
            let result = AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(partition)
                .with_partition_error_code(error.code());
            match topics.iter_mut().find(|t| &*t.name.0 == topic) {
                Some(t) => t.results_by_partition.push(result),
                None => topics.push(
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(TopicName(StrBytes::from_static_str(topic)))
                        .with_results_by_partition(vec![result]),
                ),
            }
        }
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
    }

    /// `ResponseError` has no "none": a code of 0 is success.
    fn ok() -> ResponseError {
        ResponseError::Unknown(0)
    }

    #[test]
    fn added_partitions_answer_with_the_first_real_error_and_its_partition() {
        let c = coordinator();
        assert!(c
            .read_add_partitions(answer(&[("orders", 0, ok()), ("orders", 1, ok())]))
            .is_ok());
        let error = c
            .read_add_partitions(answer(&[
                ("orders", 0, ResponseError::OperationNotAttempted),
                ("orders", 1, ResponseError::TopicAuthorizationFailed),
                ("checkpoints", 0, ResponseError::OperationNotAttempted),
            ]))
            .unwrap_err();
        assert!(
            matches!(
                &error,
                TransactionError::Refused {
                    api: ApiKey::AddPartitionsToTxn,
                    partition: Some((topic, 1)),
                    error: ResponseError::TopicAuthorizationFailed,
                    ..
                } if topic == "orders"
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("on orders-1"), "{error}");
        assert_eq!(error.retry(), None);

        let fenced = c
            .read_add_partitions(answer(&[("orders", 0, ResponseError::ProducerFenced)]))
            .unwrap_err();
        assert!(fenced.is_fenced(), "{fenced:?}");
        let loading = c
            .read_add_partitions(answer(&[(
                "orders",
                0,
                ResponseError::CoordinatorLoadInProgress,
            )]))
            .unwrap_err();
        assert_eq!(loading.retry(), Some(Retry::Later));
    }

    #[test]
    fn each_refusal_is_fenced_unauthorized_invalid_retried_or_final() {
        let c = coordinator();
        let api = ApiKey::EndTxn;
        let refused = |error| c.refused(api, None, error, String::new());
        for error in [
            ResponseError::ProducerFenced,
            ResponseError::InvalidProducerEpoch,
        ] {
            let fenced = refused(error);
            assert!(fenced.is_fenced());
            assert!(fenced.to_string().contains("\"mirror-0\""), "{fenced}");
        }
        assert!(matches!(
            refused(ResponseError::TransactionalIdAuthorizationFailed),
            TransactionError::NotAuthorized { .. }
        ));
        assert!(matches!(
            refused(ResponseError::InvalidTxnState),
            TransactionError::InvalidState { .. }
        ));
        let retry = |error| refused(error).retry();
        assert_eq!(retry(ResponseError::NotCoordinator), Some(Retry::Relocate));
        assert_eq!(
            retry(ResponseError::CoordinatorNotAvailable),
            Some(Retry::Relocate)
        );
        assert_eq!(
            retry(ResponseError::ConcurrentTransactions),
            Some(Retry::Concurrent)
        );
        assert_eq!(
            retry(ResponseError::CoordinatorLoadInProgress),
            Some(Retry::Later)
        );
        assert_eq!(retry(ResponseError::TransactionAbortable), None);
        assert_eq!(retry(ResponseError::InvalidProducerIdMapping), None);

        let lost = c.unreachable(
            api,
            ClusterError::Backoff {
                role: Role::Target,
                broker: 1,
            },
        );
        assert_eq!(lost.retry(), Some(Retry::Relocate));
        let unsupported = c.unreachable(
            api,
            ClusterError::Net {
                role: Role::Target,
                source: NetError::UnsupportedApi {
                    label: "broker 1".into(),
                    api,
                    broker: None,
                    ours: ApiKey::EndTxn.valid_versions(),
                },
            },
        );
        assert_eq!(unsupported.retry(), None);
    }

    #[test]
    fn partitions_are_added_topic_by_topic_in_the_client_layout() {
        let partitions = [
            ("orders".to_owned(), 0),
            ("checkpoints".to_owned(), 0),
            ("orders".to_owned(), 2),
        ];
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(coordinator().wire_id())
            .with_v3_and_below_topics(topics_of(&partitions));
        let mut buf = bytes::BytesMut::new();
        request
            .encode(&mut buf, CLIENT_ADD_PARTITIONS_VERSION)
            .unwrap();
        let sent =
            AddPartitionsToTxnRequest::decode(&mut buf.freeze(), CLIENT_ADD_PARTITIONS_VERSION)
                .unwrap();
        assert_eq!(&*sent.v3_and_below_transactional_id.0, "mirror-0");
        let topics: Vec<(&str, &[i32])> = sent
            .v3_and_below_topics
            .iter()
            .map(|t| (&*t.name.0, t.partitions.as_slice()))
            .collect();
        assert_eq!(topics, [("orders", &[0, 2][..]), ("checkpoints", &[0][..])]);
    }
}
