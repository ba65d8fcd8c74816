//! End-to-end replication between two real Kafka 4.x clusters, checked with
//! clients nobody here wrote and with the brokers' own segment files.
//!
//! The tests of this file share one source and one target cluster (JVM start
//! is slow on small machines); each uses its own topics and mirror name.

mod common;

use std::time::Duration;

use common::*;
use kafka_testkit::{
    produce_with_librdkafka, read_partition_batches, Compression, DumpedRecord, KafkaCluster,
    ProduceOpts,
};

fn clusters() -> &'static Clusters {
    shared_clusters(
        // Retention is checked every half second so the data-loss test need not wait minutes.
        &[("log.retention.check.interval.ms", "500")],
        // The target forgets idle producers after two seconds (a day by
        // default), so the idle-partition test need not wait a day.
        &[
            ("producer.id.expiration.ms", "2000"),
            ("producer.id.expiration.check.interval.ms", "500"),
        ],
    )
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn every_codec_arrives_as_the_same_batches_and_records() {
    let Clusters { source, target } = clusters();
    for codec in CODECS {
        let topic = format!("codec-{}", codec.as_str());
        source
            .create_topic(&topic, 3, 1, &[])
            .expect("create topic");
        produce_with_both_clients(source, &topic, 3, codec, 1500, 3000);
    }
    let mut args = run_args(source, target, "codecs");
    args.extend(["--topics".into(), "codec-.*".into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains("replicated 5 topics, 15 partitions: 22500 records"),
        "{summary}"
    );
    for codec in CODECS {
        let topic = format!("codec-{}", codec.as_str());
        assert_eq!(assert_same_records(source, target, &topic), 4500, "{topic}");
        let batches = assert_same_batches(source, target, &topic, 3);
        assert!(batches >= 6, "{topic}: only {batches} batches compared");
    }
}

#[test]
fn only_selected_topics_are_copied_and_excluded_ones_never_appear() {
    let Clusters { source, target } = clusters();
    for (topic, partitions) in [("sel-orders", 4), ("sel-payments", 2), ("sel-secret", 1)] {
        source
            .create_topic(topic, partitions, 1, &[])
            .expect("create topic");
        produce_with_librdkafka(
            &source.bootstrap(),
            topic,
            &ProduceOpts {
                count: 400,
                compression: Compression::Lz4,
                ..ProduceOpts::default()
            },
        )
        .expect("produce");
    }
    let mut args = run_args(source, target, "selection");
    args.extend([
        "--topics".into(),
        "sel-.*".into(),
        "--exclude".into(),
        "sel-secret".into(),
    ]);
    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains("replicated 2 topics, 6 partitions: 800 records"),
        "{summary}"
    );
    assert_eq!(assert_same_records(source, target, "sel-orders"), 400);
    assert_eq!(assert_same_records(source, target, "sel-payments"), 400);
    let target_topics = topic_names(target);
    assert!(
        !target_topics.iter().any(|t| t == "sel-secret"),
        "{target_topics:?}"
    );
    assert!(target_topics
        .iter()
        .any(|t| t == "kafka-mirror-checkpoints"));

    // A second run has nothing left to copy: the checkpoints say so.
    let summary = mirror_until_caught_up(&args);
    assert!(summary.contains(": 0 records"), "{summary}");
    assert_eq!(assert_same_records(source, target, "sel-orders"), 400);
}

