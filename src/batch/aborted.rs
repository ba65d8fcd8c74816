//! READ_COMMITTED filtering: which fetched batches belong to aborted
//! transactions, decided per batch as Kafka's Java consumer does it.

use std::collections::HashSet;

use kafka_protocol::messages::fetch_response::AbortedTransaction;

use super::{BatchError, ControlType, RecordBatch};

/// What to do with a fetched batch under READ_COMMITTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchFate {
    /// Committed or non-transactional data: produce it.
    Forward,
    /// A transaction marker: brokers refuse control batches from clients.
    SkipControl,
    /// Data of an aborted transaction.
    SkipAborted,
}

/// The aborted transactions of one partition in one Fetch response, consumed
/// as the response's batches are classified in order.
///
/// The broker lists the aborted transactions that overlap the returned
/// offset range, so this state is only valid for that one response.
#[derive(Debug, Clone)]
pub struct AbortedTransactions {
    /// `(first_offset, producer_id)` not yet reached, sorted by first offset.
    pending: Vec<(i64, i64)>,
    /// Index of the next entry of `pending` to reach.
    next: usize,
    /// Producers whose current transaction is aborted.
    aborted: HashSet<i64>,
}

impl AbortedTransactions {
    /// Takes the `aborted_transactions` of a Fetch response partition.
    pub fn new(list: &[AbortedTransaction]) -> Self {
        let mut pending: Vec<_> = list
            .iter()
            .map(|txn| (txn.first_offset, txn.producer_id.0))
            .collect();
        pending.sort_unstable();
        Self {
            pending,
            next: 0,
            aborted: HashSet::new(),
        }
    }

    /// Decides the fate of the next batch of the response. Batches must come
    /// in the order of the response.
    ///
    /// A batch of a transaction is aborted if its producer has an aborted
    /// transaction starting at or before the batch's last offset and that
    /// transaction's ABORT marker has not been seen yet.
    pub fn classify(&mut self, batch: &RecordBatch) -> Result<BatchFate, BatchError> {
        let producer_id = batch.producer_id();
        if producer_id >= 0 {
            // Also before control batches: a response can start after an
            // aborted transaction's data but before its marker, and the
            // marker must then still clear the producer.
            self.reach(batch.last_offset());
        }
        if batch.is_control() {
            if batch.control_type()? == Some(ControlType::Abort) {
                self.aborted.remove(&producer_id);
            }
            return Ok(BatchFate::SkipControl);
        }
        if batch.is_transactional() && self.aborted.contains(&producer_id) {
            Ok(BatchFate::SkipAborted)
        } else {
            Ok(BatchFate::Forward)
        }
    }

    /// Marks the producers of every aborted transaction starting at or
    /// before `offset`.
    fn reach(&mut self, offset: i64) {
        while let Some(&(first_offset, producer_id)) = self.pending.get(self.next) {
            if first_offset > offset {
                break;
            }
            self.aborted.insert(producer_id);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::ProducerId;

    use super::super::test_support::{control_batch, data_batch, sample_contents, BatchSpec};
    use super::*;

    const A: i64 = 10;
    const B: i64 = 20;
    const ABORT: i16 = 0;
    const COMMIT: i16 = 1;

    fn aborted(list: &[(i64, i64)]) -> AbortedTransactions {
        let list: Vec<AbortedTransaction> = list
            .iter()
            .map(|&(producer_id, first_offset)| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(producer_id))
                    .with_first_offset(first_offset)
            })
            .collect();
        AbortedTransactions::new(&list)
    }

    /// A data batch of `producer_id` at `offset` holding `count` records.
    fn data(offset: i64, producer_id: i64, transactional: bool, count: usize) -> Bytes {
        let spec = BatchSpec {
            base_offset: offset,
            producer_id,
            transactional,
            ..BatchSpec::default()
        };
        data_batch(&spec, &sample_contents()[..count])
    }

    fn check(mut filter: AbortedTransactions, steps: &[(Bytes, BatchFate)]) {
        for (bytes, expected) in steps {
            let batch = RecordBatch::parse(bytes.clone()).unwrap();
            let fate = filter.classify(&batch).unwrap();
            assert_eq!(fate, *expected, "batch at {}", batch.base_offset());
        }
    }

    #[test]
    fn interleaved_transactions_of_two_producers() {
        use BatchFate::*;
        // A: aborted txn 0..=5, committed txn 8..=11.
        // B: committed txn 2..=6, aborted txn 9..=12, committed txn 13..=14.
        // Given out of order: the broker's list need not be sorted.
        let filter = aborted(&[(B, 9), (A, 0)]);
        check(
            filter,
            &[
                (data(0, A, true, 2), SkipAborted),
                (data(2, B, true, 1), Forward),
                (data(3, -1, false, 1), Forward),
                (data(4, A, true, 2), SkipAborted),
                (control_batch(6, B, COMMIT), SkipControl),
                (control_batch(7, A, ABORT), SkipControl),
                (data(8, A, true, 1), Forward),
                (data(9, B, true, 1), SkipAborted),
                // Idempotent but not transactional: never aborted.
                (data(10, B, false, 1), Forward),
                (control_batch(11, A, COMMIT), SkipControl),
                (control_batch(12, B, ABORT), SkipControl),
                (data(13, B, true, 1), Forward),
                (control_batch(14, B, COMMIT), SkipControl),
            ],
        );
    }

    #[test]
    fn a_batch_whose_range_reaches_an_aborted_start_is_aborted() {
        // The aborted transaction starts inside the batch's offset range.
        check(
            aborted(&[(A, 3)]),
            &[(data(0, A, true, 4), BatchFate::SkipAborted)],
        );
        check(
            aborted(&[(A, 4)]),
            &[(data(0, A, true, 4), BatchFate::Forward)],
        );
    }

    #[test]
    fn a_marker_without_the_aborted_data_still_clears_the_producer() {
        // The response starts after the aborted transaction's data, at its
        // marker; the broker still lists the transaction. The next
        // transaction of the same producer must go through.
        check(
            aborted(&[(A, 0)]),
            &[
                (control_batch(5, A, ABORT), BatchFate::SkipControl),
                (data(6, A, true, 2), BatchFate::Forward),
            ],
        );
    }

    #[test]
    fn without_aborted_transactions_only_control_batches_are_skipped() {
        check(
            aborted(&[]),
            &[
                (data(0, A, true, 2), BatchFate::Forward),
                (control_batch(2, A, COMMIT), BatchFate::SkipControl),
                (control_batch(3, A, 7), BatchFate::SkipControl),
            ],
        );
    }

    #[test]
    fn a_malformed_marker_is_an_error() {
        let marker = control_batch(5, A, ABORT);
        let mut bytes = marker.to_vec();
        bytes.truncate(61);
        bytes[8..12].copy_from_slice(&49i32.to_be_bytes());
        // recordsCount still says 1, but the record is gone.
        let batch = RecordBatch::parse(bytes.into()).unwrap();
        let err = aborted(&[(A, 0)]).classify(&batch).unwrap_err();
        assert!(matches!(err, BatchError::Corrupt { base_offset: 5, .. }));
    }
}
