//! Compacted source topics against real brokers: after the log cleaner has
//! left batches with offset gaps (fewer records than offsets), which no broker
//! accepts in a Produce request as they are, kafka-mirror renumbers them and
//! the target ends up with exactly the records the source retained.
//!
//! The tests of this file share one source cluster (its cleaner looks for work
//! every 200 ms) and one target cluster.

mod common;

use common::*;
use kafka_testkit::{Compression, ProduceOpts};

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

#[test]
fn compacted_batches_with_offset_gaps_are_renumbered_and_arrive_as_retained() {
    let Clusters { source, target } = clusters();
    let topics: Vec<String> = CODECS
        .iter()
        .map(|c| format!("compacted-{}", c.as_str()))
        .collect();
    for (topic, codec) in topics.iter().zip(CODECS) {
        // Many updates to 20 keys, tombstones among them (every 10th value
        // is null), repeated header names.
        write_compactable(
            source,
            topic,
            PARTITIONS,
            &ProduceOpts {
                compression: codec,
                distinct_keys: Some(20),
                ..ProduceOpts::default()
            },
        );
    }
    let before = compact(source, &topics, PARTITIONS);
    let expected_reencoded: usize = topics
        .iter()
        .map(|t| gapped_batches(&stored_batches(source, t, PARTITIONS)))
        .sum();

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
        .map(|t| batches_fingerprint(&stored_batches(source, t, PARTITIONS)))
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
        assert_eq!(
            gapped_batches(&stored_batches(target, topic, PARTITIONS)),
            0,
            "{topic}"
        );
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
