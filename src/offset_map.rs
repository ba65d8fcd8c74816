//! The offset map: where each copied source offset of a partition landed on
//! the target, so a consumer group's committed offset can be translated
//! exactly (no record missed, none read twice).
//!
//! Offsets differ between the clusters: the target may have held data before,
//! control records and aborted transactions are not copied, compacted batches
//! are re-encoded without their gaps. But a run of records copied with
//! consecutive source offsets lands at consecutive target offsets, so the map
//! keeps only the points where `target − source` changes: a plain topic
//! copied into an empty target costs one point, a transactional topic about
//! one per transaction (its commit marker is a source offset with no copy).
//!
//! A committed offset `c` means "everything before `c` was read", so it
//! translates to the target offset right after the copy of the last record
//! before `c` (the first copied record's, when none before it is copied), or
//! to the end of what is copied when nothing at or after `c` is copied yet
//! (never ahead of the data). Where the target holds nothing but copies,
//! that is the target offset of the first copied record at or after `c`.
//! Where it holds other records between two copies (written there by
//! others: after a failback, the source's records the target never got),
//! a consumer that stopped between the two reads them rather than skipping
//! them.
//!
//! At most [`MAX_POINTS`] points are kept: the oldest go first, and with
//! them the map's reach (`from`). An offset older than that is reported, not
//! guessed. The map is stored in the partition's checkpoint record, so it is
//! never older or newer than the checkpoint that covers it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Points kept per partition. Stored delta-encoded, a point costs about 8
/// bytes of checkpoint JSON, so a full map is about 4 KiB; a transactional
/// topic keeps its last 512 transactions translatable.
pub const MAX_POINTS: usize = 512;

/// A source offset and the target offset its copy has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The source offset.
    pub source: i64,
    /// The target offset.
    pub target: i64,
}

/// Records copied with consecutive offsets on both sides: `count` records
/// from source offset `source`, landed from target offset `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The first record's source offset.
    pub source: i64,
    /// The first record's target offset.
    pub target: i64,
    /// How many records.
    pub count: i64,
}

/// What a committed source offset means on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Copied: resume at this target offset.
    Exact(i64),
    /// Past what is copied so far: the end of the copy, and how many source
    /// offsets between it and the committed offset are not copied yet.
    Behind {
        /// The target offset after the last copied record.
        target: i64,
        /// Source offsets (records, markers, gaps) still to copy.
        missing: i64,
    },
    /// Before the map's reach: copied before the oldest point kept, or
    /// never copied (the mirror started later).
    TooOld {
        /// The oldest source offset the map translates.
        from: i64,
    },
    /// Nothing of the partition is copied yet.
    NothingCopied,
}

/// One partition's map, fed in source order with what the target acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap {
    /// The oldest source offset the map translates.
    from: i64,
    /// Where `target − source` changes, oldest first: the first record of
    /// each run of consecutively copied records.
    points: VecDeque<Point>,
    /// After the last copied or skipped source offset.
    end: i64,
    /// After the last copied record, on both sides (once one is copied): a
    /// run that starts there continues the last one.
    copied_end: Option<Point>,
}

impl OffsetMap {
    /// An empty map of a partition whose copy starts at source offset `from`.
    pub fn starting_at(from: i64) -> Self {
        OffsetMap {
            from,
            points: VecDeque::new(),
            end: from,
            copied_end: None,
        }
    }

    /// The oldest source offset the map translates.
    pub fn from(&self) -> i64 {
        self.from
    }

    /// The source offset after everything the map covers.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// After the last copied record, on both sides (`None` until one is
    /// copied): where the records that follow it on the source land when
    /// nothing is skipped in between.
    pub fn copied_end(&self) -> Option<Point> {
        self.copied_end
    }

