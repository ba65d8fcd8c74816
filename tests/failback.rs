//! A failover and back: A is copied to B, the group moves to B, A keeps a
//! few records B never gets (the disaster), producers write on B, and
//! `kafka-mirror failback` copies B's new records back to A and moves the
//! group home; then the A->B mirror, restarted, goes on from there. The
//! group, read by a consumer nobody here wrote, reads every record exactly
//! once across all four moves, and neither cluster holds a record twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kafka_testkit::{produce_with_librdkafka, DumpedRecord, KafkaCluster, ProduceOpts};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;

/// `kafka-mirror <command>` of the flow A->B under the name `dr`, for the group.
fn args(command: &str, a: &KafkaCluster, b: &KafkaCluster) -> Vec<String> {
    let mut args = run_args(a, b, "dr");
    args[0] = command.into();
    args.extend(["--topics", TOPIC, "--groups", "app"].map(String::from));
    args
}

/// Runs a command to its end; returns its stdout, requiring exit 0.
fn succeeds(args: &[String]) -> String {
    let output = run_mirror(args, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        show_mirror_log("failback", &stderr);
    }
    assert!(
        output.status.success(),
        "{args:?}: exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        tail(&stderr, 40)
    );
    stdout
}

/// `count` records with keys `<prefix>-<i>` into the topic, round-robin over
/// its partitions, optionally in one transaction.
fn produce(cluster: &KafkaCluster, prefix: &str, count: u64, transactional: bool) {
    produce_with_librdkafka(
        &cluster.bootstrap(),
        TOPIC,
        &ProduceOpts {
            count,
            partitions: Some(PARTITIONS),
            key_prefix: prefix.into(),
            idempotence: true,
            transactional_id: transactional.then(|| format!("{prefix}-tx")),
            ..ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce {prefix}: {e:#}"));
}

/// The keys of a partition's records, in order.
fn keys(records: &[DumpedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Each partition's keys on a cluster, in offset order (read_committed).
fn keys_by_partition(cluster: &KafkaCluster) -> BTreeMap<i32, Vec<String>> {
    records_by_partition(&cluster.bootstrap(), TOPIC)
        .into_iter()
        .map(|(p, records)| (p, keys(&records)))
        .collect()
}

/// Each partition's keys with this prefix, in order.
fn with_prefix(all: &BTreeMap<i32, Vec<String>>, prefix: &str) -> BTreeMap<i32, Vec<String>> {
    all.iter()
        .map(|(p, keys)| {
            let picked = keys
                .iter()
                .filter(|k| k.starts_with(&format!("{prefix}-")))
                .cloned()
                .collect();
            (*p, picked)
        })
        .collect()
}

#[test]
fn a_failover_and_back_moves_the_group_without_a_gap_or_a_repeat() {
    let Clusters {
        source: a,
        target: b,
    } = shared_clusters(&[], &[]);
    b.create_topic(TOPIC, PARTITIONS, 1, &[])
        .expect("create on b");
    a.create_topic(TOPIC, PARTITIONS, 1, &[])
        .expect("create on a");
    // B held records of its own before the mirror: every copied offset shifts.
    produce(b, "pre", 30, false);
    produce(a, "old", 300, false);

    // A->B, until caught up; then the planned cutover.
    let mut run = args("run", a, b);
    run.push("--until-caught-up".into());
    succeeds(&run);
    let mut failover = args("failover", a, b);
    failover.push("--apply".into());
    succeeds(&failover);

    // The disaster: A takes records the mirror never copies. Producers
    // move to B, first in a transaction (a commit marker in each partition).
    produce(a, "lost", 15, false);
    produce(b, "new", 90, true);
    produce(b, "later", 60, false);

    let plan = succeeds(&args("failback", a, b));
    assert!(plan.contains("failback target -> source: ready"), "{plan}");
    for p in 0..PARTITIONS {
        assert!(
            plan.contains(&format!(
                "{TOPIC}-{p}: after the source->target copy's end, {}..{} (51 offsets)",
                110, 161
            )),
            "{plan}"
        );
        assert!(
            plan.contains(&format!(
                "{TOPIC}-{p} on source holds offsets 100..105 (5 offsets) that target never got"
            )),
            "{plan}"
        );
    }
    let mut apply = args("failback", a, b);
    apply.push("--apply".into());
    let done = succeeds(&apply);
    eprintln!("PLAN\n{plan}\nDONE\n{done}");
    assert!(done.contains("failback target -> source: done"), "{done}");
    assert!(
        done.contains("checkpoints rewritten: 3 partitions"),
        "{done}"
    );

    // A holds its own records, the ones B never got, then B's new ones, once.
    let on_a = keys_by_partition(a);
    let on_b = keys_by_partition(b);
    for p in 0..PARTITIONS as i32 {
        let expected: Vec<String> = ["old", "lost", "new", "later"]
            .iter()
            .flat_map(|prefix| with_prefix(&on_a, prefix)[&p].clone())
            .collect();
        assert_eq!(on_a[&p], expected, "a-{p}");
        for prefix in ["new", "later"] {
            assert_eq!(
                with_prefix(&on_a, prefix)[&p],
                with_prefix(&on_b, prefix)[&p],
                "a-{p}: {prefix}"
            );
        }
    }
    let copied_back = with_prefix(&on_a, "new")
        .values()
        .map(Vec::len)
        .sum::<usize>()
        + with_prefix(&on_a, "later")
            .values()
            .map(Vec::len)
            .sum::<usize>();
    assert_eq!(copied_back, 150);

    // Back to normal: producers on A, the A->B mirror restarted.
    produce(a, "after", 45, false);
    succeeds(&run);
    let on_b = keys_by_partition(b);
    for p in 0..PARTITIONS as i32 {
        let expected: Vec<String> = ["pre", "old", "new", "later", "after"]
            .iter()
            .flat_map(|prefix| with_prefix(&on_b, prefix)[&p].clone())
            .collect();
        assert_eq!(on_b[&p], expected, "b-{p}: in order, none twice");
        assert_eq!(with_prefix(&on_b, "after")[&p].len(), 15, "b-{p}");
        assert!(with_prefix(&on_b, "lost")[&p].is_empty(), "b-{p}");
    }
}
