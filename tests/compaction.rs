//! Compacted source topics against real brokers: after the log cleaner has
//! left batches with offset gaps (fewer records than offsets), which no broker
//! accepts in a Produce request as they are, kafka-mirror renumbers them and
//! the target ends up with exactly the records the source retained.
//!
//! The tests of this file share one source cluster (its cleaner looks for work
//! every 200 ms) and one target cluster.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{
    produce_with_librdkafka, read_partition_batches, Compression, KafkaCluster, ProduceOpts,
    RawBatch,
};

fn clusters() -> &'static Clusters {
    shared_clusters(
        // The cleaner looks for work every 200 ms instead of every 15 s.
        &[("log.cleaner.backoff.ms", "200")],
        // The target topics are created compacted too (their configs are
        // copied); its cleaner stays off so that what arrived can be compared
        // record by record before the target compacts it further.
        &[("log.cleaner.enable", "false")],
    )
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

const PARTITIONS: i32 = 2;

/// Every stored batch of a topic, by partition.
fn stored(cluster: &KafkaCluster, topic: &str) -> BTreeMap<i32, Vec<RawBatch>> {
    (0..PARTITIONS)
        .map(|p| {
            let batches = read_partition_batches(&cluster.log_dir(0), topic, p)
                .unwrap_or_else(|e| panic!("read {topic}-{p} segments: {e:#}"));
            (p, batches)
        })
        .collect()
}

/// Stored data batches whose offsets have gaps.
fn gapped(batches: &BTreeMap<i32, Vec<RawBatch>>) -> usize {
    batches
        .values()
        .flatten()
        .filter(|b| {
            !b.is_control()
                && b.records_count() > 0
                && i64::from(b.records_count()) != i64::from(b.last_offset_delta()) + 1
        })
        .count()
}

/// The bytes that matter of every stored batch: a change means the cleaner ran.
fn fingerprint(batches: &BTreeMap<i32, Vec<RawBatch>>) -> Vec<(i32, Vec<u8>)> {
    batches
        .iter()
        .flat_map(|(p, bs)| bs.iter().map(move |b| (*p, b.bytes.clone())))
        .collect()
}

/// Waits until the cleaner has left gapped batches in every topic and then
/// left the topics alone for a while, so that what the mirror copies and
/// what the source holds afterwards are the same.
fn wait_for_cleaner(source: &KafkaCluster, topics: &[String]) -> Vec<Vec<(i32, Vec<u8>)>> {
    let started = Instant::now();
    let limit = Duration::from_secs(120);
    let quiet = Duration::from_secs(4);
    let mut last = Vec::new();
    let mut unchanged_since = Instant::now();
    loop {
        let now: Vec<BTreeMap<i32, Vec<RawBatch>>> =
            topics.iter().map(|t| stored(source, t)).collect();
        let prints: Vec<_> = now.iter().map(fingerprint).collect();
        if prints != last {
            last = prints;
            unchanged_since = Instant::now();
        }
        let all_gapped = now.iter().all(|t| gapped(t) > 0);
        if all_gapped && unchanged_since.elapsed() >= quiet {
            return last;
        }
        assert!(
            started.elapsed() < limit,
            "the log cleaner did not leave gapped batches in every topic within {limit:?}: {:?}",
            topics
                .iter()
                .zip(&now)
                .map(|(t, b)| (t, gapped(b)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn compacted_batches_with_offset_gaps_are_renumbered_and_arrive_as_retained() {
    let Clusters { source, target } = clusters();
    let topics: Vec<String> = CODECS
        .iter()
        .map(|c| format!("compacted-{}", c.as_str()))
        .collect();
    for (topic, codec) in topics.iter().zip(CODECS) {
        source
            .create_topic(
                topic,
                PARTITIONS as u32,
                1,
                &[
                    ("cleanup.policy", "compact"),
                    ("segment.ms", "100"),
                    ("min.cleanable.dirty.ratio", "0.01"),
                    ("delete.retention.ms", "1000"),
                ],
            )
            .expect("create topic");
        // Many updates to 20 keys, tombstones among them (every 10th value
        // is null), repeated header names, in several rounds so that the
        // cleaner finds several segments; an idempotent producer in one round.
        for round in 0..3 {
            produce_with_librdkafka(
                &source.bootstrap(),
                topic,
                &ProduceOpts {
                    count: 1500,
                    partitions: Some(PARTITIONS as u32),
                    compression: codec,
                    key_prefix: "k".into(),
                    distinct_keys: Some(20),
                    idempotence: round == 1,
                    ..ProduceOpts::default()
                },
            )
            .expect("produce");
        }
    }
    // One more record per partition after segment.ms rolls the segments
    // holding the last rounds, so the cleaner may clean them.
    std::thread::sleep(Duration::from_millis(300));
    for topic in &topics {
        produce_keyed(
            source,
            topic,
            PARTITIONS as u64,
            PARTITIONS as u32,
            "roll",
            None,
        );
    }
    let before = wait_for_cleaner(source, &topics);
    let expected_reencoded: usize = topics.iter().map(|t| gapped(&stored(source, t))).sum();

    let mut args = run_args(source, target, "compaction");
    args.extend(["--topics".into(), "compacted-.*".into()]);
    let summary = mirror_until_caught_up(&args);
    let reencoded = summary_count(&summary, "re-encoded: ");
    assert!(reencoded > 0, "{summary}");
    assert_eq!(
        reencoded as usize, expected_reencoded,
        "every gapped batch is renumbered once: {summary}"
    );

    let after: Vec<_> = topics
        .iter()
        .map(|t| fingerprint(&stored(source, t)))
        .collect();
    assert!(
        before == after,
        "the cleaner changed the source while the mirror ran; the comparison below would not be fair"
    );
    let mut tombstones = 0;
    for topic in &topics {
        let copied = assert_same_records(source, target, topic);
        // Compaction kept at most the newest record of each key, plus the
        // records of the active segments.
        assert!(copied > 0 && copied < 4500, "{topic}: {copied} records");
        tombstones += records_by_partition(&target.bootstrap(), topic)
            .values()
            .flatten()
            .filter(|r| r.value.is_none())
            .count();
        // The target holds no gapped batches: every renumbered batch landed
        // as records_count == lastOffsetDelta + 1.
        assert_eq!(gapped(&stored(target, topic)), 0, "{topic}");
        // The source topic's own configs came along.
        let configs = topic_configs(target, topic);
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("compact"),
            "{topic}: {configs:?}"
        );
        assert_eq!(
            configs.get("delete.retention.ms").map(String::as_str),
            Some("1000"),
            "{topic}: {configs:?}"
        );
    }
    eprintln!("{summary}{tombstones} tombstones copied");

    // A consumer group that committed any source offset, one that compaction
    // emptied included, resumes on the target at the copy of the next record
    // the source kept: the offset map stored with each checkpoint says where.
    let checkpoints = stored_checkpoints(target, "kafka-mirror-checkpoints", "compaction");
    let (mut offsets, mut points) = (0, 0);
    for topic in &topics {
        let source_records = records_by_partition(&source.bootstrap(), topic);
        let copies = records_by_partition(&target.bootstrap(), topic);
        for (partition, records) in &source_records {
            let what = format!("{topic}-{partition}");
            let checkpoint = &checkpoints[&(topic.clone(), *partition)];
            offsets += assert_translates_exactly(checkpoint, 0, records, &copies[partition], &what);
            points += checkpoint
                .offset_map
                .as_ref()
                .map_or(0, |m| m.points.len() / 2);
        }
    }
    eprintln!("{offsets} source offsets translate exactly; {points} map points");
}
