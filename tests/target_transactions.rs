//! kafka-mirror's own transactions on a real broker (the plumbing of
//! exactly-once mode): a [`TransactionCoordinator`] takes a transactional
//! id, adds data partitions and the checkpoint topic's to a transaction,
//! Produce requests and checkpoint writes go in it, and it commits or
//! aborts. librdkafka's consumer (the testkit's `dump.py`) is the judge:
//! read_committed sees exactly the committed records, read_uncommitted the
//! aborted ones too. A second holder of the transactional id fences the
//! first, and checkpoints load only once their transaction commits.
//!
//! One broker (the default version) for the whole file: each test has its
//! own topics and transactional ids.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_mirror::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, TransactionStamp};
use kafka_mirror::cluster::{
    produce_request, Cluster, Role, TransactionCoordinator, TransactionError,
};
use kafka_mirror::net::splice::Splice;
use kafka_mirror::net::{ConnectionOptions, Connector};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::TransactionalId;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use kafka_testkit::{DumpedRecord, KafkaCluster};
use uuid::Uuid;

/// How long the coordinator keeps a transaction open before aborting it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Records per batch.
const RECORDS: i32 = 3;
/// Times a batch is sent before a retriable error counts.
const ATTEMPTS: u32 = 10;

fn kafka() -> &'static KafkaCluster {
    static KAFKA_CLUSTER: OnceLock<KafkaCluster> = OnceLock::new();
    KAFKA_CLUSTER.get_or_init(|| start_cluster(KAFKA, 1, &[]))
}

fn target() -> Arc<Cluster> {
    Cluster::new(
        Role::Target,
        vec![kafka().bootstrap()],
        Connector::plain(ConnectionOptions::default()),
    )
}

fn run<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(work)
}

/// A producer's id, epoch and next sequence per partition.
struct Producer {
    transactional_id: &'static str,
    id_and_epoch: (i64, i16),
    sequences: BTreeMap<(String, i32), i32>,
}

impl Producer {
    fn new(transactional_id: &'static str, id_and_epoch: (i64, i16)) -> Self {
        Producer {
            transactional_id,
            id_and_epoch,
            sequences: BTreeMap::new(),
        }
    }

