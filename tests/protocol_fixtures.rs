//! Frames captured from real Apache Kafka brokers (4.4.0, and 3.9.1 in
//! ZooKeeper mode for the old message formats) and librdkafka
//! (`protocol-fixtures/`, see its README), decoded with kafka-mirror's framing
//! and batch code and checked against the sidecars that `capture.py` wrote with
//! its own, independent parser. No broker needed.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_mirror::batch::test_support::plain_records;
use kafka_mirror::batch::{
    reencode, split_batches, AbortedTransactions, BatchError, BatchFate, Compression, ControlType,
    Fetched, ProducerStamp, RecordBatch, TimestampType,
};
use kafka_mirror::net::frame::{decode_response, try_split_frame};
use kafka_mirror::net::NetError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_response::{FetchResponse, PartitionData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest, RequestHeader,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use serde::Deserialize;

/// Every fixture the capture writes; a regeneration that loses one fails here.
const FIXTURES: &[&str] = &[
    "fetch-none",
    "fetch-gzip",
    "fetch-snappy",
    "fetch-lz4",
    "fetch-zstd",
    "fetch-txn-read-uncommitted",
    "fetch-txn-read-committed",
    "fetch-idempotent",
    "fetch-compacted",
    "fetch-truncated",
    "produce-lz4",
    "produce-zstd",
    "corrupt-bad-crc",
    "corrupt-batch-length",
    "corrupt-frame-prefix",
    "fetch-v0-none",
    "fetch-v0-gzip",
    "fetch-v0-snappy",
    "fetch-v0-lz4",
    "fetch-v1-none",
    "fetch-v1-gzip",
    "fetch-v1-snappy",
    "fetch-v1-lz4",
];

/// Fetch responses of topics in the old message formats: name, magic, codec.
const LEGACY_FIXTURES: &[(&str, i8, Compression)] = &[
    ("fetch-v0-none", 0, Compression::None),
    ("fetch-v0-gzip", 0, Compression::Gzip),
    ("fetch-v0-snappy", 0, Compression::Snappy),
    ("fetch-v0-lz4", 0, Compression::Lz4),
    ("fetch-v1-none", 1, Compression::None),
    ("fetch-v1-gzip", 1, Compression::Gzip),
    ("fetch-v1-snappy", 1, Compression::Snappy),
    ("fetch-v1-lz4", 1, Compression::Lz4),
];

const CODEC_FIXTURES: &[(&str, Compression)] = &[
    ("fetch-none", Compression::None),
    ("fetch-gzip", Compression::Gzip),
    ("fetch-snappy", Compression::Snappy),
    ("fetch-lz4", Compression::Lz4),
    ("fetch-zstd", Compression::Zstd),
];

#[derive(Debug, Deserialize)]
struct Sidecar {
    name: String,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    topic: String,
    #[serde(default)]
    error_code: Option<i16>,
    #[serde(default)]
    acks: Option<i16>,
    #[serde(default)]
    partitions: Vec<SidecarPartition>,
    #[serde(default)]
    corruption: Option<serde_json::Value>,
    /// Records as the producer had them acknowledged (old-format fixtures).
    #[serde(default)]
    produced: Vec<SidecarProduced>,
}

#[derive(Debug, Deserialize)]
struct SidecarProduced {
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    timestamp: i64,
}

#[derive(Debug, Deserialize)]
struct SidecarPartition {
    partition: i32,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    error_code: Option<i16>,
    #[serde(default)]
    high_watermark: Option<i64>,
    #[serde(default)]
    last_stable_offset: Option<i64>,
    #[serde(default)]
    log_start_offset: Option<i64>,
    #[serde(default)]
    aborted_transactions: Option<Vec<SidecarAborted>>,
    records_bytes: usize,
    partial_tail_bytes: usize,
    batches: Vec<SidecarBatch>,
    #[serde(default)]
    legacy_entries: Vec<SidecarEntry>,
}

/// An old-format (magic 0/1) message as `capture.py` parsed it.
#[derive(Debug, Deserialize)]
struct SidecarEntry {
    offset: i64,
    size: usize,
    magic: i8,
    crc_ok: bool,
    codec: String,
    timestamp_type: Option<String>,
    timestamp: Option<i64>,
    position: usize,
    /// A gzip wrapper's inner messages, offsets as stored.
    inner: Option<Vec<SidecarEntry>>,
}

#[derive(Debug, Deserialize)]
struct SidecarAborted {
    producer_id: i64,
    first_offset: i64,
}

#[derive(Debug, Deserialize)]
struct SidecarBatch {
    base_offset: i64,
    batch_length: i32,
    partition_leader_epoch: i32,
    crc: u32,
    crc_ok: bool,
    #[serde(default)]
    computed_crc: Option<u32>,
    attributes: i16,
    codec: String,
    timestamp_type: String,
    transactional: bool,
    control: bool,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records_count: i32,
    control_type: Option<String>,
    position: usize,
}

fn frames_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures/frames")
}

fn load(name: &str) -> (Bytes, Sidecar) {
    let dir = frames_dir();
    let frame = fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| {
        panic!("{name}.bin: {e} (regenerate: see protocol-fixtures/README.md)")
    });
    let json = fs::read_to_string(dir.join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    let sidecar: Sidecar =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}.json: {e}"));
    assert_eq!(sidecar.name, name);
    (Bytes::from(frame), sidecar)
}

/// Decodes a Fetch response frame with kafka-mirror's framing code.
fn decode_fetch(name: &str, frame: Bytes, sidecar: &Sidecar) -> FetchResponse {
    assert_eq!(sidecar.api_key, ApiKey::Fetch as i16, "{name}");
    let (correlation_id, response) = decode_response::<FetchRequest>(frame, sidecar.api_version)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(correlation_id, sidecar.correlation_id, "{name}");
    assert_eq!(Some(response.error_code), sidecar.error_code, "{name}");
    response
}

/// The partitions of a response that carry records, in response order.
fn partitions_with_records(response: &FetchResponse) -> Vec<&PartitionData> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.records.is_some())
        .collect()
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

fn control_name(c: Option<ControlType>) -> Option<String> {
    c.map(|c| match c {
        ControlType::Abort => "abort".to_string(),
        ControlType::Commit => "commit".to_string(),
        ControlType::Other(t) => format!("other({t})"),
    })
}

