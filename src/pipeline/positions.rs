//! Where each partition copies from, and what happens when the source no
//! longer has that place.
//!
//! - Start positions: a partition without a checkpoint looks up the source's
//!   earliest or latest offset, or the first offset at a timestamp.
//! - Data loss: an out-of-range Fetch means retention deleted data before it
//!   was copied, or the source lost data that was copied; a changed topic id
//!   means the source topic was deleted and recreated. Each is reported with
//!   the exact range and handled by the `on_data_loss` policy: stop the
//!   partition (default) or report, count and copy on. Never silently.
//!
//! The state of a lookup is the partition's [`Status`] (`Resolving`,
//! `CheckingLoss`), so [`Positions`] holds only the policy: it says which
//! lookups are due and applies their answers; the engine sends them.

use std::collections::HashMap;
use std::time::Instant;

use super::error::{Cause, PartitionError};
use super::metadata::MetadataView;
use super::slots::{Slot, SlotId, Slots, Status};
use super::stats::Counters;
use crate::cluster::{Metadata, OffsetResult, OffsetSpec, Role};
use crate::config::DataLossPolicy;

/// Offset lookups to send: start positions by spec, and partitions whose
/// fetch offset the source refused.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    pub(super) resolve: HashMap<OffsetSpec, Vec<SlotId>>,
    pub(super) loss: Vec<SlotId>,
}

/// The start-position and data-loss stage.
#[derive(Debug)]
pub(super) struct Positions {
    on_data_loss: DataLossPolicy,
}

impl Positions {
    pub(super) fn new(on_data_loss: DataLossPolicy) -> Self {
        Positions { on_data_loss }
    }

    /// A selected source topic whose id changed was deleted and created again:
    /// its offsets restarted, so copying on from the old position would skip
    /// or mix data. Reported, never silently appended to the old copy.
    pub(super) fn detect_recreated_topics(&self, slots: &mut Slots, metadata: &Metadata) {
        for (_, slot) in slots.iter_mut() {
            let Some(topic) = metadata.topics.get(&*slot.topic) else {
                continue;
            };
            if topic.id.is_nil() || topic.id == slot.source_topic_id {
                continue;
            }
            let error = slot.error(Cause::TopicRecreated {
                copied_from: slot.source_topic_id,
                now: topic.id,
            });
            match self.on_data_loss {
                DataLossPolicy::Stop => slot.stop(error),
                DataLossPolicy::Continue => {
                    tracing::error!(topic = %slot.topic, partition = slot.partition, "{}; copying the new topic from its start (on_data_loss = continue)", error.problem());
                    slot.source_topic_id = topic.id;
                    slot.status = Status::Resolving {
                        spec: OffsetSpec::Earliest,
                        asked: false,
                    };
                    slot.state.drop_unsent();
                }
            }
        }
    }

    /// The lookups due now, each partition marked asked.
    pub(super) fn due_lookups(&self, slots: &mut Slots, now: Instant) -> Lookups {
        let mut lookups = Lookups::default();
        for (id, slot) in slots.iter_mut() {
            if slot.fetch_backoff.waiting(now) || slot.fetching {
                continue;
            }
            match &mut slot.status {
                // A reset waits until what was in flight has landed and is checkpointed.
                Status::Resolving { spec, asked } if !*asked && slot.state.is_empty() => {
                    *asked = true;
                    lookups.resolve.entry(*spec).or_default().push(id);
                }
                Status::CheckingLoss { asked } if !*asked => {
                    *asked = true;
                    lookups.loss.push(id);
                }
                _ => {}
            }
        }
        lookups
    }

    /// Start offsets answered: copying begins there, or the lookup is
    /// retried after a backoff.
    pub(super) fn resolved(
        &self,
        slots: &mut Slots,
        meta: &MetadataView,
        ids: Vec<SlotId>,
        mut results: HashMap<(String, i32), OffsetResult>,
        now: Instant,
    ) {
        for id in ids {
            let slot = &mut slots[id];
            let Status::Resolving { spec, .. } = slot.status else {
                continue;
            };
            match results.remove(&(slot.topic.to_string(), slot.partition)) {
                Some(Ok(offset)) => {
                    tracing::info!(topic = %slot.topic, partition = slot.partition, offset, ?spec, "starting position");
                    slot.state.restart_at(offset);
                    slot.status = Status::Copying;
                    slot.fetch_backoff.reset();
                }
                other => {
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, result = ?other, "cannot look up the start offset yet; retrying");
                    slot.status = Status::Resolving { spec, asked: false };
                    slot.fetch_backoff.fail(now);
                    meta.want_refresh(Role::Source);
                }
            }
        }
    }

    /// The source refused a fetch offset: data was deleted before it was
    /// copied (retention ran ahead), or the source lost data the mirror
    /// already copied; `earliest` and `latest` are the source's offsets now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn loss_checked(
        &self,
        slots: &mut Slots,
        meta: &MetadataView,
        counters: &mut Counters,
        ids: Vec<SlotId>,
        mut earliest: HashMap<(String, i32), OffsetResult>,
        mut latest: HashMap<(String, i32), OffsetResult>,
        now: Instant,
    ) {
        for id in ids {
            let slot = &mut slots[id];
            let key = (slot.topic.to_string(), slot.partition);
            let (first, end) = match (earliest.remove(&key), latest.remove(&key)) {
                (Some(Ok(first)), Some(Ok(end))) => (first, end),
                other => {
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, result = ?other, "cannot look up the source's offsets yet; retrying");
                    slot.status = Status::CheckingLoss { asked: false };
                    slot.fetch_backoff.fail(now);
                    meta.want_refresh(Role::Source);
                    continue;
                }
            };
            let at = slot.state.fetch_offset;
            if at < first {
                counters.offsets_lost += (first - at) as u64;
                let error = slot.error(Cause::DeletedBeforeCopied {
                    from: at,
                    to: first - 1,
                });
                self.apply_loss_policy(slot, error, first);
            } else if at > end {
                let error = slot.error(Cause::SourceTruncated {
                    next: at,
                    log_end: end,
                });
                self.apply_loss_policy(slot, error, end);
            } else {
                // In range again (a leader change raced the fetch): just fetch again.
                slot.status = Status::Copying;
                slot.fetch_backoff.fail(now);
            }
        }
    }

    /// Stops the partition, or with `on_data_loss = continue` reports the
    /// loss and copies on from `resume_at`.
    fn apply_loss_policy(&self, slot: &mut Slot, error: PartitionError, resume_at: i64) {
        match self.on_data_loss {
            DataLossPolicy::Stop => slot.stop(error),
            DataLossPolicy::Continue => {
                tracing::error!(topic = %slot.topic, partition = slot.partition, "{}; continuing from offset {resume_at} (on_data_loss = continue)", error.problem());
                slot.state.push_skip(resume_at);
                slot.status = Status::Copying;
            }
        }
    }
}
