//! Lost Produce answers while the target's partition leaders move.
//!
//! The target has three brokers (replication 3, acks=all), each behind a
//! proxy that now and then cuts the connection instead of passing on a
//! Produce answer ([`AnswerDroppers`]): the broker appended the batches, the
//! mirror does not know. Meanwhile the leaders move (the replica
//! order is rotated, then a preferred leader election), so resends meet
//! NOT_LEADER_OR_FOLLOWER and new connections: a lost answer stacked with a
//! later error on the same partition, which is what once let a batch of
//! unknown fate be resent under a new producer id. Every record must be on the
//! target once, in order, as the source has it: in idempotent mode, and in
//! exactly-once mode, where the batches of unknown fate are inside a
//! transaction that must not commit before the target has answered them.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::answer_dropper::AnswerDroppers;
use common::*;
use kafka_testkit::{ClusterSpec, KafkaCluster, ProduceOpts};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
/// Enough lost answers that the mirror's warnings outgrow a pipe's buffer,
/// so its output must be read while it runs.
const ROUNDS: u64 = 8;
const PER_ROUND: u64 = 5_000;
/// One Produce answer in this many is lost.
const DROP_EVERY: u64 = 25;

/// Moves every partition's leader to the next broker: rotates the replica
/// order, then a preferred leader election. Whether both tools succeeded.
fn move_leaders(target: &KafkaCluster, round: usize) -> bool {
    let nodes = target.node_count();
    let partitions: Vec<String> = (0..PARTITIONS as usize)
        .map(|p| {
            let replicas: Vec<String> = (0..nodes)
                .map(|i| ((p + round + i) % nodes).to_string())
                .collect();
            format!(
                r#"{{"topic":"{TOPIC}","partition":{p},"replicas":[{}]}}"#,
                replicas.join(",")
            )
        })
        .collect();
    let plan = config_file(
        &format!("reassign-{round}.json"),
        &format!(r#"{{"version":1,"partitions":[{}]}}"#, partitions.join(",")),
    );
    let bootstrap = target.bootstrap();
    let reassigned = target.run_tool(
        "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
        [
            "--bootstrap-server",
            &bootstrap,
            "--reassignment-json-file",
            &plan,
            "--execute",
        ],
    );
    if reassigned.is_err() {
        return false;
    }
    target
        .run_tool(
            "org.apache.kafka.tools.LeaderElectionCommand",
            [
                "--bootstrap-server",
                &bootstrap,
                "--election-type",
                "PREFERRED",
                "--all-topic-partitions",
            ],
        )
        .is_ok()
}

#[test]
fn lost_answers_while_leaders_move_leave_every_record_once_in_order() {
    lost_answers_while_leaders_move(false);
}

#[test]
fn lost_answers_in_transactions_while_leaders_move_leave_every_record_once_in_order() {
    lost_answers_while_leaders_move(true);
}

fn lost_answers_while_leaders_move(exactly_once: bool) {
    // Exactly-once copies half as much: its transactions add the time, and
    // a few thousand lost-answer batches already cross many commits.
    let rounds = if exactly_once { ROUNDS / 2 } else { ROUNDS };
    let (target, droppers) = AnswerDroppers::start(ClusterSpec::new(KAFKA, 3), DROP_EVERY);
    let source = start_cluster(KAFKA, 1, &[]);
    source
        .create_topic(TOPIC, PARTITIONS, 1, &[])
        .expect("create the source topic");
    target
        .create_topic(TOPIC, PARTITIONS, 3, &[("min.insync.replicas", "2")])
        .expect("create the target topic");

    let mut args = run_args(&source, &target, "lost-answers");
    droppers.redirect_target(&mut args);
    args.extend(["--topics".into(), TOPIC.into()]);
    if exactly_once {
        args.push("--exactly-once".into());
    }
    let mirror = RunningMirror::spawn(mirror_command().args(&args));

    // Leaders move all along, on a thread of their own.
    let moving = Arc::new(AtomicBool::new(true));
    let moves = Arc::new(AtomicU64::new(0));
    {
        let (still_moving, moves) = (moving.clone(), moves.clone());
        let target = &target;
        thread::scope(|scope| {
            let mover = scope.spawn(move || {
                let mut round = 1;
                while still_moving.load(Ordering::Relaxed) {
                    if move_leaders(target, round) {
                        moves.fetch_add(u64::from(PARTITIONS), Ordering::Relaxed);
                    }
                    round += 1;
                    thread::sleep(Duration::from_millis(500));
                }
            });
            // Small source batches: many Produce requests, many answers to lose.
            for round in 0..rounds {
                kafka_testkit::produce_with_librdkafka(
                    &source.bootstrap(),
                    TOPIC,
                    &ProduceOpts {
                        count: PER_ROUND,
                        partitions: Some(PARTITIONS),
                        key_prefix: format!("r{round}"),
                        config: vec![("batch.num.messages".into(), "20".into())],
                        ..ProduceOpts::default()
                    },
                )
                .expect("produce into the source");
            }
            let total = i64::try_from(rounds * PER_ROUND).expect("count");
            let started = Instant::now();
            // Exactly-once end offsets count commit markers too: the copy may
            // still be short then, and the run after this one completes it.
            let copied = || -> i64 {
                (0..PARTITIONS as i32)
                    .map(|p| offset_of(target, TOPIC, p, -1))
                    .sum()
            };
            loop {
                let now = copied();
                eprintln!(
                    "{now} of {total} records on the target after {:?}",
                    started.elapsed()
                );
                if now >= total || started.elapsed() > Duration::from_secs(400) {
                    break;
                }
                thread::sleep(Duration::from_secs(2));
            }
            // A little longer, for duplicates still on their way.
            thread::sleep(Duration::from_secs(3));
            moving.store(false, Ordering::Relaxed);
            mover.join().expect("leader mover");
        });
    }
    droppers.stop_dropping();
    let output = terminate(mirror);
    let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if exactly_once {
        assert!(
            stdout.contains("transactions committed"),
            "{stdout}\n{}",
            tail(&stderr, 30)
        );
        stdout.push_str(&mirror_until_caught_up(&args));
    }
    let (dropped, answers) = (droppers.dropped(), droppers.answers());
    eprintln!(
        "{} records; {dropped} of {answers} Produce answers dropped; {} leader moves",
        rounds * PER_ROUND,
        moves.load(Ordering::Relaxed)
    );
    assert!(
        dropped >= 10,
        "too few answers lost to mean anything: {dropped}"
    );
    assert!(moves.load(Ordering::Relaxed) > 0, "no leader moved");

    let expected = records_by_partition(&source.bootstrap(), TOPIC);
    let actual = records_by_partition(&target.bootstrap(), TOPIC);
    eprintln!("duplicates on the target: {}", duplicate_keys(&actual));
    show_mirror_log("lost_answers", &stderr);
    let count = assert_same_content(&expected, &actual, TOPIC);
    assert_eq!(
        count as u64,
        rounds * PER_ROUND,
        "{stdout}\n{}",
        tail(&stderr, 30)
    );
}
