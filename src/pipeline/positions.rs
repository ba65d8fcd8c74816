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

use std::collections::HashMap;
use std::time::Instant;

use uuid::Uuid;

use super::engine::{Engine, Event, Status};
use crate::cluster::{Metadata, OffsetResult, OffsetSpec, Role};
use crate::config::DataLossPolicy;

impl Engine {
    /// A selected source topic whose id changed was deleted and created again:
    /// its offsets restarted, so copying on from the old position would skip
    /// or mix data. Reported, never silently appended to the old copy.
    pub(super) fn detect_recreated_topics(&mut self, metadata: &Metadata) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(topic) = metadata.topics.get(&*slot.topic) else {
                continue;
            };
            if topic.id.is_nil() || topic.id == slot.source_topic_id {
                continue;
            }
            let reason = format!(
                "source topic `{}` was deleted and recreated since its data was copied (topic id {} is now {}); its offsets restarted",
                slot.topic, slot.source_topic_id, topic.id
            );
            self.on_source_reset(i, topic.id, reason);
        }
    }

    /// Applies the data-loss policy to a partition whose source restarted.
    fn on_source_reset(&mut self, slot: usize, new_topic_id: Uuid, reason: String) {
        match self.config.replication.on_data_loss {
            DataLossPolicy::Stop => self.stop(
                slot,
                format!("{reason}; to copy the new topic on top of the old copy, restart with --on-data-loss continue"),
            ),
            DataLossPolicy::Continue => {
                let s = &mut self.slots[slot];
                tracing::error!(topic = %s.topic, partition = s.partition, "{reason}; copying the new topic from its start (on_data_loss = continue)");
                s.source_topic_id = new_topic_id;
                s.status = Status::Resolving {
                    spec: OffsetSpec::Earliest,
                    asked: false,
                };
                s.state.drop_unsent();
            }
        }
    }

    /// Looks up start offsets and investigates out-of-range fetches.
    pub(super) fn start_lookups(&mut self, now: Instant) {
        let mut resolve: HashMap<OffsetSpec, Vec<usize>> = HashMap::new();
        let mut loss = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.fetch_backoff.waiting(now) || slot.fetching {
                continue;
            }
            match &mut slot.status {
                // A reset waits until what was in flight has landed and is checkpointed.
                Status::Resolving { spec, asked } if !*asked && slot.state.is_empty() => {
                    *asked = true;
                    resolve.entry(*spec).or_default().push(i);
                }
                Status::CheckingLoss { asked } if !*asked => {
                    *asked = true;
                    loss.push(i);
                }
                _ => {}
            }
        }
        let isolation = self.config.replication.isolation_level.wire_value();
        for (spec, slots) in resolve {
            let partitions = self.partition_keys(&slots);
            let (source, metadata) = (self.source.clone(), self.source_meta.clone());
            self.spawn(async move {
                let results = source
                    .list_offsets(&metadata, &partitions, spec, isolation)
                    .await;
                Event::Resolved { slots, results }
            });
        }
        if !loss.is_empty() {
            let partitions = self.partition_keys(&loss);
            let (source, metadata) = (self.source.clone(), self.source_meta.clone());
            self.spawn(async move {
                let earliest = source
                    .list_offsets(&metadata, &partitions, OffsetSpec::Earliest, 0)
                    .await;
                let latest = source
                    .list_offsets(&metadata, &partitions, OffsetSpec::Latest, 0)
                    .await;
                Event::LossChecked {
                    slots: loss,
                    earliest,
                    latest,
                }
            });
        }
    }

    fn partition_keys(&self, slots: &[usize]) -> Vec<(String, i32)> {
        slots
            .iter()
            .map(|&i| (self.slots[i].topic.to_string(), self.slots[i].partition))
            .collect()
    }

    pub(super) fn on_resolved(
        &mut self,
        slots: Vec<usize>,
        mut results: HashMap<(String, i32), OffsetResult>,
    ) {
        let now = Instant::now();
        for i in slots {
            let key = (self.slots[i].topic.to_string(), self.slots[i].partition);
            let slot = &mut self.slots[i];
            let Status::Resolving { spec, .. } = slot.status else {
                continue;
            };
            match results.remove(&key) {
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
                    self.want_refresh(Role::Source);
                }
            }
        }
    }

    /// The source refused a fetch offset: data was deleted before it was copied
    /// (retention ran ahead), or the source lost data the mirror already copied.
    pub(super) fn on_loss_checked(
        &mut self,
        slots: Vec<usize>,
        mut earliest: HashMap<(String, i32), OffsetResult>,
        mut latest: HashMap<(String, i32), OffsetResult>,
    ) {
        let now = Instant::now();
        for i in slots {
            let key = (self.slots[i].topic.to_string(), self.slots[i].partition);
            let (first, end) = match (earliest.remove(&key), latest.remove(&key)) {
                (Some(Ok(first)), Some(Ok(end))) => (first, end),
                other => {
                    let slot = &mut self.slots[i];
                    tracing::warn!(topic = %slot.topic, partition = slot.partition, result = ?other, "cannot look up the source's offsets yet; retrying");
                    slot.status = Status::CheckingLoss { asked: false };
                    slot.fetch_backoff.fail(now);
                    self.want_refresh(Role::Source);
                    continue;
                }
            };
            let slot = &self.slots[i];
            let at = slot.state.fetch_offset;
            if at < first {
                let lost = first - at;
                self.counters.offsets_lost += lost as u64;
                let reason = format!(
                    "source offsets {at}..{} ({lost} offsets) of {}-{} were deleted by the source before they were copied (retention ran ahead of the mirror)",
                    first - 1,
                    slot.topic,
                    slot.partition
                );
                self.apply_loss_policy(i, reason, first);
            } else if at > end {
                let reason = format!(
                    "the mirror's next offset {at} of {}-{} is past the source's log end {end}: the source lost data that was already copied (unclean leader election or truncation)",
                    slot.topic, slot.partition
                );
                self.apply_loss_policy(i, reason, end);
            } else {
                // In range again (a leader change raced the fetch): just fetch again.
                let slot = &mut self.slots[i];
                slot.status = Status::Copying;
                slot.fetch_backoff.fail(now);
            }
        }
    }

    /// Stops the partition, or with `on_data_loss = continue` reports the
    /// loss and copies on from `resume_at`.
    fn apply_loss_policy(&mut self, i: usize, reason: String, resume_at: i64) {
        match self.config.replication.on_data_loss {
            DataLossPolicy::Stop => self.stop(
                i,
                format!("{reason}; restart with --on-data-loss continue to copy on from offset {resume_at}"),
            ),
            DataLossPolicy::Continue => {
                let slot = &mut self.slots[i];
                tracing::error!(topic = %slot.topic, partition = slot.partition, "{reason}; continuing from offset {resume_at} (on_data_loss = continue)");
                slot.state.push_skip(resume_at);
                slot.status = Status::Copying;
            }
        }
    }
}
