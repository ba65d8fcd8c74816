//! Micro benchmarks of the per-byte work on the fetch-to-produce path, in
//! bytes per second over realistic batches: what kafka-mirror does to every
//! batch (split, CRC check, header rewrite), and putting a Produce request on
//! a socket two ways: encoded by kafka-protocol with the records copied in,
//! or spliced (new headers, records by reference) and written with `writev`.
//!
//! Before the timings it prints what two steps of the path allocate, counted
//! by the crate's counting allocator (`count-allocations`, on for benches):
//! encoding one spliced Produce request, and naming the partitions of one
//! decoded Fetch response.
//!
//! `cargo bench --bench batch_path`. The end-to-end comparison with
//! MirrorMaker lives in its own bench.

use std::io::{IoSlice, Read, Write};
use std::os::unix::net::UnixStream;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_mirror::alloc_count::Allocations;
use kafka_mirror::batch::{split_batches, Fetched, ProducerStamp, RecordBatch};
use kafka_mirror::cluster::{response_partitions, TopicNames};
use kafka_mirror::net::frame::encode_request;
use kafka_mirror::net::splice::{RequestFrame, Splice, Splices};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

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
        transactional: false,
    };
    let mut group = c.benchmark_group("batch_path");
    group.throughput(Throughput::Bytes(records.len() as u64));

    group.bench_function("split", |b| {
        b.iter(|| split_batches(&records).filter(Result::is_ok).count())
    });
    group.bench_function("verify_crc", |b| {
        b.iter(|| batches.iter().all(|batch| batch.verify_crc().is_ok()))
    });
    group.bench_function("produce_header", |b| {
        b.iter(|| {
            batches
                .iter()
                .map(|batch| batch.produce_header(stamp).len())
                .sum::<usize>()
        })
    });

    // The two ways to build a Produce frame: the records copied into a
    // rewritten batch and again into the frame kafka-protocol encodes, or
    // the frame spliced (61-byte headers, records by reference). Then each
    // written to a Unix socket drained by another thread, with `write` or
    // `writev`: the kernel copies the bytes once in both.
    let copied = || {
        let copied: Vec<Bytes> = batches
            .iter()
            .map(|batch| copy_with_new_header(batch, stamp))
            .collect();
        encode_request(1, None, 9, &produce_request(&copied), &Splices::default()).expect("encode")
    };
    let spliced = || {
        let (request, splices) = spliced_request(&batches, stamp);
        encode_request(1, None, 9, &request, &splices).expect("encode")
    };
    print_allocations(
        &format!("encode_request/spliced ({BATCHES} partitions)"),
        || spliced_request(&batches, stamp),
        |(request, splices)| encode_request(1, None, 9, &request, &splices).expect("encode"),
    );
    let (response, names) = fetch_response(&batches);
    print_allocations(
        &format!("response_partitions ({FETCH_PARTITIONS} partitions)"),
        || response.clone(),
        |response| named_partitions(response, &names),
    );
    group.bench_function("produce_frame/copied", |b| b.iter(copied));
    group.bench_function("produce_frame/spliced", |b| b.iter(spliced));
    let (mut socket, drain) = drained_socket();
    group.bench_function("produce_frame+write/copied", |b| {
        b.iter(|| write_frame(&mut socket, copied()))
    });
    group.bench_function("produce_frame+write/spliced", |b| {
        b.iter(|| write_frame(&mut socket, spliced()))
    });
    group.finish();
    drop(socket);
    drain.join().expect("drain thread");
}

/// A Produce request of `batches`, one per partition, and the splices that
/// put their new headers on the wire.
fn spliced_request(batches: &[RecordBatch], stamp: ProducerStamp) -> (ProduceRequest, Splices) {
    let mut splices = Splices::default();
    for batch in batches {
        let header = batch.produce_header(stamp);
        splices.push(Splice::new(batch.as_bytes().clone(), header).expect("fits"));
    }
    let values: Vec<Bytes> = batches.iter().map(|b| b.as_bytes().clone()).collect();
    (produce_request(&values), splices)
}

