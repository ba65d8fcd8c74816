//! An unclean leader election on the source truncates records the mirror
//! already copied, and new records take their offsets (KIP-320): the mirror
//! notices from the leader epoch of the last batch it fetched, reports the
//! exact range copied that no longer exists on the source, stops the
//! partition (also after a restart), and with `--on-data-loss continue`
//! copies the source's log on from where it diverged.
//!
//! The source has three KRaft nodes so that the controller quorum survives
//! the two data brokers being down in turn; the topic's two replicas live on
//! brokers 1 and 2 only, node 0 holds none of it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{ClusterSpec, DumpedRecord, KafkaCluster};

const TOPIC: &str = "truncated";

fn start(nodes: usize, props: &[(&str, &str)]) -> KafkaCluster {
    let mut spec = ClusterSpec::new(KAFKA, nodes);
    spec.broker_props = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.jvm_opts = Some(vec!["-Xmx320m".into(), "-Xms128m".into()]);
    KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka: {e:#}"))
}

/// The topic's leader and ISR as Kafka's TopicCommand describes them.
fn leader_and_isr(source: &KafkaCluster) -> (String, String) {
    let output = source
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            [
                "--bootstrap-server",
                &source.running_bootstrap(),
                "--describe",
                "--topic",
                TOPIC,
            ],
        )
        .unwrap_or_else(|e| panic!("TopicCommand --describe: {e:#}"));
    let field = |name: &str| {
        output
            .stdout
            .split(&format!("{name}: "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    };
    (field("Leader"), field("Isr"))
}

fn produce(source: &KafkaCluster, count: u64, prefix: &str) -> Vec<DumpedRecord> {
    kafka_testkit::produce_with_librdkafka(
        &source.running_bootstrap(),
        TOPIC,
        &kafka_testkit::ProduceOpts {
            count,
            partitions: Some(1),
            key_prefix: prefix.into(),
            ..kafka_testkit::ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce {prefix}: {e:#}"))
}

#[test]
fn records_copied_then_truncated_by_an_unclean_election_are_reported() {
    let source = start(
        3,
        &[
            ("unclean.leader.election.enable", "true"),
            ("min.insync.replicas", "1"),
            ("auto.leader.rebalance.enable", "false"),
        ],
    );
    let target = start(1, &[]);
    source
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            [
                "--bootstrap-server",
                &source.bootstrap(),
                "--create",
                "--topic",
                TOPIC,
                "--replica-assignment",
                "1:2",
                "--config",
                "unclean.leader.election.enable=true",
                "--config",
                "min.insync.replicas=1",
            ],
        )
        .unwrap_or_else(|e| panic!("create topic: {e:#}"));
    eventually("broker 1 leads", Duration::from_secs(30), || {
        leader_and_isr(&source) == ("1".into(), "1,2".into())
    });

    // On both replicas; then only on broker 1.
    let common = produce(&source, 100, "common");
    source.stop_node(2).expect("stop the follower");
    eventually(
        "the ISR shrinks to broker 1",
        Duration::from_secs(60),
        || leader_and_isr(&source).1 == "1",
    );
    let doomed = produce(&source, 50, "doomed");
    assert_eq!(doomed[0].offset, 100);

    let mut args = run_args(&source, &target, "truncation");
    args.extend(["--topics".into(), TOPIC.into()]);
    let mirror = RunningMirror::spawn(mirror_command().args(&args));
    eventually(
        "the mirror copied 150 records",
        Duration::from_secs(60),
        || offset_of(&target, TOPIC, 0, -1) == 150,
    );
    // And stored the checkpoint at 150, with its epoch: frozen longer than
    // its group session (10 s, which the changes below can take on a busy
    // machine), the mirror loses the partition and takes it again from the
    // stored checkpoint.
    eventually(
        "the checkpoint at 150 stored",
        Duration::from_secs(30),
        || {
            stored_checkpoints(&target, "kafka-mirror-checkpoints", "truncation")
                .get(&(TOPIC.to_owned(), 0))
                .is_some_and(|c| c.next_offset == 150)
        },
    );
    // Frozen while the source changes under it, so that it next fetches
    // from a log that has grown back past its position: no out-of-range
    // answer gives the truncation away, only the leader epoch does.
    signal(&mirror, "-STOP");

    source.stop_node(1).expect("stop the leader");
    source.start_node(2).expect("start the old follower");
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_and_isr(&source).0 != "2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    if leader_and_isr(&source).0 != "2" {
        eprintln!("no unclean election by itself; asking for one");
        source
            .run_tool(
                "org.apache.kafka.tools.LeaderElectionCommand",
                [
                    "--bootstrap-server",
                    &source.running_bootstrap(),
                    "--election-type",
                    "unclean",
                    "--topic",
                    TOPIC,
                    "--partition",
                    "0",
                ],
            )
            .unwrap_or_else(|e| panic!("LeaderElectionCommand: {e:#}"));
    }
    eventually(
        "broker 2 leads after an unclean election",
        Duration::from_secs(60),
        || leader_and_isr(&source).0 == "2",
    );
    let after = produce(&source, 80, "after");
    assert_eq!(after[0].offset, 100, "the new leader's log ends at 100");
    source.start_node(1).expect("restart the old leader");
    signal(&mirror, "-CONT");

    let stopped = "STOPPED truncated-0: source offsets 100..149 (50 offsets) of truncated-0 \
                   were copied but no longer exist on the source: its log diverges from the \
                   copy at offset 100";
    let output = wait_with_limit(mirror, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{}",
        tail(&stderr, 40)
    );
    assert!(stdout.contains(stopped), "{stdout}");
    assert!(
        stdout.contains("TRUNCATED: 50 source offsets were copied but no longer exist"),
        "{stdout}"
    );
    assert!(stdout.contains("--on-data-loss continue"), "{stdout}");
    assert_eq!(
        offset_of(&target, TOPIC, 0, -1),
        150,
        "nothing of the new log appended"
    );

    // The checkpoint keeps the epoch: a restart stops again.
    let mut until = args.clone();
    until.push("--until-caught-up".into());
    let output = run_mirror(&until, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{stdout}");
    assert!(stdout.contains(stopped), "{stdout}");

    args.extend(["--on-data-loss".into(), "continue".into()]);
    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains("TRUNCATED: 50 source offsets"),
        "{summary}"
    );
    eprintln!("{summary}");

    // Checked with librdkafka: the source holds the common records and the
    // new ones; the target holds everything it copied, then the source's log
    // from where it diverged.
    let on_source = records_by_partition(&source.running_bootstrap(), TOPIC)
        .remove(&0)
        .expect("source partition");
    let source_expected: Vec<&DumpedRecord> = common.iter().chain(&after).collect();
    assert_records(&source_expected, &on_source);
    let on_target = records_by_partition(&target.bootstrap(), TOPIC)
        .remove(&0)
        .expect("target partition");
    let target_expected: Vec<&DumpedRecord> = common.iter().chain(&doomed).chain(&after).collect();
    assert_records(&target_expected, &on_target);
    eprintln!(
        "truncation run: copied offsets 0..149, reported 100..149 gone; source holds {} \
         records, target {} ({} after the divergence point, as on the source)",
        on_source.len(),
        on_target.len(),
        on_target.len() - 150
    );
}
