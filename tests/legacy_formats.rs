//! Old message formats into Kafka 4: a Kafka 3.9 source in ZooKeeper mode,
//! held at inter-broker protocol 2.8 so that topics store magic 0 and magic 1
//! messages, copied into a Kafka 4.4 (KRaft) target, which takes magic 2
//! only. Every record must arrive with its key, value, timestamp, partition
//! and offset, in order, and the summary must count the up-converted batches.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kafka_testkit::{
    produce_with_java, produce_with_librdkafka, read_partition_batches, ClusterSpec, Compression,
    DumpedRecord, JavaProduceOpts, KafkaCluster, ProduceOpts, TimestampType, OLD_KAFKA_VERSION,
};

const PARTITIONS: u32 = 3;
/// `message.format.version` values that store magic 0 and magic 1.
const MAGIC_0: &str = "0.9.0";
const MAGIC_1: &str = "0.10.2";
/// Where CreateTime timestamps start: an hour-aligned time in the past,
/// long past the default 7-day retention: both clusters keep data forever
/// ([`NO_RETENTION`]), or their first retention check, 30 s after start,
/// deletes it mid-test.
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const NO_RETENTION: (&str, &str) = ("log.retention.ms", "-1");

/// A Kafka 3.9 cluster in ZooKeeper mode that can store the old formats.
fn old_format_source() -> KafkaCluster {
    let mut spec = ClusterSpec::new(OLD_KAFKA_VERSION, 1);
    spec.zookeeper = true;
    spec.broker_props = vec![
        ("inter.broker.protocol.version".into(), "2.8".into()),
        // Topics without their own message.format.version store v2.
        ("log.message.format.version".into(), "2.8".into()),
        (NO_RETENTION.0.into(), NO_RETENTION.1.into()),
    ];
    KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka 3.9 (ZK): {e:#}"))
}

/// Writes `count` records with librdkafka (keys, values, tombstones, no
/// headers: the old formats cannot hold them), round-robin over the partitions.
fn produce(cluster: &KafkaCluster, topic: &str, codec: Compression, count: u64, prefix: &str) {
    produce_with_librdkafka(
        &cluster.bootstrap(),
        topic,
        &ProduceOpts {
            count,
            partitions: Some(PARTITIONS),
            compression: codec,
            key_prefix: prefix.into(),
            base_timestamp_ms: Some(BASE_TIMESTAMP),
            no_headers: true,
            ..ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce into {topic}: {e:#}"));
}

/// Writes `count` 200-byte records with Kafka's own Java producer, which
/// must not be idempotent: old formats have no producer ids.
fn produce_java(cluster: &KafkaCluster, topic: &str, codec: Compression, count: u64) {
    produce_with_java(
        cluster.dist(),
        &cluster.bootstrap(),
        topic,
        &JavaProduceOpts {
            num_records: count,
            record_size: 200,
            compression: codec,
            producer_props: vec![("enable.idempotence".into(), "false".into())],
            ..JavaProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce into {topic} with the Java producer: {e:#}"));
}

/// The magic of every entry stored in each partition of `topic`, in order.
fn stored_magics(cluster: &KafkaCluster, topic: &str) -> Vec<Vec<i8>> {
    (0..PARTITIONS as i32)
        .map(|p| {
            read_partition_batches(&cluster.log_dir(0), topic, p)
                .unwrap_or_else(|e| panic!("read {topic}-{p}: {e:#}"))
                .iter()
                .map(|b| b.magic())
                .collect()
        })
        .collect()
}

/// What the target's consumers must see for a source record: the same
/// partition, offset, key and value, and the same timestamp as CreateTime. A
/// magic 0 record has none (librdkafka shows NotAvailable and 0); a v2
/// record cannot say "none", so its copy has CreateTime -1, which is what
/// Kafka's own up-conversion writes.
fn expected_copy(source: &DumpedRecord) -> DumpedRecord {
    let timestamp = match source.timestamp_type {
        TimestampType::NotAvailable => -1,
        _ => source.timestamp,
    };
    DumpedRecord {
        timestamp_type: TimestampType::CreateTime,
        timestamp,
        ..source.clone()
    }
}

/// Asserts the target topic holds every source record as [`expected_copy`]
/// says, partition by partition and in order; returns the count.
fn assert_copied(
    source: &BTreeMap<i32, Vec<DumpedRecord>>,
    target: &BTreeMap<i32, Vec<DumpedRecord>>,
    topic: &str,
) -> usize {
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        target.keys().collect::<Vec<_>>(),
        "{topic}: partitions holding data differ"
    );
    let mut count = 0;
    for (partition, records) in source {
        let copies = &target[partition];
        assert_eq!(
            records.len(),
            copies.len(),
            "{topic}-{partition}: record count"
        );
        for (record, copy) in records.iter().zip(copies) {
            assert_eq!(
                &expected_copy(record),
                copy,
                "{topic}-{partition} at source offset {}",
                record.offset
            );
        }
        count += records.len();
    }
    count
}

#[test]
fn magic_0_and_1_topics_are_up_converted_into_kafka_4() {
    let source = old_format_source();
    let target = start_cluster(KAFKA, 1, &[NO_RETENTION]);
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
    ];

    // topic, message format, codec, magic stored, timestamp type
    let mut topics: Vec<(String, i8, Compression, TimestampType)> = Vec::new();
    for (format, magic) in [(MAGIC_0, 0i8), (MAGIC_1, 1)] {
        for codec in codecs {
            let topic = format!("legacy-v{magic}-{}", codec.as_str());
            source
                .create_topic(&topic, PARTITIONS, 1, &[("message.format.version", format)])
                .expect("create topic");
            produce(&source, &topic, codec, 600, "lib");
            if matches!(codec, Compression::Gzip | Compression::Lz4) {
                produce_java(&source, &topic, codec, 400);
            }
            let timestamps = if magic == 0 {
                TimestampType::NotAvailable
            } else {
                TimestampType::CreateTime
            };
            topics.push((topic, magic, codec, timestamps));
        }
    }
    // Magic 1 with the broker's append time in the (gzip) wrappers.
    let append_time = "legacy-v1-log-append-time".to_string();
    source
        .create_topic(
            &append_time,
            PARTITIONS,
            1,
            &[
                ("message.format.version", MAGIC_1),
                ("message.timestamp.type", "LogAppendTime"),
            ],
        )
        .expect("create topic");
    produce(&source, &append_time, Compression::Gzip, 300, "lat");
    topics.push((
        append_time,
        1,
        Compression::Gzip,
        TimestampType::LogAppendTime,
    ));

    // A topic upgraded twice while in use: magic 0, then 1, then v2 batches.
    let upgraded = "legacy-upgraded";
    source
        .create_topic(
            upgraded,
            PARTITIONS,
            1,
            &[("message.format.version", MAGIC_0)],
        )
        .expect("create topic");
    produce(&source, upgraded, Compression::Snappy, 150, "v0");
    alter_topic_config(
        &source,
        upgraded,
        &format!("message.format.version={MAGIC_1}"),
    );
    produce(&source, upgraded, Compression::Snappy, 150, "v1");
    alter_topic_config(&source, upgraded, "message.format.version=2.8");
    produce(&source, upgraded, Compression::Snappy, 150, "v2");
    for (partition, magics) in stored_magics(&source, upgraded).iter().enumerate() {
        assert!(
            magics.windows(2).all(|w| w[0] <= w[1])
                && magics.contains(&0)
                && magics.contains(&1)
                && magics.contains(&2),
            "{upgraded}-{partition} stores {magics:?}"
        );
    }

    // The source really holds the old formats, and its consumers see them so.
    let mut source_records = BTreeMap::new();
    for (topic, magic, _, timestamps) in &topics {
        for (partition, magics) in stored_magics(&source, topic).iter().enumerate() {
            assert!(
                !magics.is_empty() && magics.iter().all(|m| m == magic),
                "{topic}-{partition} stores {magics:?}"
            );
        }
        let records = records_by_partition(&source.bootstrap(), topic);
        for record in records.values().flatten() {
            assert_eq!(record.timestamp_type, *timestamps, "{topic}: {record:?}");
            assert!(record.headers.is_empty());
        }
        source_records.insert(topic.clone(), records);
    }
    source_records.insert(
        upgraded.to_string(),
        records_by_partition(&source.bootstrap(), upgraded),
    );

    // Run with the version negotiation logged, to see which Fetch version the
    // 3.9 broker is asked with: one that allows v2 batches (4 and up), at
    // which a broker returns what it stores; the up-converted count below
    // shows that this was the old formats.
    let mut args = run_args(&source, &target, "legacy");
    args.push("--until-caught-up".into());
    let mirror = RunningMirror::spawn(
        mirror_command()
            .env(
                "RUST_LOG",
                "kafka_mirror=info,kafka_mirror::net::versions=debug",
            )
            .args(&args),
    );
    let output = wait_with_limit(mirror, Duration::from_secs(180));
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "kafka-mirror failed ({}):\n{summary}\n{}",
        output.status,
        tail(&log, 60)
    );
    let source_fetch_versions: Vec<i16> = log
        .lines()
        .filter(|line| {
            line.contains("negotiated API versions")
                && line.contains(&format!("\"{}\"", source.bootstrap()))
        })
        .filter_map(|line| {
            line.split("fetch=Some(")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    eprintln!(
        "Fetch versions negotiated with Kafka 3.9 (ZooKeeper mode): {source_fetch_versions:?}"
    );
    assert!(
        !source_fetch_versions.is_empty() && source_fetch_versions.iter().all(|&v| v >= 4),
        "{}",
        tail(&log, 60)
    );

    let mut copied = 0;
    for (topic, records) in &source_records {
        let target_records = records_by_partition(&target.bootstrap(), topic);
        copied += assert_copied(records, &target_records, topic);
    }
    // 4 codecs x 2 formats x 600 (librdkafka), 4 topics x 400 (Java), 300
    // LogAppendTime, 450 in the upgraded topic.
    assert_eq!(copied, 8 * 600 + 4 * 400 + 300 + 450);
    assert!(
        summary.contains(&format!(
            "replicated {} topics, {} partitions: {copied} records",
            source_records.len(),
            source_records.len() * PARTITIONS as usize
        )),
        "{summary}"
    );
    // At least one batch per partition holding old-format data; the
    // upgraded topic's v2 batches are forwarded as they are.
    let up_converted = summary_count(&summary, "up-converted: ");
    assert!(
        up_converted >= (topics.len() + 1) as u64 * u64::from(PARTITIONS),
        "{summary}"
    );

    // The target stores v2 batches with the source's codec, written by the
    // mirror's idempotent producer.
    for (topic, _, codec, _) in &topics {
        for partition in 0..PARTITIONS as i32 {
            let batches = read_partition_batches(&target.log_dir(0), topic, partition)
                .unwrap_or_else(|e| panic!("read target {topic}-{partition}: {e:#}"));
            assert!(!batches.is_empty(), "{topic}-{partition}");
            for batch in batches {
                assert_eq!(batch.magic(), 2, "{topic}-{partition}");
                assert_eq!(batch.codec(), codec.codec_id(), "{topic}-{partition}");
                assert!(batch.producer_id() >= 0, "{topic}-{partition}");
            }
        }
    }
}