/// Partitions in the Fetch response whose naming is counted: a broker
/// leading many small partitions answers with this many in one response.
const FETCH_PARTITIONS: usize = 1024;
const FETCH_TOPICS: usize = 8;

/// A Fetch response (v16: topics named by id) of `FETCH_PARTITIONS`
/// partitions with one batch each, decoded from its bytes as the connection
/// decodes it, and the names of its topic ids.
fn fetch_response(batches: &[RecordBatch]) -> (FetchResponse, TopicNames) {
    let ids: Vec<Uuid> = (0..FETCH_TOPICS)
        .map(|t| Uuid::from_u128(t as u128 + 1))
        .collect();
    let names = ids
        .iter()
        .enumerate()
        .map(|(t, &id)| (id, format!("clicks-{t}")))
        .collect();
    let topics = ids
        .iter()
        .map(|&id| {
            let partitions = (0..FETCH_PARTITIONS / FETCH_TOPICS)
                .map(|p| {
                    let batch = &batches[p % batches.len()];
                    PartitionData::default()
                        .with_partition_index(p as i32)
                        .with_high_watermark(batch.next_offset())
                        .with_records(Some(batch.as_bytes().clone()))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(partitions)
        })
        .collect();
    let response = FetchResponse::default().with_responses(topics);
    let mut encoded = BytesMut::new();
    response
        .encode(&mut encoded, 16)
        .expect("encode fetch response");
    let decoded = FetchResponse::decode(&mut encoded.freeze(), 16).expect("decode");
    (decoded, names)
}

/// What the fetch stage does first with a decoded response: each partition's
/// data with its topic's name. The one place to change when
/// `response_partitions` does.
fn named_partitions(response: FetchResponse, names: &TopicNames) -> usize {
    response_partitions(response, names)
        .map(|(topic, data)| topic.len() + data.records.map_or(0, |r| r.len()))
        .sum()
}

/// Prints what one call of `step` allocates on an input from `input` (made
/// outside the count), in every thread; the output is dropped outside it too.
/// The second call is counted: the first may fill state set up once.
fn print_allocations<I, O>(name: &str, mut input: impl FnMut() -> I, step: impl Fn(I) -> O) {
    drop(step(input()));
    let input = input();
    let (output, spent) = Allocations::of(|| step(input));
    drop(output);
    println!(
        "allocations/{name}: {} allocations, {} bytes",
        spent.count, spent.bytes
    );
}

/// What producing cost before frames were spliced: a copy of the batch with
/// the new header, its CRC computed over the whole batch again.
fn copy_with_new_header(batch: &RecordBatch, stamp: ProducerStamp) -> Bytes {
    let header = batch.produce_header(stamp);
    let mut out = BytesMut::with_capacity(batch.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&batch.as_bytes()[header.len()..]);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// A Unix socket whose peer a thread reads and discards until it closes;
/// 4 MiB buffers, so that a frame rarely waits for the reader.
fn drained_socket() -> (UnixStream, std::thread::JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
    for socket in [&ours, &theirs] {
        let socket = socket2::SockRef::from(socket);
        socket.set_send_buffer_size(4 << 20).expect("SO_SNDBUF");
        socket.set_recv_buffer_size(4 << 20).expect("SO_RCVBUF");
    }
    let drain = std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 20];
        while matches!(theirs.read(&mut sink), Ok(n) if n > 0) {}
    });
    (ours, drain)
}

/// Writes a frame with vectored writes, as the connection's writer does.
fn write_frame(socket: &mut UnixStream, mut frame: RequestFrame) -> usize {
    let mut written = 0;
    while frame.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 64];
        let count = frame.chunks_vectored(&mut slices);
        let n = socket.write_vectored(&slices[..count]).expect("write");
        frame.advance(n);
        written += n;
    }
    written
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