/// Every header field kafka-mirror's view reads, against the sidecar.
fn assert_batch_matches(name: &str, batch: &RecordBatch, want: &SidecarBatch) {
    let at = format!("{name}: batch at {}", want.base_offset);
    assert_eq!(batch.base_offset(), want.base_offset, "{at}");
    assert_eq!(batch.batch_length(), want.batch_length, "{at}");
    assert_eq!(batch.len(), want.batch_length as usize + 12, "{at}");
    assert_eq!(
        batch.partition_leader_epoch(),
        want.partition_leader_epoch,
        "{at}"
    );
    assert_eq!(batch.magic(), 2, "{at}");
    assert_eq!(batch.crc(), want.crc, "{at}");
    assert_eq!(batch.attributes(), want.attributes, "{at}");
    assert_eq!(compression_name(batch.compression()), want.codec, "{at}");
    let ts = match batch.timestamp_type() {
        TimestampType::CreateTime => "create_time",
        TimestampType::LogAppendTime => "log_append_time",
    };
    assert_eq!(ts, want.timestamp_type, "{at}");
    assert_eq!(batch.is_transactional(), want.transactional, "{at}");
    assert_eq!(batch.is_control(), want.control, "{at}");
    assert_eq!(batch.last_offset_delta(), want.last_offset_delta, "{at}");
    assert_eq!(
        batch.last_offset(),
        want.base_offset + i64::from(want.last_offset_delta),
        "{at}"
    );
    assert_eq!(batch.base_timestamp(), want.base_timestamp, "{at}");
    assert_eq!(batch.max_timestamp(), want.max_timestamp, "{at}");
    assert_eq!(batch.producer_id(), want.producer_id, "{at}");
    assert_eq!(batch.producer_epoch(), want.producer_epoch, "{at}");
    assert_eq!(batch.base_sequence(), want.base_sequence, "{at}");
    assert_eq!(batch.records_count(), want.records_count, "{at}");
    assert_eq!(
        control_name(batch.control_type().unwrap()),
        want.control_type,
        "{at}"
    );
    if want.crc_ok {
        batch.verify_crc().unwrap_or_else(|e| panic!("{at}: {e}"));
    }
}

/// Splits `records` and checks every batch and the tail against the sidecar.
/// Returns the batches.
fn split_and_check(name: &str, records: &Bytes, want: &SidecarPartition) -> Vec<RecordBatch> {
    assert_eq!(records.len(), want.records_bytes, "{name}");
    let mut split = split_batches(records);
    let batches: Vec<RecordBatch> = split
        .by_ref()
        .map(|item| match item {
            Ok(Fetched::Batch(batch)) => batch,
            Ok(Fetched::Legacy(messages)) => panic!("{name}: unexpected {messages:?}"),
            Err(e) => panic!("{name}: {e}"),
        })
        .collect();
    assert_eq!(batches.len(), want.batches.len(), "{name}: batch count");
    for (batch, expected) in batches.iter().zip(&want.batches) {
        assert_batch_matches(name, batch, expected);
        // Zero-copy: each batch is the slice of the frame at the sidecar's position.
        assert_eq!(
            batch.as_bytes().as_ptr() as usize,
            records.as_ptr() as usize + expected.position,
            "{name}: batch at {} is not where the capture found it",
            expected.base_offset
        );
    }
    assert_eq!(
        split.partial_tail(),
        want.partial_tail_bytes > 0,
        "{name}: partial tail"
    );
    batches
}

/// Decodes a fetch fixture, checks partition metadata and every batch against
/// the sidecar, and returns the (only) partition's data and batches.
fn checked_fetch(name: &str) -> (Sidecar, PartitionData, Vec<RecordBatch>) {
    let (frame, sidecar) = load(name);
    let response = decode_fetch(name, frame, &sidecar);
    let parts = partitions_with_records(&response);
    assert_eq!(parts.len(), sidecar.partitions.len(), "{name}");
    assert_eq!(parts.len(), 1, "{name}: one partition with records");
    let (part, want) = (parts[0], &sidecar.partitions[0]);
    assert_eq!(part.partition_index, want.partition, "{name}");
    assert_eq!(Some(part.error_code), want.error_code, "{name}");
    assert_eq!(Some(part.high_watermark), want.high_watermark, "{name}");
    assert_eq!(
        Some(part.last_stable_offset),
        want.last_stable_offset,
        "{name}"
    );
    assert_eq!(Some(part.log_start_offset), want.log_start_offset, "{name}");
    let aborted: Option<Vec<(i64, i64)>> = part.aborted_transactions.as_ref().map(|l| {
        l.iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect()
    });
    let want_aborted: Option<Vec<(i64, i64)>> = want
        .aborted_transactions
        .as_ref()
        .map(|l| l.iter().map(|a| (a.producer_id, a.first_offset)).collect());
    assert_eq!(aborted, want_aborted, "{name}: aborted transactions");
    let records = part.records.clone().expect("records");
    let batches = split_and_check(name, &records, want);
    let part = part.clone();
    (sidecar, part, batches)
}

/// Records of a batch as kafka-protocol decodes them (an independent decoder,
/// decompressing as needed; it also checks the CRC).
fn decode_records(batch: &Bytes) -> Vec<Record> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes the batch");
    assert!(buf.is_empty(), "one batch");
    set.records
}

/// What a record carries, with its offset relative to the batch's base offset.
fn content(records: &[Record], base_offset: i64) -> Vec<(i64, Option<Bytes>, Option<Bytes>, i64)> {
    records
        .iter()
        .map(|r| {
            (
                r.offset - base_offset,
                r.key.clone(),
                r.value.clone(),
                r.timestamp,
            )
        })
        .collect()
}

/// `produce_header` changes the header only: kafka-protocol decodes the
/// produced batch (new header, records as they came) to the same records,
/// with the new producer fields.
fn assert_rewrite_keeps_records(name: &str, batch: &RecordBatch) {
    batch.verify_crc().unwrap();
    let before = decode_records(batch.as_bytes());
    let stamp = ProducerStamp {
        producer_id: 4242,
        producer_epoch: 7,
        base_sequence: 1000,
        transactional: false,
    };
    let header = batch.produce_header(stamp);
    let rewritten: bytes::Bytes = [&header[..], &batch.as_bytes()[61..]].concat().into();
    let view = RecordBatch::parse(rewritten.clone()).unwrap();
    view.verify_crc()
        .unwrap_or_else(|e| panic!("{name}: rewritten batch: {e}"));
    assert_eq!(view.base_offset(), 0, "{name}");
    assert_eq!(view.producer_id(), 4242, "{name}");
    assert_eq!(view.producer_epoch(), 7, "{name}");
    assert_eq!(view.base_sequence(), 1000, "{name}");
    assert!(!view.is_transactional(), "{name}");
    assert_eq!(view.compression(), batch.compression(), "{name}");
    let after = decode_records(&rewritten);
    assert_eq!(
        content(&after, 0),
        content(&before, batch.base_offset()),
        "{name}"
    );
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a.headers, b.headers, "{name}");
        assert_eq!(a.producer_id, 4242, "{name}");
        assert_eq!(a.producer_epoch, 7, "{name}");
        assert_eq!(
            i64::from(a.sequence - 1000),
            b.offset - batch.base_offset(),
            "{name}"
        );
    }
}

#[test]
fn every_fixture_is_there_with_a_sidecar() {
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(frames_dir()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("bin") => {
                assert!(
                    path.with_extension("json").exists(),
                    "{stem} has no sidecar"
                );
                found.insert(stem);
            }
            Some("json") => assert!(path.with_extension("bin").exists(), "{stem}: no frame"),
            _ => panic!("unexpected file {}", path.display()),
        }
    }
    let want: BTreeSet<String> = FIXTURES
        .iter()
        .chain(RAW_FIXTURES)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    for name in FIXTURES {
        load(name);
    }
}

