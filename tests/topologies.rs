//! Several clusters in one mirror process: hub-and-spokes, active-active,
//! and topics that appear, grow and change while it runs. Checked on real
//! Kafka clusters with clients nobody here wrote, record by record.
//!
//! The tests share four single-node clusters, started when first needed:
//! `a`, `b` and `c`, and `hub`. Each test uses its own topics and mirror name.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use kafka_testkit::{DumpedRecord, KafkaCluster};

fn cluster(alias: &str) -> &'static KafkaCluster {
    static A: OnceLock<KafkaCluster> = OnceLock::new();
    static B: OnceLock<KafkaCluster> = OnceLock::new();
    static C: OnceLock<KafkaCluster> = OnceLock::new();
    static HUB: OnceLock<KafkaCluster> = OnceLock::new();
    let cell = match alias {
        "a" => &A,
        "b" => &B,
        "c" => &C,
        "hub" => &HUB,
        other => panic!("no cluster {other} in these tests"),
    };
    cell.get_or_init(|| start_cluster(KAFKA, 1, &[]))
}

/// A config file of `text` followed by the given clusters (by alias).
fn flows_config(file: &str, aliases: &[&str], text: &str) -> String {
    let mut text = text.to_owned();
    for alias in aliases {
        text.push_str(&format!(
            "[clusters.{alias}]\nbootstrap_servers = \"{}\"\n",
            cluster(alias).bootstrap()
        ));
    }
    config_file(file, &text)
}

/// Asserts `copy` on `target` holds exactly the records of `topic` on
/// `source`: partition, order, key, value, headers, timestamp.
fn assert_copied(source: &str, topic: &str, target: &str, copy: &str) -> usize {
    let expected = records_by_partition(&cluster(source).bootstrap(), topic);
    let actual = records_by_partition(&cluster(target).bootstrap(), copy);
    assert_same_content(
        &expected,
        &actual,
        &format!("{source}:{topic} -> {target}:{copy}"),
    )
}

/// Records in a topic, 0 while it does not exist.
fn copied_count(target: &KafkaCluster, topic: &str) -> usize {
    if !topic_names(target).iter().any(|t| t == topic) {
        return 0;
    }
    let records: BTreeMap<i32, Vec<DumpedRecord>> =
        records_by_partition(&target.bootstrap(), topic);
    records.values().map(Vec::len).sum()
}

#[test]
fn hub_and_spokes_prefix_every_topic_with_its_cluster() {
    let spokes = ["a", "b", "c"];
    for (i, spoke) in spokes.iter().enumerate() {
        // The same topic name on every spoke: the prefix keeps them apart on the hub.
        cluster(spoke)
            .create_topic("orders", 2, 1, &[])
            .expect("create topic");
        produce_keyed(
            cluster(spoke),
            "orders",
            100 + 50 * i as u64,
            2,
            spoke,
            None,
        );
    }
    let path = flows_config(
        "hub.toml",
        &["a", "b", "c", "hub"],
        "name = \"hub-test\"\n\
         [topics]\nreplication_policy = \"prefix\"\ninclude = \"orders\"\n\
         [[flows]]\nsource = \"a\"\ntarget = \"hub\"\n\
         [[flows]]\nsource = \"b\"\ntarget = \"hub\"\n\
         [[flows]]\nsource = \"c\"\ntarget = \"hub\"\n",
    );
    let summary = mirror_until_caught_up(&["run".into(), "--config".into(), path]);
    assert!(
        summary.contains("replicated 3 topics, 6 partitions: 450 records"),
        "{summary}"
    );
    for (spoke, records) in [("a", 100), ("b", 150), ("c", 200)] {
        assert!(
            summary.contains(&format!(
                "flow {spoke}->hub: 1 topics, 2 partitions: {records} records"
            )),
            "{summary}"
        );
        let copy = format!("{spoke}.orders");
        assert_eq!(assert_copied(spoke, "orders", "hub", &copy), records);
    }
    let hub_topics = topic_names(cluster("hub"));
    assert!(
        !hub_topics.contains(&"orders".to_owned()),
        "the prefix policy never writes the source name: {hub_topics:?}"
    );
}

