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
