//! Splitting a Fetch response partition's `records` into batches without
//! copying.

use bytes::{Buf, Bytes};

use super::legacy::{entry_len, LegacyMessages};
use super::view::{at, LOG_OVERHEAD, MAGIC_V2, MIN_BATCH_LENGTH};
use super::{BatchError, RecordBatch};

/// What a Fetch response's `records` are made of.
#[derive(Debug)]
pub enum Fetched {
    /// A v2 record batch, forwarded as it is.
    Batch(RecordBatch),
    /// Consecutive entries in the old message formats (magic 0 and 1), which
    /// must be up-converted before a 4.x broker takes them.
    Legacy(LegacyMessages),
}

/// Iterates over the batches in `records`, each a slice of the same buffer;
/// consecutive old-format entries come as one [`Fetched::Legacy`].
///
/// A batch cut off at the end (the broker stops at the fetch size limit) ends
/// the iteration without an error; [`Batches::partial_tail`] tells whether
/// that happened. The first error also ends it: past a bad length nothing
/// can be trusted.
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

    /// Bytes not split off: once the iterator returned `None`, the cut-off
    /// tail (or what follows an error), which a Fetch brings again.
    pub fn unsplit_len(&self) -> usize {
        self.rest.len()
    }

    fn next_batch(&mut self) -> Result<Option<Fetched>, BatchError> {
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
        // header. Until the magic byte has arrived the format is unknown.
        let Some(&magic) = rest.get(at::MAGIC) else {
            self.partial_tail = true;
            return Ok(None);
        };
        if matches!(magic, 0 | 1) {
            return Ok(self.legacy_run()?.map(Fetched::Legacy));
        }
        let magic = magic as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { base_offset, magic });
        }
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::Corrupt {
                base_offset,
                reason: format!(
                    "batchLength {batch_length} is below the {MIN_BATCH_LENGTH} of an empty batch"
                ),
            });
        }
        // Lossless: a non-negative i32 plus 12 fits a usize of 32 bits or more.
        let total = batch_length as usize + LOG_OVERHEAD;
        if total > rest.len() {
            self.partial_tail = true;
            return Ok(None);
        }
        let batch = self.rest.split_to(total);
        RecordBatch::parse(batch).map(|batch| Some(Fetched::Batch(batch)))
    }

    /// Splits off the complete old-format entries at the start of `rest`;
    /// `None` (a partial tail) when the first one is cut off. A bad entry
    /// after good ones ends the run; the next call reports it.
    fn legacy_run(&mut self) -> Result<Option<LegacyMessages>, BatchError> {
        let mut len = 0;
        loop {
            match entry_len(&self.rest[len..]) {
                Ok(Some(entry)) => len += entry,
                Ok(None) => break,
                Err(e) if len == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if len == 0 {
            self.partial_tail = true;
            return Ok(None);
        }
        Ok(Some(LegacyMessages::new(self.rest.split_to(len))))
    }
}

impl Iterator for Batches {
    type Item = Result<Fetched, BatchError>;

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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::test_support::{data_batch, sample_contents, BatchSpec, ALL_CODECS};
    use super::*;

    /// One batch per codec at consecutive offsets, concatenated as a Fetch
    /// response holds them; also returns where each batch starts.
    fn fetched() -> (Bytes, Vec<(usize, i64)>) {
        let mut all = Vec::new();
        let mut starts = Vec::new();
        for (i, codec) in ALL_CODECS.into_iter().enumerate() {
            let base_offset = 100 + 4 * i as i64;
            let spec = BatchSpec {
                base_offset,
                compression: codec,
                ..BatchSpec::default()
            };
            starts.push((all.len(), base_offset));
            all.extend_from_slice(&data_batch(&spec, &sample_contents()));
        }
        (all.into(), starts)
    }

    /// The split of `records`, v2 batches unwrapped (old-format runs are an
    /// error here); and whether there was a partial tail.
    fn collect(records: &Bytes) -> (Vec<Result<RecordBatch, BatchError>>, bool) {
        let mut batches = split_batches(records);
        let items = batches
            .by_ref()
            .map(|item| match item? {
                Fetched::Batch(batch) => Ok(batch),
                Fetched::Legacy(messages) => panic!("unexpected {messages:?}"),
            })
            .collect();
        (items, batches.partial_tail())
    }

    /// A magic 0 or 1 MessageSet entry: offset, size, crc (not checked by
    /// the split), magic, attributes, (v1: timestamp), null key, value.
    fn old_entry(offset: i64, magic: u8) -> Vec<u8> {
        let mut message = vec![0, 0, 0, 0, magic, 0];
        if magic == 1 {
            message.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        }
        message.extend_from_slice(&(-1i32).to_be_bytes());
        message.extend_from_slice(&3i32.to_be_bytes());
        message.extend_from_slice(b"old");
        let mut entry = offset.to_be_bytes().to_vec();
        entry.extend_from_slice(&(message.len() as i32).to_be_bytes());
        entry.extend_from_slice(&message);
        entry
    }

    #[test]
    fn concatenated_batches_are_sliced_without_copying() {
        let (records, starts) = fetched();
        let (items, partial) = collect(&records);
        assert!(!partial);
        assert_eq!(items.len(), starts.len());
        for (item, &(start, base_offset)) in items.iter().zip(&starts) {
            let batch = item.as_ref().unwrap();
            assert_eq!(batch.base_offset(), base_offset);
            batch.verify_crc().unwrap();
            assert_eq!(
                batch.as_bytes().as_ptr() as usize,
                records.as_ptr() as usize + start,
                "batch at {base_offset} is a copy"
            );
        }
    }

    #[test]
    fn a_cut_last_batch_is_a_partial_tail_at_every_cut_point() {
        let (records, starts) = fetched();
        let (last_start, _) = *starts.last().unwrap();
        for cut in last_start..records.len() {
            let (items, partial) = collect(&records.slice(..cut));
            let offsets: Vec<i64> = items
                .into_iter()
                .map(|item| item.unwrap().base_offset())
                .collect();
            let complete: Vec<i64> = starts[..starts.len() - 1].iter().map(|s| s.1).collect();
            assert_eq!(offsets, complete, "cut at {cut}");
            assert_eq!(partial, cut > last_start, "cut at {cut}");
        }
    }

    #[test]
    fn empty_input_yields_nothing() {
        let (items, partial) = collect(&Bytes::new());
        assert!(items.is_empty());
        assert!(!partial);
    }

    #[test]
    fn bad_lengths_are_corrupt_and_end_the_split() {
        let (records, starts) = fetched();
        let second = starts[1].0;
        for length in [-1i32, i32::MIN, 0, 48] {
            let mut bytes = records.to_vec();
            bytes[second + 8..second + 12].copy_from_slice(&length.to_be_bytes());
            let (items, partial) = collect(&bytes.into());
            assert_eq!(items.len(), 2, "length {length}");
            assert_eq!(items[0].as_ref().unwrap().base_offset(), 100);
            assert!(
                matches!(
                    items[1],
                    Err(BatchError::Corrupt {
                        base_offset: 104,
                        ..
                    })
                ),
                "length {length}: {:?}",
                items[1]
            );
            assert!(!partial);
        }
    }

    #[test]
    fn a_length_beyond_the_data_is_a_partial_tail() {
        let (records, starts) = fetched();
        let second = starts[1].0;
        let mut bytes = records.to_vec();
        bytes[second + 8..second + 12].copy_from_slice(&i32::MAX.to_be_bytes());
        let (items, partial) = collect(&bytes.into());
        assert_eq!(items.len(), 1);
        assert!(partial);
    }

    /// One v2 batch, then old entries of both formats (an upgrade seen
    /// backwards never happens, but the split does not care), then v2 again.
    #[test]
    fn old_format_entries_come_as_one_run_between_v2_batches() {
        let (records, starts) = fetched();
        let mut bytes = records[..starts[1].0].to_vec();
        let run_start = bytes.len();
        for (offset, magic) in [(104, 0), (105, 0), (106, 1)] {
            bytes.extend_from_slice(&old_entry(offset, magic));
        }
        let run_end = bytes.len();
        let v2 = &records[starts[1].0..starts[2].0];
        bytes.extend_from_slice(v2);
        // A cut old entry at the end: every cut is a partial tail.
        let whole = old_entry(200, 1);
        for cut in 1..whole.len() {
            let mut bytes = bytes.clone();
            bytes.extend_from_slice(&whole[..cut]);
            let bytes = Bytes::from(bytes);
            let mut split = split_batches(&bytes);
            let items: Vec<Fetched> = split.by_ref().map(Result::unwrap).collect();
            assert!(split.partial_tail(), "cut at {cut}");
            let [Fetched::Batch(first), Fetched::Legacy(run), Fetched::Batch(last)] = &items[..]
            else {
                panic!("cut at {cut}: {items:?}");
            };
            assert_eq!(first.base_offset(), 100);
            assert_eq!(run.base_offset(), 104);
            assert_eq!(run.magic(), 0);
            assert_eq!(run.as_bytes()[..], bytes[run_start..run_end]);
            assert_eq!(last.base_offset(), starts[1].1);
        }
    }

    #[test]
    fn an_old_entry_with_a_negative_size_is_corrupt_after_the_good_ones() {
        let mut bytes = old_entry(6, 1);
        let mut bad = old_entry(7, 1);
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        bytes.extend_from_slice(&bad);
        let items: Vec<_> = split_batches(&bytes.into()).collect();
        assert!(
            matches!(
                &items[..],
                [Ok(Fetched::Legacy(run)), Err(BatchError::Corrupt { base_offset: 7, .. })]
                    if run.base_offset() == 6 && run.as_bytes().len() == old_entry(6, 1).len()
            ),
            "{items:?}"
        );
    }

    #[test]
    fn unknown_magic_is_unsupported() {
        let (records, _) = fetched();
        let mut bytes = records.to_vec();
        bytes[at::MAGIC] = 3;
        let (items, _) = collect(&bytes.into());
        assert!(matches!(
            items[..],
            [Err(BatchError::UnsupportedMagic {
                base_offset: 100,
                magic: 3
            })]
        ));
    }

    proptest! {
        #[test]
        fn split_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // Errors are fine; panics are not.
            for item in split_batches(&bytes.into()).flatten() {
                if let Fetched::Batch(batch) = item {
                    let _ = batch.verify_crc();
                    let _ = batch.control_type();
                }
            }
        }

        #[test]
        fn split_never_panics_on_damaged_real_batches(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let (records, _) = fetched();
            let mut bytes = records.to_vec();
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            for item in split_batches(&bytes.into()).flatten() {
                if let Fetched::Batch(batch) = item {
                    let _ = batch.verify_crc();
                    let _ = batch.control_type();
                    let _ = batch.next_offset();
                }
            }
        }
    }
}
