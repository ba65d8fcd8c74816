//! MirrorMaker's own command lines and files, run as written with
//! kafka-mirror in place of `kafka-mirror-maker.sh` (MirrorMaker 1) and
//! `connect-mirror-maker.sh` (MirrorMaker 2), on real brokers; and
//! `kafka-mirror convert`, whose output is read back as a native config.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use kafka_mirror::config::MirrorConfig;

fn clusters() -> &'static Clusters {
    shared_clusters(&[], &[])
}

fn spawn(args: &[&str]) -> RunningMirror {
    RunningMirror::spawn(mirror_command().args(args))
}

/// Waits until every partition of `target_topic` holds as many records as
/// `source_topic`'s, then stops the mirror and returns its stderr.
fn until_copied(
    mirror: RunningMirror,
    source_topic: &str,
    target_topic: &str,
    partitions: i32,
) -> String {
    let Clusters { source, target } = clusters();
    eventually(
        &format!("{source_topic} is copied into {target_topic}"),
        Duration::from_secs(120),
        || {
            (0..partitions).all(|p| {
                offset_of(target, target_topic, p, -1) == offset_of(source, source_topic, p, -1)
            })
        },
    );
    let output = terminate(mirror);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The classic tutorial: consumer.properties for the source, producer.properties
/// for the target, `--whitelist`.
#[test]
fn the_mirrormaker_1_tutorial_command_replicates_the_whitelisted_topic() {
    let Clusters { source, target } = clusters();
    source
        .create_topic("mirrortopic", 3, 1, &[])
        .expect("create topic");
    source
        .create_topic("unlisted", 1, 1, &[])
        .expect("create topic");
    produce_with_both_clients(
        source,
        "mirrortopic",
        3,
        kafka_testkit::Compression::Lz4,
        300,
        200,
    );
    produce_keyed(source, "unlisted", 20, 1, "no", None);
    let consumer = config_file(
        "mm1-consumer.properties",
        &format!(
            "bootstrap.servers={}\ngroup.id=mm1-tutorial\nauto.offset.reset=earliest\n\
             isolation.level=read_committed\nmax.poll.records=500\n",
            source.bootstrap()
        ),
    );
    let producer = config_file(
        "mm1-producer.properties",
        &format!(
            "bootstrap.servers={}\nacks=all\ncompression.type=gzip\nlinger.ms=5\n",
            target.bootstrap()
        ),
    );
    let mirror = spawn(&[
        "mm1",
        "--consumer.config",
        &consumer,
        "--producer.config",
        &producer,
        "--whitelist",
        "mirrortopic",
        "--num.streams",
        "2",
        "--offset.commit.interval.ms",
        "1000",
    ]);
    let stderr = until_copied(mirror, "mirrortopic", "mirrortopic", 3);
    assert_eq!(assert_same_records(source, target, "mirrortopic"), 500);
    assert!(!topic_names(target).contains(&"unlisted".to_owned()));
    // Keys with no meaning here are reported once, by name.
    for key in ["--num.streams 2", "compression.type", "max.poll.records"] {
        assert_eq!(stderr.matches(key).count(), 1, "{key} in:\n{stderr}");
    }
}

/// Options that run custom Java code cannot be honoured: refused by name.
#[test]
fn a_mirrormaker_1_message_handler_is_refused() {
    let properties = config_file("mm1-any.properties", "bootstrap.servers=localhost:1\n");
    let output = run_mirror(
        &[
            "mm1".into(),
            "--consumer.config".into(),
            properties.clone(),
            "--producer.config".into(),
            properties,
            "--whitelist".into(),
            "t".into(),
            "--message.handler".into(),
            "com.example.Handler".into(),
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`--message.handler`") && stderr.contains("com.example.Handler"),
        "{stderr}"
    );
}

fn mm2_properties(name: &str, extra: &str) -> String {
    let Clusters { source, target } = clusters();
    config_file(
        name,
        &format!(
            "# MirrorMaker 2 dedicated mode, as connect-mirror-maker.sh reads it\n\
             clusters = primary, backup\n\
             primary.bootstrap.servers = {}\n\
             backup.bootstrap.servers = {}\n\
             primary->backup.enabled = true\n\
             backup->primary.enabled = false\n\
             replication.factor = 1\n\
             checkpoints.topic.replication.factor = 1\n\
             heartbeats.topic.replication.factor = 1\n\
             offset-syncs.topic.replication.factor = 1\n\
             offset.storage.replication.factor = 1\n\
             status.storage.replication.factor = 1\n\
             config.storage.replication.factor = 1\n\
             emit.checkpoints.enabled = true\n\
             sync.topic.acls.enabled = false\n\
             tasks.max = 4\n\
             refresh.topics.interval.seconds = 2\n\
             {extra}",
            source.bootstrap(),
            target.bootstrap()
        ),
    )
}

/// MirrorMaker 2 files all name their mirror `mm2`: two of them running at
/// once against one target would be two instances of one mirror, sharing
/// its partitions (as two MirrorMaker 2 processes join one Connect cluster).
static ONE_MM2_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A realistic MirrorMaker 2 file with its default policy: `orders` arrives
/// as `primary.orders`, record by record; unselected topics stay behind.
#[test]
fn a_mirrormaker_2_file_runs_the_same_topology() {
    let _alone = ONE_MM2_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Clusters { source, target } = clusters();
    source
        .create_topic("orders", 2, 1, &[])
        .expect("create topic");
    source
        .create_topic("audit", 1, 1, &[])
        .expect("create topic");
    produce_keyed(source, "orders", 300, 2, "o", None);
    produce_keyed(source, "audit", 30, 1, "a", None);
    let file = mm2_properties(
        "mm2-prefix.properties",
        "primary->backup.topics = orders.*, payments\n",
    );
    let mirror = spawn(&["mm2", &file]);
    let stderr = until_copied(mirror, "orders", "primary.orders", 2);
    let expected = records_by_partition(&source.bootstrap(), "orders");
    let actual = records_by_partition(&target.bootstrap(), "primary.orders");
    assert_eq!(
        assert_same_content(&expected, &actual, "primary.orders"),
        300
    );
    let names = topic_names(target);
    assert!(
        !names.iter().any(|n| n.ends_with("audit")),
        "unselected topic copied: {names:?}"
    );
    assert!(stderr.contains("tasks.max: ignored"), "{stderr}");
}

/// MirrorMaker 2's IdentityReplicationPolicy keeps the names.
#[test]
fn a_mirrormaker_2_identity_policy_keeps_names() {
    let _alone = ONE_MM2_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Clusters { source, target } = clusters();
    source
        .create_topic("ledger", 2, 1, &[])
        .expect("create topic");
    produce_keyed(source, "ledger", 200, 2, "l", None);
    let file = mm2_properties(
        "mm2-identity.properties",
        "primary->backup.topics = ledger\n\
         replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n",
    );
    let mirror = spawn(&["mm2", &file]);
    until_copied(mirror, "ledger", "ledger", 2);
    assert_eq!(assert_same_records(source, target, "ledger"), 200);
}

/// `convert` prints a native config that loads, names the same flows and
/// topics, and never contains the password.
#[test]
fn convert_prints_an_equivalent_native_config_without_secrets() {
    let file = config_file(
        "mm2-convert.properties",
        "clusters = eu, hub\n\
         eu.bootstrap.servers = eu-kafka:9092\n\
         hub.bootstrap.servers = hub-kafka:9092\n\
         hub.security.protocol = SASL_PLAINTEXT\n\
         hub.sasl.mechanism = SCRAM-SHA-512\n\
         hub.sasl.jaas.config = org.apache.kafka.common.security.scram.ScramLoginModule required username=\"mirror\" password=\"s3cret-value\";\n\
         eu->hub.enabled = true\n\
         eu->hub.topics = orders, payments.*\n\
         topics.exclude = .*-tmp\n\
         replication.factor = 3\n\
         emit.heartbeats.enabled = true\n",
    );
    let output = run_mirror(&["convert".into(), file], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("s3cret-value"), "{stdout}");
    assert!(
        stdout.contains("# Set KAFKA_MIRROR_HUB_PASSWORD"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# emit.heartbeats.enabled: ignored"),
        "{stdout}"
    );

    let config = MirrorConfig::from_toml(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    let flows = config.flows().unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    let [flow] = &flows[..] else {
        panic!("one flow: {flows:?}");
    };
    assert_eq!(
        (flow.name.as_str(), flow.source_alias.as_str()),
        ("eu->hub", "eu")
    );
    assert_eq!(flow.target.bootstrap_servers, "hub-kafka:9092");
    assert_eq!(
        flow.target.sasl.as_ref().map(|s| s.username.as_str()),
        Some("mirror")
    );
    assert_eq!(flow.target_topic("orders"), "eu.orders");
    for (topic, selected) in [
        ("orders", true),
        ("payments-eu", true),
        ("payments-tmp", false),
        ("orders2", false),
    ] {
        assert_eq!(flow.selects(topic, false), selected, "{topic}");
    }
    assert_eq!(config.replication.replication_factor, 3);
}
