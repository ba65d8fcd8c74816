//! Shared support for the integration tests: real Kafka clusters from the
//! testkit, the `kafka-mirror` binary as a child process, and checks that
//! compare source and target the way a user would: record by record through
//! an independent client (librdkafka), and batch by batch from the brokers'
//! own segment files.

#![allow(dead_code, unreachable_pub)]

pub mod answer_dropper;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kafka_mirror::checkpoint::Checkpoint;
use kafka_mirror::offset_map::{OffsetMap, Translation};
use kafka_testkit::{
    dump_topic_with, produce_with_librdkafka, read_partition_batches, ClusterSpec, Compression,
    DumpedRecord, KafkaCluster, ProduceOpts, RawBatch,
};

/// The Kafka version of the clusters most tests use.
pub const KAFKA: &str = kafka_testkit::DEFAULT_KAFKA_VERSION;

/// A source and a target cluster, shared by the tests of one test binary.
pub struct Clusters {
    pub source: KafkaCluster,
    pub target: KafkaCluster,
}

/// This test binary's source and target (one node each, the default
/// version, these broker settings), started by the first test that asks.
pub fn shared_clusters(
    source_props: &[(&str, &str)],
    target_props: &[(&str, &str)],
) -> &'static Clusters {
    shared_clusters_with(1, source_props, target_props)
}

/// [`shared_clusters`] with a target of `target_nodes` nodes (1 or 3).
pub fn shared_clusters_with(
    target_nodes: usize,
    source_props: &[(&str, &str)],
    target_props: &[(&str, &str)],
) -> &'static Clusters {
    static CLUSTERS: std::sync::OnceLock<Clusters> = std::sync::OnceLock::new();
    CLUSTERS.get_or_init(|| Clusters {
        source: start_cluster(KAFKA, 1, source_props),
        target: start_cluster(KAFKA, target_nodes, target_props),
    })
}

/// Starts a cluster or fails the test with the testkit's explanation.
pub fn start_cluster(version: &str, nodes: usize, props: &[(&str, &str)]) -> KafkaCluster {
    let mut spec = ClusterSpec::new(version, nodes);
    spec.broker_props = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka {version}: {e:#}"))
}

/// The `kafka-mirror` binary built for this test run.
pub fn mirror_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafka-mirror"));
    // KAFKA_MIRROR_TEST_LOG=debug shows the mirror's own debugging in failures.
    let level = std::env::var("KAFKA_MIRROR_TEST_LOG").unwrap_or_else(|_| "info".into());
    command.env("RUST_LOG", format!("kafka_mirror={level}"));
    command
}

/// `kafka-mirror run` arguments between two clusters under a mirror name.
pub fn run_args(source: &KafkaCluster, target: &KafkaCluster, name: &str) -> Vec<String> {
    vec![
        "run".into(),
        "--source".into(),
        source.bootstrap(),
        "--target".into(),
        target.bootstrap(),
        "--name".into(),
        name.into(),
    ]
}

/// Runs the mirror to completion with a time limit; returns its output.
pub fn run_mirror(args: &[String], limit: Duration) -> Output {
    wait_with_limit(RunningMirror::spawn(mirror_command().args(args)), limit)
}

/// A mirror process whose stdout and stderr are read while it runs. A pipe
/// nobody reads fills at 64 KiB; the mirror's next log line then blocks its
/// runtime, which looks exactly like a stall of its own (and ignores SIGTERM).
pub struct RunningMirror {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl RunningMirror {
    /// Starts `command` with both outputs piped and read from the start.
    pub fn spawn(command: &mut Command) -> RunningMirror {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kafka-mirror")
            .into()
    }

