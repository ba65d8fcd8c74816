//! kafka-mirror's idempotent producer under stress, against a real broker:
//! another writer fences its epoch or moves the broker's sequence for it so
//! that ours no longer follows, and a target that stops answering so that
//! batches time out with their fate unknown.
//!
//! Kafka's own producer meets all of these (a zombie instance, a truncated log
//! after an unclean leader election, a stalled broker). The mirror must
//! resend what may or may not have landed under the same producer id and
//! sequence, get a new producer id when the old one is refused, and lose or
//! repeat nothing.
//!
//! The interfering write is a raw Produce with our producer id, built with
//! kafka-protocol's own encoder: no client nobody wrote lets one choose a
//! producer id. Everything the test checks is read back with librdkafka.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_mirror::net::{ConnectionOptions, Connector};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_testkit::{read_partition_batches, DumpedRecord, KafkaCluster};

fn clusters() -> &'static Clusters {
    shared_clusters(&[], &[])
}

/// The producer id, epoch and next sequence the mirror used last on a target partition.
fn mirror_producer(target: &KafkaCluster, topic: &str) -> (i64, i16, i32) {
    let batches = read_partition_batches(&target.log_dir(0), topic, 0)
        .unwrap_or_else(|e| panic!("read {topic} segments: {e:#}"));
    let last = batches.last().expect("the mirror wrote batches");
    (
        last.producer_id(),
        last.producer_epoch(),
        last.base_sequence() + last.records_count(),
    )
}

/// Writes one record to partition 0 of `topic` as producer `producer_id` at
/// `epoch` and `sequence`, as another instance holding that id would.
fn interfere(target: &KafkaCluster, topic: &str, producer_id: i64, epoch: i16, sequence: i32) {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"intruder")),
        value: Some(Bytes::from_static(
            b"written by another holder of the producer id",
        )),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode the batch");
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let response = runtime.block_on(async {
        let connection = Connector::plain(ConnectionOptions::default())
            .connect(&target.broker_addr(0).to_string())
            .await
            .expect("connect to the target");
        // Produce v12 names topics by name (v13 by id).
        connection
            .send_versioned(request, 12)
            .await
            .expect("produce")
    });
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "the interfering write was refused");
}

fn start_mirror(source: &KafkaCluster, target: &KafkaCluster, topic: &str) -> RunningMirror {
    let mut args = run_args(source, target, topic);
    args.extend(["--topics".into(), topic.into()]);
    RunningMirror::spawn(mirror_command().args(&args))
}

/// Copies `before`, lets `interference` touch the target, copies `after`;
/// checks the target holds `before`, the intruder, then `after`, each record
/// once and in order, and that the mirror took a new producer id.
fn copies_through(topic: &str, interference: impl FnOnce(&KafkaCluster, i64, i16, i32)) {
    let Clusters { source, target } = clusters();
    source.create_topic(topic, 1, 1, &[]).expect("create topic");
    let before = produce_keyed(source, topic, 300, 1, "before", None);
    let mirror = start_mirror(source, target, topic);
    eventually(
        "the first records are copied",
        Duration::from_secs(90),
        || offset_of(target, topic, 0, -1) == 300,
    );
    let (producer_id, epoch, next_sequence) = mirror_producer(target, topic);
    interference(target, producer_id, epoch, next_sequence);
    let after = produce_keyed(source, topic, 300, 1, "after", None);
    eventually(
        "the later records are copied",
        Duration::from_secs(90),
        || offset_of(target, topic, 0, -1) == 601,
    );
    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{}", tail(&stderr, 30));
    assert!(
        stdout.contains("producer: 1 new producer ids"),
        "{stdout}\n{}",
        tail(&stderr, 30)
    );
    assert!(
        mirror_producer(target, topic).0 != producer_id,
        "the later batches carry the new producer id"
    );

    let copied = records_by_partition(&target.bootstrap(), topic)
        .remove(&0)
        .expect("partition 0");
    assert_eq!(copied.len(), 601, "record count");
    let intruder = &copied[300];
    assert_eq!(
        intruder.key.as_deref(),
        Some(&b"intruder"[..]),
        "the interfering record sits between the two runs"
    );
    let copied: Vec<DumpedRecord> = copied
        .into_iter()
        .filter(|r| r.key.as_deref() != Some(&b"intruder"[..]))
        .collect();
    let expected: Vec<&DumpedRecord> = before.iter().chain(&after).collect();
    assert_records(&expected, &copied);
}

/// A write with our producer id at a higher epoch fences the mirror's epoch
/// (INVALID_PRODUCER_EPOCH): it takes a new producer id and goes on.
#[test]
fn a_fenced_producer_id_is_replaced_and_nothing_is_lost_or_repeated() {
    copies_through("fenced", |target, producer_id, epoch, _| {
        interfere(target, "fenced", producer_id, epoch + 1, 0);
    });
}

/// A write with our producer id and epoch that takes our next sequence: the
/// broker's sequence for us no longer matches ours (OUT_OF_ORDER_SEQUENCE_NUMBER
/// on every retry), as after a truncated log. The mirror takes a new producer
/// id after five refusals in a row instead of stopping the partition.
#[test]
fn a_sequence_the_broker_disagrees_with_leads_to_a_new_producer_id() {
    copies_through("sequence", |target, producer_id, epoch, next_sequence| {
        interfere(target, "sequence", producer_id, epoch, next_sequence);
    });
}

/// The target broker stops (SIGSTOP) with Produce requests on the wire: they
/// time out, so the mirror cannot know whether they were appended. When the
/// broker comes back it may append the requests it had buffered, and the
/// mirror's resends (same producer id, same sequences) are then answered as
/// duplicates: every record exactly once, in order.
#[test]
fn batches_that_time_out_with_their_fate_unknown_land_exactly_once() {
    let Clusters { source, target } = clusters();
    let topic = "stalled";
    source.create_topic(topic, 3, 1, &[]).expect("create topic");
    let config = config_file(
        "stalled.toml",
        &format!(
            "name = \"stalled\"\n\
             [source]\nbootstrap_servers = \"{}\"\n\
             [target]\nbootstrap_servers = \"{}\"\nrequest_timeout_ms = 2000\n\
             [topics]\ninclude = \"{topic}\"\n",
            source.bootstrap(),
            target.bootstrap()
        ),
    );
    produce_keyed(source, topic, 300, 3, "before", None);
    let mirror = RunningMirror::spawn(mirror_command().args(["run", "--config", &config]));
    eventually(
        "the first records are copied",
        Duration::from_secs(90),
        || (0..3).map(|p| offset_of(target, topic, p, -1)).sum::<i64>() == 300,
    );
    let broker = target.jvm_pids();
    let signal = |name: &str| {
        for pid in &broker {
            let status = std::process::Command::new("kill")
                .args([name, &pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {name} {pid}");
        }
    };
    signal("-STOP");
    produce_keyed(source, topic, 1500, 3, "during", None);
    // Several request timeouts pass while the broker is stopped.
    std::thread::sleep(Duration::from_secs(7));
    signal("-CONT");
    eventually("everything is copied", Duration::from_secs(120), || {
        (0..3).map(|p| offset_of(target, topic, p, -1)).sum::<i64>() >= 1800
    });
    let output = terminate(mirror);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{}", tail(&stderr, 30));
    assert!(
        !stdout.contains("; 0 produce retries"),
        "requests timed out and were resent: {stdout}"
    );
    assert_eq!(assert_same_records(source, target, topic), 1800);
}