    /// The checkpoint partition's stamp for the next write.
    fn stamp(&self, checkpoints: &str) -> TransactionStamp<'static> {
        TransactionStamp {
            transactional_id: self.transactional_id,
            producer_id: self.id_and_epoch.0,
            epoch: self.id_and_epoch.1,
            sequence: self.next_sequence(checkpoints, 0),
        }
    }

    fn next_sequence(&self, topic: &str, partition: i32) -> i32 {
        self.sequences
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// A transactional batch of `RECORDS` records keyed `<prefix>-<partition>-<i>`.
    fn batch(&self, topic: &str, partition: i32, prefix: &str) -> Bytes {
        let base_sequence = self.next_sequence(topic, partition);
        let records: Vec<Record> = (0..RECORDS)
            .map(|i| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: self.id_and_epoch.0,
                producer_epoch: self.id_and_epoch.1,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_sequence + i,
                timestamp: 1_700_000_000_000 + i64::from(i),
                key: Some(Bytes::from(format!("{prefix}-{partition}-{i}"))),
                value: Some(Bytes::from(format!("value of {prefix}-{partition}-{i}"))),
                headers: [(
                    StrBytes::from_static_str("origin"),
                    Some(Bytes::from(prefix.to_owned())),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        buf.freeze()
    }

    /// Produces one transactional batch to each partition of `topic`, in
    /// one request, and returns the answer's error per partition. Like any
    /// producer it sends a batch again after a retriable error (a topic
    /// just created whose partitions are not ready yet), a few times.
    async fn produce(
        &mut self,
        cluster: &Cluster,
        topic: &str,
        partitions: &[i32],
        prefix: &str,
    ) -> BTreeMap<i32, Option<ResponseError>> {
        let mut answers = BTreeMap::new();
        let mut pending = partitions.to_vec();
        for attempt in 1..=ATTEMPTS {
            let metadata = cluster.metadata().await.expect("metadata");
            let leader = metadata.leader(topic, pending[0]).expect("leader");
            let batches = pending
                .iter()
                .map(|&p| {
                    let batch = self.batch(topic, p, prefix);
                    (p, Splice::new(batch, Bytes::new()).expect("splice"))
                })
                .collect();
            let (request, splices) = produce_request(&metadata, [(topic, batches)], 30_000);
            let request = request.with_transactional_id(Some(TransactionalId(
                StrBytes::from_static_str(self.transactional_id),
            )));
            let response = cluster
                .enqueue_spliced(leader, request, splices)
                .await
                .expect("enqueue")
                .response()
                .await
                .expect("produce answer");
            for answer in response
                .responses
                .into_iter()
                .flat_map(|t| t.partition_responses)
            {
                let error = answer.error_code.err();
                if error.is_some_and(|e| e.is_retriable()) && attempt < ATTEMPTS {
                    continue;
                }
                if error.is_none() {
                    *self
                        .sequences
                        .entry((topic.to_owned(), answer.index))
                        .or_default() += RECORDS;
                }
                pending.retain(|&p| p != answer.index);
                answers.insert(answer.index, error);
            }
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        answers
    }

    /// Writes checkpoints in the transaction and moves the partition's
    /// sequence on; after a refusal (the checkpoint topic is new, its
    /// leader may not be ready), writes the rest again from there.
    async fn write_checkpoints(
        &mut self,
        store: &CheckpointStore,
        entries: &[(String, i32, Checkpoint)],
    ) {
        let mut rest = entries;
        for attempt in 1..=ATTEMPTS {
            let stamp = self.stamp(store.topic());
            let (written, next) = store.write_in_transaction(rest, stamp).await;
            assert_eq!(next, stamp.sequence + written.stored as i32);
            self.sequences.insert((store.topic().to_owned(), 0), next);
            rest = &rest[written.stored..];
            match written.result {
                Ok(()) => return assert!(rest.is_empty()),
                Err(e @ CheckpointError::Broker { .. })
                    if e.is_retriable() && attempt < ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("checkpoints not written: {e}"),
            }
        }
    }
}

fn checkpoint(next_offset: i64) -> Checkpoint {
    Checkpoint {
        next_offset,
        topic_id: Uuid::from_u128(7),
        source_cluster: Some("source".into()),
        leader_epoch: Some(0),
        offset_map: None,
    }
}

/// Checkpoints of `topic`'s partitions 0 and 1 at `offset` and `offset + 1`.
fn checkpoints(topic: &str, offset: i64) -> Vec<(String, i32, Checkpoint)> {
    (0..2)
        .map(|p| (topic.to_owned(), p, checkpoint(offset + i64::from(p))))
        .collect()
}

/// The next offset of each checkpointed partition.
fn next_offsets(
    loaded: &std::collections::HashMap<(String, i32), Checkpoint>,
) -> BTreeMap<i32, i64> {
    loaded
        .iter()
        .map(|((_, p), c)| (*p, c.next_offset))
        .collect()
}

/// A record as a user reads it: key, value, headers, timestamp.
type Seen = (String, String, Vec<(String, Option<Vec<u8>>)>, i64);

/// Asserts a partition's records are these batches' records, in order, as
/// [`Producer::batch`] wrote them: key, value, header, timestamp.
fn assert_batches(records: &[DumpedRecord], partition: i32, prefixes: &[&str]) {
    let expected: Vec<Seen> = prefixes
        .iter()
        .flat_map(|prefix| {
            (0..RECORDS).map(move |i| {
                let key = format!("{prefix}-{partition}-{i}");
                let value = format!("value of {key}");
                let headers = vec![("origin".to_owned(), Some(prefix.as_bytes().to_vec()))];
                (key, value, headers, 1_700_000_000_000 + i64::from(i))
            })
        })
        .collect();
    let actual: Vec<Seen> = records
        .iter()
        .map(|r| {
            assert_eq!(r.partition, partition);
            assert_eq!(r.timestamp_type, kafka_testkit::TimestampType::CreateTime);
            let text =
                |b: &Option<Vec<u8>>| String::from_utf8(b.clone().expect("set")).expect("utf-8");
            (text(&r.key), text(&r.value), r.headers.clone(), r.timestamp)
        })
        .collect();
    assert_eq!(actual, expected, "partition {partition}");
}

#[test]
fn committed_transactions_are_read_committed_and_aborted_ones_only_read_uncommitted() {
    const TOPIC: &str = "txn-data";
    kafka()
        .create_topic(TOPIC, 2, 1, &[])
        .expect("create topic");
    let cluster = target();
    let (store, loaded_in_between, loaded_at_the_end) = run(async {
        let store = CheckpointStore::open(cluster.clone(), "txn-checkpoints", "txn-mirror", 1)
            .await
            .expect("checkpoint store");
        let coordinator = TransactionCoordinator::new(cluster.clone(), "txn-data-0");
        let id_and_epoch = coordinator
            .init_producer_id(TRANSACTION_TIMEOUT, None)
            .await
            .expect("init");
        let mut producer = Producer::new("txn-data-0", id_and_epoch);
        let partitions = [
            (TOPIC.to_owned(), 0),
            (TOPIC.to_owned(), 1),
            (store.topic().to_owned(), 0),
        ];

        // Committed: c1, with checkpoints at 100.
        coordinator
            .add_partitions(id_and_epoch, &partitions)
            .await
            .expect("add");
        let errors = producer.produce(&cluster, TOPIC, &[0, 1], "c1").await;
        assert_eq!(errors, BTreeMap::from([(0, None), (1, None)]));
        producer
            .write_checkpoints(&store, &checkpoints(TOPIC, 100))
            .await;
        coordinator.end(id_and_epoch, true).await.expect("commit");

        // Aborted: a1, with checkpoints at 200.
        coordinator
            .add_partitions(id_and_epoch, &partitions)
            .await
            .expect("add");
        let errors = producer.produce(&cluster, TOPIC, &[0, 1], "a1").await;
        assert_eq!(errors, BTreeMap::from([(0, None), (1, None)]));
        producer
            .write_checkpoints(&store, &checkpoints(TOPIC, 200))
            .await;
        coordinator.end(id_and_epoch, false).await.expect("abort");

        // Committed, but loaded in between while still open: c2, checkpoints at 300.
        coordinator
            .add_partitions(id_and_epoch, &partitions)
            .await
            .expect("add");
        let errors = producer.produce(&cluster, TOPIC, &[0, 1], "c2").await;
        assert_eq!(errors, BTreeMap::from([(0, None), (1, None)]));
        producer
            .write_checkpoints(&store, &checkpoints(TOPIC, 300))
            .await;
        let loaded_in_between = store.load().await.expect("load");
        coordinator.end(id_and_epoch, true).await.expect("commit");
        // EndTxn answers before the commit markers are written: wait for them.
        let loaded_at_the_end = store.load_stable().await.expect("load");
        (store, loaded_in_between, loaded_at_the_end)
    });
    assert_eq!(store.topic(), "txn-checkpoints");

    // Checkpoints count once committed: never the aborted ones, nor those
    // of a transaction still open.
    assert_eq!(
        next_offsets(&loaded_in_between),
        BTreeMap::from([(0, 100), (1, 101)])
    );
    assert_eq!(
        next_offsets(&loaded_at_the_end),
        BTreeMap::from([(0, 300), (1, 301)])
    );

    let committed = records_by_partition_with(&kafka().bootstrap(), TOPIC, true);
    let uncommitted = records_by_partition_with(&kafka().bootstrap(), TOPIC, false);
    for partition in 0..2 {
        assert_batches(&committed[&partition], partition, &["c1", "c2"]);
        assert_batches(&uncommitted[&partition], partition, &["c1", "a1", "c2"]);
    }
}

#[test]
fn a_second_holder_of_the_transactional_id_fences_the_first() {
    const TOPIC: &str = "txn-fenced";
    const ID: &str = "txn-fenced-0";
    kafka()
        .create_topic(TOPIC, 1, 1, &[])
        .expect("create topic");
    let cluster = target();
    let partition = [(TOPIC.to_owned(), 0)];
    let (produce_error, first, second) = run(async {
        let first = TransactionCoordinator::new(cluster.clone(), ID);
        let old = first
            .init_producer_id(TRANSACTION_TIMEOUT, None)
            .await
            .expect("init");
        let mut producer = Producer::new(ID, old);
        first.add_partitions(old, &partition).await.expect("add");
        let errors = producer.produce(&cluster, TOPIC, &[0], "open").await;
        assert_eq!(errors, BTreeMap::from([(0, None)]));

        // Another instance takes the id: same producer id, a newer epoch;
        // the first one's open transaction is aborted.
        let second = TransactionCoordinator::new(cluster.clone(), ID);
        let new = second
            .init_producer_id(TRANSACTION_TIMEOUT, None)
            .await
            .expect("init");
        assert_eq!(new.0, old.0);
        assert!(new.1 > old.1, "{new:?} after {old:?}");

        let added = first.add_partitions(old, &partition).await;
        let ended = first.end(old, true).await;
        let bumped = first.init_producer_id(TRANSACTION_TIMEOUT, Some(old)).await;
        let errors = producer.produce(&cluster, TOPIC, &[0], "late").await;

        // The new holder bumps its own epoch (KIP-360), and has no
        // transaction to commit.
        let bumped_again = second
            .init_producer_id(TRANSACTION_TIMEOUT, Some(new))
            .await
            .expect("bump");
        assert_eq!(bumped_again, (new.0, new.1 + 1));
        let nothing_open = second.end(bumped_again, true).await;
        (errors, [added, ended, bumped.map(|_| ())], nothing_open)
    });
    for result in first {
        let error = result.expect_err("fenced");
        assert!(error.is_fenced(), "{error:?}");
        assert!(error.to_string().contains(ID), "{error}");
    }
    // INVALID_PRODUCER_EPOCH from Kafka 4.4; Kafka's producer takes both as fenced.
    assert!(
        matches!(
            produce_error.get(&0),
            Some(Some(
                ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch
            ))
        ),
        "{produce_error:?}"
    );
    assert!(
        matches!(second, Err(TransactionError::InvalidState { .. })),
        "{second:?}"
    );

    // The fenced producer's batch was aborted.
    let committed = records_by_partition_with(&kafka().bootstrap(), TOPIC, true);
    assert!(committed.values().all(Vec::is_empty), "{committed:?}");
    let uncommitted = records_by_partition_with(&kafka().bootstrap(), TOPIC, false);
    assert_batches(&uncommitted[&0], 0, &["open"]);
}

/// Transaction version 1 on a broker that also speaks version 2: Produce
/// goes at v11, so the broker verifies that the partition is in the
/// transaction rather than adding it itself (which it does for v12+).
#[test]
fn a_batch_for_a_partition_not_added_to_the_transaction_is_refused() {
    const TOPIC: &str = "txn-unadded";
    const ID: &str = "txn-unadded-0";
    kafka()
        .create_topic(TOPIC, 2, 1, &[])
        .expect("create topic");
    let cluster = target();
    let errors = run(async {
        let coordinator = TransactionCoordinator::new(cluster.clone(), ID);
        let id_and_epoch = coordinator
            .init_producer_id(TRANSACTION_TIMEOUT, None)
            .await
            .expect("init");
        let mut producer = Producer::new(ID, id_and_epoch);
        coordinator
            .add_partitions(id_and_epoch, &[(TOPIC.to_owned(), 0)])
            .await
            .expect("add");
        let errors = producer.produce(&cluster, TOPIC, &[0, 1], "half").await;
        coordinator.end(id_and_epoch, false).await.expect("abort");
        errors
    });
    // TRANSACTION_ABORTABLE from Produce v11 on (Kafka 3.8+).
    assert_eq!(
        errors,
        BTreeMap::from([(0, None), (1, Some(ResponseError::TransactionAbortable))])
    );
}
