//! Arbitrary bytes as a partition's `records`: every batch split off (and
//! every batch up-converted from old-format messages, with a 1 MiB inflation
//! limit) is CRC-checked, read through every accessor, rewritten for Produce
//! and classified for READ_COMMITTED.
#![no_main]

use bytes::Bytes;
use kafka_mirror::batch::{split_batches, AbortedTransactions, Fetched, ProducerStamp, RecordBatch};
use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::messages::ProducerId;
use libfuzzer_sys::fuzz_target;

const MAX_INFLATED_BYTES: usize = 1 << 20;

/// The v2 batches of one split item: itself, or the up-converted ones, which
/// must have valid CRCs.
fn v2_batches(item: Fetched) -> Vec<RecordBatch> {
    match item {
        Fetched::Batch(batch) => vec![batch],
        Fetched::Legacy(messages) => {
            let batches = messages
                .up_convert_with_limit(MAX_INFLATED_BYTES)
                .unwrap_or_default();
            for batch in &batches {
                batch.verify_crc().expect("an up-converted batch has a valid CRC");
                assert!(batch.records_count() > 0);
            }
            batches
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let records = Bytes::copy_from_slice(data);
    // Aborted transactions taken from the batches themselves, so the
    // classifier sees producer ids that occur in the data.
    let mut list = Vec::new();
    for batch in split_batches(&records).flatten().flat_map(v2_batches) {
        list.push(
            AbortedTransaction::default()
                .with_producer_id(ProducerId(batch.producer_id()))
                .with_first_offset(batch.base_offset()),
        );
    }
    let mut aborted = AbortedTransactions::new(&list[..list.len() / 2]);
    let mut batches = split_batches(&records);
    for batch in batches.by_ref().map_while(Result::ok).flat_map(v2_batches) {
        let _ = batch.verify_crc();
        let _ = batch.control_type();
        let _ = (
            batch.base_offset(),
            batch.batch_length(),
            batch.partition_leader_epoch(),
            batch.magic(),
            batch.crc(),
            batch.attributes(),
            batch.compression(),
            batch.timestamp_type(),
            batch.is_transactional(),
            batch.is_control(),
            batch.has_delete_horizon(),
            batch.last_offset_delta(),
            batch.has_offset_gaps(),
            batch.last_offset(),
            batch.next_offset(),
            batch.base_timestamp(),
            batch.max_timestamp(),
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence(),
            batch.records_count(),
            batch.len(),
            batch.is_empty(),
        );
        let _ = format!("{batch:?}");
        for stamp in [
            ProducerStamp::NONE,
            ProducerStamp {
                producer_id: 7,
                producer_epoch: 3,
                base_sequence: i32::MAX,
                transactional: false,
            },
        ] {
            let header = batch.produce_header(stamp);
            assert_eq!(header.len(), 61);
            if batch.verify_crc().is_ok() {
                // The patched CRC holds for the batch as produced.
                let produced: Vec<u8> = [&header[..], &batch.as_bytes()[61..]].concat();
                let produced = RecordBatch::parse(produced.into()).expect("same layout");
                assert!(produced.verify_crc().is_ok());
            }
        }
        let _ = aborted.classify(&batch);
    }
    let _ = batches.partial_tail();
});
