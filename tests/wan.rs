//! Across a WAN: toxiproxy adds 50 ms each way between the mirror and the
//! source broker, which advertises the proxy, so every connection the mirror
//! opens to it crosses the "WAN" (as in the replication bench). With Fetches
//! small enough that the round trip bounds each one, the fetch window must
//! grow past one Fetch while the mirror is behind; partitions then move
//! between the fetchers' connections and fetch sessions, and every record
//! must still land once, in order.

mod common;

use std::net::SocketAddr;

use common::*;
use kafka_testkit::{
    free_ports, generate_with_librdkafka, ClusterSpec, Compression, Generate, KafkaCluster,
    Toxiproxy,
};

#[test]
fn a_long_round_trip_grows_the_fetch_window_and_every_record_lands_once() {
    let toxiproxy = Toxiproxy::start().expect("start toxiproxy");
    let wan = SocketAddr::from(([127, 0, 0, 1], free_ports(1).expect("a free port")[0]));
    let mut spec = ClusterSpec::new(KAFKA, 1);
    spec.extra_listeners
        .push(("WAN".into(), "PLAINTEXT".into()));
    spec.advertise.push(("WAN".into(), wan.to_string()));
    let source = KafkaCluster::start(spec).expect("start the source");
    let target = start_cluster(KAFKA, 1, &[]);
    let listener = source.listener_addr(0, "WAN").expect("the WAN listener");
    toxiproxy
        .create_proxy("source", wan, listener)
        .expect("create the proxy");
    toxiproxy
        .set_link("source", 50, None)
        .expect("add 50 ms each way");

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
    let mut args = run_args(&source, &target, "wan");
    let source_flag = args
        .iter()
        .position(|a| a == "--source")
        .expect("--source in the arguments");
    args[source_flag + 1] = wan.to_string();
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
