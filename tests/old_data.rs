//! A backfill of old data keeps its idempotence when Produce answers are lost,
//! and pipelines in exactly-once mode.
//!
//! A broker forgets a producer `producer.id.expiration.ms` after the
//! maxTimestamp of its last batch on a partition, which for a copy is the
//! source's CreateTime, at its next `producer.id.expiration.check.interval.ms`.
//! Copying records from 2023, the target forgets kafka-mirror's producer
//! right after each append. A lost answer leaves a batch of unknown fate; a
//! broker that no longer knows our producer takes its resend (same producer
//! id and sequence) as new, unless the mirror finds out first whether the
//! batch is already there. The target lowers both settings so every resend
//! crosses an expiry check; every source record must be on it once, in order.
//! In exactly-once mode the target keeps our producer while a transaction is
//! open on the partition, so old data is copied many batches at a time there,
//! and forgets it between transactions.

mod common;

use std::time::Duration;

use common::answer_dropper::AnswerDroppers;
use common::*;
use kafka_testkit::{ClusterSpec, KafkaCluster, ProduceOpts};

const TOPIC: &str = "history";
const PARTITIONS: u32 = 3;
const RECORDS: u64 = 3_000;
/// 2023-06-01T00:00:00Z: the CreateTime of the first record.
const CREATED_IN_2023_MS: i64 = 1_685_577_600_000;
/// One Produce answer in this many is lost.
const DROP_EVERY: u64 = 8;

/// A target that forgets a producer of 2023 data right after each append.
fn forgetful_target() -> ClusterSpec {
    let mut spec = ClusterSpec::new(KAFKA, 1);
    spec.broker_props = vec![
        // What the mirror reads from the target: 2023 data is long past it.
        ("producer.id.expiration.ms".into(), "60000".into()),
        // Forgets us within this long after each append, before any resend.
        (
            "producer.id.expiration.check.interval.ms".into(),
            "100".into(),
        ),
    ];
    spec
}

/// A source holding [`RECORDS`] keyed records from 2023 in [`TOPIC`], in
/// batches of 10.
fn source_of_2023_records() -> KafkaCluster {
    let source = start_cluster(KAFKA, 1, &[]);
    // Time-based retention would delete 2023 records at once, on both sides
    // (the mirror copies the topic's configs when it creates the target's).
    source
        .create_topic(TOPIC, PARTITIONS, 1, &[("retention.ms", "-1")])
        .expect("create the source topic");
    // Small batches: many Produce requests, many answers to lose.
    kafka_testkit::produce_with_librdkafka(
        &source.bootstrap(),
        TOPIC,
        &ProduceOpts {
            count: RECORDS,
            partitions: Some(PARTITIONS),
            key_prefix: "old".into(),
            base_timestamp_ms: Some(CREATED_IN_2023_MS),
            config: vec![("batch.num.messages".into(), "10".into())],
            ..ProduceOpts::default()
        },
    )
    .expect("produce into the source");
    source
}

/// Every source record is on the target once, in order, read_committed,
/// and the target topic keeps 2023 records.
fn assert_copied_once(source: &KafkaCluster, target: &KafkaCluster, stdout: &str) {
    assert_eq!(
        topic_configs(target, TOPIC)
            .get("retention.ms")
            .map(String::as_str),
        Some("-1"),
        "the target topic must keep 2023 records"
    );
    let expected = records_by_partition(&source.bootstrap(), TOPIC);
    let actual = records_by_partition(&target.bootstrap(), TOPIC);
    eprintln!("duplicates on the target: {}", duplicate_keys(&actual));
    let count = assert_same_content(&expected, &actual, TOPIC);
    assert_eq!(count as u64, RECORDS, "{stdout}");
}

#[test]
fn a_backfill_of_2023_records_with_lost_answers_writes_every_record_once() {
    let (target, droppers) = AnswerDroppers::start(forgetful_target(), DROP_EVERY);
    let source = source_of_2023_records();

    let mut args = run_args(&source, &target, "old-data");
    droppers.redirect_target(&mut args);
    args.extend(["--topics".into(), TOPIC.into(), "--until-caught-up".into()]);
    let output = run_mirror(&args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (dropped, answers) = (droppers.dropped(), droppers.answers());
    eprintln!("{RECORDS} records; {dropped} of {answers} Produce answers dropped");
    show_mirror_log("old_data", &stderr);
    assert!(
        output.status.success(),
        "kafka-mirror failed ({}):\n{stdout}\n{}",
        output.status,
        tail(&stderr, 30)
    );
    assert!(
        dropped >= 10,
        "too few answers lost to mean anything: {dropped}"
    );
    // Every answer was dropped after the broker appended the batches: each
    // dropped request left at least one batch of unknown fate, found on the
    // target rather than resent.
    let found = summary_count(&stdout, "lost answers: ");
    assert!(
        found >= dropped,
        "{found} batches found on the target for {dropped} lost answers:\n{stdout}"
    );

    assert_copied_once(&source, &target, &stdout);
}

/// Exactly-once over the same data, without lost answers: inside a
/// transaction a partition's 2023 batches go many at a time, and the target
/// forgets our producer between transactions (100 ms by default: many).
#[test]
fn an_exactly_once_backfill_of_2023_records_writes_every_record_once() {
    let target = KafkaCluster::start(forgetful_target()).expect("start the target");
    let source = source_of_2023_records();
    let mut args = run_args(&source, &target, "old-data-eos");
    args.extend(["--topics".into(), TOPIC.into(), "--exactly-once".into()]);
    let summary = mirror_until_caught_up(&args);
    assert_copied_once(&source, &target, &summary);
}
