//! Group offset sync against real brokers: source groups get committed
//! offsets from Kafka's own kafka-consumer-groups tool (and librdkafka's
//! admin client, for commit metadata), the sync translates them through
//! offset maps describing a copy into a target that held data before (a
//! known shift per partition), and the same tools read the target's
//! offsets back. MirrorMaker 2's checkpoints, written after a sync and by
//! `kafka-mirror run --groups`, are read back with MirrorMaker 2's own
//! client code (`RemoteClusterUtils.translateOffsets`).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kafka_mirror::cluster::{Cluster, Role};
use kafka_mirror::config::MirrorConfig;
use kafka_mirror::groups::mm2::{Mm2Checkpoint, Mm2Checkpoints};
use kafka_mirror::groups::{
    self, CopiedPartitions, GroupOutcome, GroupReport, PartitionAction, SyncReport,
};
use kafka_mirror::net::{ConnectionOptions, Connector};
use kafka_mirror::offset_map::{OffsetMap, Translation};
use kafka_testkit::{KafkaCluster, MirrorMaker2, Venv, MIRROR_MAKER2_VERSION};

const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";

/// Records per source partition.
const RECORDS: i64 = 50;

fn clusters() -> &'static Clusters {
    shared_clusters(&[], &[])
}

/// `kafka-consumer-groups --bootstrap-server <cluster> <args>`; its stdout.
fn consumer_groups(cluster: &KafkaCluster, args: &[&str]) -> String {
    let bootstrap = cluster.bootstrap();
    let mut all = vec!["--bootstrap-server", &bootstrap];
    all.extend_from_slice(args);
    cluster
        .run_tool(CONSUMER_GROUPS, &all)
        .unwrap_or_else(|e| panic!("kafka-consumer-groups {args:?}: {e:#}"))
        .stdout
}

/// Commits offsets for an inactive group with `--reset-offsets --from-file`.
fn reset_offsets(cluster: &KafkaCluster, group: &str, offsets: &[(&str, i32, i64)]) {
    let plan: String = offsets
        .iter()
        .map(|(topic, partition, offset)| format!("{topic},{partition},{offset}\n"))
        .collect();
    let file = config_file(
        &format!("reset-{group}-{}.csv", cluster.cluster_id()),
        &plan,
    );
    let out = consumer_groups(
        cluster,
        &[
            "--group",
            group,
            "--reset-offsets",
            "--from-file",
            &file,
            "--execute",
        ],
    );
    for (topic, partition, offset) in offsets {
        let row = format!("{topic} {partition} {offset}");
        let shown: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            shown.iter().any(|l| l.contains(&row)),
            "reset {group} {row}:\n{out}"
        );
    }
}

