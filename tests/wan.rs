//! Across a WAN: toxiproxy adds 50 ms each way between the mirror and one
//! cluster's broker, which advertises the proxy, so every connection the
//! mirror opens to it crosses the "WAN" (as in the replication bench).
//!
//! - Source across it: with Fetches small enough that the round trip bounds
//!   each one, the fetch window must grow past one Fetch while the mirror
//!   is behind; partitions then move between the fetchers' connections and
//!   fetch sessions, and every record must still land once, in order.
//! - Target across it, exactly-once: a partition keeps up to 32 batches in
//!   flight (`transaction_max_in_flight_batches`), far past the broker's
//!   5-batch duplicate window, all pipelined on one connection; a
//!   read_committed reader (librdkafka) must see every record once, in order.

mod common;

use std::net::SocketAddr;

use common::*;
use kafka_testkit::{
    free_ports, generate_with_librdkafka, ClusterSpec, Compression, Generate, KafkaCluster,
    Toxiproxy,
};

/// A one-node cluster whose broker is also reachable, and advertised, at
/// the returned address: a toxiproxy proxy (named `name`) adding 50 ms
/// each way.
fn behind_a_wan(toxiproxy: &Toxiproxy, name: &str) -> (KafkaCluster, SocketAddr) {
    let wan = SocketAddr::from(([127, 0, 0, 1], free_ports(1).expect("a free port")[0]));
    let mut spec = ClusterSpec::new(KAFKA, 1);
    spec.extra_listeners
        .push(("WAN".into(), "PLAINTEXT".into()));
    spec.advertise.push(("WAN".into(), wan.to_string()));
    let cluster = KafkaCluster::start(spec).unwrap_or_else(|e| panic!("start {name}: {e:#}"));
    let listener = cluster.listener_addr(0, "WAN").expect("the WAN listener");
    toxiproxy
        .create_proxy(name, wan, listener)
        .expect("create the proxy");
    toxiproxy
        .set_link(name, 50, None)
        .expect("add 50 ms each way");
    (cluster, wan)
}

/// `args` with the address after `flag` replaced by `address`.
fn across(mut args: Vec<String>, flag: &str, address: SocketAddr) -> Vec<String> {
    let position = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in the arguments"));
    args[position + 1] = address.to_string();
    args
}

#[test]
fn a_long_round_trip_grows_the_fetch_window_and_every_record_lands_once() {
    let toxiproxy = Toxiproxy::start().expect("start toxiproxy");
    let (source, wan) = behind_a_wan(&toxiproxy, "source");
    let target = start_cluster(KAFKA, 1, &[]);

    let topic = "orders";
    source.create_topic(topic, 8, 1, &[]).expect("create topic");
    let written = generate_with_librdkafka(
        &source.bootstrap(),
        topic,
        Compression::Lz4,
        Generate::Bytes(40_000_000),
        5,
    )
    .expect("write the data");

    // 256 KiB Fetches: about 2.5 MB/s per Fetch over a 100 ms round trip,
    // so the data lasts several rounds of the window's measurement.
    let tuning = config_file(
        "wan.toml",
        "[replication]\nfetch_max_bytes = 262144\npartition_fetch_bytes = 65536\n",
    );
    let mut args = across(run_args(&source, &target, "wan"), "--source", wan);
    args.extend(["--config".into(), tuning]);
    let summary = mirror_until_caught_up(&args);

    assert!(
        summary_count(&summary, "fetch window: up to") > 1,
        "the window never grew:\n{summary}"
    );
    assert_eq!(
        assert_same_records(&source, &target, topic) as u64,
        written.records,
        "{summary}"
    );
}

#[test]
fn exactly_once_across_a_long_round_trip_to_the_target_copies_every_record_once() {
    let toxiproxy = Toxiproxy::start().expect("start toxiproxy");
    let (target, wan) = behind_a_wan(&toxiproxy, "target");
    let source = start_cluster(KAFKA, 1, &[]);

    let topic = "payments";
    source.create_topic(topic, 4, 1, &[]).expect("create topic");
    let written = generate_with_librdkafka(
        &source.bootstrap(),
        topic,
        Compression::Lz4,
        Generate::Bytes(30_000_000),
        7,
    )
    .expect("write the data");

    let mut args = across(run_args(&source, &target, "eos-wan"), "--target", wan);
    args.push("--exactly-once".into());
    let summary = mirror_until_caught_up(&args);

    assert_eq!(
        assert_same_records(&source, &target, topic) as u64,
        written.records,
        "{summary}"
    );
}
