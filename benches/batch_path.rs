//! Micro benchmarks of the per-byte work on the fetch-to-produce path, in
//! bytes per second over realistic batches: what kafka-mirror does to every
//! batch (split, CRC check, header rewrite) and what encoding a Produce
//! request through kafka-protocol costs (it copies the records in).
//!
//! `cargo bench --bench batch_path`. The end-to-end comparison with
//! MirrorMaker lives in its own bench.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_mirror::batch::{split_batches, Fetched, ProducerStamp, RecordBatch};
use kafka_mirror::net::frame::encode_request;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Batches as a Java producer with `batch.size=65536` and lz4 writes them:
/// about 64 KiB of JSON-like records each before compression.
const BATCHES: usize = 16;
const RECORDS_PER_BATCH: usize = 160;

fn record(batch: usize, i: usize) -> Record {
    let value = format!(
        r#"{{"event":"click","seq":{i},"batch":{batch},"user":"u-{:06}","page":"/products/{}","ua":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","viewport":[1920,1080],"pad":"{}"}}"#,
        (i * 7919) % 1_000_000,
        (i * 104_729) % 50_000,
        "x".repeat(i % 64)
    );
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: 1000,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: (batch * RECORDS_PER_BATCH + i) as i64,
        sequence: (batch * RECORDS_PER_BATCH + i) as i32,
        timestamp: 1_700_000_000_000 + i as i64,
        key: Some(Bytes::from(format!("user-{}", i % 97))),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    }
}

/// One partition's `records` field of a Fetch response: `BATCHES` lz4 batches.
fn fetched_records() -> Bytes {
    let mut buf = BytesMut::new();
    for b in 0..BATCHES {
        let records: Vec<Record> = (0..RECORDS_PER_BATCH).map(|i| record(b, i)).collect();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Lz4,
            },
        )
        .expect("encode batch");
    }
    buf.freeze()
}

fn batch_path(c: &mut Criterion) {
    let records = fetched_records();
    let batches: Vec<RecordBatch> = split_batches(&records)
        .map(|item| match item {
            Ok(Fetched::Batch(batch)) => batch,
            other => panic!("not a valid v2 batch: {other:?}"),
        })
        .collect();
    let stamp = ProducerStamp {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let mut group = c.benchmark_group("batch_path");
    group.throughput(Throughput::Bytes(records.len() as u64));

    group.bench_function("split", |b| {
        b.iter(|| split_batches(&records).filter(Result::is_ok).count())
    });
    group.bench_function("verify_crc", |b| {
        b.iter_batched(
            || fresh(&batches),
            |fresh| fresh.iter().all(|batch| batch.verify_crc().is_ok()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verify_crc+rewrite", |b| {
        b.iter_batched(
            || fresh(&batches),
            |fresh| {
                fresh
                    .iter()
                    .map(|batch| {
                        batch.verify_crc().expect("valid");
                        batch.rewrite_for_produce(stamp).len()
                    })
                    .sum::<usize>()
            },
            BatchSize::SmallInput,
        )
    });
    let rewritten: Vec<Bytes> = batches
        .iter()
        .map(|batch| batch.rewrite_for_produce(stamp))
        .collect();
    group.bench_function("encode_produce_request", |b| {
        b.iter(|| {
            let request = produce_request(&rewritten);
            encode_request(1, None, 9, &request).expect("encode").len()
        })
    });
    group.finish();
}

/// The batches again, without the body CRC a verified view remembers.
fn fresh(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|batch| RecordBatch::parse(batch.as_bytes().clone()).expect("valid"))
        .collect()
}

/// One Produce request with each batch for its own partition (one batch per
/// partition per request, as Kafka requires).
fn produce_request(batches: &[Bytes]) -> ProduceRequest {
    let partitions = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            PartitionProduceData::default()
                .with_index(i as i32)
                .with_records(Some(batch.clone()))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("clicks")))
            .with_partition_data(partitions)])
}

criterion_group!(benches, batch_path);
criterion_main!(benches);
