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
use kafka_testkit::{
    consume_group_with_java, consume_group_with_librdkafka, produce_with_librdkafka, DumpedRecord,
    Isolation, KafkaCluster, ProduceOpts,
};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;
const GROUP: &str = "app";

/// The independent client a group reads with.
#[derive(Debug, Clone, Copy)]
enum Client {
    Librdkafka,
    Java,
}

/// The group reads the topic on `cluster` with `client` from its committed
/// offsets, up to `max` records (librdkafka also stops at the end of every
/// partition), and commits what it read. Returns each partition's keys read.
fn read_as_group(client: Client, cluster: &KafkaCluster, max: u64) -> BTreeMap<i32, Vec<String>> {
    let bootstrap = cluster.bootstrap();
    let isolation = Isolation::ReadCommitted;
    let records = match client {
        Client::Librdkafka => {
            consume_group_with_librdkafka(&bootstrap, GROUP, TOPIC, max, isolation)
        }
        Client::Java => {
            consume_group_with_java(cluster.dist(), &bootstrap, GROUP, TOPIC, max, isolation)
        }
    }
    .unwrap_or_else(|e| panic!("{GROUP} reading with {client:?}: {e:#}"));
    let mut by_partition: BTreeMap<i32, Vec<DumpedRecord>> = BTreeMap::new();
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    by_partition
        .into_iter()
        .map(|(p, records)| (p, keys(&records)))
        .collect()
}

/// `kafka-mirror <command>` of the flow A->B under the name `dr`, for the group.
fn args(command: &str, a: &KafkaCluster, b: &KafkaCluster) -> Vec<String> {
    let mut args = run_args(a, b, "dr");
    args[0] = command.into();
    args.extend(["--topics", TOPIC, "--groups", GROUP].map(String::from));
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

/// A partition's records whose key has this prefix, in order.
fn records_of(cluster: &KafkaCluster, partition: i32, prefix: &str) -> Vec<DumpedRecord> {
    records_by_partition(&cluster.bootstrap(), TOPIC)
        .remove(&partition)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r.key
                .as_deref()
                .is_some_and(|k| k.starts_with(format!("{prefix}-").as_bytes()))
        })
        .collect()
}

/// The copies on `to` of `from`'s records with this prefix are those
/// records: key, value, headers and timestamp, in order.
fn assert_copied(from: &KafkaCluster, to: &KafkaCluster, prefix: &str) {
    for p in 0..PARTITIONS as i32 {
        let originals = records_of(from, p, prefix);
        assert!(!originals.is_empty(), "{prefix} in partition {p}");
        assert_records(
            &originals.iter().collect::<Vec<_>>(),
            &records_of(to, p, prefix),
        );
    }
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
    // Every record the group reads, each partition's in the order read.
    let mut read: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut record = |reads: BTreeMap<i32, Vec<String>>| {
        for (p, keys) in reads {
            read.entry(p).or_default().extend(keys);
        }
    };
    record(read_as_group(Client::Java, a, 120));

    // A->B with the group, until caught up; then the planned cutover.
    let mut run = args("run", a, b);
    run.push("--until-caught-up".into());
    succeeds(&run);
    let mut failover = args("failover", a, b);
    failover.push("--apply".into());
    succeeds(&failover);

    // The disaster: A takes records the mirror never copies. Producers
    // move to B, first in a transaction (a commit marker in each
    // partition); the group reads on B into the new records, more arrive.
    produce(a, "lost", 15, false);
    produce(b, "new", 90, true);
    let on_b = read_as_group(Client::Librdkafka, b, 180 + 45);
    // Where the group read no new record, it goes on at A's lost ones.
    let reads_lost: Vec<i32> = (0..PARTITIONS as i32)
        .filter(|p| {
            !on_b
                .get(p)
                .is_some_and(|keys| keys.iter().any(|k| k.starts_with("new-")))
        })
        .collect();
    record(on_b);
    produce(b, "later", 60, false);

    let plan = succeeds(&args("failback", a, b));
    assert!(plan.contains("failback target -> source: ready"), "{plan}");
    for p in 0..PARTITIONS {
        // B: 10 of its own, 100 copied, 30 new, a marker, 20 later.
        assert!(
            plan.contains(&format!(
                "{TOPIC}-{p}: after the source->target copy's end, 110..161 (51 offsets)"
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
    assert!(done.contains("failback target -> source: done"), "{done}");
    assert!(done.contains("groups: 1 synced"), "{done}");
    assert!(
        done.contains("checkpoints rewritten: 3 partitions"),
        "{done}"
    );

    // A holds its own records, the ones B never got, then B's new ones, once.
    let on_a = keys_by_partition(a);
    for p in 0..PARTITIONS as i32 {
        let expected: Vec<String> = ["old", "lost", "new", "later"]
            .iter()
            .flat_map(|prefix| with_prefix(&on_a, prefix)[&p].clone())
            .collect();
        assert_eq!(on_a[&p], expected, "a-{p}");
        assert_eq!(with_prefix(&on_a, "new")[&p].len(), 30, "a-{p}");
    }
    assert_copied(b, a, "new");
    assert_copied(b, a, "later");
    // The group, back on A, reads what it had not read on B.
    let unread_on_b = 300 - 120 + 90 + 60 - (180 + 45);
    let lost_to_read = 5 * reads_lost.len() as u64;
    record(read_as_group(Client::Java, a, unread_on_b + lost_to_read));

    // Back to normal: producers on A, the group reads some, the A->B mirror
    // restarts, and the group moves to B once more.
    produce(a, "after", 45, false);
    record(read_as_group(Client::Librdkafka, a, 21));
    succeeds(&run);
    let on_b = keys_by_partition(b);
    for p in 0..PARTITIONS as i32 {
        let expected: Vec<String> = ["pre", "old", "new", "later", "after"]
            .iter()
            .flat_map(|prefix| with_prefix(&on_b, prefix)[&p].clone())
            .collect();
        assert_eq!(on_b[&p], expected, "b-{p}: in order, none twice");
        assert!(with_prefix(&on_b, "lost")[&p].is_empty(), "b-{p}");
    }
    assert_copied(a, b, "after");
    record(read_as_group(Client::Java, b, 45 - 21));

    // Across four moves the group read every record once, in order: A's
    // own, the ones B never got where it had read nothing new on B, B's.
    let on_a = keys_by_partition(a);
    for p in 0..PARTITIONS as i32 {
        let prefixes: &[&str] = if reads_lost.contains(&p) {
            &["old", "lost", "new", "later", "after"]
        } else {
            &["old", "new", "later", "after"]
        };
        let expected: Vec<String> = prefixes
            .iter()
            .flat_map(|prefix| with_prefix(&on_a, prefix)[&p].clone())
            .collect();
        assert_eq!(read.get(&p), Some(&expected), "the group in partition {p}");
    }
}