    /// The points kept, oldest first.
    pub fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.points.iter().copied()
    }

    /// The runs of copied records, oldest first. The map keeps where each
    /// run starts; it ends where the next one starts on either side
    /// (a skipped source range, or target offsets that are not ours).
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        let ends = self.points.iter().skip(1).copied().chain(self.copied_end);
        self.points.iter().zip(ends).map(|(start, next)| Run {
            source: start.source,
            target: start.target,
            count: (next.source - start.source).min(next.target - start.target),
        })
    }

    /// The map of the way back: target offsets of the copied records to
    /// their source offsets, from the first kept run to the end of the
    /// copy (`None` when nothing is copied). A consumer that committed a
    /// target offset resumes on the source at the record it was copied
    /// from; what lies between runs on the source (markers, aborted data)
    /// is skipped, as on the way there.
    pub fn inverse(&self) -> Option<OffsetMap> {
        let first = self.points.front()?;
        let mut back = OffsetMap::starting_at(first.target);
        for run in self.runs() {
            back.copied(run.target, run.source, run.count);
        }
        Some(back)
    }

    /// `count` records copied, with consecutive source offsets from `source`,
    /// landed at consecutive target offsets from `target`. Runs come in
    /// source order; one that does not start at [`end`](Self::end) follows a
    /// range with nothing to copy, skipped implicitly.
    pub fn copied(&mut self, source: i64, target: i64, count: i64) {
        if count <= 0 || source < self.end {
            return;
        }
        if self.copied_end != Some(Point { source, target }) {
            self.points.push_back(Point { source, target });
            if self.points.len() > MAX_POINTS {
                self.points.pop_front();
                self.from = self.points.front().map_or(self.end, |p| p.source);
            }
        }
        self.end = source + count;
        self.copied_end = Some(Point {
            source: self.end,
            target: target + count,
        });
    }

    /// The source range up to `next` holds nothing copied (control batches,
    /// aborted transactions, records compacted away).
    pub fn skipped_to(&mut self, next: i64) {
        self.end = self.end.max(next);
    }

    /// Forgets what the map gained at and past source offset `end`: it was
    /// copied in a transaction the target aborted, and is copied again. An
    /// `end` at or past [`end`](Self::end) changes nothing.
    pub fn truncate(&mut self, end: i64) {
        if end >= self.end {
            return;
        }
        if end < self.from {
            *self = OffsetMap::starting_at(end);
            return;
        }
        // The first run cut off entirely, or the end of the copy: where the
        // last run kept stops.
        let mut next = self.copied_end;
        while let Some(last) = self.points.back().copied() {
            if last.source < end {
                break;
            }
            next = Some(last);
            self.points.pop_back();
        }
        self.copied_end = match (self.points.back(), next) {
            (Some(run), Some(next)) => {
                let count = (next.source - run.source).min(next.target - run.target);
                let kept = (end - run.source).min(count);
                Some(Point {
                    source: run.source + kept,
                    target: run.target + kept,
                })
            }
            _ => None,
        };
        self.end = end;
    }

    /// Where a consumer that committed source offset `committed` resumes on the target.
    pub fn translate(&self, committed: i64) -> Translation {
        let Some(Point {
            target: target_end, ..
        }) = self.copied_end
        else {
            return if committed < self.from {
                Translation::TooOld { from: self.from }
            } else {
                Translation::NothingCopied
            };
        };
        if committed < self.from {
            return Translation::TooOld { from: self.from };
        }
        if committed > self.end {
            return Translation::Behind {
                target: target_end,
                missing: committed - self.end,
            };
        }
        // The last run starting before `committed`; none (a leading skip,
        // or `committed` at the first run): the first copied record.
        let at = self.points.partition_point(|p| p.source < committed);
        let Some(run) = at.checked_sub(1).map(|i| self.points[i]) else {
            return Translation::Exact(self.points.front().map_or(target_end, |p| p.target));
        };
        // Past its last record, `committed` is in a skipped range or at the
        // next run's start: it resumes right after the run's last copy.
        let next = self.points.get(at).copied().or(self.copied_end);
        let count = next.map_or(0, |n| (n.source - run.source).min(n.target - run.target));
        Translation::Exact(run.target + (committed - run.source).min(count))
    }

    /// The form stored in a checkpoint record.
    pub fn stored(&self) -> StoredMap {
        let mut points = Vec::with_capacity(self.points.len() * 2);
        let mut last = Point {
            source: self.from,
            target: 0,
        };
        for p in &self.points {
            points.push(p.source - last.source);
            points.push(p.target - last.target);
            last = *p;
        }
        StoredMap {
            from: self.from,
            points,
            copied_end: self.copied_end.map(|p| [p.source, p.target]),
        }
    }

    /// The map a checkpoint stored; `end` is the checkpoint's next offset.
    /// `None` when the stored form does not make a map (a damaged record).
    pub fn from_stored(stored: &StoredMap, end: i64) -> Option<Self> {
        if stored.points.len() % 2 != 0 || stored.from > end {
            return None;
        }
        let mut points = VecDeque::with_capacity(stored.points.len() / 2);
        let mut last = Point {
            source: stored.from,
            target: 0,
        };
        for pair in stored.points.chunks_exact(2) {
            let point = Point {
                source: last.source.checked_add(pair[0])?,
                target: last.target.checked_add(pair[1])?,
            };
            // Points rise on both sides and stay within the map's reach.
            let first = points.is_empty();
            if point.source > end
                || (!first && (point.source <= last.source || point.target <= last.target))
                || (first && (point.source < stored.from || point.target < 0))
            {
                return None;
            }
            points.push_back(point);
            last = point;
        }
        let copied_end = stored
            .copied_end
            .map(|[source, target]| Point { source, target });
        // Past the last point on both sides, and no further than `end`.
        let ends_well = match (copied_end, points.back()) {
            (Some(e), Some(p)) => e.source > p.source && e.target > p.target && e.source <= end,
            (None, None) => true,
            _ => false,
        };
        ends_well.then_some(OffsetMap {
            from: stored.from,
            points,
            end,
            copied_end,
        })
    }
}