/// `kill -9` mid-stream, then a restart: every record arrives, in order, and
/// what arrives twice is limited to what the memory budget held.
#[test]
fn kill_9_and_restart_loses_nothing_and_repeats_only_the_in_flight_window() {
    let Clusters { source, target } = clusters();
    let topic = "crash";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    // A small budget keeps the copy slow enough to be killed halfway.
    let budget = 64 * 1024;
    let partition_fetch = 16 * 1024;
    let config =
        std::env::temp_dir().join(format!("kafka-mirror-crash-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "name = \"crash\"\n[source]\nbootstrap_servers = \"{}\"\n[target]\nbootstrap_servers = \"{}\"\n\
             [topics]\ninclude = \"crash\"\n[replication]\nin_flight_bytes = {budget}\n\
             partition_fetch_bytes = {partition_fetch}\nfetch_max_bytes = {budget}\n",
            source.bootstrap(),
            target.bootstrap()
        ),
    )
    .expect("write config");
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut produced = Vec::new();
    for round in 0..3 {
        produced.extend(
            produce_with_librdkafka(
                &source.bootstrap(),
                topic,
                &ProduceOpts {
                    count: 10_000,
                    partitions: Some(3),
                    key_prefix: format!("round{round}"),
                    ..ProduceOpts::default()
                },
            )
            .expect("produce"),
        );
    }
    let stored = |cluster: &KafkaCluster| -> u64 {
        (0..3)
            .flat_map(|p| {
                kafka_testkit::segment_files(&cluster.log_dir(0), topic, p).unwrap_or_default()
            })
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    let total = stored(source);
    let mut mirror = mirror_command()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kafka-mirror");
    let started = std::time::Instant::now();
    while stored(target) < total / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the mirror copied nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    mirror.kill().expect("kill -9");
    mirror.wait().expect("reap");
    let copied_before_kill: i64 = (0..3).map(|p| offset_of(target, topic, p, -1)).sum();
    assert!(
        (copied_before_kill as usize) < produced.len(),
        "the kill must land mid-stream ({copied_before_kill} of {} copied)",
        produced.len()
    );

    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains("replicated 1 topics, 3 partitions"),
        "{summary}"
    );
    std::fs::remove_file(&config).ok();

    let duplicated_batch_bytes = assert_at_least_once(source, target, topic);
    // The budget bounds what was fetched and not yet checkpointed, but a
    // broker returns a partition's first batch whole even when it is larger
    // than what was asked (KIP-74): one batch per partition on top.
    let largest_batch = largest_batch(source, topic, 3);
    let bound = budget + 3 * largest_batch.max(partition_fetch);
    assert!(
        duplicated_batch_bytes <= bound,
        "{duplicated_batch_bytes} bytes of batches were copied twice, more than the in-flight window ({bound})"
    );
}

