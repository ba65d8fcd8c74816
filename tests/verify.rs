//! `kafka-mirror verify` against real brokers: a copy made by `run` agrees
//! (plain, compacted and transactional topics), and a target partition with
//! one record more, or a topic whose copy has one value changed, is found,
//! named, and makes the command exit non-zero (7). `run --until-caught-up
//! --verify` checks what the run copied, while the source goes on growing.
//!
//! The data is written by librdkafka (the testkit's confluent-kafka
//! clients); the "copy" with one value changed is written by hand into the
//! target, record for record the same but one.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use kafka_testkit::{produce_with_librdkafka, Compression, KafkaCluster, ProduceOpts};

fn clusters() -> &'static Clusters {
    shared_clusters(
        // The source cleaner looks for work every 200 ms, for the compacted topic.
        &[("log.cleaner.backoff.ms", "200")],
        // The target's stays off: a copy compacted again differs, rightly.
        &[("log.cleaner.enable", "false")],
    )
}

fn verify(source: &KafkaCluster, target: &KafkaCluster, topics: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify".to_owned(),
        "--source".into(),
        source.bootstrap(),
        "--target".into(),
        target.bootstrap(),
        "--topics".into(),
        topics.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    run_mirror(&args, std::time::Duration::from_secs(60))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts `verify` agrees on `topics`, with this many records compared.
fn assert_agrees(source: &KafkaCluster, target: &KafkaCluster, topics: &str, records: u64) {
    let output = verify(source, target, topics, &["--format", "json"]);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\n{}",
        tail(&String::from_utf8_lossy(&output.stderr), 30)
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    let partitions = report["flows"][0]["partitions"]
        .as_array()
        .expect("partitions");
    let compared: u64 = partitions
        .iter()
        .map(|p| p["compared"].as_u64().expect("compared"))
        .sum();
    assert_eq!(compared, records, "{text}");
    for p in partitions {
        assert_eq!(p["source"]["records"], p["target"]["records"], "{text}");
        assert_eq!(p["source"]["checksum"], p["target"]["checksum"], "{text}");
        assert!(p["difference"].is_null(), "{text}");
    }
}

#[test]
fn a_clean_copy_agrees_and_one_extra_target_record_is_named() {
    let Clusters { source, target } = clusters();
    let topic = "verify-plain";
    source.create_topic(topic, 3, 1, &[]).expect("create");
    produce_with_both_clients(source, topic, 3, Compression::Lz4, 600, 300);
    mirror_until_caught_up(&{
        let mut args = run_args(source, target, "verify-plain");
        args.extend(["--topics".into(), topic.into()]);
        args
    });
    assert_agrees(source, target, topic, 900);
    let sampled = verify(source, target, topic, &["--sample", "2"]);
    assert_eq!(sampled.status.code(), Some(0), "{}", stdout(&sampled));

    // One record more in the target's partition 0 (record i goes to i % 1).
    produce_with_librdkafka(
        &target.bootstrap(),
        topic,
        &ProduceOpts {
            count: 1,
            partitions: Some(1),
            key_prefix: "extra".into(),
            ..ProduceOpts::default()
        },
    )
    .expect("produce");
    let output = verify(source, target, topic, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(7), "{text}");
    assert!(
        text.contains("verify-plain-0 -> verify-plain-0: DIFFERS: the target has more records"),
        "{text}"
    );
    assert_eq!(text.matches("DIFFERS").count(), 1, "{text}");
    assert!(
        text.contains("verify-plain-1 -> verify-plain-1: agrees"),
        "{text}"
    );
    println!("{text}");
    // A sample compares counts in full: the extra record is found all the same.
    let sampled = stdout(&verify(source, target, topic, &["--sample", "2"]));
    assert!(
        sampled.contains("verify-plain-0 -> verify-plain-0: DIFFERS"),
        "{sampled}"
    );
}

#[test]
fn a_copy_with_one_value_changed_is_named_with_its_offsets() {
    let Clusters { source, target } = clusters();
    let topic = "verify-changed";
    source.create_topic(topic, 1, 1, &[]).expect("create");
    target.create_topic(topic, 1, 1, &[]).expect("create");
    // produce.py writes record i with key <prefix>-<i % distinct keys>, a
    // value and headers that depend on i alone, and timestamp base + i: 21
    // records on the source; on the target the first 20 of them and, as the
    // 21st, record 0 at the 21st's timestamp. Record 20 and record 0 both
    // have no headers and the one key, so only the value differs.
    let base = 1_750_000_000_000;
    let write = |cluster: &KafkaCluster, count, base_timestamp_ms| {
        produce_with_librdkafka(
            &cluster.bootstrap(),
            topic,
            &ProduceOpts {
                count,
                partitions: Some(1),
                key_prefix: "same".into(),
                distinct_keys: Some(1),
                base_timestamp_ms: Some(base_timestamp_ms),
                ..ProduceOpts::default()
            },
        )
        .expect("produce")
    };
    let original = write(source, 21, base);
    let copy: Vec<_> = [write(target, 20, base), write(target, 1, base + 20)].concat();
    assert_eq!(original.len(), copy.len());
    let (last, changed) = (&original[20], &copy[20]);
    assert_eq!(
        (&last.key, &last.headers, last.timestamp),
        (&changed.key, &changed.headers, changed.timestamp)
    );
    assert_ne!(last.value, changed.value);

    let output = verify(source, target, topic, &["--format", "json"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(7), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    let partition = &report["flows"][0]["partitions"][0];
    assert_eq!(partition["topic"], topic, "{text}");
    assert_eq!(partition["partition"], 0, "{text}");
    assert_eq!(
        partition["difference"],
        serde_json::json!({"kind": "contents", "source_offset": last.offset, "target_offset": changed.offset}),
        "{text}"
    );
    assert_eq!(partition["source"]["records"], 21);
    assert_eq!(partition["target"]["records"], 21);

    // A topic never copied is named too.
    let uncopied = "verify-uncopied";
    source.create_topic(uncopied, 1, 1, &[]).expect("create");
    produce_keyed(source, uncopied, 5, 1, "u", None);
    let output = verify(source, target, uncopied, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(7), "{text}");
    assert!(
        text.contains("verify-uncopied-0 -> verify-uncopied-0: DIFFERS: the target has no such partition\n    source: 5 records"),
        "{text}"
    );
}

#[test]
fn compacted_and_transactional_copies_agree() {
    let Clusters { source, target } = clusters();
    let compacted = "verify-compacted";
    write_compactable(
        source,
        compacted,
        1,
        &ProduceOpts {
            compression: Compression::Zstd,
            distinct_keys: Some(20),
            shuffle_keys: true,
            ..ProduceOpts::default()
        },
    );
    compact(source, &[compacted.to_owned()], 1);

    let transactional = "verify-transactions";
    source
        .create_topic(transactional, 2, 1, &[])
        .expect("create");
    for (prefix, transactional_id, abort) in [
        ("committed", Some("verify-a"), false),
        ("aborted", Some("verify-b"), true),
        ("plain", None, false),
        ("committed-again", Some("verify-a"), false),
    ] {
        produce_with_librdkafka(
            &source.bootstrap(),
            transactional,
            &ProduceOpts {
                count: 200,
                partitions: Some(2),
                compression: Compression::Snappy,
                key_prefix: prefix.into(),
                transactional_id: transactional_id.map(str::to_owned),
                abort,
                ..ProduceOpts::default()
            },
        )
        .expect("produce");
    }

    let topics = "verify-(compacted|transactions)";
    let mut args = run_args(source, target, "verify-kinds");
    args.extend(["--topics".into(), topics.into()]);
    mirror_until_caught_up(&args);
    let retained = records_by_partition(&source.bootstrap(), compacted)
        .values()
        .map(Vec::len)
        .sum::<usize>();
    // 600 committed records of the transactional topic (not the aborted 200).
    assert_agrees(source, target, topics, retained as u64 + 600);
}

#[test]
fn a_run_checks_what_it_copied_while_the_source_grows() {
    let Clusters { source, target } = clusters();
    let topic = "verify-growing";
    source.create_topic(topic, 2, 1, &[]).expect("create");
    produce_keyed(source, topic, 400, 2, "before", None);
    // A producer that goes on writing through the run and its check.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, bootstrap) = (stop.clone(), source.bootstrap());
        thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                kafka_testkit::produce_with_librdkafka(
                    &bootstrap,
                    "verify-growing",
                    &ProduceOpts {
                        count: 10,
                        partitions: Some(2),
                        key_prefix: format!("during-{rounds}"),
                        ..ProduceOpts::default()
                    },
                )
                .expect("produce");
                rounds += 1;
            }
            rounds
        })
    };
    let mut args = run_args(source, target, "verify-growing");
    args.extend(["--topics".into(), topic.into(), "--verify".into()]);
    let output = mirror_until_caught_up(&args);
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().expect("the writer");
    assert!(rounds > 0, "the source did not grow during the run");
    // The summary, then the check of each partition up to where the run
    // copied it: the records written since are not the run's to copy.
    for partition in 0..2 {
        assert!(
            output.contains(&format!(
                "verify-growing-{partition} -> verify-growing-{partition}: agrees"
            )),
            "{output}"
        );
    }
    assert!(!output.contains("DIFFERS"), "{output}");
    // A check of the whole log finds what the run left to the next one.
    produce_keyed(source, topic, 2, 2, "after", None);
    let whole = verify(source, target, topic, &[]);
    assert_eq!(whole.status.code(), Some(7), "{}", stdout(&whole));
    assert!(
        stdout(&whole).contains("DIFFERS: the target ends where the source has offset"),
        "{}",
        stdout(&whole)
    );
}

#[test]
fn a_run_into_a_target_that_already_held_a_record_fails_its_check() {
    let Clusters { source, target } = clusters();
    let topic = "verify-run-extra";
    source.create_topic(topic, 2, 1, &[]).expect("create");
    target.create_topic(topic, 2, 1, &[]).expect("create");
    produce_keyed(source, topic, 100, 2, "copied", None);
    produce_keyed(target, topic, 1, 1, "stray", None);
    let mut args = run_args(source, target, "verify-run-extra");
    args.extend([
        "--topics".into(),
        topic.into(),
        "--until-caught-up".into(),
        "--verify".into(),
    ]);
    let output = run_mirror(&args, std::time::Duration::from_secs(180));
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(7),
        "{text}\n{}",
        tail(&String::from_utf8_lossy(&output.stderr), 30)
    );
    assert!(
        text.contains("verify-run-extra-0 -> verify-run-extra-0: DIFFERS: records differ from source offset 0 / target offset 0"),
        "{text}"
    );
    assert!(
        text.contains("verify-run-extra-1 -> verify-run-extra-1: agrees"),
        "{text}"
    );
}
