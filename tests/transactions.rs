//! Transactions against real brokers: a librdkafka transactional producer
//! commits some transactions and aborts others, a plain producer writes to
//! the same partitions between them (and once while a transaction is open),
//! and the mirror copies the topic with each isolation level.
//!
//! - `read_committed` (the default): the target holds exactly what a
//!   read_committed consumer of the source sees, as plain (non-transactional)
//!   data, so its read_committed and read_uncommitted consumers agree.
//! - `read_uncommitted`: the target also holds the aborted records, as plain
//!   data that any consumer sees.
//!
//! One source topic is mirrored into two target clusters, since a mirror keeps
//! topic names.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use kafka_testkit::{
    produce_with_librdkafka, Compression, DumpedRecord, KafkaCluster, ProduceOpts,
};

const TOPIC: &str = "txn-mixed";
const PARTITIONS: u32 = 3;

/// How one produce call writes.
#[derive(Clone, Copy)]
enum Kind {
    Committed(&'static str),
    Aborted(&'static str),
    Plain,
}

fn produce(source: &KafkaCluster, prefix: &str, kind: Kind, codec: Compression) {
    let (transactional_id, abort) = match kind {
        Kind::Committed(id) => (Some(id.to_string()), false),
        Kind::Aborted(id) => (Some(id.to_string()), true),
        Kind::Plain => (None, false),
    };
    produce_with_librdkafka(
        &source.bootstrap(),
        TOPIC,
        &ProduceOpts {
            count: 300,
            partitions: Some(PARTITIONS),
            compression: codec,
            key_prefix: prefix.into(),
            transactional_id,
            abort,
            ..ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce {prefix}: {e:#}"));
}

/// The count before `label` in the summary's "skipped:" line.
fn skipped(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("skipped:"))
        .unwrap_or_else(|| panic!("no skipped line in {summary}"));
    line.trim_start_matches("skipped:")
        .split([',', ';'])
        .find_map(|part| part.trim().strip_suffix(label)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` count in {line}"))
}

/// The key prefixes (the part before the last `-`) present in a dump.
fn prefixes(records: &BTreeMap<i32, Vec<DumpedRecord>>) -> BTreeSet<String> {
    records
        .values()
        .flatten()
        .map(|r| {
            let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8 key");
            key.rsplit_once('-').expect("prefix-i").0.to_owned()
        })
        .collect()
}

/// Stored target batches carry no transaction: no transactional bit, no markers.
fn assert_no_transactional_batches(cluster: &KafkaCluster) {
    for partition in 0..PARTITIONS as i32 {
        let batches = kafka_testkit::read_partition_batches(&cluster.log_dir(0), TOPIC, partition)
            .unwrap_or_else(|e| panic!("read {TOPIC}-{partition}: {e:#}"));
        assert!(!batches.is_empty(), "{TOPIC}-{partition}: nothing stored");
        for b in &batches {
            assert!(
                !b.is_transactional() && !b.is_control(),
                "{TOPIC}-{partition}: {b:?}"
            );
        }
    }
}

#[test]
fn read_committed_copies_only_committed_and_plain_data_and_read_uncommitted_copies_all() {
    let source = start_cluster(KAFKA, 1, &[]);
    let committed_target = start_cluster(KAFKA, 1, &[]);
    let uncommitted_target = start_cluster(KAFKA, 1, &[]);
    source
        .create_topic(TOPIC, PARTITIONS, 1, &[])
        .expect("create topic");

    let steps: &[(&str, Kind, Compression)] = &[
        ("c1", Kind::Committed("txn-a"), Compression::None),
        ("a1", Kind::Aborted("txn-a"), Compression::None),
        ("p1", Kind::Plain, Compression::Lz4),
        ("c2", Kind::Committed("txn-a"), Compression::Zstd),
        ("a2", Kind::Aborted("txn-b"), Compression::Gzip),
        ("p2", Kind::Plain, Compression::None),
        ("c3", Kind::Committed("txn-b"), Compression::Snappy),
    ];
    for &(prefix, kind, codec) in steps {
        produce(&source, prefix, kind, codec);
    }
    // An aborted transaction and a plain producer at the same time, so their
    // batches interleave in the partitions.
    std::thread::scope(|s| {
        s.spawn(|| produce(&source, "a3", Kind::Aborted("txn-c"), Compression::Lz4));
        s.spawn(|| produce(&source, "p3", Kind::Plain, Compression::Lz4));
    });
    produce(&source, "c4", Kind::Committed("txn-c"), Compression::None);

    let committed_view = records_by_partition_with(&source.bootstrap(), TOPIC, true);
    let uncommitted_view = records_by_partition_with(&source.bootstrap(), TOPIC, false);
    let all: BTreeSet<String> = ["c1", "c2", "c3", "c4", "p1", "p2", "p3", "a1", "a2", "a3"]
        .map(String::from)
        .into();
    let kept: BTreeSet<String> = ["c1", "c2", "c3", "c4", "p1", "p2", "p3"]
        .map(String::from)
        .into();
    assert_eq!(prefixes(&committed_view), kept, "source, read_committed");
    assert_eq!(prefixes(&uncommitted_view), all, "source, read_uncommitted");

    // Defaults: read_committed.
    let mut args = run_args(&source, &committed_target, "txn-committed");
    args.extend(["--topics".into(), TOPIC.into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(skipped(&summary, "aborted batches") > 0, "{summary}");
    assert!(skipped(&summary, "transaction markers") > 0, "{summary}");
    let copied = records_by_partition_with(&committed_target.bootstrap(), TOPIC, true);
    let count = assert_same_content(&committed_view, &copied, "read_committed copy");
    assert_eq!(count, 7 * 300);
    // Nothing on the target is transactional: every consumer sees the same.
    let copied_uncommitted = records_by_partition_with(&committed_target.bootstrap(), TOPIC, false);
    assert_same_content(&copied, &copied_uncommitted, "target, read_uncommitted");
    assert_no_transactional_batches(&committed_target);

    // read_uncommitted: the aborted records arrive too, as plain data.
    let mut args = run_args(&source, &uncommitted_target, "txn-uncommitted");
    args.extend([
        "--topics".into(),
        TOPIC.into(),
        "--isolation-level".into(),
        "read_uncommitted".into(),
    ]);
    let summary = mirror_until_caught_up(&args);
    assert_eq!(skipped(&summary, "aborted batches"), 0, "{summary}");
    assert!(skipped(&summary, "transaction markers") > 0, "{summary}");
    let copied = records_by_partition_with(&uncommitted_target.bootstrap(), TOPIC, true);
    let count = assert_same_content(&uncommitted_view, &copied, "read_uncommitted copy");
    assert_eq!(count, 10 * 300);
    assert_eq!(prefixes(&copied), all);
    assert_no_transactional_batches(&uncommitted_target);
}
