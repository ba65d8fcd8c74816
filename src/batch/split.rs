//! Splitting a Fetch response partition's `records` into batches without
//! copying.

use bytes::{Buf, Bytes};

use super::view::{LOG_OVERHEAD, MIN_BATCH_LENGTH};
use super::{BatchError, RecordBatch};

/// Where the magic byte sits, in v2 batches and old MessageSet entries alike.
const MAGIC_AT: usize = 16;

/// Iterates over the batches in `records`, each a slice of the same buffer.
///
/// A batch cut off at the end (the broker stops at the fetch size limit) ends
/// the iteration without an error; [`Batches::partial_tail`] tells whether
/// that happened. The first error also ends it: past a bad length nothing
/// can be trusted, and an old-format entry means the rest of the response
/// goes to the up-converting fallback from that offset.
pub fn split_batches(records: &Bytes) -> Batches {
    Batches {
        rest: records.clone(),
        partial_tail: false,
        done: false,
    }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug)]
pub struct Batches {
    /// Bytes not yet split.
    rest: Bytes,
    partial_tail: bool,
    done: bool,
}

impl Batches {
    /// Whether a trailing partial batch was dropped. Only meaningful once the
    /// iterator returned `None`; the caller then fetches again from the
    /// `next_offset` of the last complete batch.
    pub fn partial_tail(&self) -> bool {
        self.partial_tail
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, BatchError> {
        let rest = &self.rest;
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < LOG_OVERHEAD {
            self.partial_tail = true;
            return Ok(None);
        }
        let base_offset = (&rest[..]).get_i64();
        let batch_length = (&rest[8..]).get_i32();
        if batch_length < 0 {
            return Err(BatchError::Corrupt {
                base_offset,
                reason: format!("negative batchLength {batch_length}"),
            });
        }
        // Before the length check: old-format entries are shorter than a v2
        // header, and the fallback needs to know where they start.
        if let Some(&magic) = rest.get(MAGIC_AT) {
            let magic = magic as i8;
            if magic != 2 {
                return Err(BatchError::UnsupportedMagic { base_offset, magic });
            }
        }
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::Corrupt {
                base_offset,
                reason: format!(
                    "batchLength {batch_length} is below the {MIN_BATCH_LENGTH} of an empty batch"
                ),
            });
        }
        // Lossless: the length is positive and usize is at least 32 bits here.
        let total = batch_length as usize + LOG_OVERHEAD;
        if total > rest.len() {
            self.partial_tail = true;
            return Ok(None);
        }
        let batch = self.rest.split_to(total);
        RecordBatch::parse(batch).map(Some)
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_batch().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl std::iter::FusedIterator for Batches {}
