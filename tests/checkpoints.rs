//! Checkpoints against a real broker: thousands of partitions, whose
//! checkpoints do not fit one batch of the checkpoint topic's
//! `max.message.bytes`, a checkpoint topic the loader cannot read, and the
//! offset map each checkpoint carries, across a restart.
//!
//! One cluster plays both sides (a flow between two aliases of it, with
//! prefixed target names), so the machine runs one broker holding all the
//! partitions rather than two.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use kafka_mirror::offset_map::{OffsetMap, Translation};
use kafka_testkit::{
    produce_with_librdkafka, read_partition_batches, ClusterSpec, KafkaCluster, ProduceOpts,
};

/// 6 topics of 1,000 partitions: 6,000 checkpoints of about 250 bytes (an
/// offset map of one point each), more than one batch of the default 1 MiB
/// `max.message.bytes` holds.
const TOPICS: usize = 6;
const PARTITIONS: u32 = 1_000;
/// Records per partition.
const PER_PARTITION: u64 = 8;
/// The checkpoint topic of the big run (its own, so the other test here can
/// put a record into its own without touching this one).
const CHECKPOINT_TOPIC: &str = "scale-checkpoints";

/// The one broker of this file: 12,000 partitions (source and copies) at
/// its default limits. A larger heap than the kit's default, and small index
/// files: each partition maps two of them, at 10 MiB each by default.
fn cluster() -> &'static KafkaCluster {
    static CLUSTER: OnceLock<KafkaCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        keep_files_in_memory();
        let mut spec = ClusterSpec::new(KAFKA, 1);
        spec.jvm_opts = Some(vec!["-Xmx1g".into(), "-Xms512m".into()]);
        spec.broker_props = vec![
            ("log.index.size.max.bytes".into(), "65536".into()),
            ("num.io.threads".into(), "2".into()),
        ];
        KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka: {e:#}"))
    })
}

/// Puts this test binary's temporary files, the broker's log directory
/// among them, in memory (`/dev/shm`) when it has room: a broker syncs two
/// files to disk for each partition it creates, and 12,000 partitions on a
/// shared disk at 5 ms a sync take two minutes.
fn keep_files_in_memory() {
    let shm = std::path::Path::new("/dev/shm");
    let free_kib = std::process::Command::new("df")
        .args(["-Pk", "/dev/shm"])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        });
    // The data and the segments' preallocated index files need a few hundred MiB.
    if shm.is_dir() && free_kib.is_some_and(|kib| kib > 2 * 1024 * 1024) {
        std::env::set_var("TMPDIR", shm);
    }
}

/// A flow from the cluster into itself: `big-N` becomes `a.big-N`. No
/// checkpoint is due before the end of a run (a long interval, and memory
/// enough for all the data), so the final write holds every partition.
fn flow_config(name: &str, include: &str, checkpoint_topic: &str) -> String {
    let bootstrap = cluster().bootstrap();
    config_file(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\n\
             [clusters.a]\nbootstrap_servers = \"{bootstrap}\"\n\
             [clusters.b]\nbootstrap_servers = \"{bootstrap}\"\n\
             [replication]\nin_flight_bytes = 268435456\n\
             [checkpoints]\ntopic = \"{checkpoint_topic}\"\ninterval_ms = 600000\n\
             [[flows]]\nsource = \"a\"\ntarget = \"b\"\n\
             topics = {{ include = \"{include}\", replication_policy = \"prefix\" }}\n"
        ),
    )
}

/// Runs the mirror with `--until-caught-up` at warning level (its info log
/// names every partition's start position) and requires a clean exit.
fn mirror_quietly(args: &[String]) -> String {
    let mirror = RunningMirror::spawn(
        mirror_command()
            .env("RUST_LOG", "kafka_mirror=warn")
            .args(args)
            .arg("--until-caught-up"),
    );
    let output = wait_with_limit(mirror, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kafka-mirror failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 60)
    );
    stdout
}

/// End offsets of every partition of the topics matching `pattern`, as
/// Kafka's GetOffsetShell reports them.
fn end_offsets(pattern: &str) -> BTreeMap<(String, i32), i64> {
    let cluster = cluster();
    let output = cluster
        .run_tool(
            "org.apache.kafka.tools.GetOffsetShell",
            [
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--topic",
                pattern,
            ],
        )
        .unwrap_or_else(|e| panic!("GetOffsetShell: {e:#}"));
    output
        .stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.rsplitn(3, ':');
            let offset = fields.next()?.trim().parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            Some(((fields.next()?.to_owned(), partition), offset))
        })
        .collect()
}

