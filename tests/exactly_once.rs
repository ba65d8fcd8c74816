//! Exactly-once mode (`kafka-mirror run --exactly-once`) against real
//! brokers: whatever is killed, stalled or bounced when, a `read_committed`
//! reader of the target (librdkafka, which nobody here wrote) sees every
//! source record exactly once, in order per partition, with its key, value,
//! headers and timestamp. What a `read_uncommitted` reader sees besides
//! (copies from aborted transactions) is printed, not asserted.
//!
//! The source is written while the mirror runs, by librdkafka (idempotent,
//! keyed records with headers, codecs changing from round to round). The
//! tests share a one-node source and a three-node target; the one that
//! bounces a target broker runs alone, the others side by side.

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

fn clusters() -> &'static Clusters {
    shared_clusters_with(3, &[], &[])
}

/// The mode under test. Without it (the idempotent mode) the kill -9 loop
/// finds records written twice.
const EXACTLY_ONCE: &str = "--exactly-once";

/// Taken for writing by the test that stops a target broker, for reading by
/// the others: a broker down must not slow a test that times a fencing.
static TARGET_BROKERS: RwLock<()> = RwLock::new(());

fn sharing_the_target() -> RwLockReadGuard<'static, ()> {
    TARGET_BROKERS.read().unwrap_or_else(|e| e.into_inner())
}

/// `kafka-mirror run --exactly-once` of `topic` under the mirror name `topic`.
fn mirror_args(topic: &str) -> Vec<String> {
    let Clusters { source, target } = clusters();
    let mut args = run_args(source, target, topic);
    args.extend(["--topics", topic, EXACTLY_ONCE].map(String::from));
    args
}

/// [`mirror_args`] with a static instance id (`--instance-id`): a restart
/// takes its killed predecessor's place in the group at once, rather than
/// after the session timeout, which kills 0.5 to 3 s apart would never see.
fn restartable_mirror_args(topic: &str) -> Vec<String> {
    let mut args = mirror_args(topic);
    args.extend(["--instance-id".into(), format!("{topic}-only")]);
    args
}

/// How many records (and markers) the target holds of `topic`.
fn copied_so_far(topic: &str) -> i64 {
    common::copied_so_far(&clusters().target, topic)
}

/// Asserts a read_committed reader sees each of the `produced` source
/// records of `topic` exactly once (see [`common::assert_exactly_once`]).
fn assert_exactly_once(topic: &str, produced: usize) {
    let Clusters { source, target } = clusters();
    common::assert_exactly_once(source, target, topic, produced);
}

/// Writes `topic`'s 3 partitions until stopped (see [`LiveProducer`]).
fn live_producer(topic: &str) -> LiveProducer {
    LiveProducer::start(&clusters().source, topic, 3)
}

/// The seed of a test's random choices: `KAFKA_MIRROR_TEST_SEED`, or the clock.
fn seed() -> u64 {
    std::env::var("KAFKA_MIRROR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64)
        })
}

/// SplitMix64: numbers that a printed seed repeats.
struct Random(u64);

impl Random {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Six runs killed with SIGKILL after 0.5 to 3 s each while a producer
/// writes, then one `--until-caught-up`: each record once, committed. In
/// the idempotent mode, five runs of eight found source batches written
/// twice (333 to 1333 records): those a kill caught between their write and
/// their checkpoint; in the other three no kill landed in that window.
#[test]
fn kill_9_loop_while_a_producer_writes_copies_each_record_exactly_once() {
    let _shared = sharing_the_target();
    let topic = "eos-kill";
    clusters()
        .source
        .create_topic(topic, 3, 1, &[])
        .expect("create topic");
    // The first run starts behind, copying a backlog.
    let backlog = produce_keyed(&clusters().source, topic, 10_000, 3, "backlog", None).len();
    let producer = live_producer(topic);
    let args = restartable_mirror_args(topic);
    let seed = seed();
    eprintln!("kill delays from seed {seed} (KAFKA_MIRROR_TEST_SEED={seed} repeats them)");
    let mut random = Random(seed);
    // Runs killed after they took the writer slot's transactional id, and
    // so aborted what the run before left open.
    let mut took_over = 0;
    for run in 1..=6 {
        let mut mirror = RunningMirror::spawn(mirror_command().args(&args));
        if run == 1 {
            // The first run creates the target topic; the kills start
            // once data flows.
            mirror.wait_until("copy", Duration::from_secs(60), || copied_so_far(topic) > 0);
        }
        let delay = Duration::from_millis(500 + random.below(2500));
        std::thread::sleep(delay);
        let output = kill_hard(mirror);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.signal(),
            Some(9),
            "run {run} ended before the kill ({}):\n{}",
            output.status,
            tail(&stderr, 30)
        );
        took_over += usize::from(stderr.contains("took the writer slot's transactional id"));
        // Down for a while, so that the next run starts behind.
        let down = Duration::from_millis(random.below(1000));
        eprintln!("run {run}: killed after {delay:?}, restarted {down:?} later");
        std::thread::sleep(down);
    }
    eprintln!("{took_over} of 6 runs took the writer slot's transactional id before the kill");
    assert!(
        took_over >= 4,
        "only {took_over} of 6 runs got as far as their transactional id before the kill"
    );
    let produced = backlog + producer.stop();
    mirror_until_caught_up(&args);
    assert_exactly_once(topic, produced);
}

