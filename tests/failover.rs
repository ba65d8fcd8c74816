//! Brokers die and come back while data streams through, first on the
//! target, then on the source: leaders move, produce and fetch requests fail
//! mid-flight, and the mirror must retry after a metadata refresh without
//! losing, reordering or duplicating a record.

mod common;

use std::time::Duration;

use common::*;
use kafka_testkit::{produce_with_librdkafka, Compression, ProduceOpts};

#[test]
fn broker_restarts_on_both_sides_mid_stream_lose_and_reorder_nothing() {
    let source = start_cluster(KAFKA, 3, &[("min.insync.replicas", "2")]);
    let target = start_cluster(KAFKA, 3, &[("min.insync.replicas", "2")]);
    let topic = "failover";
    source.create_topic(topic, 6, 3, &[]).expect("create topic");

    let producer = {
        let bootstrap = source.bootstrap();
        std::thread::spawn(move || {
            let mut produced = 0;
            for round in 0..8 {
                produced += produce_with_librdkafka(
                    &bootstrap,
                    "failover",
                    &ProduceOpts {
                        count: 4000,
                        partitions: Some(6),
                        compression: Compression::Snappy,
                        idempotence: true,
                        key_prefix: format!("round{round}"),
                        ..ProduceOpts::default()
                    },
                )
                .expect("produce")
                .len();
                std::thread::sleep(Duration::from_millis(500));
            }
            produced
        })
    };
    let mut args = run_args(&source, &target, "failover");
    // Two fetchers per source broker: each its own connection and fetch
    // session, and both must survive the restarts.
    let tuning = config_file("failover.toml", "[replication]\nfetchers_per_broker = 2\n");
    args.extend([
        "--replication-factor".into(),
        "3".into(),
        "--config".into(),
        tuning,
    ]);
    let mut mirror = RunningMirror::spawn(
        mirror_command()
            .env("RUST_LOG", "kafka_mirror=debug")
            .args(&args),
    );

    mirror.wait_until("having copied something", Duration::from_secs(60), || {
        offset_of(&target, topic, 0, -1) > 0
    });
    target.kill_node(1).expect("kill a target broker");
    std::thread::sleep(Duration::from_secs(3));
    target.start_node(1).expect("restart it");
    source.kill_node(2).expect("kill a source broker");
    std::thread::sleep(Duration::from_secs(3));
    source.start_node(2).expect("restart it");
    let produced = producer.join().expect("producer thread");

    mirror.wait_until(
        "having copied every record",
        Duration::from_secs(120),
        || {
            (0..6)
                .map(|p| offset_of(&target, topic, p, -1))
                .sum::<i64>()
                >= produced as i64
        },
    );
    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {}: {stdout}\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 80)
    );
    assert!(
        stdout.contains("replicated 1 topics, 6 partitions"),
        "{stdout}"
    );
    // Exactly the source's records: nothing lost, reordered or written twice.
    assert_eq!(assert_same_records(&source, &target, topic), produced);
}
