//! The source leader epochs of what a partition fetched ([KIP-101], [KIP-320]):
//! which epoch each stretch of the copied offsets was written in, as the
//! source's leader stamped it on every batch (bytes 12..16 of its header).
//!
//! A Fetch names the epoch of the last batch fetched (`last_fetched_epoch`,
//! Fetch v12+), so the source's leader can check that its log still holds
//! that history; when an unclean leader election truncated it, the leader
//! answers with the largest epoch it has up to ours and where that epoch ends
//! (`diverging_epoch`), and [`EpochHistory::divergence`] turns that into the
//! first offset where the copy and the source differ, the way a follower
//! finds where to truncate its own log ([KIP-279]).
//!
//! [KIP-101]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-101+-+Alter+Replication+Protocol+to+use+Leader+Epoch+rather+than+High+Watermark+for+Truncation
//! [KIP-279]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-279%3A+Fix+log+divergence+between+leader+and+follower+after+fast+leader+fail+over
//! [KIP-320]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-320%3A+Allow+fetchers+to+detect+and+handle+log+truncation

use std::collections::VecDeque;

/// Epochs kept per partition. A partition gets one per leader change, so a
/// long run with many of them keeps only the latest: a divergence deeper
/// than those is placed at the oldest one kept, which is still inside the
/// range reported, never after it.
const KEPT: usize = 64;

/// Each source leader epoch the partition fetched data of, with the first
/// offset fetched in it.
#[derive(Debug, Default)]
pub(super) struct EpochHistory {
    /// `(epoch, first offset)`, both ascending.
    starts: VecDeque<(i32, i64)>,
}

impl EpochHistory {
    /// The history of a partition resumed from a checkpoint whose last copied
    /// batch, ending at `next_offset`, was written in `epoch`: only that
    /// epoch is known, and only that it held the offset before `next_offset`.
    pub(super) fn resumed(epoch: Option<i32>, next_offset: i64) -> Self {
        let mut history = EpochHistory::default();
        if let Some(epoch) = epoch {
            history.fetched(epoch, next_offset - 1);
        }
        history
    }

    /// A batch starting at `base_offset` was fetched, written in `epoch`.
    /// Epochs only grow along a log; -1 (no epoch: old message formats) says nothing.
    pub(super) fn fetched(&mut self, epoch: i32, base_offset: i64) {
        if epoch < 0 || self.starts.back().is_some_and(|&(last, _)| last >= epoch) {
            return;
        }
        self.starts.push_back((epoch, base_offset));
        if self.starts.len() > KEPT {
            self.starts.pop_front();
        }
    }

    /// The epoch of the last batch fetched, -1 when unknown: the
    /// `last_fetched_epoch` of the next Fetch.
    pub(super) fn last(&self) -> i32 {
        self.starts.back().map_or(-1, |&(epoch, _)| epoch)
    }

    /// The epoch the batch before `offset` was written in, if known: the one
    /// a checkpoint at `offset` keeps.
    pub(super) fn before(&self, offset: i64) -> Option<i32> {
        self.starts
            .iter()
            .rev()
            .find(|&&(_, start)| start < offset)
            .map(|&(epoch, _)| epoch)
    }

    /// The first offset where the source's log and the copy differ, when the
    /// leader says `epoch` is the largest it has up to ours and ends at
    /// `end_offset`: the leader's end of that epoch, or ours (where the copy's
    /// first later epoch starts), whichever comes first.
    pub(super) fn divergence(&self, epoch: i32, end_offset: i64) -> i64 {
        self.starts
            .iter()
            .find(|&&(ours, _)| ours > epoch)
            .map_or(end_offset, |&(_, start)| start.min(end_offset))
    }

    /// The copy goes back to `offset`: what was fetched from there on is not
    /// part of it any more.
    pub(super) fn rewind(&mut self, offset: i64) {
        self.starts.retain(|&(_, start)| start < offset);
    }

    /// Nothing is known: the position was set from outside (a looked-up start,
    /// a reported loss), or the leader could not place the epoch we sent.
    pub(super) fn forget(&mut self) {
        self.starts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(starts: &[(i32, i64)]) -> EpochHistory {
        let mut history = EpochHistory::default();
        for &(epoch, start) in starts {
            history.fetched(epoch, start);
        }
        history
    }

    #[test]
    fn each_epoch_is_kept_with_its_first_offset() {
        let mut h = history(&[(3, 0), (3, 10), (5, 20), (5, 30), (4, 40), (-1, 50)]);
        assert_eq!(h.starts, [(3, 0), (5, 20)]);
        assert_eq!(h.last(), 5);
        assert_eq!(h.before(20), Some(3));
        assert_eq!(h.before(21), Some(5));
        assert_eq!(h.before(0), None);
        h.rewind(20);
        assert_eq!(h.last(), 3);
        h.forget();
        assert_eq!(h.last(), -1);
        for epoch in 0..100 {
            h.fetched(epoch, i64::from(epoch));
        }
        assert_eq!(h.starts.len(), KEPT);
        assert_eq!(h.last(), 99);
    }

    #[test]
    fn the_divergence_is_the_earlier_of_the_leaders_end_of_the_epoch_and_ours() {
        let h = history(&[(3, 0), (5, 100)]);
        // The leader has epoch 5 too, ending at 110: the copy went past it.
        assert_eq!(h.divergence(5, 110), 110);
        // The leader never had epoch 5; its epoch 3 runs to 150, but the
        // copy's epoch 3 ended at 100, where its epoch 5 began.
        assert_eq!(h.divergence(3, 150), 100);
        assert_eq!(h.divergence(3, 80), 80);
        // The leader has none of the copy's epochs: all of it differs.
        assert_eq!(h.divergence(1, 40), 0);
    }

    #[test]
    fn a_resumed_partition_knows_the_epoch_of_its_last_copied_batch() {
        let h = EpochHistory::resumed(Some(7), 150);
        assert_eq!(h.last(), 7);
        assert_eq!(h.divergence(7, 100), 100);
        assert_eq!(EpochHistory::resumed(None, 150).last(), -1);
    }
}