/// Instances that do not share (`instances.share = false`): instance A is
/// stalled (SIGSTOP) mid-stream and B starts under the same name and takes
/// everything over; once resumed, A finds itself fenced, says so and exits
/// non-zero, and nothing it still had in hand reaches a read_committed
/// reader. (Sharing instances split the work instead: `tests/scale_out.rs`.)
#[test]
fn an_instance_stalled_while_another_took_over_is_fenced_and_writes_nothing_more() {
    let _shared = sharing_the_target();
    let topic = "eos-fence";
    clusters()
        .source
        .create_topic(topic, 3, 1, &[])
        .expect("create topic");
    let producer = live_producer(topic);
    let mut args = mirror_args(topic);
    let unshared = config_file("eos-unshared.toml", "[instances]\nshare = false\n");
    args.extend(["--config".to_owned(), unshared]);
    let mut a = RunningMirror::spawn(mirror_command().args(&args));
    a.wait_until("copy", Duration::from_secs(60), || copied_so_far(topic) > 0);
    signal(&a, "-STOP");
    let mut b = RunningMirror::spawn(mirror_command().args(&args));
    let stalled_at = copied_so_far(topic);
    // More than the abort markers of A's open transaction (one per partition).
    b.wait_until("copy on after A", Duration::from_secs(60), || {
        copied_so_far(topic) > stalled_at + 100
    });

    signal(&a, "-CONT");
    let resumed = Instant::now();
    let a = wait_with_limit(a, Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&a.stderr);
    eprintln!(
        "A exited {} {:.1} s after SIGCONT",
        a.status,
        resumed.elapsed().as_secs_f64()
    );
    assert!(
        !a.status.success(),
        "A exited 0 after being fenced:\n{}",
        tail(&stderr, 30)
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("fenced by another instance named") && l.contains(topic)),
        "A does not say it was fenced by another instance named {topic}:\n{}",
        tail(&stderr, 30)
    );

    let produced = producer.stop();
    let b = terminate(b);
    assert!(
        b.status.success(),
        "B exited {} on SIGTERM:\n{}",
        b.status,
        tail(&String::from_utf8_lossy(&b.stderr), 30)
    );
    mirror_until_caught_up(&args);
    assert_exactly_once(topic, produced);
}

/// The target broker coordinating the mirror's transactions is killed
/// mid-stream and restarted 3 s later: the mirror goes on, exits 0 on
/// SIGTERM, and after a catch-up each record is there once, committed.
#[test]
fn a_target_broker_bounce_during_transactions_keeps_each_record_once() {
    let _alone = TARGET_BROKERS.write().unwrap_or_else(|e| e.into_inner());
    let Clusters { source, target } = clusters();
    let topic = "eos-bounce";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    let known: HashSet<String> = transactions(target)
        .into_iter()
        .map(|t| t.transactional_id)
        .collect();
    let producer = live_producer(topic);
    let args = mirror_args(topic);
    let mut mirror = RunningMirror::spawn(mirror_command().args(&args));
    let mut coordinator = None;
    mirror.wait_until(
        "a transactional id listed on the target",
        Duration::from_secs(60),
        || {
            coordinator = transactions(target)
                .into_iter()
                .find(|t| !known.contains(&t.transactional_id));
            coordinator.is_some()
        },
    );
    let coordinator = coordinator.expect("listed");
    mirror.wait_until("copy", Duration::from_secs(60), || copied_so_far(topic) > 0);

    let node = coordinator.coordinator;
    eprintln!("killing target broker {node}, coordinator of {coordinator:?}");
    target
        .kill_node(node)
        .expect("kill the coordinator's broker");
    std::thread::sleep(Duration::from_secs(3));
    target.start_node(node).expect("restart it");
    let restarted_at = copied_so_far(topic);
    mirror.wait_until("copy after the restart", Duration::from_secs(60), || {
        copied_so_far(topic) > restarted_at + 100
    });

    let produced = producer.stop();
    let output = terminate(mirror);
    let stderr = String::from_utf8_lossy(&output.stderr);
    show_mirror_log("eos-bounce", &stderr);
    assert!(
        output.status.success(),
        "the mirror exited {} on SIGTERM:\n{}",
        output.status,
        tail(&stderr, 30)
    );
    mirror_until_caught_up(&args);
    assert_exactly_once(topic, produced);
}
