//! A migration: Kafka 3.9 (the last line with ZooKeeper, still widely run)
//! into Kafka 4.x. The two brokers negotiate different protocol versions with
//! the mirror; the data must arrive as the same batches and records.

mod common;

use common::*;
use kafka_testkit::{Compression, OLD_KAFKA_VERSION};

#[test]
fn kafka_3_9_into_kafka_4() {
    let source = start_cluster(OLD_KAFKA_VERSION, 1, &[]);
    let target = start_cluster(KAFKA, 1, &[]);
    let topic = "migrate";
    source.create_topic(topic, 4, 1, &[]).expect("create topic");
    // zstd is the codec a migration most often meets on old clusters.
    produce_with_both_clients(&source, topic, 4, Compression::Zstd, 2000, 4000);

    let summary = mirror_until_caught_up(&run_args(&source, &target, "migration"));
    assert!(
        summary.contains("replicated 1 topics, 4 partitions: 6000 records"),
        "{summary}"
    );
    assert_eq!(assert_same_records(&source, &target, topic), 6000);
    assert!(assert_same_batches(&source, &target, topic, 4) >= 8);
}