#[test]
fn active_active_with_prefixes_copies_each_side_once_and_never_back() {
    let (a, b) = (cluster("a"), cluster("b"));
    a.create_topic("aa-x", 2, 1, &[]).expect("create topic");
    b.create_topic("aa-y", 1, 1, &[]).expect("create topic");
    produce_keyed(a, "aa-x", 120, 2, "from-a", None);
    produce_keyed(b, "aa-y", 80, 1, "from-b", None);
    // The include matches the copies too (`b.aa-y` on a, `a.aa-x` on b), so
    // only the loop check keeps them from going back.
    let path = flows_config(
        "active-active.toml",
        &["a", "b"],
        "name = \"aa-test\"\n\
         [topics]\nreplication_policy = \"prefix\"\ninclude = \"([ab][.])*aa-.*\"\n\
         [[flows]]\nsource = \"a\"\ntarget = \"b\"\n\
         [[flows]]\nsource = \"b\"\ntarget = \"a\"\n",
    );
    let args = vec!["run".into(), "--config".into(), path];
    mirror_until_caught_up(&args);
    // More writes on both sides; the second run sees every copy from the start.
    produce_keyed(a, "aa-x", 30, 2, "again-a", None);
    produce_keyed(b, "aa-y", 20, 1, "again-b", None);
    let summary = mirror_until_caught_up(&args);
    assert!(
        summary.contains("flow a->b: 1 topics, 2 partitions: 30 records")
            && summary.contains("flow b->a: 1 topics, 1 partitions: 20 records"),
        "{summary}"
    );
    assert_eq!(assert_copied("a", "aa-x", "b", "a.aa-x"), 150);
    assert_eq!(assert_copied("b", "aa-y", "a", "b.aa-y"), 100);
    let mirrored = |cluster: &KafkaCluster| {
        let mut names: Vec<String> = topic_names(cluster)
            .into_iter()
            .filter(|t| t.contains("aa-"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(mirrored(a), ["aa-x", "b.aa-y"]);
    assert_eq!(mirrored(b), ["a.aa-x", "aa-y"]);
}

#[test]
fn identity_active_active_is_refused_before_connecting() {
    // Nothing listens on these ports: the refusal comes from the config alone.
    let path = config_file(
        "identity-cycle.toml",
        "[clusters.east]\nbootstrap_servers = \"127.0.0.1:1\"\n\
         [clusters.west]\nbootstrap_servers = \"127.0.0.1:2\"\n\
         [[flows]]\nsource = \"east\"\ntarget = \"west\"\n\
         [[flows]]\nsource = \"west\"\ntarget = \"east\"\n",
    );
    let output = run_mirror(
        &["run".into(), "--config".into(), path],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        "flows[0].topics.replication_policy",
        "east -> west -> east",
        "copied round the cycle forever",
        "replication_policy = \"prefix\"",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(!stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn new_topics_partitions_and_configs_reach_the_target_while_running() {
    let (c, hub) = (cluster("c"), cluster("hub"));
    let path = flows_config(
        "lifecycle.toml",
        &["c", "hub"],
        "name = \"life-test\"\n\
         [[flows]]\nsource = \"c\"\ntarget = \"hub\"\n\
         topics = { include = \"life-.*\", replication_policy = \"prefix\", \
                    refresh_interval_ms = 1000, never_copy_configs = [\"segment.ms\"] }\n",
    );
    let mirror = RunningMirror::spawn(mirror_command().args(["run", "--config", &path]));
    let limit = Duration::from_secs(90);
    // The flow starts with no matching topic and waits for one.
    c.create_topic("life-a", 1, 1, &[("segment.ms", "7200000")])
        .expect("create topic");
    produce_keyed(c, "life-a", 40, 1, "first", None);
    eventually("life-a is copied", limit, || {
        copied_count(hub, "c.life-a") == 40
    });
    // The target keeps its own segment.ms (never copied) through every refresh.
    alter_topic_config(hub, "c.life-a", "segment.ms=3600000");

    // Another topic created while running, with two partitions.
    c.create_topic("life-new", 2, 1, &[]).expect("create topic");
    produce_keyed(c, "life-new", 60, 2, "new", None);
    eventually("life-new is copied", limit, || {
        copied_count(hub, "c.life-new") == 60
    });
    assert_eq!(assert_copied("c", "life-new", "hub", "c.life-new"), 60);

    // A partition added on the source, with data in it.
    c.run_tool(
        "org.apache.kafka.tools.TopicCommand",
        [
            "--bootstrap-server",
            &c.bootstrap(),
            "--alter",
            "--topic",
            "life-a",
            "--partitions",
            "2",
        ],
    )
    .expect("add a partition");
    produce_keyed(c, "life-a", 30, 2, "second", None);
    eventually("the new partition is copied", limit, || {
        copied_count(hub, "c.life-a") == 70
    });
    let copied = records_by_partition(&hub.bootstrap(), "c.life-a");
    assert_eq!(
        copied.get(&1).map(Vec::len),
        Some(15),
        "partition 1 on the target"
    );
    assert_eq!(assert_copied("c", "life-a", "hub", "c.life-a"), 70);

    // A changed config.
    alter_topic_config(c, "life-a", "retention.ms=987654321");
    eventually("retention.ms reaches the target", limit, || {
        topic_configs(hub, "c.life-a")
            .get("retention.ms")
            .is_some_and(|v| v == "987654321")
    });
    let configs = topic_configs(hub, "c.life-a");
    assert_eq!(
        configs.get("segment.ms").map(String::as_str),
        Some("3600000"),
        "never_copy_configs keeps the target's own value: {configs:?}"
    );

    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
    assert!(
        stdout.contains("replicated 2 topics, 4 partitions: 130 records"),
        "{stdout}"
    );
}

/// `plan` lists what a run would do for each flow (created topics with their
/// configs, added partitions, config changes, topics already in step) and
/// changes nothing.
#[test]
fn plan_lists_what_a_run_would_change_and_changes_nothing() {
    let (a, hub) = (cluster("a"), cluster("hub"));
    a.create_topic("plan-new", 2, 1, &[("retention.ms", "7200000")])
        .expect("create topic");
    a.create_topic("plan-grow", 3, 1, &[])
        .expect("create topic");
    a.create_topic("plan-same", 1, 1, &[("cleanup.policy", "compact")])
        .expect("create topic");
    hub.create_topic("a.plan-grow", 1, 1, &[("retention.ms", "5000")])
        .expect("create topic");
    hub.create_topic("a.plan-same", 1, 1, &[("cleanup.policy", "compact")])
        .expect("create topic");
    let config = flows_config(
        "plan.toml",
        &["a", "hub"],
        "name = \"plan\"\n\
         [topics]\ninclude = \"plan-.*\"\nreplication_policy = \"prefix\"\n\
         [[flows]]\nsource = \"a\"\ntarget = \"hub\"\n",
    );
    let output = run_mirror(
        &["plan".into(), "--config".into(), config],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "flow a->hub: a -> hub, 3 topics",
            "  plan-grow -> a.plan-grow: 3 partitions; exists: add partitions 1 -> 3, reset retention.ms",
            "  plan-new -> a.plan-new: 2 partitions; create with retention.ms=7200000",
            "  plan-same -> a.plan-same: 1 partitions; exists, up to date",
        ]
    );
    // Nothing changed on the hub.
    assert!(!topic_names(hub).contains(&"a.plan-new".to_owned()));
    assert_eq!(
        topic_configs(hub, "a.plan-grow")
            .get("retention.ms")
            .map(String::as_str),
        Some("5000")
    );
    let described = hub
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            [
                "--bootstrap-server",
                &hub.bootstrap(),
                "--describe",
                "--topic",
                "a.plan-grow",
            ],
        )
        .expect("describe a.plan-grow");
    assert!(
        described.stdout.contains("PartitionCount: 1"),
        "{}",
        described.stdout
    );
}