#[test]
fn codec_fixtures_decode_split_and_verify() {
    for &(name, codec) in CODEC_FIXTURES {
        let (sidecar, _, batches) = checked_fetch(name);
        assert_eq!(sidecar.topic, format!("codec-{}", compression_name(codec)));
        assert!(batches.len() >= 2, "{name}");
        let mut records = Vec::new();
        for batch in &batches {
            assert_eq!(batch.compression(), codec, "{name}");
            assert!(!batch.is_control() && !batch.is_transactional(), "{name}");
            assert_eq!(batch.producer_id(), -1, "{name}: not idempotent");
            assert_eq!(
                batch.records_count(),
                batch.last_offset_delta() + 1,
                "{name}"
            );
            let decoded = decode_records(batch.as_bytes());
            assert_eq!(decoded.len(), batch.records_count() as usize, "{name}");
            records.extend(decoded);
            assert_rewrite_keeps_records(name, batch);
        }
        // What produce.py wrote: keys a-0..19 then b-0..19, every 10th value
        // null (a tombstone-like record), headers on 3 records of 4.
        let keys: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = ["a", "b"]
            .iter()
            .flat_map(|p| (0..20).map(move |i| format!("{p}-{i}")))
            .collect();
        assert_eq!(keys, want, "{name}");
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..40).collect::<Vec<_>>(), "{name}");
        for (i, r) in records.iter().enumerate() {
            let i = i % 20;
            assert_eq!(r.value.is_none(), i % 10 == 9, "{name}: record {i} value");
            // 0, 1 or 6 headers; kafka-protocol keeps headers in a map, so the
            // repeated name "dup" counts once.
            let want_headers = [0, 1, 5, 5][i % 4];
            assert_eq!(r.headers.len(), want_headers, "{name}: record {i} headers");
        }
    }
}

#[test]
fn read_uncommitted_fetch_holds_aborted_data_and_both_markers() {
    let (_, part, batches) = checked_fetch("fetch-txn-read-uncommitted");
    assert!(part.aborted_transactions.is_none_or(|l| l.is_empty()));
    let markers: Vec<(i64, Option<ControlType>)> = batches
        .iter()
        .filter(|b| b.is_control())
        .map(|b| (b.producer_id(), b.control_type().unwrap()))
        .collect();
    assert_eq!(markers.len(), 3, "{markers:?}");
    assert!(markers.iter().any(|m| m.1 == Some(ControlType::Commit)));
    assert!(markers.iter().any(|m| m.1 == Some(ControlType::Abort)));
    for b in &batches {
        assert!(b.is_transactional(), "every batch belongs to a transaction");
        assert!(b.producer_id() >= 0 && b.producer_epoch() >= 0);
        if b.is_control() {
            assert_eq!(b.records_count(), 1);
            assert_eq!(b.base_sequence(), -1);
        }
    }
    let data: i32 = batches
        .iter()
        .filter(|b| !b.is_control())
        .map(RecordBatch::records_count)
        .sum();
    assert_eq!(data, 16, "6 committed + 6 aborted + 4 committed records");
}

#[test]
fn read_committed_fetch_is_classified_as_the_broker_intended() {
    let (_, part, batches) = checked_fetch("fetch-txn-read-committed");
    let list = part.aborted_transactions.clone().unwrap_or_default();
    assert_eq!(list.len(), 1, "one aborted transaction: {list:?}");
    let aborted_producer = list[0].producer_id.0;
    let aborted_first = list[0].first_offset;

    let mut filter = AbortedTransactions::new(&list);
    let mut forwarded = 0;
    let mut skipped = 0;
    for b in &batches {
        let fate = filter.classify(b).unwrap();
        let expected = if b.is_control() {
            BatchFate::SkipControl
        } else if b.producer_id() == aborted_producer && b.base_offset() >= aborted_first {
            BatchFate::SkipAborted
        } else {
            BatchFate::Forward
        };
        assert_eq!(fate, expected, "batch at {}", b.base_offset());
        match fate {
            BatchFate::Forward => forwarded += b.records_count(),
            BatchFate::SkipAborted => skipped += b.records_count(),
            BatchFate::SkipControl => {}
        }
    }
    // What librdkafka's read_committed consumer delivered in the capture: 10.
    assert_eq!((forwarded, skipped), (10, 6));
}

#[test]
fn idempotent_batches_carry_consecutive_sequences() {
    let (_, _, batches) = checked_fetch("fetch-idempotent");
    assert!(batches.len() >= 2);
    let pid = batches[0].producer_id();
    let epoch = batches[0].producer_epoch();
    assert!(pid >= 0 && epoch >= 0);
    let mut next_sequence = 0;
    for b in &batches {
        assert_eq!((b.producer_id(), b.producer_epoch()), (pid, epoch));
        assert!(!b.is_transactional());
        assert_eq!(b.compression(), Compression::Lz4);
        assert_eq!(
            b.base_sequence(),
            next_sequence,
            "batch at {}",
            b.base_offset()
        );
        next_sequence += b.records_count();
        assert_rewrite_keeps_records("fetch-idempotent", b);
    }
    assert_eq!(next_sequence, 24);
}

#[test]
fn compacted_fetch_has_offset_gaps_and_an_empty_batch() {
    let (_, part, batches) = checked_fetch("fetch-compacted");
    // Cleaned batches keep their offset range but lose records: kafka-mirror
    // cannot produce these as they are ("Inconsistent batch offset range").
    let gapped: Vec<&RecordBatch> = batches
        .iter()
        .filter(|b| b.records_count() != b.last_offset_delta() + 1)
        .collect();
    assert!(!gapped.is_empty());
    for b in &gapped {
        let records = decode_records(b.as_bytes());
        assert_eq!(records.len(), b.records_count() as usize);
        for r in &records {
            assert!(r.offset >= b.base_offset() && r.offset <= b.last_offset());
        }
        if let [.., last] = &records[..] {
            assert_eq!(
                last.offset,
                b.last_offset(),
                "the kept record is the newest"
            );
        }
    }
    // An idempotent producer's last batch, all of it overwritten, is kept empty.
    let empty: Vec<&RecordBatch> = batches.iter().filter(|b| b.records_count() == 0).collect();
    assert_eq!(empty.len(), 1);
    assert!(empty[0].producer_id() >= 0);
    assert!(empty[0].last_offset_delta() > 0);
    assert!(decode_records(empty[0].as_bytes()).is_empty());
    // Offsets between batches are gaps too: the removed batches left holes.
    let first = batches.first().unwrap();
    assert!(first.base_offset() > part.log_start_offset);
    // A tombstone (null value) survives: delete.retention.ms has not passed.
    let tombstones = batches
        .iter()
        .flat_map(|b| decode_records(b.as_bytes()))
        .filter(|r| r.value.is_none())
        .count();
    assert_eq!(tombstones, 1);
}

/// `renumber` keeps what consumers see: the same records in order (key,
/// value, headers, timestamp), numbered 0..n-1 in a batch the broker accepts.
fn assert_renumbered(name: &str, input: &RecordBatch) -> RecordBatch {
    input.verify_crc().unwrap();
    let output = reencode(input).unwrap_or_else(|e| panic!("{name}: {e}"));
    let output = RecordBatch::parse(output.as_bytes().clone()).unwrap();
    output
        .verify_crc()
        .unwrap_or_else(|e| panic!("{name}: renumbered batch: {e}"));
    assert_eq!(output.records_count(), input.records_count(), "{name}");
    assert_eq!(
        output.last_offset_delta() + 1,
        output.records_count(),
        "{name}"
    );
    assert_eq!(output.compression(), input.compression(), "{name}");
    assert_eq!(output.attributes(), input.attributes(), "{name}");
    assert_eq!(output.base_offset(), input.base_offset(), "{name}");
    assert_eq!(output.base_timestamp(), input.base_timestamp(), "{name}");
    assert_eq!(output.max_timestamp(), input.max_timestamp(), "{name}");
    assert_eq!(output.producer_id(), input.producer_id(), "{name}");
    let (before, after) = (
        decode_records(input.as_bytes()),
        decode_records(output.as_bytes()),
    );
    assert_eq!(before.len(), after.len(), "{name}");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a.offset, output.base_offset() + i as i64, "{name}");
        assert_eq!(
            (&a.key, &a.value, &a.headers, a.timestamp),
            (&b.key, &b.value, &b.headers, b.timestamp),
            "{name}: record {i}"
        );
    }
    output
}

