//! Arbitrary bytes as one batch: parsed, then re-encoded (inflated,
//! renumbered, deflated) with a 1 MiB inflation limit.
#![no_main]

use bytes::Bytes;
use kafka_mirror::batch::{reencode_with_limit, RecordBatch};
use libfuzzer_sys::fuzz_target;

const MAX_INFLATED_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = RecordBatch::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    if let Ok(reencoded) = reencode_with_limit(&batch, MAX_INFLATED_BYTES) {
        // What reencode produces must itself be a well-formed batch.
        let again = RecordBatch::parse(reencoded.as_bytes().clone())
            .expect("a re-encoded batch parses");
        again.verify_crc().expect("a re-encoded batch has a valid CRC");
        assert_eq!(again.records_count(), batch.records_count());
    }
});