    /// The process id, for signals.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Polls until `check` holds, as [`eventually`] does, and fails with the
    /// mirror's log if it exits first or the limit passes (killing it).
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let started = Instant::now();
        while !check() {
            let exited = self.child.try_wait().expect("poll kafka-mirror");
            if exited.is_some() || started.elapsed() > limit {
                let failure = match exited {
                    Some(status) => format!("exited ({status}) before it got to {what}"),
                    None => format!("did not get to {what} within {limit:?}"),
                };
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self
                    .stderr
                    .take()
                    .map_or_else(Vec::new, |r| r.join().expect("output reader"));
                let stderr = String::from_utf8_lossy(&stderr);
                show_mirror_log(thread::current().name().unwrap_or("test"), &stderr);
                panic!("kafka-mirror {failure}:\n{}", tail(&stderr, 40));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the exit and collects what it wrote.
    fn output(mut self) -> Output {
        let status = self.child.wait().expect("wait for kafka-mirror");
        let collect = |reader: Option<JoinHandle<Vec<u8>>>| {
            reader.map_or_else(Vec::new, |r| r.join().expect("output reader"))
        };
        Output {
            status,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        }
    }
}

/// A mirror still running when the test lets go of it (a failed assertion
/// unwinding) is killed: nothing else would stop it, and it would go on
/// writing into clusters other tests use.
impl Drop for RunningMirror {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the child's piped outputs from now on.
impl From<Child> for RunningMirror {
    fn from(mut child: Child) -> RunningMirror {
        let stdout = child.stdout.take().map(read_to_end_aside);
        let stderr = child.stderr.take().map(read_to_end_aside);
        RunningMirror {
            child,
            stdout,
            stderr,
        }
    }
}

/// Reads a pipe to its end on a thread of its own.
fn read_to_end_aside(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        // A read error ends the output; the exit status tells the rest.
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Waits for a mirror, killing it if it overruns.
pub fn wait_with_limit(mirror: impl Into<RunningMirror>, limit: Duration) -> Output {
    let mut mirror = mirror.into();
    let started = Instant::now();
    loop {
        if mirror
            .child
            .try_wait()
            .expect("poll kafka-mirror")
            .is_some()
        {
            return mirror.output();
        }
        if started.elapsed() > limit {
            let _ = mirror.child.kill();
            let output = mirror.output();
            panic!(
                "kafka-mirror did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                tail(&String::from_utf8_lossy(&output.stderr), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the mirror with `--until-caught-up` and requires a clean exit.
pub fn mirror_until_caught_up(args: &[String]) -> String {
    let mut args = args.to_vec();
    args.push("--until-caught-up".into());
    let output = run_mirror(&args, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "kafka-mirror failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 60)
    );
    stdout
}

/// The last lines of a text.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Records of a topic grouped by partition, in offset order (read_committed).
pub fn records_by_partition(bootstrap: &str, topic: &str) -> BTreeMap<i32, Vec<DumpedRecord>> {
    records_by_partition_with(bootstrap, topic, true)
}

/// [`records_by_partition`] choosing the isolation level.
pub fn records_by_partition_with(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
) -> BTreeMap<i32, Vec<DumpedRecord>> {
    let mut by_partition: BTreeMap<i32, Vec<DumpedRecord>> = BTreeMap::new();
    let records = dump_topic_with(bootstrap, topic, read_committed)
        .unwrap_or_else(|e| panic!("dump {topic}: {e:#}"));
    for record in records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for records in by_partition.values() {
        assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    }
    by_partition
}

/// Records whose key already came earlier in the same partition: on a
/// target copied from distinct keys, the copies written twice.
pub fn duplicate_keys(records: &BTreeMap<i32, Vec<DumpedRecord>>) -> usize {
    records
        .values()
        .map(|records| {
            let mut seen = std::collections::HashSet::new();
            records.iter().filter(|r| !seen.insert(&r.key)).count()
        })
        .sum()
}

/// Keeps a mirror's log for after the test (`<test>-mirror.log` in Cargo's
/// temp dir) and prints its warnings and errors, which the test harness
/// shows when the test fails.
pub fn show_mirror_log(test: &str, stderr: &str) {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-mirror.log"));
    if std::fs::write(&log, stderr.as_bytes()).is_ok() {
        eprintln!("the mirror's log: {}", log.display());
    }
    for line in stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        eprintln!("mirror: {line}");
    }
}

/// What a user compares between a source record and its copy: everything but the offset.
fn content(record: &DumpedRecord) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        record.partition,
        &record.key,
        &record.value,
        &record.headers,
        record.timestamp_type,
        record.timestamp,
    )
}

/// Asserts two dumps hold the same records: same partitions, and in each the
/// same order, key, value, headers and timestamp (offsets may differ).
/// Returns the count.
pub fn assert_same_content(
    expected: &BTreeMap<i32, Vec<DumpedRecord>>,
    actual: &BTreeMap<i32, Vec<DumpedRecord>>,
    what: &str,
) -> usize {
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "{what}: partitions holding data differ"
    );
    let mut count = 0;
    for (partition, expected_records) in expected {
        let actual_records = &actual[partition];
        assert_eq!(
            expected_records.len(),
            actual_records.len(),
            "{what}-{partition}: record count differs"
        );
        for (e, a) in expected_records.iter().zip(actual_records) {
            assert_eq!(
                content(e),
                content(a),
                "{what}-{partition}: expected offset {} differs from actual offset {}",
                e.offset,
                a.offset
            );
        }
        count += expected_records.len();
    }
    count
}

/// Asserts the target topic holds exactly the source topic's records: same
/// partition, order, key, value, headers and timestamp. Returns the count.
pub fn assert_same_records(source: &KafkaCluster, target: &KafkaCluster, topic: &str) -> usize {
    let expected = records_by_partition(&source.bootstrap(), topic);
    let actual = records_by_partition(&target.bootstrap(), topic);
    assert_same_content(&expected, &actual, topic)
}

/// Asserts the stored target batches of a topic are the source's batches,
/// byte for byte, apart from what the broker assigns (base offset, partition
/// leader epoch, CRC) and the producer fields kafka-mirror rewrites.
pub fn assert_same_batches(
    source: &KafkaCluster,
    target: &KafkaCluster,
    topic: &str,
    partitions: i32,
) -> usize {
    let mut compared = 0;
    for partition in 0..partitions {
        let source_batches = data_batches(&source.log_dir(0), topic, partition);
        let target_batches = data_batches(&target.log_dir(0), topic, partition);
        assert_eq!(
            source_batches.len(),
            target_batches.len(),
            "{topic}-{partition}: batch count differs"
        );
        let mut mirror_producer = None;
        for (s, t) in source_batches.iter().zip(&target_batches) {
            let (s, t) = (&s.bytes, &t.bytes);
            assert_eq!(
                s.len(),
                t.len(),
                "{topic}-{partition}: batch length differs"
            );
            assert_eq!(s[8..12], t[8..12], "batchLength");
            assert_eq!(s[16], t[16], "magic");
            // attributes, lastOffsetDelta, base and max timestamps
            assert_eq!(
                s[21..43],
                t[21..43],
                "{topic}-{partition}: attributes/offsets/timestamps differ"
            );
            // recordsCount and the records themselves, still compressed
            assert_eq!(s[57..], t[57..], "{topic}-{partition}: records differ");
            let producer_id = i64::from_be_bytes(t[43..51].try_into().expect("8 bytes"));
            assert!(
                producer_id >= 0,
                "target batch written without a producer id"
            );
            assert_eq!(
                *mirror_producer.get_or_insert(producer_id),
                producer_id,
                "one mirror run writes as one producer"
            );
            compared += 1;
        }
    }
    compared
}

fn data_batches(log_dir: &Path, topic: &str, partition: i32) -> Vec<RawBatch> {
    read_partition_batches(log_dir, topic, partition)
        .unwrap_or_else(|e| panic!("read {topic}-{partition} segments: {e:#}"))
        .into_iter()
        .filter(|b| !b.is_control())
        .collect()
}

/// The checkpoints mirror `mirror` stored in `checkpoint_topic`, read with an
/// independent client: the latest value of each target topic and partition.
pub fn stored_checkpoints(
    cluster: &KafkaCluster,
    checkpoint_topic: &str,
    mirror: &str,
) -> BTreeMap<(String, i32), Checkpoint> {
    let mut stored = BTreeMap::new();
    let records = records_by_partition(&cluster.bootstrap(), checkpoint_topic);
    for record in records.into_values().flatten() {
        let key: serde_json::Value =
            serde_json::from_slice(record.key.as_deref().expect("keyed")).expect("a JSON key");
        if key["mirror"] != mirror {
            continue;
        }
        let topic = key["topic"].as_str().expect("a topic").to_owned();
        let partition = key["partition"].as_i64().expect("a partition") as i32;
        match &record.value {
            Some(value) => {
                let checkpoint = serde_json::from_slice(value).expect("a checkpoint");
                stored.insert((topic, partition), checkpoint)
            }
            None => stored.remove(&(topic, partition)),
        };
    }
    stored
}

/// Asserts that the offset map `checkpoint` stored translates every source
/// offset from `from` to its next offset as a failed-over consumer needs:
/// one that committed offset `c` on the source resumes on the target at the
/// copy of the first record at or after `c` (`source[i]` was copied as
/// `copies[i]`), or after the last copy when no record from `c` on is
/// copied. Returns the offsets checked.
pub fn assert_translates_exactly(
    checkpoint: &Checkpoint,
    from: i64,
    source: &[DumpedRecord],
    copies: &[DumpedRecord],
    what: &str,
) -> usize {
    assert_eq!(source.len(), copies.len(), "{what}: records copied");
    let stored = checkpoint
        .offset_map
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the checkpoint holds no offset map"));
    let map = OffsetMap::from_stored(stored, checkpoint.next_offset)
        .unwrap_or_else(|| panic!("{what}: the stored offset map is damaged: {stored:?}"));
    let copy_end = copies.last().map_or(Translation::NothingCopied, |last| {
        Translation::Exact(last.offset + 1)
    });
    for committed in from..=checkpoint.next_offset {
        let expected = source
            .iter()
            .position(|r| r.offset >= committed)
            .map_or(copy_end, |i| Translation::Exact(copies[i].offset));
        assert_eq!(
            map.translate(committed),
            expected,
            "{what}: source offset {committed}"
        );
    }
    (checkpoint.next_offset - from + 1) as usize
}

/// Writes a file for the mirror to read (a config, a properties file) into
/// the temp directory; `name` is unique within one test binary. Returns its path.
pub fn config_file(name: &str, text: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("kafka-mirror-test-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// The count after `label` in the summary, e.g. `re-encoded: 12 compacted`;
/// 0 when the summary has no such line.
pub fn summary_count(summary: &str, label: &str) -> u64 {
    summary
        .split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Polls until `check` holds or the limit passes.
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Topic names on a cluster, listed by Kafka's own TopicCommand.
pub fn topic_names(cluster: &KafkaCluster) -> Vec<String> {
    let output = cluster
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            ["--bootstrap-server", &cluster.bootstrap(), "--list"],
        )
        .unwrap_or_else(|e| panic!("TopicCommand --list: {e:#}"));
    output.stdout.lines().map(str::to_owned).collect()
}

/// A partition's offset as Kafka's GetOffsetShell reports it: `-2` is the log
/// start, `-1` the log end.
pub fn offset_of(cluster: &KafkaCluster, topic: &str, partition: i32, time: i64) -> i64 {
    get_offsets(cluster, topic, Some(partition), time)
        .get(&partition)
        .copied()
        .unwrap_or_else(|| panic!("GetOffsetShell reported no offset of {topic}-{partition}"))
}

/// [`offset_of`] every partition of a topic, in one run of the tool.
pub fn offsets(cluster: &KafkaCluster, topic: &str, time: i64) -> BTreeMap<i32, i64> {
    get_offsets(cluster, topic, None, time)
}

/// GetOffsetShell's offsets of one partition of a topic, or of all.
fn get_offsets(
    cluster: &KafkaCluster,
    topic: &str,
    partition: Option<i32>,
    time: i64,
) -> BTreeMap<i32, i64> {
    let mut args = vec![
        "--bootstrap-server".to_owned(),
        cluster.bootstrap(),
        "--topic".to_owned(),
        topic.to_owned(),
        "--time".to_owned(),
        time.to_string(),
    ];
    if let Some(partition) = partition {
        args.extend(["--partitions".to_owned(), partition.to_string()]);
    }
    let output = cluster
        .run_tool("org.apache.kafka.tools.GetOffsetShell", args)
        .unwrap_or_else(|e| panic!("GetOffsetShell: {e:#}"));
    // Lines look like `topic:partition:offset`.
    output
        .stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().rsplitn(3, ':');
            let offset = fields.next()?.parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            Some((partition, offset))
        })
        .collect()
}

/// A transaction as Kafka's own TransactionsCommand lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransaction {
    pub transactional_id: String,
    /// The broker (node id) coordinating it.
    pub coordinator: usize,
    /// `Ongoing`, `PrepareCommit`, `CompleteAbort`, `Empty`, ...
    pub state: String,
}

impl ListedTransaction {
    /// Begun and not yet completed: a read_committed reader waits at its first record.
    pub fn is_open(&self) -> bool {
        self.state == "Ongoing" || self.state.starts_with("Prepare")
    }
}

/// Every transactional id a cluster's coordinators know, listed by Kafka's
/// own TransactionsCommand.
pub fn transactions(cluster: &KafkaCluster) -> Vec<ListedTransaction> {
    let output = cluster
        .run_tool(
            "org.apache.kafka.tools.TransactionsCommand",
            ["--bootstrap-server", &cluster.running_bootstrap(), "list"],
        )
        .unwrap_or_else(|e| panic!("TransactionsCommand list: {e:#}"));
    // A header line, then `TransactionalId Coordinator ProducerId TransactionState ...`.
    output
        .stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(ListedTransaction {
                transactional_id: fields.first()?.to_string(),
                coordinator: fields.get(1)?.parse().ok()?,
                state: fields.get(3)?.to_string(),
            })
        })
        .collect()
}

/// Waits until no transaction on `cluster` is open (one a killed mirror left
/// is aborted when its timeout passes), so that a read_committed reader reads
/// to the end; returns how long that took.
pub fn wait_until_no_transaction_open(cluster: &KafkaCluster, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let open: Vec<ListedTransaction> = transactions(cluster)
            .into_iter()
            .filter(ListedTransaction::is_open)
            .collect();
        if open.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "transactions still open after {limit:?}: {open:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Produces `count` records with librdkafka into `topic`, round-robin over
/// `partitions`, keys `<prefix>-<i>`, timestamps from `base_timestamp_ms`
/// (an hour ago when `None`). Returns them as acknowledged, in order.
pub fn produce_keyed(
    cluster: &KafkaCluster,
    topic: &str,
    count: u64,
    partitions: u32,
    prefix: &str,
    base_timestamp_ms: Option<i64>,
) -> Vec<DumpedRecord> {
    kafka_testkit::produce_with_librdkafka(
        &cluster.bootstrap(),
        topic,
        &kafka_testkit::ProduceOpts {
            count,
            partitions: Some(partitions),
            key_prefix: prefix.into(),
            base_timestamp_ms,
            ..kafka_testkit::ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce into {topic}: {e:#}"))
}

/// Writes a topic the way real producers do, with clients nobody here wrote:
/// `keyed` records from librdkafka (idempotent; keys, headers, tombstones,
/// explicit timestamps) and then `plain` 300-byte records from Kafka's own
/// Java producer (idempotent by default since 3.0), both with `codec`.
pub fn produce_with_both_clients(
    cluster: &KafkaCluster,
    topic: &str,
    partitions: u32,
    codec: kafka_testkit::Compression,
    keyed: u64,
    plain: u64,
) {
    kafka_testkit::produce_with_librdkafka(
        &cluster.bootstrap(),
        topic,
        &kafka_testkit::ProduceOpts {
            count: keyed,
            partitions: Some(partitions),
            compression: codec,
            idempotence: true,
            ..kafka_testkit::ProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce into {topic} with librdkafka: {e:#}"));
    kafka_testkit::produce_with_java(
        cluster.dist(),
        &cluster.bootstrap(),
        topic,
        &kafka_testkit::JavaProduceOpts {
            num_records: plain,
            record_size: 300,
            compression: codec,
            ..kafka_testkit::JavaProduceOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("produce into {topic} with the Java producer: {e:#}"));
}

/// Sets (or changes) a topic config with Kafka's own ConfigCommand.
pub fn alter_topic_config(cluster: &KafkaCluster, topic: &str, config: &str) {
    cluster
        .run_tool(
            cluster.dist().config_command_class(),
            [
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--alter",
                "--entity-type",
                "topics",
                "--entity-name",
                topic,
                "--add-config",
                config,
            ],
        )
        .unwrap_or_else(|e| panic!("ConfigCommand --alter {topic} {config}: {e:#}"));
}

/// The configs set on a topic itself, as Kafka's own ConfigCommand lists them.
pub fn topic_configs(cluster: &KafkaCluster, topic: &str) -> BTreeMap<String, String> {
    let output = cluster
        .run_tool(
            cluster.dist().config_command_class(),
            [
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--describe",
                "--entity-type",
                "topics",
                "--entity-name",
                topic,
            ],
        )
        .unwrap_or_else(|e| panic!("ConfigCommand --describe: {e:#}"));
    // Lines look like `  cleanup.policy=compact sensitive=false synonyms={...}`.
    output
        .stdout
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| {
            let setting = line.trim().split(' ').next()?;
            let (key, value) = setting.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Sends a signal to a running mirror with the `kill` command: `-STOP`,
/// `-CONT`, `-TERM`.
pub fn signal(mirror: &RunningMirror, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &mirror.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}

/// Sends SIGTERM to a running mirror and waits for it to exit (the shutdown
/// a service manager does).
pub fn terminate(mirror: impl Into<RunningMirror>) -> Output {
    let mirror = mirror.into();
    signal(&mirror, "-TERM");
    wait_with_limit(mirror, Duration::from_secs(60))
}

/// Kills a running mirror with SIGKILL (a crash: nothing of it runs
/// afterwards) and collects what it wrote.
pub fn kill_hard(mirror: impl Into<RunningMirror>) -> Output {
    let mut mirror = mirror.into();
    mirror.child.kill().expect("SIGKILL kafka-mirror");
    mirror.output()
}

/// Asserts `actual` holds exactly the `expected` records, in order: key,
/// value, headers and timestamp.
pub fn assert_records(expected: &[&DumpedRecord], actual: &[DumpedRecord]) {
    assert_records_of("", expected, actual);
}

/// [`assert_records`] naming `what` is compared in a failure.
pub fn assert_records_of(what: &str, expected: &[&DumpedRecord], actual: &[DumpedRecord]) {
    assert_eq!(actual.len(), expected.len(), "{what}: record count differs");
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(
            (&e.key, &e.value, &e.headers, e.timestamp),
            (&a.key, &a.value, &a.headers, a.timestamp),
            "{what}: record {i}"
        );
    }
}

/// Settings of a compacted topic the source cleaner (`log.cleaner.backoff.ms`
/// 200) cleans soon after a segment rolls; tombstones go after a second.
pub const QUICKLY_COMPACTED: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("delete.retention.ms", "1000"),
];

/// Creates a [`QUICKLY_COMPACTED`] topic and writes it in three rounds of
/// 1500 records, so that the cleaner finds several segments, shaped by
/// `opts` (give it few `distinct_keys`: many updates per key); keys
/// `k-<n>`, an idempotent producer in the second round.
pub fn write_compactable(source: &KafkaCluster, topic: &str, partitions: i32, opts: &ProduceOpts) {
    source
        .create_topic(topic, partitions as u32, 1, QUICKLY_COMPACTED)
        .expect("create topic");
    for round in 0..3 {
        produce_with_librdkafka(
            &source.bootstrap(),
            topic,
            &ProduceOpts {
                count: 1500,
                partitions: Some(partitions as u32),
                key_prefix: "k".into(),
                idempotence: round == 1,
                ..opts.clone()
            },
        )
        .expect("produce");
    }
}

/// Lets the cleaner compact topics filled by [`write_compactable`]: one more
/// record per partition after `segment.ms` rolls the segments holding the
/// last rounds, so the cleaner may clean them, then [`wait_for_cleaner`].
pub fn compact(
    source: &KafkaCluster,
    topics: &[String],
    partitions: i32,
) -> Vec<Vec<(i32, Vec<u8>)>> {
    std::thread::sleep(Duration::from_millis(300));
    for topic in topics {
        produce_keyed(
            source,
            topic,
            partitions as u64,
            partitions as u32,
            "roll",
            None,
        );
    }
    wait_for_cleaner(source, topics, partitions)
}

/// Every stored batch of a topic's partitions `0..partitions`, by partition.
pub fn stored_batches(
    cluster: &KafkaCluster,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<RawBatch>> {
    (0..partitions)
        .map(|p| {
            let batches = read_partition_batches(&cluster.log_dir(0), topic, p)
                .unwrap_or_else(|e| panic!("read {topic}-{p} segments: {e:#}"));
            (p, batches)
        })
        .collect()
}

/// Stored data batches whose offsets have gaps.
pub fn gapped_batches(batches: &BTreeMap<i32, Vec<RawBatch>>) -> usize {
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
pub fn batches_fingerprint(batches: &BTreeMap<i32, Vec<RawBatch>>) -> Vec<(i32, Vec<u8>)> {
    batches
        .iter()
        .flat_map(|(p, bs)| bs.iter().map(move |b| (*p, b.bytes.clone())))
        .collect()
}

/// Waits until the cleaner has left gapped batches in every topic and then
/// left the topics alone for a while, so that what the mirror copies and
/// what the source holds afterwards are the same. Returns the topics'
/// [`batches_fingerprint`]s.
pub fn wait_for_cleaner(
    source: &KafkaCluster,
    topics: &[String],
    partitions: i32,
) -> Vec<Vec<(i32, Vec<u8>)>> {
    let started = Instant::now();
    let limit = Duration::from_secs(120);
    let quiet = Duration::from_secs(4);
    let mut last = Vec::new();
    let mut unchanged_since = Instant::now();
    loop {
        let now: Vec<BTreeMap<i32, Vec<RawBatch>>> = topics
            .iter()
            .map(|t| stored_batches(source, t, partitions))
            .collect();
        let prints: Vec<_> = now.iter().map(batches_fingerprint).collect();
        if prints != last {
            last = prints;
            unchanged_since = Instant::now();
        }
        let all_gapped = now.iter().all(|t| gapped_batches(t) > 0);
        if all_gapped && unchanged_since.elapsed() >= quiet {
            return last;
        }
        assert!(
            started.elapsed() < limit,
            "the log cleaner did not leave gapped batches in every topic within {limit:?}: {:?}",
            topics
                .iter()
                .zip(&now)
                .map(|(t, b)| (t, gapped_batches(b)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes rounds of 500 records into a source topic's `partitions` until
/// stopped: librdkafka, idempotent, keys `<topic>-<round>-<i>` (each key
/// once), values, headers, timestamps, each round with the next codec.
pub struct LiveProducer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl LiveProducer {
    pub fn start(source: &KafkaCluster, topic: &str, partitions: u32) -> LiveProducer {
        const CODECS: [Compression; 5] = [
            Compression::None,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Gzip,
            Compression::Snappy,
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let bootstrap = source.bootstrap();
        let topic = topic.to_owned();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut produced = 0;
            let mut round = 0;
            while !stopped.load(Ordering::SeqCst) {
                let opts = ProduceOpts {
                    count: 500,
                    partitions: Some(partitions),
                    compression: CODECS[round % CODECS.len()],
                    key_prefix: format!("{topic}-{round}"),
                    idempotence: true,
                    ..ProduceOpts::default()
                };
                produced += produce_with_librdkafka(&bootstrap, &topic, &opts)
                    .unwrap_or_else(|e| panic!("produce into {topic}: {e:#}"))
                    .len();
                round += 1;
            }
            produced
        });
        LiveProducer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the current round; returns how many records were written.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("running");
        thread.join().expect("the producer thread failed")
    }
}

/// A test that fails leaves the producer to end after its round.
impl Drop for LiveProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How many records (and markers) `target` holds of `topic`: its
/// partitions' end offsets added up, 0 before the mirror created it.
pub fn copied_so_far(target: &KafkaCluster, topic: &str) -> i64 {
    if !topic_names(target).iter().any(|t| t == topic) {
        return 0;
    }
    offsets(target, topic, -1).values().sum()
}

/// Asserts a read_committed reader of the target sees each of the `produced`
/// source records exactly once: same partition, order, key, value, headers
/// and timestamp. Prints what a read_uncommitted reader sees.
pub fn assert_exactly_once(
    source: &KafkaCluster,
    target: &KafkaCluster,
    topic: &str,
    produced: usize,
) {
    let expected = records_by_partition(&source.bootstrap(), topic);
    assert_eq!(
        duplicate_keys(&expected),
        0,
        "{topic}: each key once on the source"
    );
    let committed = records_by_partition(&target.bootstrap(), topic);
    let twice = duplicate_keys(&committed);
    assert_eq!(
        twice, 0,
        "{topic}: {twice} records appear twice to a read_committed reader"
    );
    assert_eq!(
        assert_same_content(&expected, &committed, topic),
        produced,
        "{topic}: records produced"
    );
    let uncommitted = records_by_partition_with(&target.bootstrap(), topic, false);
    let seen: usize = uncommitted.values().map(Vec::len).sum();
    eprintln!(
        "{topic}: a read_uncommitted reader sees {seen} records for {produced}: {} copies \
         written again after their transaction was aborted",
        duplicate_keys(&uncommitted)
    );
}

/// Asserts the target holds every record of the source topic (distinct
/// keys), in order per partition with key, value, headers and timestamp,
/// counting each record's first copy; returns the bytes of the source
/// batches holding a record copied more than once: what a lost instance
/// had written past its stored checkpoint, which its successor writes again.
pub fn assert_at_least_once(source: &KafkaCluster, target: &KafkaCluster, topic: &str) -> usize {
    let source_records = records_by_partition(&source.bootstrap(), topic);
    let target_records = records_by_partition(&target.bootstrap(), topic);
    let mut duplicated_batch_bytes = 0;
    for (partition, expected) in &source_records {
        let actual = target_records.get(partition).map_or(&[][..], Vec::as_slice);
        // Each record's first copy, in target order, is the source partition.
        let mut seen = HashSet::new();
        let firsts: Vec<&DumpedRecord> = actual
            .iter()
            .filter(|r| seen.insert(r.key.clone()))
            .collect();
        assert_eq!(
            firsts.len(),
            expected.len(),
            "{topic}-{partition}: records missing"
        );
        for (s, t) in expected.iter().zip(&firsts) {
            assert_eq!(
                (&s.key, &s.value, &s.headers, s.timestamp),
                (&t.key, &t.value, &t.headers, t.timestamp),
                "{topic}-{partition}"
            );
        }
        if actual.len() == firsts.len() {
            continue;
        }
        // The repeated records, measured as the source batches that hold them.
        let mut count: HashMap<&Option<Vec<u8>>, usize> = HashMap::new();
        for r in actual {
            *count.entry(&r.key).or_insert(0) += 1;
        }
        let offsets: Vec<i64> = expected
            .iter()
            .filter(|r| count.get(&r.key).is_some_and(|&n| n > 1))
            .map(|r| r.offset)
            .collect();
        for batch in read_partition_batches(&source.log_dir(0), topic, *partition)
            .unwrap_or_else(|e| panic!("read {topic}-{partition} segments: {e:#}"))
        {
            let last = batch.base_offset() + i64::from(batch.last_offset_delta());
            if offsets
                .iter()
                .any(|o| (batch.base_offset()..=last).contains(o))
            {
                duplicated_batch_bytes += batch.bytes.len();
            }
        }
    }
    duplicated_batch_bytes
}

/// The largest batch stored in any of a topic's `partitions` on `cluster`.
pub fn largest_batch(cluster: &KafkaCluster, topic: &str, partitions: i32) -> usize {
    stored_batches(cluster, topic, partitions)
        .values()
        .flatten()
        .map(|b| b.bytes.len())
        .max()
        .unwrap_or(0)
}