#[test]
fn compacted_batches_from_a_real_cleaner_are_renumbered() {
    let (_, _, batches) = checked_fetch("fetch-compacted");
    let gapped: Vec<&RecordBatch> = batches.iter().filter(|b| b.has_offset_gaps()).collect();
    assert!(!gapped.is_empty());
    for batch in gapped {
        let records = decode_records(batch.as_bytes());
        // The cleaner kept the newest record: its offsetDelta is not 0.
        assert!(records[0].offset > batch.base_offset());
        assert_renumbered("fetch-compacted", batch);
    }
    // Batches without gaps, and the emptied one, are not renumbered.
    assert!(batches
        .iter()
        .filter(|b| !b.has_offset_gaps())
        .all(|b| b.records_count() == 0 || b.records_count() == b.last_offset_delta() + 1));
}

/// librdkafka's batches of every codec (repeated `dup` headers in them), with
/// a gap after their last record, as when the cleaner drops a batch's tail:
/// the offsetDeltas stay, so the decompressed records must come back byte
/// for byte, and the codec (for snappy, librdkafka's raw framing) is kept.
#[test]
fn librdkafka_batches_of_every_codec_survive_renumbering_byte_for_byte() {
    for &(name, codec) in CODEC_FIXTURES {
        let (_, _, batches) = checked_fetch(name);
        let mut duplicate_headers = 0;
        for batch in &batches {
            let mut bytes = batch.as_bytes().to_vec();
            let widened = batch.last_offset_delta() + 3;
            bytes[23..27].copy_from_slice(&widened.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let gapped = RecordBatch::parse(Bytes::from(bytes)).unwrap();
            assert!(gapped.has_offset_gaps(), "{name}");
            let output = assert_renumbered(name, &gapped);
            assert_eq!(output.compression(), codec, "{name}");
            let plain = plain_records(&output);
            assert_eq!(plain, plain_records(batch), "{name}: records changed");
            duplicate_headers += plain.windows(3).filter(|w| w == b"dup").count();
            if codec == Compression::Snappy {
                let xerial = |b: &RecordBatch| b.as_bytes()[61..].starts_with(b"\x82SNAPPY");
                assert_eq!(
                    xerial(&output),
                    xerial(batch),
                    "{name}: snappy framing kept"
                );
            }
        }
        assert!(
            duplicate_headers > 0,
            "{name}: no repeated header names in the data"
        );
    }
}

#[test]
fn truncated_fetch_ends_in_a_partial_tail() {
    let (sidecar, part, batches) = checked_fetch("fetch-truncated");
    let want = &sidecar.partitions[0];
    assert!(want.partial_tail_bytes > 0);
    let records = part.records.unwrap();
    // The cut-off batch starts right after the last complete one, at its next offset.
    let last = batches.last().unwrap();
    let tail_start = records.len() - want.partial_tail_bytes;
    assert_eq!(
        tail_start,
        last.as_bytes().as_ptr() as usize + last.len() - records.as_ptr() as usize
    );
    let tail = &records[tail_start..];
    let tail_offset = i64::from_be_bytes(tail[..8].try_into().unwrap());
    assert_eq!(tail_offset, last.next_offset());
    let tail_length = i32::from_be_bytes(tail[8..12].try_into().unwrap());
    assert!(
        tail_length as usize + 12 > tail.len(),
        "the tail is cut off"
    );
    // The broker stops at the fetch size limit, not at a batch boundary.
    assert_eq!(records.len(), 8000);
}

#[test]
fn produce_requests_from_librdkafka_decode_and_survive_the_rewrite() {
    for (name, codec) in [
        ("produce-lz4", Compression::Lz4),
        ("produce-zstd", Compression::Zstd),
    ] {
        let (frame, sidecar) = load(name);
        assert_eq!(sidecar.api_key, ApiKey::Produce as i16);
        let version = sidecar.api_version;
        let mut buf = frame.clone();
        let header =
            RequestHeader::decode(&mut buf, ApiKey::Produce.request_header_version(version))
                .unwrap();
        assert_eq!(header.request_api_key, ApiKey::Produce as i16);
        assert_eq!(header.request_api_version, version);
        assert_eq!(header.correlation_id, sidecar.correlation_id);
        assert_eq!(
            header.client_id.as_deref(),
            Some(sidecar.topic.as_str()),
            "the capture names the client after the topic"
        );
        let request = ProduceRequest::decode(&mut buf, version).unwrap();
        assert!(buf.is_empty(), "{name}: trailing bytes");
        assert_eq!(Some(request.acks), sidecar.acks);
        assert!(request.transactional_id.is_none());
        assert_eq!(request.topic_data.len(), 1);
        let topic = &request.topic_data[0];
        assert_eq!(topic.name.as_str(), sidecar.topic);
        assert_eq!(topic.partition_data.len(), 1, "{name}");
        let part = &topic.partition_data[0];
        let want = &sidecar.partitions[0];
        assert_eq!(part.index, want.partition);
        assert_eq!(want.topic.as_deref(), Some(sidecar.topic.as_str()));
        let records = part.records.clone().unwrap();
        let batches = split_and_check(name, &records, want);
        // Produce v3+: exactly one batch per partition, base offset 0.
        assert_eq!(batches.len(), 1, "{name}");
        let batch = &batches[0];
        assert_eq!(batch.base_offset(), 0);
        assert_eq!(batch.compression(), codec);
        assert_eq!(batch.records_count(), 20);
        assert_rewrite_keeps_records(name, batch);
    }
}

#[test]
fn a_flipped_byte_is_a_crc_mismatch_naming_the_batch() {
    let (frame, sidecar) = load("corrupt-bad-crc");
    let corruption = sidecar.corruption.as_ref().unwrap();
    let bad_offset = corruption["batch_base_offset"].as_i64().unwrap();
    // The frame structure is intact: it decodes, and the batches split.
    let response = decode_fetch("corrupt-bad-crc", frame, &sidecar);
    let part = partitions_with_records(&response)[0];
    let want = &sidecar.partitions[0];
    let batches = split_and_check("corrupt-bad-crc", part.records.as_ref().unwrap(), want);
    let mut mismatches = 0;
    for (batch, expected) in batches.iter().zip(&want.batches) {
        match batch.verify_crc() {
            Ok(()) => assert!(expected.crc_ok, "batch at {}", expected.base_offset),
            Err(BatchError::CrcMismatch {
                base_offset,
                stored,
                computed,
            }) => {
                assert!(!expected.crc_ok);
                assert_eq!(base_offset, bad_offset);
                assert_eq!(stored, expected.crc);
                assert_eq!(Some(computed), expected.computed_crc);
                mismatches += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(mismatches, 1);
    // It differs from the captured frame (whose batches all verify) in the one
    // flipped byte only.
    let (original, _) = load("fetch-none");
    let (corrupted, _) = load("corrupt-bad-crc");
    let at = corruption["frame_offset"].as_u64().unwrap() as usize;
    let differing: Vec<usize> = (0..original.len())
        .filter(|&i| original[i] != corrupted[i])
        .collect();
    assert_eq!(differing, [at]);
    assert_eq!(original[at] ^ 0xff, corrupted[at]);
}

#[test]
fn an_oversized_batch_length_is_a_partial_tail_not_a_panic() {
    let (frame, sidecar) = load("corrupt-batch-length");
    let range = frame.as_ptr_range();
    let response = decode_fetch("corrupt-batch-length", frame.clone(), &sidecar);
    let part = partitions_with_records(&response)[0];
    let records = part.records.clone().unwrap();
    // Still a slice of the frame: nothing was copied or reserved for the bogus length.
    assert!(range.contains(&records.as_ptr()));
    let want = &sidecar.partitions[0];
    let batches = split_and_check("corrupt-batch-length", &records, want);
    assert!(want.partial_tail_bytes > 0);
    for b in &batches {
        b.verify_crc().unwrap();
        assert!(range.contains(&b.as_bytes().as_ptr()));
    }
    let bogus = sidecar.corruption.as_ref().unwrap()["batch_length"]
        .as_i64()
        .unwrap();
    assert!(bogus as usize > frame.len());
}

#[test]
fn an_oversized_frame_prefix_is_refused_before_allocating() {
    let (wire, sidecar) = load("corrupt-frame-prefix");
    let prefix = sidecar.corruption.as_ref().unwrap()["size_prefix"]
        .as_i64()
        .unwrap();
    let max = 100 << 20;
    let mut buf = BytesMut::from(&wire[..]);
    let capacity = buf.capacity();
    let err = try_split_frame(&mut buf, max).unwrap_err();
    assert!(
        matches!(err, NetError::FrameTooLarge { size, max: m } if i64::from(size) == prefix && m == max),
        "{err:?}"
    );
    assert_eq!(
        buf.capacity(),
        capacity,
        "reserved room for a refused frame"
    );
    assert_eq!(buf.len(), wire.len(), "consumed bytes of a refused frame");

    // With its real size prefix the same frame splits and decodes.
    let body = wire.slice(4..);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
    buf.extend_from_slice(&body);
    let frame = try_split_frame(&mut buf, max).unwrap().unwrap();
    assert!(buf.is_empty());
    let (correlation_id, _) = decode_response::<FetchRequest>(frame, sidecar.api_version).unwrap();
    assert_eq!(correlation_id, sidecar.correlation_id);
}

fn base64_decode(text: &Option<String>) -> Option<Bytes> {
    use base64::Engine as _;
    text.as_ref().map(|t| {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .expect("base64 in a sidecar")
            .into()
    })
}

/// The one partition with records of an old-format fixture, its records,
/// and the sidecar's view of it.
fn legacy_fetch(name: &str) -> (Sidecar, Bytes) {
    let (frame, sidecar) = load(name);
    let response = decode_fetch(name, frame, &sidecar);
    let parts = partitions_with_records(&response);
    assert_eq!(parts.len(), 1, "{name}");
    let records = parts[0].records.clone().expect("records");
    assert_eq!(records.len(), sidecar.partitions[0].records_bytes, "{name}");
    (sidecar, records)
}

/// Brokers answer a Fetch at the version librdkafka (and kafka-mirror)
/// negotiate with the old formats as they are stored, never up-converted:
/// the records split into one run of old-format entries, which up-converts
/// to v2 batches holding exactly what the producer wrote.
#[test]
fn old_format_fetches_up_convert_to_what_the_producer_wrote() {
    for &(name, magic, codec) in LEGACY_FIXTURES {
        let (sidecar, records) = legacy_fetch(name);
        assert!(sidecar.api_version >= 4, "{name}: a Fetch that allows v2");
        let want = &sidecar.partitions[0];
        assert_eq!(want.partial_tail_bytes, 0, "{name}");
        assert!(want.batches.is_empty(), "{name}: no v2 batch");
        let entries = &want.legacy_entries;
        assert!(entries.len() >= 2, "{name}");
        for entry in entries {
            assert_eq!(entry.magic, magic, "{name} at {}", entry.offset);
            assert_eq!(entry.codec, compression_name(codec), "{name}");
            assert!(entry.crc_ok, "{name}");
            assert_eq!(entry.timestamp.is_some(), magic == 1, "{name}");
            let timestamp_type = (magic == 1).then(|| "create_time".to_string());
            assert_eq!(entry.timestamp_type, timestamp_type, "{name}");
        }
        // Inner offsets as stored: absolute in magic 0, relative to the
        // first inner message in magic 1; the wrapper has the last one's.
        for entry in entries.iter().filter(|e| e.inner.is_some()) {
            let inner: Vec<i64> = entry.inner.iter().flatten().map(|m| m.offset).collect();
            let first = entry.offset - (inner.len() as i64 - 1);
            let expected: Vec<i64> = (0..inner.len() as i64)
                .map(|i| if magic == 0 { first + i } else { i })
                .collect();
            assert_eq!(inner, expected, "{name}: wrapper at {}", entry.offset);
        }

        let mut split = split_batches(&records);
        let items: Vec<Fetched> = split.by_ref().map(Result::unwrap).collect();
        assert!(!split.partial_tail(), "{name}");
        let [Fetched::Legacy(run)] = &items[..] else {
            panic!("{name}: {items:?}");
        };
        assert_eq!(run.as_bytes().as_ptr(), records.as_ptr(), "{name}: a copy");
        assert_eq!(run.as_bytes().len(), records.len(), "{name}");
        assert_eq!(run.magic(), magic, "{name}");
        assert_eq!(run.base_offset(), entries[0].offset, "{name}");

        let batches = run.up_convert().unwrap_or_else(|e| panic!("{name}: {e}"));
        // One batch per wrapper; consecutive plain messages in one.
        let bases: Vec<i64> = batches.iter().map(RecordBatch::base_offset).collect();
        let expected_bases: Vec<i64> = if codec == Compression::None {
            vec![entries[0].offset]
        } else {
            entries
                .iter()
                .scan(0, |next, e| Some(std::mem::replace(next, e.offset + 1)))
                .collect()
        };
        assert_eq!(bases, expected_bases, "{name}");
        let mut got = Vec::new();
        for batch in &batches {
            assert_eq!(batch.magic(), 2, "{name}");
            assert_eq!(batch.compression(), codec, "{name}");
            assert_eq!(batch.timestamp_type(), TimestampType::CreateTime, "{name}");
            assert_eq!(batch.producer_id(), -1, "{name}");
            assert!(!batch.has_offset_gaps(), "{name}");
            assert_rewrite_keeps_records(name, batch);
            for record in decode_records(batch.as_bytes()) {
                assert!(record.headers.is_empty(), "{name}");
                got.push((record.offset, record.key, record.value, record.timestamp));
            }
        }
        let expected: Vec<_> = sidecar
            .produced
            .iter()
            .map(|p| {
                // Magic 0 has no timestamps: CreateTime -1, as Kafka up-converts.
                let timestamp = if magic == 0 { -1 } else { p.timestamp };
                (
                    p.offset,
                    base64_decode(&p.key),
                    base64_decode(&p.value),
                    timestamp,
                )
            })
            .collect();
        assert_eq!(expected.len(), 20, "{name}");
        assert_eq!(got, expected, "{name}");
    }
}

/// A byte flipped under an old-format message's CRC-32 (in a plain message's
/// value, or in a wrapper's compressed value) is a CRC mismatch naming that
/// message's offset.
#[test]
fn a_damaged_old_format_message_is_a_crc_mismatch_naming_it() {
    for name in ["fetch-v1-none", "fetch-v0-lz4"] {
        let (sidecar, records) = legacy_fetch(name);
        let entry = &sidecar.partitions[0].legacy_entries[1];
        let mut damaged = records.to_vec();
        damaged[entry.position + 12 + entry.size - 1] ^= 0xFF;
        let damaged = Bytes::from(damaged);
        let Some(Ok(Fetched::Legacy(run))) = split_batches(&damaged).next() else {
            panic!("{name}: not an old-format run");
        };
        match run.up_convert() {
            Err(BatchError::CrcMismatch { base_offset, .. }) => {
                assert_eq!(base_offset, entry.offset, "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Produce refusals and a leader change: responses to requests `capture.py
// requests` crafted against a 3-node Kafka 4.4 cluster, decoded with
// kafka-protocol (through kafka-mirror's framing) and checked against the
// sidecars its own parser wrote.

/// The responses to crafted requests, each fixture named after what it holds.
const RAW_FIXTURES: &[&str] = &[
    "produce-ok",
    "produce-duplicate",
    "produce-out-of-order",
    "produce-stale-epoch",
    "produce-unknown-producer",
    "produce-refused-by-topic",
    "produce-corrupt",
    "produce-not-leader",
    "produce-not-enough-replicas",
    "produce-old-leader",
    "produce-timeout",
    "fetch-old-leader-stale-epoch",
    "fetch-old-leader-current-epoch",
    "metadata-before-leader-change",
    "metadata-after-leader-change",
];

/// What each Produce fixture is for: the error per `(topic, partition)`, in
/// the terms `classify` matches on (`None`: written).
fn produce_outcomes(name: &str) -> Vec<(&'static str, i32, Option<ResponseError>)> {
    use ResponseError as E;
    match name {
        "produce-ok" => vec![
            ("seq", 0, None),
            ("seq", 1, None),
            ("seq", 2, None),
            ("seq", 3, None),
        ],
        // Kafka 4.4 answers a resent batch (one of the last 5) as written.
        "produce-duplicate" => vec![("seq", 0, None)],
        "produce-out-of-order" => vec![("seq", 1, Some(E::OutOfOrderSequenceNumber))],
        "produce-stale-epoch" => vec![("seq", 2, Some(E::InvalidProducerEpoch))],
        // It keeps no list of the producer ids it handed out: written.
        "produce-unknown-producer" => vec![("seq", 4, None)],
        "produce-refused-by-topic" => vec![
            ("small", 0, Some(E::MessageTooLarge)),
            ("compacted", 0, Some(E::InvalidRecord)),
            ("seq", 3, None),
        ],
        "produce-corrupt" => vec![("seq", 5, Some(E::CorruptMessage)), ("seq", 3, None)],
        "produce-not-leader" => vec![
            ("seq", 3, Some(E::NotLeaderOrFollower)),
            ("seq", 9, Some(E::UnknownTopicOrPartition)),
            ("on1", 0, None),
        ],
        "produce-not-enough-replicas" => vec![("isr", 0, Some(E::NotEnoughReplicas))],
        "produce-old-leader" => vec![("moving", 0, Some(E::NotLeaderOrFollower))],
        "produce-timeout" => vec![("slow", 0, Some(E::RequestTimedOut))],
        other => panic!("no outcomes for {other}"),
    }
}

#[derive(Debug, Deserialize)]
struct RawSidecar {
    name: String,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    #[serde(default)]
    error_code: Option<i16>,
    #[serde(default)]
    throttle_time_ms: Option<i32>,
    #[serde(default)]
    node_endpoints: Option<Vec<SidecarNode>>,
    #[serde(default)]
    partitions: Vec<RawPartition>,
    /// Metadata only.
    #[serde(default)]
    brokers: Vec<SidecarNode>,
    #[serde(default)]
    controller_id: Option<i32>,
    #[serde(default)]
    topics: Vec<SidecarTopic>,
}

#[derive(Debug, Deserialize, PartialEq, Clone)]
struct SidecarNode {
    node_id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
struct SidecarLeader {
    leader_id: i32,
    leader_epoch: i32,
}

#[derive(Debug, Deserialize)]
struct SidecarRecordError {
    batch_index: i32,
    batch_index_error_message: Option<String>,
}

/// A partition of a Produce or Fetch response as `capture.py` parsed it.
#[derive(Debug, Deserialize)]
struct RawPartition {
    topic: String,
    topic_id: String,
    partition: i32,
    error_code: i16,
    current_leader: Option<SidecarLeader>,
    #[serde(default)]
    base_offset: Option<i64>,
    #[serde(default)]
    log_append_time_ms: Option<i64>,
    #[serde(default)]
    log_start_offset: Option<i64>,
    #[serde(default)]
    record_errors: Vec<SidecarRecordError>,
    #[serde(default)]
    error_message: Option<String>,
    /// The batch the request carried for this partition (Produce).
    #[serde(default)]
    sent_batch: Option<SidecarBatch>,
    #[serde(default)]
    high_watermark: Option<i64>,
    #[serde(default)]
    records_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct SidecarTopic {
    error_code: i16,
    name: String,
    topic_id: String,
    partitions: Vec<SidecarMetadataPartition>,
}

#[derive(Debug, Deserialize)]
struct SidecarMetadataPartition {
    error_code: i16,
    partition_index: i32,
    leader_id: i32,
    leader_epoch: i32,
    replica_nodes: Vec<i32>,
    isr_nodes: Vec<i32>,
    offline_replicas: Vec<i32>,
}

fn load_raw(name: &str) -> (Bytes, RawSidecar) {
    let dir = frames_dir();
    let frame = fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| {
        panic!("{name}.bin: {e} (regenerate: see protocol-fixtures/README.md)")
    });
    let json = fs::read_to_string(dir.join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    let sidecar: RawSidecar =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}.json: {e}"));
    assert_eq!(sidecar.name, name);
    (Bytes::from(frame), sidecar)
}

/// kafka-protocol's leader hint, `None` when the broker sent none (-1/-1).
fn leader_hint(leader_id: i32, leader_epoch: i32) -> Option<SidecarLeader> {
    (leader_id >= 0).then_some(SidecarLeader {
        leader_id,
        leader_epoch,
    })
}

fn endpoints<'a>(
    nodes: impl IntoIterator<Item = (i32, &'a str, i32, Option<&'a str>)>,
) -> Vec<SidecarNode> {
    nodes
        .into_iter()
        .map(|(node_id, host, port, rack)| SidecarNode {
            node_id,
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
        })
        .collect()
}

/// Decodes a Produce response fixture and checks every field against the
/// sidecar; returns the sidecar.
fn checked_produce_response(name: &str) -> RawSidecar {
    let (frame, sidecar) = load_raw(name);
    assert_eq!(sidecar.api_key, ApiKey::Produce as i16, "{name}");
    let (correlation_id, response) = decode_response::<ProduceRequest>(frame, sidecar.api_version)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(correlation_id, sidecar.correlation_id, "{name}");
    assert_eq!(
        Some(response.throttle_time_ms),
        sidecar.throttle_time_ms,
        "{name}"
    );
    let nodes = endpoints(
        response
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, n.host.as_str(), n.port, n.rack.as_deref())),
    );
    assert_eq!(
        nodes.as_slice(),
        sidecar.node_endpoints.as_deref().unwrap_or_default(),
        "{name}"
    );
    let parts: Vec<_> = response
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(move |p| (t, p)))
        .collect();
    assert_eq!(parts.len(), sidecar.partitions.len(), "{name}");
    for ((topic, got), want) in parts.into_iter().zip(&sidecar.partitions) {
        let at = format!("{name}: {}/{}", want.topic, want.partition);
        // Produce v13 names topics by id only.
        assert!(sidecar.api_version >= 13, "{at}");
        assert_eq!(topic.topic_id.simple().to_string(), want.topic_id, "{at}");
        assert_eq!(got.index, want.partition, "{at}");
        assert_eq!(got.error_code, want.error_code, "{at}");
        assert_eq!(Some(got.base_offset), want.base_offset, "{at}");
        assert_eq!(
            Some(got.log_append_time_ms),
            want.log_append_time_ms,
            "{at}"
        );
        assert_eq!(Some(got.log_start_offset), want.log_start_offset, "{at}");
        let errors: Vec<(i32, Option<&str>)> = got
            .record_errors
            .iter()
            .map(|e| (e.batch_index, e.batch_index_error_message.as_deref()))
            .collect();
        let want_errors: Vec<(i32, Option<&str>)> = want
            .record_errors
            .iter()
            .map(|e| (e.batch_index, e.batch_index_error_message.as_deref()))
            .collect();
        assert_eq!(errors, want_errors, "{at}");
        assert_eq!(
            got.error_message.as_deref(),
            want.error_message.as_deref(),
            "{at}"
        );
        let leader = &got.current_leader;
        assert_eq!(
            leader_hint(leader.leader_id.0, leader.leader_epoch),
            want.current_leader,
            "{at}"
        );
    }
    sidecar
}

/// The partition of `sidecar` for `topic`/`partition`.
fn raw_partition<'a>(sidecar: &'a RawSidecar, topic: &str, partition: i32) -> &'a RawPartition {
    sidecar
        .partitions
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)
        .unwrap_or_else(|| panic!("{}: no {topic}/{partition}", sidecar.name))
}

#[test]
fn produce_responses_hold_each_error_class() {
    for name in RAW_FIXTURES.iter().filter(|n| n.starts_with("produce-")) {
        let sidecar = checked_produce_response(name);
        let outcomes = produce_outcomes(name);
        assert_eq!(sidecar.partitions.len(), outcomes.len(), "{name}");
        for (topic, partition, error) in outcomes {
            let p = raw_partition(&sidecar, topic, partition);
            let at = format!("{name}: {topic}/{partition}");
            assert_eq!(p.error_code.err(), error, "{at}");
            let sent = p.sent_batch.as_ref().expect("the batch sent");
            assert_eq!(sent.base_offset, 0, "{at}");
            // Only the corrupt batch was sent with a CRC that does not verify.
            assert_eq!(
                sent.crc_ok,
                error != Some(ResponseError::CorruptMessage),
                "{at}"
            );
            match error {
                // Written: the offset the target assigned.
                None => assert!(p.base_offset.unwrap() >= 0, "{at}"),
                // Appended, then the wait for the replicas timed out.
                Some(ResponseError::RequestTimedOut) => {
                    assert!(p.base_offset.unwrap() >= 0, "{at}")
                }
                Some(_) => assert_eq!(p.base_offset, Some(-1), "{at}"),
            }
        }
    }
}

/// The sequence cases, against the batches `produce-ok` wrote first.
#[test]
fn produce_sequence_answers_follow_the_first_writes() {
    let ok = checked_produce_response("produce-ok");
    let first = |partition| {
        raw_partition(&ok, "seq", partition)
            .sent_batch
            .as_ref()
            .unwrap()
    };
    for partition in [0, 1, 2] {
        let b = first(partition);
        assert!(
            b.producer_id >= 0 && b.base_sequence == 0,
            "seq/{partition}"
        );
        assert_eq!(b.records_count, 5);
    }
    assert_eq!(first(2).producer_epoch, first(0).producer_epoch + 1);
    assert_eq!(first(3).producer_id, -1);

    // The same bytes again: answered as written, at the first write's offset.
    let dup = checked_produce_response("produce-duplicate");
    let p = raw_partition(&dup, "seq", 0);
    let resent = p.sent_batch.as_ref().unwrap();
    assert_eq!(resent.crc, first(0).crc, "not a byte-identical resend");
    assert_eq!(p.base_offset, raw_partition(&ok, "seq", 0).base_offset);

    // Sequence 8 after 0..4.
    let gap = checked_produce_response("produce-out-of-order");
    let b = raw_partition(&gap, "seq", 1).sent_batch.as_ref().unwrap();
    assert_eq!(
        (b.producer_id, b.producer_epoch),
        (first(1).producer_id, first(1).producer_epoch)
    );
    assert!(b.base_sequence > first(1).base_sequence + first(1).records_count);

    // The epoch before the one seq/2 was written at.
    let stale = checked_produce_response("produce-stale-epoch");
    let b = raw_partition(&stale, "seq", 2).sent_batch.as_ref().unwrap();
    assert_eq!(b.producer_id, first(2).producer_id);
    assert!(b.producer_epoch < first(2).producer_epoch);

    let unknown = checked_produce_response("produce-unknown-producer");
    let b = raw_partition(&unknown, "seq", 4)
        .sent_batch
        .as_ref()
        .unwrap();
    assert_ne!(b.producer_id, first(0).producer_id);
    assert!(b.base_sequence > 0);
}

#[test]
fn topic_refusals_say_why() {
    let sidecar = checked_produce_response("produce-refused-by-topic");
    let large = raw_partition(&sidecar, "small", 0);
    assert!(large.sent_batch.as_ref().unwrap().batch_length > 1000);
    let keyless = raw_partition(&sidecar, "compacted", 0);
    assert_eq!(keyless.record_errors.len(), 1);
    assert_eq!(keyless.record_errors[0].batch_index, 0);
    let message = keyless.record_errors[0]
        .batch_index_error_message
        .as_deref();
    assert!(message.unwrap().contains("without key"), "{message:?}");
}

/// Leader, epoch, replicas and ISR of `moving`/0 in a Metadata fixture,
/// decoded and checked against the sidecar.
fn checked_metadata(name: &str) -> (RawSidecar, MetadataResponse) {
    let (frame, sidecar) = load_raw(name);
    assert_eq!(sidecar.api_key, ApiKey::Metadata as i16, "{name}");
    let (correlation_id, response) = decode_response::<MetadataRequest>(frame, sidecar.api_version)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(correlation_id, sidecar.correlation_id, "{name}");
    assert_eq!(
        Some(response.throttle_time_ms),
        sidecar.throttle_time_ms,
        "{name}"
    );
    assert_eq!(
        Some(response.controller_id.0),
        sidecar.controller_id,
        "{name}"
    );
    assert_eq!(response.error_code, 0, "{name}");
    let brokers = endpoints(
        response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.as_str(), b.port, b.rack.as_deref())),
    );
    assert_eq!(brokers, sidecar.brokers, "{name}");
    assert_eq!(response.topics.len(), sidecar.topics.len(), "{name}");
    for (got, want) in response.topics.iter().zip(&sidecar.topics) {
        assert_eq!(got.error_code, want.error_code, "{name}");
        assert_eq!(
            got.name.as_ref().map(|n| n.as_str()),
            Some(want.name.as_str()),
            "{name}"
        );
        assert_eq!(got.topic_id.simple().to_string(), want.topic_id, "{name}");
        assert_eq!(got.partitions.len(), want.partitions.len(), "{name}");
        for (p, w) in got.partitions.iter().zip(&want.partitions) {
            let ids = |v: &[kafka_protocol::messages::BrokerId]| -> Vec<i32> {
                v.iter().map(|b| b.0).collect()
            };
            assert_eq!(p.error_code, w.error_code, "{name}");
            assert_eq!(p.partition_index, w.partition_index, "{name}");
            assert_eq!(p.leader_id.0, w.leader_id, "{name}");
            assert_eq!(p.leader_epoch, w.leader_epoch, "{name}");
            assert_eq!(ids(&p.replica_nodes), w.replica_nodes, "{name}");
            assert_eq!(ids(&p.isr_nodes), w.isr_nodes, "{name}");
            assert_eq!(ids(&p.offline_replicas), w.offline_replicas, "{name}");
        }
    }
    (sidecar, response)
}

/// `moving`/0 of a Metadata fixture.
fn moving(sidecar: &RawSidecar) -> &SidecarMetadataPartition {
    let topic = sidecar.topics.iter().find(|t| t.name == "moving").unwrap();
    &topic.partitions[0]
}

#[test]
fn metadata_shows_the_leader_change() {
    let (before, _) = checked_metadata("metadata-before-leader-change");
    let (after, _) = checked_metadata("metadata-after-leader-change");
    let (b, a) = (moving(&before), moving(&after));
    assert_eq!(b.leader_id, 0);
    assert_eq!(b.replica_nodes, [0, 1, 2]);
    assert_eq!(b.isr_nodes, [0, 1, 2]);
    assert!(b.offline_replicas.is_empty());
    assert_ne!(a.leader_id, b.leader_id);
    assert!(a.leader_epoch > b.leader_epoch);
    assert_eq!(a.replica_nodes, b.replica_nodes, "no reassignment");
    assert!(!a.isr_nodes.contains(&0));
    assert_eq!(a.offline_replicas, [0]);
    let ids = |s: &RawSidecar| -> Vec<i32> { s.brokers.iter().map(|n| n.node_id).collect() };
    assert_eq!(ids(&before), [0, 1, 2]);
    assert_eq!(ids(&after), [1, 2], "a stopped broker leaves the list");
}

/// The old leader's refusals name the leader the Metadata after the change
/// shows, with its address (KIP-951).
#[test]
fn the_old_leader_names_the_new_one() {
    let (after, _) = checked_metadata("metadata-after-leader-change");
    let now = moving(&after);
    let new_leader = SidecarLeader {
        leader_id: now.leader_id,
        leader_epoch: now.leader_epoch,
    };
    let address = after
        .brokers
        .iter()
        .find(|b| b.node_id == now.leader_id)
        .unwrap();

    let produce = checked_produce_response("produce-old-leader");
    assert_eq!(
        raw_partition(&produce, "moving", 0).current_leader,
        Some(new_leader)
    );
    assert_eq!(
        produce.node_endpoints.as_deref(),
        Some(std::slice::from_ref(address))
    );

    let (frame, stale) = load_raw("fetch-old-leader-stale-epoch");
    let response = decode_raw_fetch("fetch-old-leader-stale-epoch", frame, &stale);
    let part = &response.responses[0].partitions[0];
    assert_eq!(
        part.error_code.err(),
        Some(ResponseError::FencedLeaderEpoch)
    );
    let hint = leader_hint(
        part.current_leader.leader_id.0,
        part.current_leader.leader_epoch,
    );
    assert_eq!(hint, Some(new_leader));
    assert_eq!(hint, stale.partitions[0].current_leader);
    assert_eq!(part.records.as_ref().map_or(0, Bytes::len), 0);
    let nodes = endpoints(
        response
            .node_endpoints
            .iter()
            .map(|n| (n.node_id.0, n.host.as_str(), n.port, n.rack.as_deref())),
    );
    assert_eq!(nodes.as_slice(), std::slice::from_ref(address));
    assert_eq!(stale.node_endpoints.as_deref(), Some(nodes.as_slice()));
}

/// Decodes a Fetch fixture of `capture.py requests` and checks each
/// partition's error, offsets, leader hint and records size against the sidecar.
fn decode_raw_fetch(name: &str, frame: Bytes, sidecar: &RawSidecar) -> FetchResponse {
    assert_eq!(sidecar.api_key, ApiKey::Fetch as i16, "{name}");
    let (correlation_id, response) = decode_response::<FetchRequest>(frame, sidecar.api_version)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(correlation_id, sidecar.correlation_id, "{name}");
    assert_eq!(Some(response.error_code), sidecar.error_code, "{name}");
    let parts: Vec<_> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .collect();
    assert_eq!(parts.len(), sidecar.partitions.len(), "{name}");
    for ((topic, got), want) in parts.into_iter().zip(&sidecar.partitions) {
        assert_eq!(topic.topic_id.simple().to_string(), want.topic_id, "{name}");
        assert_eq!(got.partition_index, want.partition, "{name}");
        assert_eq!(got.error_code, want.error_code, "{name}");
        assert_eq!(Some(got.high_watermark), want.high_watermark, "{name}");
        assert_eq!(Some(got.log_start_offset), want.log_start_offset, "{name}");
        let leader = &got.current_leader;
        assert_eq!(
            leader_hint(leader.leader_id.0, leader.leader_epoch),
            want.current_leader,
            "{name}"
        );
        assert_eq!(
            got.records.as_ref().map(Bytes::len),
            want.records_bytes,
            "{name}"
        );
    }
    response
}

/// A fetch at the current leader epoch from the old leader, now a follower,
/// is served (consumers may fetch from followers since KIP-392): the records
/// up to the follower's high watermark, whole and verified.
#[test]
fn the_old_leader_serves_a_fetch_at_the_current_epoch() {
    let name = "fetch-old-leader-current-epoch";
    let (frame, sidecar) = load_raw(name);
    let response = decode_raw_fetch(name, frame, &sidecar);
    let part = &response.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert!(response.node_endpoints.is_empty());
    let records = part.records.clone().unwrap();
    let mut split = split_batches(&records);
    let mut next = 0;
    for item in split.by_ref() {
        let Ok(Fetched::Batch(batch)) = item else {
            panic!("{name}: {item:?}");
        };
        batch.verify_crc().unwrap();
        assert_eq!(batch.base_offset(), next);
        next = batch.next_offset();
    }
    assert!(!split.partial_tail());
    assert_eq!(
        next, part.high_watermark,
        "{name}: up to the high watermark"
    );
}