/// A group's committed offsets as `kafka-consumer-groups --describe` shows them.
fn described_offsets(cluster: &KafkaCluster, group: &str) -> BTreeMap<(String, i32), i64> {
    let out = consumer_groups(cluster, &["--describe", "--group", group]);
    out.lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            match columns.as_slice() {
                [g, topic, partition, offset, ..] if *g == group => Some((
                    (topic.to_string(), partition.parse().ok()?),
                    offset.parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

/// A group's state as `kafka-consumer-groups --describe --state` shows it.
fn group_state(cluster: &KafkaCluster, group: &str) -> String {
    let out = consumer_groups(cluster, &["--describe", "--state", "--group", group]);
    out.lines()
        .find_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (columns.first() == Some(&group)).then(|| columns[columns.len() - 2].to_owned())
        })
        .unwrap_or_default()
}

/// Commits offsets with metadata through librdkafka's admin client.
fn commit_with_metadata(cluster: &KafkaCluster, group: &str, offsets: &[(&str, i32, i64, &str)]) {
    let mut args = vec![
        "commit".to_owned(),
        "--bootstrap".into(),
        cluster.bootstrap(),
        "--group".into(),
        group.into(),
    ];
    for (topic, partition, offset, metadata) in offsets {
        args.extend([
            "--offset".into(),
            format!("{topic}:{partition}:{offset}:{metadata}"),
        ]);
    }
    Venv::get()
        .and_then(|venv| venv.run_client("group_offsets.py", &args))
        .unwrap_or_else(|e| panic!("commit {group}: {e:#}"));
}

/// A group's committed offsets and their metadata, read by librdkafka's admin client.
fn offsets_with_metadata(
    cluster: &KafkaCluster,
    group: &str,
) -> BTreeMap<(String, i32), (i64, Option<String>)> {
    let args = [
        "list".to_owned(),
        "--bootstrap".into(),
        cluster.bootstrap(),
        "--group".into(),
        group.into(),
    ];
    let out = Venv::get()
        .and_then(|venv| venv.run_client("group_offsets.py", &args))
        .unwrap_or_else(|e| panic!("list {group}: {e:#}"));
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (
                (
                    v["topic"].as_str().expect("topic").to_owned(),
                    v["partition"].as_i64().expect("partition") as i32,
                ),
                (
                    v["offset"].as_i64().expect("offset"),
                    v["metadata"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

/// A topic on both clusters (named `target_topic` on the target): the
/// target held `shifts[p]` records in each partition before the copy, then the copy of the source's `RECORDS` per
/// partition. Returns the shifts, read from what librdkafka had acknowledged.
fn shifted_topic(topic: &str, target_topic: &str) -> [i64; 3] {
    let Clusters { source, target } = clusters();
    source
        .create_topic(topic, 3, 1, &[])
        .expect("create source topic");
    let shifts = prefilled_target(target_topic);
    produce_keyed(source, topic, 3 * RECORDS as u64, 3, "data", None);
    produce_keyed(target, target_topic, 3 * RECORDS as u64, 3, "data", None);
    shifts
}

/// A 3-partition topic on the target holding 20, 15 and 10 records: the
/// shift of a copy into it. Returns the shifts, read from what librdkafka
/// had acknowledged.
fn prefilled_target(topic: &str) -> [i64; 3] {
    let target = &clusters().target;
    target
        .create_topic(topic, 3, 1, &[])
        .expect("create target topic");
    let mut shifts = [0; 3];
    // Round-robin writes over the first 3, 2, then 1 partitions: 20, 15, 10.
    for (count, partitions) in [(30, 3), (11, 2), (4, 1)] {
        for record in produce_keyed(target, topic, count, partitions, "before", None) {
            shifts[record.partition as usize] = record.offset + 1;
        }
    }
    assert_eq!(shifts, [20, 15, 10]);
    shifts
}

fn cluster(role: Role, kafka: &KafkaCluster) -> Arc<Cluster> {
    Cluster::new(
        role,
        vec![kafka.bootstrap()],
        Connector::plain(ConnectionOptions::default()),
    )
}

fn run<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(work)
}

/// One sync of the groups `select` picks.
fn sync(copied: &CopiedPartitions, select: impl Fn(&str) -> bool + Sync) -> SyncReport {
    let Clusters { source, target } = clusters();
    run(groups::sync(
        &cluster(Role::Source, source),
        &cluster(Role::Target, target),
        &select,
        copied,
        None,
    ))
    .expect("sync")
}

fn report<'a>(report: &'a SyncReport, group: &str) -> &'a GroupReport {
    report
        .groups
        .iter()
        .find(|g| g.group == group)
        .unwrap_or_else(|| panic!("no report for {group}:\n{report}"))
}

fn offsets(entries: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
    entries
        .iter()
        .map(|&(topic, partition, offset)| ((topic.to_owned(), partition), offset))
        .collect()
}

#[test]
fn committed_offsets_land_translated_with_their_metadata() {
    let Clusters { source, target } = clusters();
    let topic = "translated";
    let [s0, s1, s2] = shifted_topic(topic, topic);
    // As the engine would have them: partition 0 copied whole, partition 1
    // copied up to 40 so far, partition 2 copied from 20 on (the mirror
    // started there).
    let mut copied = CopiedPartitions::new();
    let mut map = OffsetMap::starting_at(0);
    map.copied(0, s0, RECORDS);
    copied.insert(topic, 0, topic, map);
    let mut map = OffsetMap::starting_at(0);
    map.copied(0, s1, 40);
    copied.insert(topic, 1, topic, map);
    let mut map = OffsetMap::starting_at(20);
    map.copied(20, s2, RECORDS - 20);
    copied.insert(topic, 2, topic, map);

    reset_offsets(
        source,
        "plain",
        &[(topic, 0, 20), (topic, 1, 35), (topic, 2, 5)],
    );
    reset_offsets(
        source,
        "behind",
        &[(topic, 0, 50), (topic, 1, 48), (topic, 2, 45)],
    );
    commit_with_metadata(
        source,
        "noted",
        &[(topic, 0, 7, "app state 7"), (topic, 1, 9, "")],
    );
    reset_offsets(source, "excluded", &[(topic, 0, 3)]);

    let picked = |group: &str| ["plain", "behind", "noted"].contains(&group);
    let first = sync(&copied, picked);

    let plain = report(&first, "plain");
    assert!(
        matches!(plain.outcome, GroupOutcome::Synced { partitions: 2 }),
        "{plain}"
    );
    let untranslatable: Vec<_> = plain.untranslatable().collect();
    assert_eq!(untranslatable.len(), 1, "{plain}");
    assert_eq!(
        untranslatable[0].translation,
        Translation::TooOld { from: 20 }
    );
    let behind = report(&first, "behind");
    assert!(
        matches!(behind.outcome, GroupOutcome::Synced { partitions: 3 }),
        "{behind}"
    );
    assert_eq!(behind.behind(), Some((1, 8)), "{behind}");
    assert!(matches!(
        report(&first, "noted").outcome,
        GroupOutcome::Synced { partitions: 2 }
    ));
    assert!(
        first.groups.iter().all(|g| g.group != "excluded"),
        "{first}"
    );

    // What Kafka's own tool reads on the target: exactly the translations.
    assert_eq!(
        described_offsets(target, "plain"),
        offsets(&[(topic, 0, 20 + s0), (topic, 1, 35 + s1)])
    );
    assert_eq!(
        described_offsets(target, "behind"),
        // 50 is the end of partition 0's copy; 48 is past partition 1's (40),
        // so its end; 45 is 25 records into partition 2's copy.
        offsets(&[
            (topic, 0, 50 + s0),
            (topic, 1, 40 + s1),
            (topic, 2, 25 + s2)
        ])
    );
    let noted = offsets_with_metadata(target, "noted");
    let expected: BTreeMap<_, _> = [
        (
            (topic.to_owned(), 0),
            (7 + s0, Some("app state 7".to_owned())),
        ),
        ((topic.to_owned(), 1), (9 + s1, Some(String::new()))),
    ]
    .into();
    assert_eq!(noted, expected);
    let target_groups = consumer_groups(target, &["--list"]);
    assert!(
        !target_groups.lines().any(|g| g == "excluded"),
        "{target_groups}"
    );

    // A second sync finds everything in place.
    let second = sync(&copied, picked);
    for group in ["plain", "behind", "noted"] {
        let again = report(&second, group);
        assert!(matches!(again.outcome, GroupOutcome::Unchanged), "{again}");
    }

    // The offsets listing: the same plan, with what is not copied yet.
    let listed = run(groups::group_offsets(
        &cluster(Role::Source, source),
        &cluster(Role::Target, target),
        &|group: &str| group == "behind",
        &copied,
    ))
    .expect("list offsets");
    assert_eq!(listed.len(), 1);
    let rows: Vec<_> = listed[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.offsets.partition,
                p.offsets.source_committed,
                p.offsets.translation,
                p.offsets.target_committed,
                p.offsets.action,
                p.not_copied,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                0,
                50,
                Translation::Exact(50 + s0),
                Some(50 + s0),
                PartitionAction::InPlace,
                Some(0)
            ),
            (
                1,
                48,
                Translation::Behind {
                    target: 40 + s1,
                    missing: 8
                },
                Some(40 + s1),
                PartitionAction::InPlace,
                Some(10)
            ),
            (
                2,
                45,
                Translation::Exact(25 + s2),
                Some(25 + s2),
                PartitionAction::InPlace,
                Some(0)
            ),
        ]
    );
}

/// A console consumer in a group on the target, killed if still running when dropped.
struct LiveMember(Child);

impl LiveMember {
    /// Stops it as a service manager would (SIGTERM): it leaves the group.
    fn stop(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
        self.0.wait().expect("wait for the console consumer");
    }
}

impl Drop for LiveMember {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_live_group_and_an_offset_ahead_on_the_target_are_left_alone() {
    let Clusters { source, target } = clusters();
    let topic = "guarded";
    let [s0, s1, s2] = shifted_topic(topic, topic);
    let mut copied = CopiedPartitions::new();
    for (partition, shift) in [(0, s0), (1, s1), (2, s2)] {
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, shift, RECORDS);
        copied.insert(topic, partition, topic, map);
    }

    // Ahead on partition 0 (consumers already read further on the target),
    // behind the translation on partition 1, nothing on partition 2.
    reset_offsets(
        source,
        "ahead",
        &[(topic, 0, 10), (topic, 1, 30), (topic, 2, 40)],
    );
    reset_offsets(target, "ahead", &[(topic, 0, 45 + s0), (topic, 1, 5 + s1)]);

    // A group with a member on the target, reading another topic there: it
    // has no offsets of the copied topic, but members, so it is not touched.
    reset_offsets(
        source,
        "live",
        &[(topic, 0, 12), (topic, 1, 12), (topic, 2, 12)],
    );
    let elsewhere = "guarded-elsewhere";
    target
        .create_topic(elsewhere, 1, 1, &[])
        .expect("create topic");
    let member = target
        .dist()
        .tool_command(target.dist().console_consumer_class())
        .args([
            "--bootstrap-server",
            &target.bootstrap(),
            "--topic",
            elsewhere,
            "--group",
            "live",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the console consumer");
    let mut member = LiveMember(member);
    eventually(
        "the console consumer's group is Stable",
        Duration::from_secs(60),
        || group_state(target, "live") == "Stable",
    );

    let picked = |group: &str| group == "ahead" || group == "live";
    let result = sync(&copied, picked);

    let ahead = report(&result, "ahead");
    assert!(
        matches!(ahead.outcome, GroupOutcome::Synced { partitions: 2 }),
        "{ahead}"
    );
    assert_eq!(
        described_offsets(target, "ahead"),
        offsets(&[
            (topic, 0, 45 + s0),
            (topic, 1, 30 + s1),
            (topic, 2, 40 + s2)
        ])
    );
    let live = report(&result, "live");
    assert!(
        matches!(&live.outcome, GroupOutcome::Active { state } if state == "Stable"),
        "{live}"
    );
    let live_offsets = described_offsets(target, "live");
    assert!(
        live_offsets.keys().all(|(t, _)| t != topic),
        "{live_offsets:?}"
    );

    // Once its consumers are gone, the next sync commits the group.
    member.stop();
    eventually("the group is Empty", Duration::from_secs(60), || {
        group_state(target, "live") == "Empty"
    });
    let result = sync(&copied, picked);
    let live = report(&result, "live");
    assert!(
        matches!(live.outcome, GroupOutcome::Synced { partitions: 3 }),
        "{live}"
    );
    let committed: BTreeMap<_, _> = described_offsets(target, "live")
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .collect();
    assert_eq!(
        committed,
        offsets(&[
            (topic, 0, 12 + s0),
            (topic, 1, 12 + s1),
            (topic, 2, 12 + s2)
        ])
    );
    let ahead = report(&result, "ahead");
    assert!(matches!(ahead.outcome, GroupOutcome::Unchanged), "{ahead}");
}

/// MirrorMaker 2's jars (connect-mirror from Maven Central), fetched once.
fn mirror_maker2() -> &'static MirrorMaker2 {
    static MM2: std::sync::OnceLock<MirrorMaker2> = std::sync::OnceLock::new();
    MM2.get_or_init(|| {
        MirrorMaker2::get(MIRROR_MAKER2_VERSION)
            .unwrap_or_else(|e| panic!("MirrorMaker 2 {MIRROR_MAKER2_VERSION}: {e:#}"))
    })
}

/// Runs `clients/Mm2Checkpoints.java` against the target; its stdout lines,
/// split at tabs.
fn mm2_client(args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec![args[0].to_owned(), clusters().target.bootstrap()];
    all.extend(args[1..].iter().map(|a| a.to_string()));
    let out = mirror_maker2()
        .run_java_client("Mm2Checkpoints.java", &all)
        .unwrap_or_else(|e| panic!("Mm2Checkpoints {args:?}: {e:#}"));
    out.stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Offsets and metadata by partition, as `Mm2Checkpoints.java` prints them.
type JavaOffsets = BTreeMap<(String, i32), (i64, String)>;

fn java_offsets(args: &[&str]) -> JavaOffsets {
    mm2_client(args)
        .into_iter()
        .map(|row| match &row[..] {
            [topic, partition, offset, metadata] => (
                (topic.clone(), partition.parse().expect("a partition")),
                (offset.parse().expect("an offset"), metadata.clone()),
            ),
            _ => panic!("{args:?} printed {row:?}"),
        })
        .collect()
}

/// What MirrorMaker 2's `RemoteClusterUtils.translateOffsets` returns for
/// `group` from the checkpoints of the cluster `alias` on the target.
fn mm2_translated(alias: &str, group: &str) -> JavaOffsets {
    java_offsets(&["translate", alias, group])
}

/// A group's committed offsets on the target, as Kafka's Java admin client
/// reads them (the client MirrorMaker 2's API is built on).
fn target_offsets(group: &str) -> JavaOffsets {
    java_offsets(&["committed", group])
}

/// Every record of a checkpoints topic, as MirrorMaker 2's
/// `Checkpoint.deserializeRecord` reads it, with its offset.
fn mm2_records(topic: &str) -> Vec<(i64, Mm2Checkpoint)> {
    mm2_client(&["dump", topic])
        .into_iter()
        .map(|row| match &row[..] {
            [offset, group, topic, partition, upstream, downstream, metadata] => (
                offset.parse().expect("an offset"),
                Mm2Checkpoint {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: partition.parse().expect("a partition"),
                    upstream_offset: upstream.parse().expect("an offset"),
                    downstream_offset: downstream.parse().expect("an offset"),
                    metadata: metadata.clone(),
                },
            ),
            _ => panic!("Checkpoint.deserializeRecord gave {row:?}"),
        })
        .collect()
}

fn mm2_checkpoint(
    group: &str,
    topic: &str,
    partition: i32,
    (upstream_offset, downstream_offset): (i64, i64),
    metadata: &str,
) -> Mm2Checkpoint {
    Mm2Checkpoint {
        group: group.into(),
        topic: topic.into(),
        partition,
        upstream_offset,
        downstream_offset,
        metadata: metadata.into(),
    }
}

/// A config copying the shared source's `topics` and syncing its `groups`
/// onto the shared target, with the `prefix` policy: `<alias>.<topic>`
/// where `alias` names the source cluster (`source` for a
/// `[source]`/`[target]` config).
fn renaming_config(alias: &str, topics: &str, groups: &str) -> String {
    let Clusters { source, target } = clusters();
    let (source, target) = (source.bootstrap(), target.bootstrap());
    let settings = format!(
        "topics = {{ include = \"{topics}\", replication_policy = \"prefix\" }}\n\
         groups = {{ include = \"{groups}\" }}\n"
    );
    if alias == "source" {
        // Top-level keys before the first table.
        format!(
            "{settings}[source]\nbootstrap_servers = \"{source}\"\n\
             [target]\nbootstrap_servers = \"{target}\"\n"
        )
    } else {
        format!(
            "[clusters.{alias}]\nbootstrap_servers = \"{source}\"\n\
             [clusters.dr]\nbootstrap_servers = \"{target}\"\n\
             [[flows]]\nsource = \"{alias}\"\ntarget = \"dr\"\n{settings}"
        )
    }
}

#[test]
fn mirror_maker_2_translates_offsets_from_the_checkpoints_of_a_sync() {
    let Clusters { source, target } = clusters();
    // The flow's source alias names the copies and the checkpoints topic.
    let (topic, renamed) = ("mm2d", "eu.mm2d");
    let [s0, s1, s2] = shifted_topic(topic, renamed);
    // As in the first test: partition 0 copied whole, partition 1 up to 40,
    // partition 2 from 20 on.
    let mut copied = CopiedPartitions::new();
    for (partition, from, end, shift) in [(0, 0, RECORDS, s0), (1, 0, 40, s1), (2, 20, RECORDS, s2)]
    {
        let mut map = OffsetMap::starting_at(from);
        map.copied(from, from + shift, end - from);
        copied.insert(topic, partition, renamed, map);
    }
    reset_offsets(
        source,
        "mm2d-plain",
        &[(topic, 0, 20), (topic, 1, 35), (topic, 2, 5)],
    );
    commit_with_metadata(
        source,
        "mm2d-noted",
        &[(topic, 0, 7, "app state 7"), (topic, 1, 9, "")],
    );
    reset_offsets(source, "mm2d-ahead", &[(topic, 0, 10), (topic, 1, 30)]);
    reset_offsets(target, "mm2d-ahead", &[(renamed, 0, 45 + s0)]);

    let config = MirrorConfig::from_toml(&renaming_config("eu", "mm2d", "mm2d-.*")).expect("valid");
    let flow = &config.flows().expect("flows")[0];
    assert_eq!(flow.target_topic(topic), renamed);
    let select = |group: &str| flow.groups.as_ref().is_some_and(|g| g.selects(group));
    // One runtime for the whole test: the writer keeps its connections and
    // what it wrote from one sync to the next.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (source_cluster, target_cluster) =
        (cluster(Role::Source, source), cluster(Role::Target, target));
    let mm2 = Mm2Checkpoints::for_flow(flow, target_cluster.clone()).expect("on by default");
    let checkpoints_topic = "eu.checkpoints.internal";
    assert_eq!(mm2.topic(), checkpoints_topic);
    let sync = || {
        runtime.block_on(async {
            let report = groups::sync(
                &source_cluster,
                &target_cluster,
                &select,
                &copied,
                Some(&mm2),
            )
            .await
            .expect("sync");
            let written = report.mm2_checkpoints.as_ref().expect("written");
            assert!(written.result.is_ok(), "{written}");
            let counts = (written.checkpoints, written.written);
            (report.to_string(), counts.0, counts.1)
        })
    };

    // plain: 2 partitions committed (its partition 2 is before the copy);
    // noted: 2; ahead: 1, its partition 0 being ahead on the target.
    let (report, checkpoints, written) = sync();
    assert_eq!((checkpoints, written), (5, 5), "{report}");
    let described = described_offsets(target, "mm2d-plain");
    assert_eq!(
        described,
        offsets(&[(renamed, 0, 20 + s0), (renamed, 1, 35 + s1)])
    );
    // MirrorMaker 2's own client finds exactly what the groups hold on the
    // target, metadata included.
    for group in ["mm2d-plain", "mm2d-noted"] {
        assert_eq!(
            mm2_translated("eu", group),
            target_offsets(group),
            "{group}"
        );
    }
    // librdkafka commits metadata with its C string's terminating NUL,
    // which Java clients show: the checkpoint keeps the bytes committed.
    let noted = mm2_translated("eu", "mm2d-noted");
    assert_eq!(
        noted[&(renamed.to_owned(), 0)],
        (7 + s0, "app state 7\0".to_owned())
    );
    let mut ahead = target_offsets("mm2d-ahead");
    assert_eq!(
        ahead.remove(&(renamed.to_owned(), 0)).map(|o| o.0),
        Some(45 + s0)
    );
    assert_eq!(mm2_translated("eu", "mm2d-ahead"), ahead);
    assert_eq!(ahead.keys().collect::<Vec<_>>(), [&(renamed.to_owned(), 1)]);

    // Each record as MirrorMaker 2 reads it, upstream offsets included.
    let mut stored: Vec<Mm2Checkpoint> = mm2_records(checkpoints_topic)
        .into_iter()
        .map(|(_, checkpoint)| checkpoint)
        .collect();
    stored.sort_by(|a, b| (&a.group, a.partition).cmp(&(&b.group, b.partition)));
    assert_eq!(
        stored,
        [
            mm2_checkpoint("mm2d-ahead", renamed, 1, (30, 30 + s1), ""),
            mm2_checkpoint("mm2d-noted", renamed, 0, (7, 7 + s0), "app state 7\0"),
            mm2_checkpoint("mm2d-noted", renamed, 1, (9, 9 + s1), "\0"),
            mm2_checkpoint("mm2d-plain", renamed, 0, (20, 20 + s0), ""),
            mm2_checkpoint("mm2d-plain", renamed, 1, (35, 35 + s1), ""),
        ]
    );
    // The topic MirrorMaker 2 creates: compacted, one partition.
    assert_eq!(
        topic_configs(target, checkpoints_topic)
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );
    let described = target
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            [
                "--bootstrap-server",
                &target.bootstrap(),
                "--describe",
                "--topic",
                checkpoints_topic,
            ],
        )
        .expect("describe the checkpoints topic");
    assert!(
        described.stdout.contains("PartitionCount: 1"),
        "{}",
        described.stdout
    );

    // Nothing changed: nothing written.
    let (report, checkpoints, written) = sync();
    assert_eq!((checkpoints, written), (5, 0), "{report}");
    assert_eq!(mm2_records(checkpoints_topic).len(), 5);

    // The group moves on on the source: one checkpoint written.
    reset_offsets(source, "mm2d-plain", &[(topic, 0, 40)]);
    let (report, checkpoints, written) = sync();
    assert_eq!((checkpoints, written), (5, 1), "{report}");
    assert_eq!(
        mm2_translated("eu", "mm2d-plain")[&(renamed.to_owned(), 0)].0,
        40 + s0
    );
    let records = mm2_records(checkpoints_topic);
    assert_eq!(
        records.last(),
        Some(&(
            5,
            mm2_checkpoint("mm2d-plain", renamed, 0, (40, 40 + s0), "")
        ))
    );
}

#[test]
fn a_run_with_groups_writes_the_checkpoints_mirror_maker_2_reads() {
    let Clusters { source, target } = clusters();
    // `--source`/`--target`: the source cluster's alias is `source`.
    let (topic, renamed) = ("mm2r", "source.mm2r");
    source
        .create_topic(topic, 3, 1, &[])
        .expect("create source topic");
    produce_keyed(source, topic, 3 * RECORDS as u64, 3, "data", None);
    // The copy lands after data the target held: offsets shift.
    let [s0, s1, s2] = prefilled_target(renamed);
    reset_offsets(
        source,
        "mm2r-app",
        &[(topic, 0, 17), (topic, 1, 33), (topic, 2, RECORDS)],
    );

    let config = config_file("mm2r.toml", &renaming_config("source", "mm2r", "mm2r-.*"));
    let summary = mirror_until_caught_up(&[
        "run".into(),
        "--config".into(),
        config,
        "--name".into(),
        "mm2r".into(),
    ]);

    let committed = offsets(&[
        (renamed, 0, 17 + s0),
        (renamed, 1, 33 + s1),
        (renamed, 2, RECORDS + s2),
    ]);
    assert_eq!(
        described_offsets(target, "mm2r-app"),
        committed,
        "{summary}"
    );
    let translated: BTreeMap<_, _> = mm2_translated("source", "mm2r-app")
        .into_iter()
        .map(|(partition, (offset, _))| (partition, offset))
        .collect();
    assert_eq!(translated, committed, "{summary}");
    assert!(
        summary
            .contains("MirrorMaker 2 checkpoints in `source.checkpoints.internal`: 3 partitions"),
        "{summary}"
    );
}