#[test]
fn six_thousand_partitions_are_checkpointed_and_not_copied_twice() {
    let cluster = cluster();
    let started = Instant::now();
    for t in 0..TOPICS {
        let topic = format!("big-{t}");
        cluster
            .create_topic(&topic, PARTITIONS, 1, &[])
            .expect("create topic");
        produce_with_librdkafka(
            &cluster.bootstrap(),
            &topic,
            &ProduceOpts {
                count: PER_PARTITION * u64::from(PARTITIONS),
                partitions: Some(PARTITIONS),
                key_prefix: topic.clone(),
                ..ProduceOpts::default()
            },
        )
        .unwrap_or_else(|e| panic!("produce into {topic}: {e:#}"));
    }
    let partitions = TOPICS * PARTITIONS as usize;
    let records = PER_PARTITION * partitions as u64;
    eprintln!(
        "{partitions} partitions, {records} records written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let args = vec![
        "run".into(),
        "--config".into(),
        flow_config("scale", "big-.*", CHECKPOINT_TOPIC),
    ];
    let first = Instant::now();
    let summary = mirror_quietly(&args);
    let first = first.elapsed();
    assert!(
        summary.contains(&format!(
            "replicated {TOPICS} topics, {partitions} partitions: {records} records"
        )),
        "{summary}"
    );
    let copied = end_offsets("a\\.big-.*");
    assert_eq!(copied.len(), partitions, "target partitions");
    for ((topic, partition), end) in &copied {
        assert_eq!(
            *end, PER_PARTITION as i64,
            "{topic}-{partition} after the first run"
        );
    }

    // Every batch the broker stored fits its limit (it refuses the others),
    // and together they hold a checkpoint for every partition.
    let batches = read_partition_batches(&cluster.log_dir(0), CHECKPOINT_TOPIC, 0)
        .unwrap_or_else(|e| panic!("read {CHECKPOINT_TOPIC}: {e:#}"));
    let sizes: Vec<usize> = batches.iter().map(|b| b.bytes.len()).collect();
    let stored: i64 = batches
        .iter()
        .map(|b| {
            i64::from(i32::from_be_bytes(
                b.bytes[57..61].try_into().expect("4 bytes"),
            ))
        })
        .sum();
    assert!(
        stored >= partitions as i64,
        "{stored} checkpoints stored for {partitions} partitions"
    );
    eprintln!(
        "first run: {:.1} s; {} checkpoint batches, {stored} records, largest {} bytes, {} bytes in all",
        first.as_secs_f64(),
        sizes.len(),
        sizes.iter().max().copied().unwrap_or_default(),
        sizes.iter().sum::<usize>()
    );
    // Each plain partition copied into an empty one: its offset map is one
    // point, every offset where it was on the source.
    let checkpoints = stored_checkpoints(cluster, CHECKPOINT_TOPIC, "scale/a->b");
    assert_eq!(checkpoints.len(), partitions);
    for ((topic, partition), checkpoint) in &checkpoints {
        let stored = checkpoint.offset_map.as_ref().expect("an offset map");
        let map = OffsetMap::from_stored(stored, checkpoint.next_offset).expect("a map");
        assert_eq!(map.points().count(), 1, "{topic}-{partition}: {stored:?}");
        for offset in 0..=PER_PARTITION as i64 {
            assert_eq!(map.translate(offset), Translation::Exact(offset));
        }
    }

    let second = Instant::now();
    let summary = mirror_quietly(&args);
    eprintln!(
        "second run: {:.1} s\n{summary}",
        second.elapsed().as_secs_f64()
    );
    assert!(
        summary.contains(&format!(
            "replicated {TOPICS} topics, {partitions} partitions: 0 records"
        )),
        "the second run copies nothing: {summary}"
    );
    assert_eq!(
        end_offsets("a\\.big-.*"),
        copied,
        "the second run wrote to the target"
    );
    for topic in ["big-0", &format!("big-{}", TOPICS - 1)] {
        let expected = records_by_partition(&cluster.bootstrap(), topic);
        let actual = records_by_partition(&cluster.bootstrap(), &format!("a.{topic}"));
        let count = assert_same_content(&expected, &actual, topic);
        assert_eq!(
            count as u64,
            PER_PARTITION * u64::from(PARTITIONS),
            "{topic}"
        );
    }
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_checkpoint_the_loader_cannot_read_fails_the_start() {
    let cluster = cluster();
    let (source_topic, checkpoint_topic) = ("garble-src", "garbled-checkpoints");
    cluster
        .create_topic(source_topic, 1, 1, &[])
        .expect("create topic");
    produce_keyed(cluster, source_topic, 10, 1, "data", None);
    // Another program wrote into the checkpoint topic: a key that is no checkpoint key.
    cluster
        .create_topic(checkpoint_topic, 1, 1, &[("cleanup.policy", "compact")])
        .expect("create topic");
    produce_keyed(cluster, checkpoint_topic, 1, 1, "not-json", None);
    let mut args = vec![
        "run".into(),
        "--config".into(),
        flow_config("garbled", source_topic, checkpoint_topic),
    ];
    args.push("--until-caught-up".into());
    let output = run_mirror(&args, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "checkpoint topic `garbled-checkpoints` partition 0: unreadable record at offset 0"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("refusing to start with only part of the checkpoints"),
        "{stderr}"
    );
    assert!(
        !topic_names(cluster).contains(&format!("a.{source_topic}"))
            || end_offsets(&format!("a\\.{source_topic}"))
                .values()
                .all(|&end| end == 0),
        "nothing is copied"
    );
}

#[test]
fn checkpoints_the_target_cannot_store_end_the_run_with_exit_3() {
    let cluster = cluster();
    let (source_topic, checkpoint_topic) = ("tiny-src", "tiny-checkpoints");
    cluster
        .create_topic(source_topic, 2, 1, &[])
        .expect("create topic");
    produce_keyed(cluster, source_topic, 20, 2, "data", None);
    // No checkpoint record fits a batch this topic takes.
    cluster
        .create_topic(
            checkpoint_topic,
            1,
            1,
            &[("cleanup.policy", "compact"), ("max.message.bytes", "100")],
        )
        .expect("create topic");
    let mut args = vec![
        "run".into(),
        "--config".into(),
        flow_config("tiny", source_topic, checkpoint_topic),
    ];
    args.push("--until-caught-up".into());
    let output = run_mirror(&args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHECKPOINTS NOT STORED [a->b]: 2 partitions (20 source offsets")
            && stdout.contains("over the topic's max.message.bytes 100")
            && stdout.contains("A restart resumes them from their stored checkpoints"),
        "{stdout}"
    );
}

/// A target partition that held records before, a source partition with
/// committed and aborted transactions and plain records between them, and
/// a restart with more of both: the offset map the second run stores still
/// starts where the first began, and translates every source offset to the
/// copy of the record a consumer that committed it reads next.
#[test]
fn the_offset_map_translates_every_offset_across_a_restart() {
    let cluster = cluster();
    let (topic, copy, checkpoint_topic) = ("map-src", "a.map-src", "map-checkpoints");
    cluster
        .create_topic(topic, 1, 1, &[])
        .expect("create topic");
    cluster.create_topic(copy, 1, 1, &[]).expect("create topic");
    // The target's own records: every copy lands 7 offsets further.
    produce_keyed(cluster, copy, 7, 1, "earlier", None);
    let produce = |prefix: &str, count: u64, transaction: Option<bool>| {
        produce_with_librdkafka(
            &cluster.bootstrap(),
            topic,
            &ProduceOpts {
                count,
                partitions: Some(1),
                key_prefix: prefix.into(),
                transactional_id: transaction.map(|_| format!("map-{prefix}")),
                abort: transaction == Some(false),
                ..ProduceOpts::default()
            },
        )
        .unwrap_or_else(|e| panic!("produce {prefix}: {e:#}"));
    };
    produce("committed-1", 5, Some(true));
    produce("aborted-1", 4, Some(false));
    produce("plain-1", 3, None);
    produce("committed-2", 4, Some(true));
    let args = vec![
        "run".into(),
        "--config".into(),
        flow_config("maps", topic, checkpoint_topic),
    ];
    mirror_quietly(&args);
    produce("aborted-2", 2, Some(false));
    produce("committed-3", 3, Some(true));
    produce("plain-2", 2, None);
    mirror_quietly(&args);

    let source = records_by_partition(&cluster.bootstrap(), topic)
        .remove(&0)
        .expect("data");
    let target = records_by_partition(&cluster.bootstrap(), copy)
        .remove(&0)
        .expect("data");
    let (earlier, copies) = target.split_at(7);
    assert!(earlier
        .iter()
        .all(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"earlier"))));
    let expected: Vec<&_> = source.iter().collect();
    assert_records(&expected, copies);
    let checkpoints = stored_checkpoints(cluster, checkpoint_topic, "maps/a->b");
    let checkpoint = &checkpoints[&(copy.to_owned(), 0)];
    assert_eq!(
        checkpoint.next_offset,
        offset_of(cluster, topic, 0, -1),
        "the whole partition is copied"
    );
    let checked = assert_translates_exactly(checkpoint, 0, &source, copies, topic);
    eprintln!("{checked} source offsets translate exactly: {checkpoint:?}");
}