/// Retention deleted data the mirror had not copied yet: the restart says
/// exactly which offsets were lost and does not skip past them unless told to.
#[test]
fn data_deleted_before_it_was_copied_is_reported_not_skipped() {
    let Clusters { source, target } = clusters();
    let topic = "loss";
    // The first two batches carry timestamps an hour old (the producer's
    // default), the last one fresh ones; segment.ms rolls each later append
    // into a segment of its own, so lowering retention to ten minutes deletes
    // exactly the first two.
    source
        .create_topic(
            topic,
            1,
            1,
            &[("retention.ms", "86400000"), ("segment.ms", "300")],
        )
        .expect("create topic");
    let first = produce_keyed(source, topic, 20, 1, "a", None);
    let mut args = run_args(source, target, "loss");
    args.extend(["--topics".into(), topic.into()]);
    mirror_until_caught_up(&args);

    let lost = produce_keyed(source, topic, 30, 1, "b", None);
    assert_eq!(lost[0].offset, 20);
    std::thread::sleep(Duration::from_millis(400));
    let after = produce_keyed(source, topic, 10, 1, "c", Some(now_ms()));
    // Now let retention take everything but the active segment.
    alter_topic_config(source, topic, "retention.ms=600000");
    eventually(
        "retention deleted offsets 0..49",
        Duration::from_secs(60),
        || offset_of(source, topic, 0, -2) == 50,
    );

    for _ in 0..2 {
        let mut until = args.clone();
        until.push("--until-caught-up".into());
        let output = run_mirror(&until, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
        assert!(
            stdout.contains("STOPPED loss-0: source offsets 20..49 (30 offsets) of loss-0 were deleted by the source before they were copied"),
            "{stdout}"
        );
        assert!(stdout.contains("--on-data-loss continue"), "{stdout}");
        assert!(stdout.contains("LOST: 30 source offsets"), "{stdout}");
    }
    // Nothing was skipped silently: the target still ends at the first batch.
    assert_eq!(offset_of(target, topic, 0, -1), 20);

    args.extend(["--on-data-loss".into(), "continue".into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(summary.contains("LOST: 30 source offsets"), "{summary}");
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    let expected: Vec<&DumpedRecord> = first.iter().chain(&after).collect();
    assert_records(&expected, &copied);
}

/// Records purged with DeleteRecords from the middle of a batch the mirror
/// had not copied yet: the Fetch from the new log start returns the whole
/// batch, and only its records at or above the log start may reach the
/// target, or the target holds data the source deleted.
#[test]
fn records_the_source_purged_inside_a_batch_never_reach_the_target() {
    let Clusters { source, target } = clusters();
    let topic = "purged";
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    let first = produce_keyed(source, topic, 1000, 1, "a", None);
    let mut args = run_args(source, target, "purged");
    args.extend(["--topics".into(), topic.into()]);
    mirror_until_caught_up(&args);

    // 2,000 records in one batch (offsets 1000..2999).
    let batch = kafka_testkit::produce_with_librdkafka(
        &source.bootstrap(),
        topic,
        &ProduceOpts {
            count: 2000,
            partitions: Some(1),
            key_prefix: "b".into(),
            compression: Compression::Gzip,
            config: [
                // Longer than writing 2,000 records takes on a busy machine
                // (2 s was not, once); the producer's flush at the end sends
                // the batch without waiting for it.
                ("linger.ms", "60000"),
                ("batch.num.messages", "10000"),
                ("batch.size", "4000000"),
                // librdkafka caps a batch at this before compression.
                ("message.max.bytes", "4000000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
            ..ProduceOpts::default()
        },
    )
    .expect("produce one batch");
    let batches: Vec<(i64, i32)> = read_partition_batches(&source.log_dir(0), topic, 0)
        .expect("read the source segments")
        .iter()
        .filter(|b| !b.is_control())
        .map(|b| (b.base_offset(), b.records_count()))
        .filter(|&(base, _)| base >= 1000)
        .collect();
    assert_eq!(batches, [(1000, 2000)], "the 2,000 records form one batch");

    source
        .delete_records(topic, 0, 1500)
        .expect("delete records below 1500");
    assert_eq!(offset_of(source, topic, 0, -2), 1500);

    let mut until = args.clone();
    until.push("--until-caught-up".into());
    let output = run_mirror(&until, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
    assert!(
        stdout.contains("source offsets 1000..1499 (500 offsets) of purged-0 were deleted by the source before they were copied"),
        "{stdout}"
    );

    args.extend(["--on-data-loss".into(), "continue".into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(summary.contains("LOST: 500 source offsets"), "{summary}");
    assert_eq!(summary_count(&summary, "re-encoded: "), 1, "{summary}");
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    let on_source = records_by_partition(&source.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    assert_eq!(on_source.len(), 1500, "the source keeps 1500..2999");
    let expected: Vec<&DumpedRecord> = first.iter().chain(&batch[500..]).collect();
    assert_records(&expected, &copied);
    assert_eq!(
        copied.len(),
        2500,
        "1,000 copied before, 1,500 after the purge"
    );
}

/// A source topic deleted while the mirror runs is no longer asked for from
/// the next topic refresh on, with one log line; the other topics go on
/// being copied, and the summary names the deleted one.
#[test]
fn a_source_topic_deleted_while_running_is_dropped_and_the_others_go_on() {
    let Clusters { source, target } = clusters();
    let (gone, stays) = ("vanishing", "staying");
    for topic in [gone, stays] {
        source.create_topic(topic, 1, 1, &[]).expect("create topic");
    }
    let config = config_file(
        "deleted.toml",
        &format!(
            "name = \"deleted\"\n\
             [source]\nbootstrap_servers = \"{}\"\n\
             [target]\nbootstrap_servers = \"{}\"\n\
             [topics]\ninclude = \"{gone}|{stays}\"\nrefresh_interval_ms = 1000\n",
            source.bootstrap(),
            target.bootstrap()
        ),
    );
    produce_keyed(source, gone, 20, 1, "gone", None);
    produce_keyed(source, stays, 20, 1, "first", None);
    let mirror = RunningMirror::spawn(
        mirror_command()
            .args(["run", "--config", &config])
            // Debug shows each refused Fetch and metadata retry.
            .env("RUST_LOG", "kafka_mirror=debug"),
    );
    let limit = Duration::from_secs(60);
    let copied = |topic: &str| offset_of(target, topic, 0, -1);
    eventually("both topics are copied", limit, || {
        copied(gone) == 20 && copied(stays) == 20
    });
    source.delete_topic(gone).expect("delete topic");
    produce_keyed(source, stays, 30, 1, "second", None);
    eventually("the other topic goes on", limit, || copied(stays) == 50);
    // Several refresh intervals: the topic is dropped once, not asked for again.
    std::thread::sleep(Duration::from_secs(4));
    produce_keyed(source, stays, 10, 1, "third", None);
    eventually("the other topic still goes on", limit, || {
        copied(stays) == 60
    });

    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{}", tail(&stderr, 40));
    let dropped = stderr
        .lines()
        .filter(|l| l.contains("source topic deleted; no longer copied") && l.contains(gone))
        .count();
    assert_eq!(dropped, 1, "one log line:\n{}", tail(&stderr, 40));
    // Asked for after the drop, a deleted topic's partition would log a
    // refused Fetch or a missing leader at every try.
    let after_drop = stderr
        .lines()
        .skip_while(|l| !l.contains("source topic deleted"))
        .filter(|l| l.contains(gone) && !l.contains("source topic deleted"))
        .count();
    assert_eq!(after_drop, 0, "{}", tail(&stderr, 40));
    assert!(
        stdout.contains(&format!(
            "deleted on the source while running, no longer copied: 1 topics ({gone})"
        )),
        "{stdout}"
    );
    assert_same_records(source, target, stays);
}

/// A source topic deleted and created again under the same name restarts its
/// offsets; the mirror notices from the topic id and never silently appends
/// the new topic's data to the old copy.
#[test]
fn a_recreated_source_topic_is_reported() {
    let Clusters { source, target } = clusters();
    let topic = "phoenix";
    source.create_topic(topic, 2, 1, &[]).expect("create topic");
    let old = produce_keyed(source, topic, 50, 2, "old", None);
    let mut args = run_args(source, target, "phoenix");
    args.extend(["--topics".into(), topic.into(), "--until-caught-up".into()]);
    mirror_until_caught_up(&args[..args.len() - 1]);

    source.delete_topic(topic).expect("delete topic");
    source
        .create_topic(topic, 2, 1, &[])
        .expect("recreate topic");
    let new = produce_keyed(source, topic, 50, 2, "new", None);

    let output = run_mirror(&args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
    for partition in 0..2 {
        assert!(
            stdout.contains(&format!("STOPPED phoenix-{partition}: source topic `phoenix` was deleted and recreated since its data was copied")),
            "{stdout}"
        );
    }
    let copied: usize = records_by_partition(&target.bootstrap(), topic)
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(copied, old.len(), "nothing of the new topic was appended");

    args.extend(["--on-data-loss".into(), "continue".into()]);
    let output = run_mirror(&args, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let copied = records_by_partition(&target.bootstrap(), topic);
    for partition in 0..2 {
        let expected: Vec<_> = old
            .iter()
            .chain(&new)
            .filter(|r| r.partition == partition)
            .collect();
        let actual = &copied[&partition];
        assert_eq!(actual.len(), expected.len());
        for (e, a) in expected.iter().zip(actual) {
            assert_eq!((&e.key, &e.value), (&a.key, &a.value));
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Partitions without a checkpoint start where the user says: the source's
/// earliest offset by default, its end, or the first record at a timestamp.
#[test]
fn start_position_latest_or_timestamp() {
    let Clusters { source, target } = clusters();
    let topic = "start-at";
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    let base = now_ms() - 60_000;
    // Two producer runs, so offset 60 starts a batch of its own.
    let mut produced = produce_keyed(source, topic, 60, 1, "early", Some(base));
    produced.extend(produce_keyed(source, topic, 40, 1, "late", Some(base + 60)));

    let mut args = run_args(source, target, "start-latest");
    args.extend([
        "--topics".into(),
        topic.into(),
        "--start-position".into(),
        "latest".into(),
    ]);
    let summary = mirror_until_caught_up(&args);
    assert!(summary.contains(": 0 records"), "{summary}");

    // base + 70 is offset 70, inside a batch that starts at 60 or later
    // (librdkafka may have split the second run's 40 records): that batch is
    // trimmed, so copying starts at 70 exactly.
    let batch_start = read_partition_batches(&source.log_dir(0), topic, 0)
        .expect("read the source's batches")
        .iter()
        .map(|batch| batch.base_offset())
        .filter(|&base| base <= 70)
        .max()
        .expect("a batch at or before offset 70");
    assert!(batch_start >= 60, "the second run starts a batch at 60");
    let from = 70;
    let mut args = run_args(source, target, "start-timestamp");
    args.extend([
        "--topics".into(),
        topic.into(),
        "--start-position".into(),
        (base + 70).to_string(),
    ]);
    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains(&format!(": {} records", 100 - from)),
        "{summary}"
    );
    let trimmed = u64::from(batch_start < 70);
    assert_eq!(
        summary_count(&summary, "re-encoded: "),
        trimmed,
        "{summary}"
    );
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    assert_eq!(copied.len(), 100 - from);
    for (expected, actual) in produced[from..].iter().zip(&copied) {
        assert_eq!(
            (&expected.key, expected.timestamp),
            (&actual.key, actual.timestamp)
        );
    }
}

/// A partition idle for longer than the target's `producer.id.expiration.ms`
/// loses the mirror's producer state on the target; the next batch carries a
/// sequence the broker no longer knows. The broker takes it (a producer
/// without state may start at any sequence), and the mirror goes on.
#[test]
fn a_partition_idle_past_producer_expiration_goes_on() {
    let Clusters { source, target } = clusters();
    let topic = "idle";
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    let first = produce_keyed(source, topic, 100, 1, "before", None);
    let mut args = run_args(source, target, "idle");
    args.extend(["--topics".into(), topic.into()]);
    let mirror = RunningMirror::spawn(mirror_command().args(&args));
    eventually(
        "the first records are copied",
        Duration::from_secs(60),
        || offset_of(target, topic, 0, -1) == 100,
    );
    // Four expiration checks pass while the partition is idle.
    std::thread::sleep(Duration::from_secs(4));
    let second = produce_keyed(source, topic, 100, 1, "after", None);
    eventually(
        "the later records are copied",
        Duration::from_secs(60),
        || offset_of(target, topic, 0, -1) == 200,
    );
    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(": 200 records"), "{stdout}");
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    let expected: Vec<&DumpedRecord> = first.iter().chain(&second).collect();
    assert_records(&expected, &copied);
}

/// A created target topic gets the source topic's own configs, except those
/// that describe how the source cluster runs.
#[test]
fn created_target_topics_get_the_source_topic_configs() {
    let Clusters { source, target } = clusters();
    let topic = "configured";
    source
        .create_topic(
            topic,
            2,
            1,
            &[
                ("retention.ms", "123456789"),
                ("max.message.bytes", "2000000"),
                ("min.insync.replicas", "1"),
            ],
        )
        .expect("create topic");
    let produced = produce_keyed(source, topic, 50, 2, "c", None);
    let mut args = run_args(source, target, "configured");
    args.extend(["--topics".into(), topic.into()]);
    mirror_until_caught_up(&args);
    assert_eq!(assert_same_records(source, target, topic), produced.len());
    let configs = topic_configs(target, topic);
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("123456789"),
        "{configs:?}"
    );
    assert_eq!(
        configs.get("max.message.bytes").map(String::as_str),
        Some("2000000"),
        "{configs:?}"
    );
    assert!(!configs.contains_key("min.insync.replicas"), "{configs:?}");
}

/// A LogAppendTime source topic: its consumers see the broker's append time
/// on every record. The target topic is created CreateTime (the timestamp type
/// is not copied, or the target would stamp its own append time), so the
/// mirror writes the append time into the records: consumers of the copy see
/// the same timestamps as consumers of the source.
#[test]
fn log_append_time_batches_keep_their_timestamps() {
    let Clusters { source, target } = clusters();
    let topic = "append-time";
    source
        .create_topic(topic, 2, 1, &[("message.timestamp.type", "LogAppendTime")])
        .expect("create topic");
    let produced = produce_keyed(source, topic, 200, 2, "t", None);
    let mut args = run_args(source, target, "append-time");
    args.extend(["--topics".into(), topic.into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(summary.contains("re-encoded: "), "{summary}");
    let expected = records_by_partition(&source.bootstrap(), topic);
    let actual = records_by_partition(&target.bootstrap(), topic);
    let mut compared = 0;
    for (partition, source_records) in &expected {
        let target_records = &actual[partition];
        assert_eq!(source_records.len(), target_records.len());
        for (s, t) in source_records.iter().zip(target_records) {
            assert_eq!(
                s.timestamp_type,
                kafka_testkit::TimestampType::LogAppendTime
            );
            assert_eq!(t.timestamp_type, kafka_testkit::TimestampType::CreateTime);
            assert_eq!(
                (&s.key, &s.value, &s.headers, s.timestamp),
                (&t.key, &t.value, &t.headers, t.timestamp),
                "{topic}-{partition} offset {}",
                s.offset
            );
            compared += 1;
        }
    }
    assert_eq!(compared, produced.len());
}

/// Batches the target topic's own settings refuse (a timestamp older than its
/// `message.timestamp.before.max.ms`, a batch over its `max.message.bytes`)
/// stop their partition with the target's reason by default; with
/// `--on-refused-batch skip` they are skipped and counted, and everything
/// else is copied in order.
#[test]
fn batches_the_target_topic_refuses_stop_or_are_skipped_by_policy() {
    let Clusters { source, target } = clusters();
    let (too_old, too_large) = ("refused-old", "refused-large");
    for topic in [too_old, too_large] {
        source.create_topic(topic, 1, 1, &[]).expect("create topic");
    }
    target
        .create_topic(
            too_old,
            1,
            1,
            &[("message.timestamp.before.max.ms", "7200000")],
        )
        .expect("create target topic");
    target
        .create_topic(too_large, 1, 1, &[("max.message.bytes", "4000")])
        .expect("create target topic");
    let two_days_ago = now_ms() - 2 * 24 * 3600 * 1000;
    produce_keyed(source, too_old, 50, 1, "old", Some(two_days_ago));
    let recent = produce_keyed(source, too_old, 50, 1, "recent", None);
    kafka_testkit::produce_with_librdkafka(
        &source.bootstrap(),
        too_large,
        &kafka_testkit::ProduceOpts {
            count: 300,
            partitions: Some(1),
            key_prefix: "large".into(),
            config: vec![("linger.ms".into(), "200".into())],
            ..kafka_testkit::ProduceOpts::default()
        },
    )
    .expect("produce large batches");
    let small = kafka_testkit::produce_with_librdkafka(
        &source.bootstrap(),
        too_large,
        &kafka_testkit::ProduceOpts {
            count: 30,
            partitions: Some(1),
            key_prefix: "small".into(),
            config: vec![("batch.num.messages".into(), "1".into())],
            ..kafka_testkit::ProduceOpts::default()
        },
    )
    .expect("produce one-record batches");
    let batches = kafka_testkit::read_partition_batches(&source.log_dir(0), too_large, 0)
        .expect("read source segments");
    assert!(
        batches[0].batch_length() > 4000,
        "the first batch is over the target's limit"
    );

    // The target keeps its own max.message.bytes (the timestamp settings are
    // never copied anyway).
    let config = config_file(
        "refused.toml",
        &format!(
            "name = \"refused\"\n\
             [source]\nbootstrap_servers = \"{}\"\n\
             [target]\nbootstrap_servers = \"{}\"\n\
             [topics]\ninclude = \"{too_old}|{too_large}\"\n\
             never_copy_configs = [\"max.message.bytes\"]\n",
            source.bootstrap(),
            target.bootstrap()
        ),
    );
    let mut args = vec!["run".to_owned(), "--config".to_owned(), config];
    let stopping = [&args[..], &["--until-caught-up".to_owned()]].concat();
    let output = run_mirror(&stopping, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "STOPPED {too_old}-0: target refused source offsets 0..49"
        )) && stdout.contains("InvalidTimestamp")
            && stdout.contains(&format!(
                "STOPPED {too_large}-0: target refused source offsets 0.."
            ))
            && stdout.contains("MessageTooLarge")
            && stdout.contains("--on-refused-batch skip"),
        "{stdout}"
    );
    assert_eq!(
        offset_of(target, too_old, 0, -1),
        0,
        "nothing copied past a refusal"
    );

    args.extend(["--on-refused-batch".into(), "skip".into()]);
    let stdout = mirror_until_caught_up(&args);
    let skipped_large = batches
        .iter()
        .filter(|b| b.batch_length() > 4000)
        .map(|b| b.records_count())
        .sum::<i32>();
    assert_eq!(skipped_large, 300, "every large batch is over the limit");
    assert!(
        stdout.contains("records) the target refused for its topic settings")
            && stdout.contains(&format!("({} records)", 50 + skipped_large)),
        "{stdout}"
    );
    let copied = records_by_partition(&target.bootstrap(), too_old)
        .remove(&0)
        .expect("partition 0");
    assert_records(&recent.iter().collect::<Vec<_>>(), &copied);
    let copied = records_by_partition(&target.bootstrap(), too_large)
        .remove(&0)
        .expect("partition 0");
    assert_records(&small.iter().collect::<Vec<_>>(), &copied);
}

/// A batch damaged in the source's log (one byte of a record flipped on
/// disk, which the broker serves as it is) is refused by the target, whose
/// CRC check is the one the mirror relies on for batches it sends unchanged.
/// Its partition stops naming the damage and the offsets; what came before
/// it is on the target and nothing after it. Once the log is repaired, a
/// second run copies the rest from the checkpoint: nothing was lost.
#[test]
fn a_batch_damaged_in_the_source_log_stops_its_partition_and_loses_nothing() {
    let Clusters { source, target } = clusters();
    let topic = "damaged-log";
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    let produced: Vec<DumpedRecord> = ["before", "damaged", "after"]
        .iter()
        .flat_map(|prefix| produce_keyed(source, topic, 10, 1, prefix, None))
        .collect();
    let batches = read_partition_batches(&source.log_dir(0), topic, 0).expect("read segments");
    let damaged = batches
        .iter()
        .find(|b| b.base_offset() <= 10 && 10 < b.base_offset() + i64::from(b.records_count()))
        .expect("the batch holding offset 10");
    let last_offset = damaged.base_offset() + i64::from(damaged.last_offset_delta());
    // The last byte of the batch: inside its last record.
    let at = damaged.position + damaged.bytes.len() as u64 - 1;
    let flip = |segment: &std::path::Path| {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment)
            .expect("open the segment");
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).expect("seek");
        file.read_exact(&mut byte).expect("read");
        file.seek(SeekFrom::Start(at)).expect("seek");
        file.write_all(&[byte[0] ^ 0x40]).expect("write");
    };
    flip(&damaged.segment);

    let args = run_args(source, target, "damaged-log");
    let args = [&args[..], &["--topics".into(), topic.into()]].concat();
    let stopping = [&args[..], &["--until-caught-up".to_owned()]].concat();
    let output = run_mirror(&stopping, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout);
    flip(&damaged.segment);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "STOPPED {topic}-0: target refused source offsets {}..{last_offset} of {topic}-0: CorruptMessage",
            damaged.base_offset()
        )) && stdout.contains(&format!(
            "the source sent it damaged: record batch at offset {} fails its CRC",
            damaged.base_offset()
        )),
        "{stdout}"
    );
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .unwrap_or_default();
    let before = usize::try_from(damaged.base_offset()).expect("offset");
    assert_records(&produced[..before].iter().collect::<Vec<_>>(), &copied);

    mirror_until_caught_up(&args);
    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    assert_records(&produced.iter().collect::<Vec<_>>(), &copied);
}
