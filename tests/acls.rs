//! ACL sync against real brokers: KRaft's `StandardAuthorizer` on both
//! clusters, kafka-mirror and an ordinary user (`alice`) on a SASL/PLAIN
//! listener. ACLs are written on the source and read on the target with
//! Kafka's own AclCommand; the ordinary user reads the target through
//! librdkafka, refused before the sync and allowed after it.
//!
//! The brokers talk to each other and to their controller on the kit's
//! PLAINTEXT listeners, as `User:ANONYMOUS`, which is therefore a super user
//! with `User:mirror`; the tests' own admin tools use those listeners too.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use common::*;
use kafka_testkit::{dump_topic_as, set_committed_offset, ClusterSpec, KafkaCluster};

const MIRROR_PASSWORD: &str = "mirror-Secret-A1";
const ALICE_PASSWORD: &str = "alice-Secret-B2";
const ACL_COMMAND: &str = "org.apache.kafka.tools.AclCommand";

fn secured_cluster() -> KafkaCluster {
    let jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         user_mirror=\"{MIRROR_PASSWORD}\" user_alice=\"{ALICE_PASSWORD}\";"
    );
    let mut spec = ClusterSpec::new(KAFKA, 1);
    spec.extra_listeners = vec![("SASL".into(), "SASL_PLAINTEXT".into())];
    spec.broker_props = [
        (
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ),
        ("super.users", "User:ANONYMOUS;User:mirror"),
        ("listener.name.sasl.sasl.enabled.mechanisms", "PLAIN"),
        ("listener.name.sasl.plain.sasl.jaas.config", jaas.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    KafkaCluster::start(spec).unwrap_or_else(|e| panic!("cannot start Kafka: {e:#}"))
}

/// Runs AclCommand against a cluster's PLAINTEXT listener (a super user).
/// Two source ACLs the test adds, then removes: AclCommand's arguments
/// after `--add` or `--remove --force`.
const BOB_DESCRIBES: [&str; 8] = [
    "--allow-principal",
    "User:bob",
    "--operation",
    "Describe",
    "--topic",
    "orders-",
    "--resource-pattern-type",
    "prefixed",
];
const MALLORY_DENIED: [&str; 8] = [
    "--deny-principal",
    "User:mallory",
    "--deny-host",
    "10.0.0.1",
    "--operation",
    "Read",
    "--topic",
    "orders",
];

fn acl_command(cluster: &KafkaCluster, args: &[&str]) -> String {
    let mut all = vec!["--bootstrap-server".to_string(), cluster.bootstrap()];
    all.extend(args.iter().map(|a| a.to_string()));
    cluster
        .run_tool(ACL_COMMAND, &all)
        .unwrap_or_else(|e| panic!("kafka-acls {args:?}: {e:#}"))
        .stdout
}

/// One ACL as AclCommand lists it: resource type, name, pattern type,
/// principal, host, operation, permission.
type Listed = (String, String, String, String, String, String, String);

/// Every ACL of the cluster, read from AclCommand's `--list` output:
/// "Current ACLs for resource `ResourcePattern(resourceType=TOPIC,
/// name=orders, patternType=LITERAL)`:" followed by one
/// "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)"
/// line per entry.
fn listed_acls(cluster: &KafkaCluster) -> BTreeSet<Listed> {
    let field = |text: &str, key: &str| -> String {
        let start = text.find(&format!("{key}=")).expect(key) + key.len() + 1;
        let rest = &text[start..];
        rest[..rest.find([',', ')']).expect("end")].to_owned()
    };
    let mut resource = None;
    let mut acls = BTreeSet::new();
    for line in acl_command(cluster, &["--list"]).lines() {
        if line.contains("ResourcePattern(") {
            resource = Some((
                field(line, "resourceType"),
                field(line, "name"),
                field(line, "patternType"),
            ));
        } else if line.contains("principal=") {
            let (kind, name, pattern) = resource.clone().expect("a resource line first");
            acls.insert((
                kind,
                name,
                pattern,
                field(line, "principal"),
                field(line, "host"),
                field(line, "operation"),
                field(line, "permissionType"),
            ));
        }
    }
    acls
}

fn listed(entry: [&str; 7]) -> Listed {
    let [a, b, c, d, e, f, g] = entry.map(str::to_owned);
    (a, b, c, d, e, f, g)
}

/// The config of a mirror that reads and writes as `User:mirror` over SASL,
/// copying `orders.*` under MirrorMaker 2's names (`source.orders`).
fn mirror_config(source: &KafkaCluster, target: &KafkaCluster) -> String {
    let side = |name: &str, cluster: &KafkaCluster| {
        format!(
            "[{name}]\nbootstrap_servers = \"{}\"\n[{name}.sasl]\nmechanism = \"PLAIN\"\n\
             username = \"mirror\"\npassword = \"{MIRROR_PASSWORD}\"\n",
            cluster.listener_bootstrap("SASL")
        )
    };
    let text = format!(
        "name = \"acls\"\n{}{}[topics]\ninclude = \"orders.*\"\nreplication_policy = \"prefix\"\nrefresh_interval_ms = 1000\n\
         [groups]\ninclude = \"app-.*\"\n",
        side("source", source),
        side("target", target),
    );
    config_file("acls.toml", &text)
}

fn mirror(config: &str, command: &str, flags: &[&str]) -> String {
    let mut args = vec![command.to_string(), "--config".into(), config.to_owned()];
    if command == "run" {
        args.push("--until-caught-up".into());
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let output = run_mirror(&args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command} {flags:?}: {stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn source_acls_reach_the_target_renamed_and_never_broader() {
    let source_thread = thread::spawn(secured_cluster);
    let target = secured_cluster();
    let source = source_thread.join().expect("source started");
    source.create_topic("orders", 2, 1, &[]).expect("orders");
    source
        .create_topic("orders-eu", 1, 1, &[])
        .expect("orders-eu");
    source
        .create_topic("payments", 1, 1, &[])
        .expect("payments");
    let written = produce_keyed(&source, "orders", 20, 2, "o", None);

    let allow = |principal: &str, operation: &str, resource: &[&str]| {
        let mut args = vec![
            "--add",
            "--allow-principal",
            principal,
            "--operation",
            operation,
        ];
        args.extend(resource);
        acl_command(&source, &args);
    };
    allow("User:alice", "Read", &["--topic", "orders"]);
    allow("User:alice", "Write", &["--topic", "orders"]);
    allow("User:alice", "All", &["--topic", "orders-eu"]);
    acl_command(&source, &[&["--add"][..], &BOB_DESCRIBES].concat());
    allow("User:alice", "Read", &["--topic", "payments"]);
    allow("User:alice", "Read", &["--group", "app-billing"]);
    allow("User:alice", "Read", &["--group", "other"]);
    acl_command(&source, &[&["--add"][..], &MALLORY_DENIED].concat());
    // Prefixed group ACLs: `app-` starts app-billing, a group the flow
    // syncs (it has committed an offset); no source group starts with
    // `app-pay`, though `[groups]` would select such names.
    set_committed_offset(&source, "app-billing", "orders", 0, 5)
        .unwrap_or_else(|e| panic!("app-billing commits: {e:#}"));
    for prefix in ["app-", "app-pay"] {
        let group = ["--group", prefix, "--resource-pattern-type", "prefixed"];
        allow("User:alice", "Read", &group);
    }
    // The consumer's own group, on the target only: not what is synced.
    acl_command(
        &target,
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--group",
            "kafka-testkit-dump-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    let target_before = listed_acls(&target);

    let config = mirror_config(&source, &target);
    let alice = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "alice"),
        ("sasl.password", ALICE_PASSWORD),
    ];
    let target_sasl = target.listener_bootstrap("SASL");

    // Data copied without ACL sync: alice may not read the copy.
    mirror(&config, "run", &[]);
    let refused = dump_topic_as(&target_sasl, "source.orders", &alice)
        .expect_err("alice reads the copy before the ACLs are synced");
    assert!(
        format!("{refused:#}").contains("AUTHORIZATION_FAILED"),
        "{refused:#}"
    );
    assert_eq!(
        listed_acls(&target),
        target_before,
        "nothing synced unless asked"
    );

    let planned = mirror(&config, "plan", &["--sync-acls"]);
    assert!(
        planned
            .contains("create ACL ALLOW User:alice READ on topic source.orders (literal) from *"),
        "{planned}"
    );
    assert!(
        planned.contains("create ACL ALLOW User:alice READ on group app- (prefixed) from *")
            && !planned.contains("app-pay"),
        "{planned}"
    );
    mirror(&config, "run", &["--sync-acls"]);

    let copied_now = || -> BTreeSet<Listed> {
        listed_acls(&target)
            .difference(&target_before)
            .cloned()
            .collect()
    };
    let expected: BTreeSet<Listed> = [
        [
            "TOPIC",
            "source.orders",
            "LITERAL",
            "User:alice",
            "*",
            "READ",
            "ALLOW",
        ],
        [
            "TOPIC",
            "source.orders",
            "LITERAL",
            "User:mallory",
            "10.0.0.1",
            "READ",
            "DENY",
        ],
        // ALL becomes READ; WRITE is not copied.
        [
            "TOPIC",
            "source.orders-eu",
            "LITERAL",
            "User:alice",
            "*",
            "READ",
            "ALLOW",
        ],
        [
            "TOPIC",
            "source.orders-",
            "PREFIXED",
            "User:bob",
            "*",
            "DESCRIBE",
            "ALLOW",
        ],
        [
            "GROUP",
            "app-billing",
            "LITERAL",
            "User:alice",
            "*",
            "READ",
            "ALLOW",
        ],
        // Not `app-pay`: it starts no synced group.
        [
            "GROUP",
            "app-",
            "PREFIXED",
            "User:alice",
            "*",
            "READ",
            "ALLOW",
        ],
    ]
    .into_iter()
    .map(listed)
    .collect();
    assert_eq!(copied_now(), expected);

    let read = dump_topic_as(&target_sasl, "source.orders", &alice)
        .unwrap_or_else(|e| panic!("alice reads the copy once the ACLs are synced: {e:#}"));
    let key = |r: &kafka_testkit::DumpedRecord| (r.partition, r.key.clone(), r.value.clone());
    let mut sent: Vec<_> = written.iter().map(key).collect();
    sent.sort();
    let mut got: Vec<_> = read.iter().map(key).collect();
    got.sort();
    assert_eq!(got, sent);

    // Idempotent: nothing is left to do.
    let planned = mirror(&config, "plan", &["--sync-acls"]);
    assert!(planned.contains("ACLs: up to date"), "{planned}");

    // Pruning: ACLs removed on the source stay on the target unless
    // --prune-acls, which removes them and nothing else.
    let remove = ["--remove", "--force"];
    acl_command(&source, &[&remove[..], &BOB_DESCRIBES].concat());
    acl_command(&source, &[&remove[..], &MALLORY_DENIED].concat());
    mirror(&config, "run", &["--sync-acls"]);
    assert_eq!(copied_now(), expected, "kept without --prune-acls");
    mirror(&config, "run", &["--prune-acls"]);
    let left: BTreeSet<Listed> = expected
        .iter()
        .filter(|acl| acl.3 != "User:bob" && acl.3 != "User:mallory")
        .cloned()
        .collect();
    assert_eq!(copied_now(), left);
    assert!(
        listed_acls(&target).is_superset(&target_before),
        "only mirrored ACLs are pruned"
    );

    // While running, an ACL added on the source reaches the target within
    // a topic refresh interval.
    let mut running = RunningMirror::spawn(mirror_command().args([
        "run",
        "--config",
        config.as_str(),
        "--sync-acls",
    ]));
    acl_command(
        &source,
        &[
            "--add",
            "--allow-principal",
            "User:carol",
            "--operation",
            "Read",
            "--topic",
            "orders",
        ],
    );
    let carol = listed([
        "TOPIC",
        "source.orders",
        "LITERAL",
        "User:carol",
        "*",
        "READ",
        "ALLOW",
    ]);
    running.wait_until("carol's ACL is synced", Duration::from_secs(20), || {
        listed_acls(&target).contains(&carol)
    });
    terminate(running);
}

/// Clusters without an authorizer answer ACL requests with SECURITY_DISABLED:
/// a run with `[acls] sync = true` says so once and copies every record.
#[test]
fn without_an_authorizer_acl_sync_is_reported_once_and_the_data_copied() {
    let source_thread = thread::spawn(|| start_cluster(KAFKA, 1, &[]));
    let target = start_cluster(KAFKA, 1, &[]);
    let source = source_thread.join().expect("source started");
    source.create_topic("orders", 2, 1, &[]).expect("orders");
    produce_keyed(&source, "orders", 40, 2, "o", None);
    let config = config_file(
        "acls-unsecured.toml",
        &format!(
            "name = \"acls-unsecured\"\n[source]\nbootstrap_servers = \"{}\"\n\
             [target]\nbootstrap_servers = \"{}\"\n[topics]\ninclude = \"orders\"\n\
             [acls]\nsync = true\n",
            source.bootstrap(),
            target.bootstrap()
        ),
    );
    let output = run_mirror(
        &[
            "run".into(),
            "--config".into(),
            config,
            "--until-caught-up".into(),
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(assert_same_records(&source, &target, "orders"), 40);
    assert_eq!(
        stderr.matches("no authorizer (SECURITY_DISABLED)").count(),
        1,
        "{stderr}"
    );
}