/// An [`OffsetMap`] as a checkpoint record holds it: the points as
/// differences from the one before (the first from `(from, 0)`), flattened
/// into `[source, target, source, target, ...]`, so a map of small steps
/// stays small in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMap {
    /// The oldest source offset the map translates.
    pub from: i64,
    /// The points, delta-encoded.
    pub points: Vec<i64>,
    /// After the last copied record: `[source, target]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_end: Option<[i64; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_plain_copy_into_an_empty_target_is_one_point() {
        let mut map = OffsetMap::starting_at(0);
        for base in (0..1000).step_by(100) {
            map.copied(base, base, 100);
        }
        assert_eq!(map.points().count(), 1);
        assert_eq!(map.translate(0), Translation::Exact(0));
        assert_eq!(map.translate(437), Translation::Exact(437));
        assert_eq!(map.translate(1000), Translation::Exact(1000));
        assert_eq!(
            map.translate(1250),
            Translation::Behind {
                target: 1000,
                missing: 250
            }
        );
    }

    #[test]
    fn truncating_forgets_an_aborted_copy_and_the_map_goes_on_from_there() {
        // Records 0..3, a marker at 3, records 4..10 (two runs).
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 0, 3);
        map.skipped_to(4);
        map.copied(4, 3, 6);
        let whole = map.clone();
        map.truncate(20);
        assert_eq!(map, whole, "past the end: nothing to forget");

        // Cut inside the second run: it keeps its first two records.
        map.truncate(6);
        assert_eq!(map.end(), 6);
        assert_eq!(
            map.copied_end(),
            Some(Point {
                source: 6,
                target: 5
            })
        );
        assert_eq!(map.translate(6), Translation::Exact(5));
        // Copied again after the abort, at new target offsets.
        map.copied(6, 9, 4);
        assert_eq!(map.translate(7), Translation::Exact(10));
        assert_eq!(map.translate(5), Translation::Exact(4));

        // Cut at the marker: the second run goes, the first stays whole.
        let mut map = whole.clone();
        map.truncate(4);
        assert_eq!(map.points().count(), 1);
        assert_eq!(
            map.copied_end(),
            Some(Point {
                source: 3,
                target: 3
            })
        );
        assert_eq!(map.end(), 4);
        // Cut at the start: nothing copied.
        let mut map = whole;
        map.truncate(0);
        assert_eq!(map.copied_end(), None);
        assert_eq!(map.translate(0), Translation::NothingCopied);
    }

    #[test]
    fn a_target_that_held_data_shifts_every_offset() {
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 70, 50);
        map.copied(50, 120, 50);
        assert_eq!(map.points().count(), 1);
        assert_eq!(map.translate(10), Translation::Exact(80));
        assert_eq!(map.translate(100), Translation::Exact(170));
    }

    #[test]
    fn a_commit_marker_is_a_point_and_maps_to_the_next_record() {
        // Transaction: records 0..3, marker 3; records 4..7, marker 7.
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 0, 3);
        map.skipped_to(4);
        map.copied(4, 3, 3);
        map.skipped_to(8);
        assert_eq!(map.points().count(), 2);
        assert_eq!(map.translate(2), Translation::Exact(2));
        // Committed after the marker or at it: the next record, target 3.
        assert_eq!(map.translate(3), Translation::Exact(3));
        assert_eq!(map.translate(4), Translation::Exact(3));
        assert_eq!(map.translate(6), Translation::Exact(5));
        // After the last marker: the end of the copy.
        assert_eq!(map.translate(7), Translation::Exact(6));
        assert_eq!(map.translate(8), Translation::Exact(6));
    }

    #[test]
    fn records_the_target_holds_between_copies_are_read_not_skipped() {
        // Source 0..10 and 10..20 copied to 0..10 and 15..25: the target
        // holds 5 records of its own between them.
        let mut map = OffsetMap::starting_at(0);
        map.copied(0, 0, 10);
        map.copied(10, 15, 10);
        assert_eq!(map.translate(9), Translation::Exact(9));
        // Read everything before 10: resume at the target's own records.
        assert_eq!(map.translate(10), Translation::Exact(10));
        assert_eq!(map.translate(11), Translation::Exact(16));
        // A marker at 20, then 21..23 at 25..27: it maps to the next record.
        map.skipped_to(21);
        map.copied(21, 25, 2);
        assert_eq!(map.translate(20), Translation::Exact(25));
        assert_eq!(map.translate(21), Translation::Exact(25));
        assert_eq!(map.translate(22), Translation::Exact(26));
        assert_eq!(map.translate(23), Translation::Exact(27));
    }

    #[test]
    fn a_leading_skip_maps_to_the_first_copied_record() {
        let mut map = OffsetMap::starting_at(10);
        map.skipped_to(15);
        assert_eq!(map.translate(12), Translation::NothingCopied);
        map.copied(15, 0, 5);
        assert_eq!(map.translate(10), Translation::Exact(0));
        assert_eq!(map.translate(9), Translation::TooOld { from: 10 });
    }

    #[test]
    fn the_oldest_points_go_and_with_them_the_reach() {
        let mut map = OffsetMap::starting_at(0);
        for i in 0..(MAX_POINTS as i64 + 3) {
            // One record and one marker each.
            map.copied(2 * i, i, 1);
            map.skipped_to(2 * i + 2);
        }
        assert_eq!(map.points().count(), MAX_POINTS);
        assert_eq!(map.translate(5), Translation::TooOld { from: 6 });
        assert_eq!(map.translate(6), Translation::Exact(3));
    }

    #[test]
    fn a_damaged_stored_map_is_refused() {
        let good = StoredMap {
            from: 0,
            points: vec![0, 0, 4, 3],
            copied_end: Some([7, 6]),
        };
        assert!(OffsetMap::from_stored(&good, 8).is_some());
        for points in [vec![0], vec![0, 0, 4, -1], vec![0, 0, 0, 3], vec![9, 0]] {
            let bad = StoredMap {
                points,
                ..good.clone()
            };
            assert!(OffsetMap::from_stored(&bad, 8).is_none(), "{bad:?}");
        }
        let unended = StoredMap {
            copied_end: None,
            ..good
        };
        assert!(OffsetMap::from_stored(&unended, 8).is_none());
    }

    /// A partition as the source has it: each offset a record to copy or not.
    fn source_log() -> impl Strategy<Value = (i64, i64, Vec<bool>)> {
        (
            0i64..1000,
            0i64..1000,
            prop::collection::vec(any::<bool>(), 1..200),
        )
    }

    /// Feeds `map` the log `copied` (from source offset `from`, landing
    /// from `target_start`) as the pipeline does: runs of consecutive
    /// copies, and skips. Returns each copied record's `(source, target)`.
    fn feed(map: &mut OffsetMap, from: i64, target_start: i64, copied: &[bool]) -> Vec<(i64, i64)> {
        let mut targets = Vec::new();
        let mut next_target = target_start;
        let mut run: Option<(i64, i64, i64)> = None;
        for (i, &copy) in copied.iter().enumerate() {
            let source = from + i as i64;
            if copy {
                targets.push((source, next_target));
                run = match run {
                    Some((s, t, n)) if s + n == source => Some((s, t, n + 1)),
                    Some((s, t, n)) => {
                        map.copied(s, t, n);
                        Some((source, next_target, 1))
                    }
                    None => Some((source, next_target, 1)),
                };
                next_target += 1;
            } else if let Some((s, t, n)) = run.take() {
                map.copied(s, t, n);
                map.skipped_to(source + 1);
            } else {
                map.skipped_to(source + 1);
            }
        }
        if let Some((s, t, n)) = run {
            map.copied(s, t, n);
        }
        targets
    }

    #[test]
    fn the_inverse_maps_each_copy_back_to_its_origin() {
        // Records 10..13, a marker at 13, records 14..16, landed from 100.
        let mut map = OffsetMap::starting_at(10);
        map.copied(10, 100, 3);
        map.skipped_to(14);
        map.copied(14, 103, 2);
        map.skipped_to(17);
        let runs: Vec<Run> = map.runs().collect();
        assert_eq!(
            runs,
            [
                Run {
                    source: 10,
                    target: 100,
                    count: 3
                },
                Run {
                    source: 14,
                    target: 103,
                    count: 2
                }
            ]
        );
        let back = map.inverse().expect("something copied");
        assert_eq!((back.from(), back.end()), (100, 105));
        assert_eq!(back.translate(100), Translation::Exact(10));
        assert_eq!(back.translate(102), Translation::Exact(12));
        // Read everything before the copy of 14: resume after 12, at the
        // marker (which a consumer steps over); then each copy at its origin.
        assert_eq!(back.translate(103), Translation::Exact(13));
        assert_eq!(back.translate(104), Translation::Exact(15));
        assert_eq!(back.translate(105), Translation::Exact(16));
        assert_eq!(back.translate(99), Translation::TooOld { from: 100 });
        assert_eq!(OffsetMap::starting_at(5).inverse(), None);
    }

    proptest! {
        /// Against a record-by-record model: every committed offset maps to
        /// the target offset of the first copied record at or after it, or
        /// the end of the copy; and the stored form gives the same map.
        #[test]
        fn translates_like_the_record_by_record_model((from, target_start, copied) in source_log()) {
            let mut map = OffsetMap::starting_at(from);
            let targets = feed(&mut map, from, target_start, &copied);
            let next_target = target_start + targets.len() as i64;
            let end = from + copied.len() as i64;
            prop_assert!(map.points().count() <= copied.len());
            let restored = OffsetMap::from_stored(&map.stored(), end);
            prop_assert_eq!(restored.as_ref(), Some(&map));
            for committed in from..=end {
                let expected = match targets.iter().find(|(s, _)| *s >= committed) {
                    Some(&(_, t)) => Translation::Exact(t),
                    None if targets.is_empty() => Translation::NothingCopied,
                    None => Translation::Exact(next_target),
                };
                prop_assert_eq!(map.translate(committed), expected, "committed {}", committed);
            }
        }

        /// The inverse takes a consumer that read everything before a copy
        /// back to right after the record copied before it (so nothing
        /// between is skipped), the end of the copy to the end of what was
        /// copied, and the records of the runs add up on both sides.
        #[test]
        fn the_inverse_takes_every_copy_home((from, target_start, copied) in source_log()) {
            let mut map = OffsetMap::starting_at(from);
            let targets = feed(&mut map, from, target_start, &copied);
            let copies: i64 = map.runs().map(|r| r.count).sum();
            prop_assert_eq!(copies, targets.len() as i64);
            let Some(back) = map.inverse() else {
                prop_assert!(targets.is_empty());
                return Ok(());
            };
            for (i, &(source, target)) in targets.iter().enumerate() {
                let resume = i.checked_sub(1).map_or(source, |before| targets[before].0 + 1);
                prop_assert_eq!(back.translate(target), Translation::Exact(resume));
                prop_assert_eq!(back.translate(target + 1), Translation::Exact(source + 1));
            }
            let end = map.copied_end().expect("copied");
            prop_assert_eq!(back.end(), end.target);
            prop_assert_eq!(back.translate(end.target), Translation::Exact(end.source));
            prop_assert_eq!(back.inverse().map(|again| again.runs().collect::<Vec<_>>()), Some(map.runs().collect()));
        }
    }
}
