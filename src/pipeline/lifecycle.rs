//! Topic lifecycle while running: every `topics.refresh_interval_ms` the
//! flow's source is listed again, as MirrorMaker 2 does.
//!
//! - A new source topic the flow selects gets its target topic and is copied
//!   from its earliest offset (everything in it is new since the run began).
//!   A flow may start with no topic at all and wait for its first one.
//! - A partition added on the source is added on the target (CreatePartitions)
//!   and copied from its earliest offset.
//! - Changed copyable configs are applied to the target (IncrementalAlterConfigs);
//!   `never_copy_configs` stay the target's own.
//! - A source topic deleted while running is no longer asked for: its
//!   partitions become [`Status::Deleted`], with one log line per topic, and
//!   the run summary lists it. Should a topic of that name come back, the
//!   recreated-topic check decides (see `positions`).
//!
//! [`TopicRefresh`] owns the schedule and the topic count; the work runs as
//! one request the engine spawns like any other ([`refresh_topics`]), and
//! its answer adds slots to the partition table, not started: whose they
//! are is the ownership's to say (`ownership.rs`). A run with
//! `until_caught_up` copies what the source held at the start and so skips
//! the refresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::{Slot, SlotId, Slots, Status};
use super::MirrorError;
use crate::cluster::{Cluster, Metadata, OffsetSpec, TopicMetadata};
use crate::config::Flow;
use crate::topics::{copied_configs, ensure_topics, sync_configs, TopicError, TopicSpec};

/// When the next topic refresh is due, whether one is running, and how many
/// topics the flow copies.
#[derive(Debug)]
pub(super) struct TopicRefresh {
    interval: Duration,
    next: Instant,
    in_flight: bool,
    topic_count: usize,
}

/// What a refresh found and made ready on the target.
#[derive(Debug)]
pub(super) struct Refreshed {
    source_meta: Metadata,
    target_meta: Metadata,
    /// Selected source topics and their target topics, all existing and led.
    specs: Vec<(String, TopicSpec)>,
}

impl TopicRefresh {
    /// The first refresh comes one interval after startup, which did the
    /// same work and found `topic_count` topics.
    pub(super) fn new(started: Instant, interval: Duration, topic_count: usize) -> Self {
        TopicRefresh {
            interval,
            next: started + interval,
            in_flight: false,
            topic_count,
        }
    }

    /// Topics the flow copies.
    pub(super) fn topic_count(&self) -> usize {
        self.topic_count
    }

    /// Whether a refresh should start now; if so it is marked in flight.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if self.next > now || self.in_flight {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// Adds the partitions the source gained, each to be copied from its
    /// start once started, and hands back the fresh metadata for the engine
    /// to take in, with the new slots.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        result: Result<Refreshed, MirrorError>,
        now: Instant,
    ) -> Option<(Metadata, Metadata, Vec<SlotId>)> {
        self.in_flight = false;
        self.next = now + self.interval;
        let Refreshed {
            source_meta,
            target_meta,
            specs,
        } = match result {
            Ok(refreshed) => refreshed,
            Err(e) => {
                tracing::warn!(error = %e, "topic refresh failed; trying again at the next interval");
                return None;
            }
        };
        let mut added = Vec::new();
        for (source_name, spec) in &specs {
            let Some(topic) = source_meta.topics.get(source_name) else {
                continue;
            };
            let name: Arc<str> = source_name.as_str().into();
            let mut new_topic = true;
            for &partition in topic.partitions.keys() {
                if slots.find(&name, partition).is_some() {
                    new_topic = false;
                    continue;
                }
                tracing::info!(topic = %name, partition, target = %spec.name, "new source partition; copying it from its start");
                added.push(slots.push(Slot::unowned(
                    name.clone(),
                    spec.name.as_str().into(),
                    partition,
                    topic.id,
                    OffsetSpec::Earliest,
                )));
            }
            if new_topic {
                self.topic_count += 1;
            }
        }
        drop_deleted_topics(slots, &source_meta);
        Some((source_meta, target_meta, added))
    }
}

/// Partitions whose topic the source no longer lists (a full listing) stop
/// being fetched: otherwise they are asked for, and refused, until a
/// restart. Their unsent batches are dropped; those sent still land.
fn drop_deleted_topics(slots: &mut Slots, source_meta: &Metadata) {
    let mut deleted: Vec<Arc<str>> = Vec::new();
    for slot in slots.all_mut() {
        let fetching = matches!(
            slot.status,
            Status::Copying
                | Status::CheckingLoss { .. }
                | Status::Resolving { .. }
                | Status::Unowned
        );
        if !fetching || source_meta.topics.contains_key(&*slot.topic) {
            continue;
        }
        slot.status = Status::Deleted;
        slot.state.drop_unsent();
        if !deleted.contains(&slot.topic) {
            deleted.push(slot.topic.clone());
        }
    }
    for topic in deleted {
        tracing::warn!(topic = %topic, "source topic deleted; no longer copied");
    }
}

/// The source topics deleted while running, each once, in table order.
pub(super) fn deleted_topics(slots: &Slots) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    for slot in slots.all() {
        if matches!(slot.status, Status::Deleted) && !topics.iter().any(|t| **t == *slot.topic) {
            topics.push(slot.topic.to_string());
        }
    }
    topics
}

/// Lists the source, and creates, grows and reconfigures the target topics to match.
pub(super) async fn refresh_topics(
    flow: &Flow,
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
) -> Result<Refreshed, MirrorError> {
    let source_meta = source.metadata().await?;
    let specs = target_specs(flow, source, &source_meta).await?;
    let wanted: Vec<TopicSpec> = specs.iter().map(|(_, spec)| spec.clone()).collect();
    let target_meta = ensure_topics(target, &wanted, flow.replication.replication_factor).await?;
    sync_configs(target, &wanted, &flow.never_copy_configs).await?;
    Ok(Refreshed {
        source_meta,
        target_meta,
        specs,
    })
}

/// The topics of `metadata` that `flow` copies (those the cluster can serve).
pub(super) fn selected_topics<'a>(
    flow: &'a Flow,
    metadata: &'a Metadata,
) -> impl Iterator<Item = (&'a String, &'a TopicMetadata)> {
    metadata
        .topics
        .iter()
        .filter(|(name, topic)| topic.error.is_none() && flow.selects(name, topic.internal))
}

/// Every partition of the topics `flow` copies, by topic name.
pub(super) fn selected_partitions(flow: &Flow, metadata: &Metadata) -> Vec<(String, i32)> {
    selected_topics(flow, metadata)
        .flat_map(|(name, topic)| topic.partitions.keys().map(|&p| (name.clone(), p)))
        .collect()
}

/// The source topics the flow copies now, each with the target topic it
/// needs: the target name, the source's partition count and copyable configs.
pub(super) async fn target_specs(
    flow: &Flow,
    source: &Arc<Cluster>,
    source_meta: &Metadata,
) -> Result<Vec<(String, TopicSpec)>, TopicError> {
    let selected: Vec<String> = selected_topics(flow, source_meta)
        .map(|(name, _)| name.clone())
        .collect();
    let mut configs = copied_configs(source, &selected, &flow.never_copy_configs).await?;
    Ok(selected
        .into_iter()
        .map(|name| {
            let spec = TopicSpec {
                name: flow.target_topic(&name),
                partitions: source_meta.topics[&name].partition_count(),
                configs: configs.remove(&name).unwrap_or_default(),
            };
            (name, spec)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::{batch, metadata, slot};
    use uuid::Uuid;

    const KEPT: Uuid = Uuid::from_u128(1);
    const GONE: Uuid = Uuid::from_u128(2);

    fn spec(name: &str) -> (String, TopicSpec) {
        let spec = TopicSpec {
            name: format!("copy.{name}"),
            partitions: 1,
            configs: Vec::new(),
        };
        (name.to_owned(), spec)
    }

    /// A source topic deleted while running is no longer fetched from the
    /// next refresh on; what was sent of it still lands and is checkpointed,
    /// and the other topics go on.
    #[test]
    fn a_topic_deleted_on_the_source_is_dropped_at_the_next_refresh() {
        let mut slots = Slots::default();
        let kept = slots.push(slot("kept", KEPT, 0, 0));
        let gone = slots.push(slot("gone", GONE, 0, 10));
        let state = &mut slots[gone].state;
        state.push_batch(batch(10, 2));
        let sent = state
            .next_to_send(Writer::idempotent(7, 1), false)
            .expect("in flight");
        state.push_batch(batch(12, 2));

        let now = Instant::now();
        let mut refresh = TopicRefresh::new(now, Duration::from_secs(1), 2);
        let refreshed = || Refreshed {
            source_meta: metadata("kept", KEPT, &[(0, Some(1))]),
            target_meta: Metadata::default(),
            specs: vec![spec("kept")],
        };
        for _ in 0..2 {
            assert!(refresh.due(now + Duration::from_secs(5)));
            refresh.answered(&mut slots, Ok(refreshed()), now);
            assert!(slots[kept].status.is_copying());
            assert!(matches!(slots[gone].status, Status::Deleted));
        }
        let state = &mut slots[gone].state;
        assert_eq!(state.fetch_offset, 12, "the unsent batch is dropped");
        assert_eq!(
            state.acked(sent.entry, sent.batch.base_offset()).records,
            2,
            "the sent one lands"
        );
        assert_eq!(state.committed(), 12);
        assert!(!slots.all_stopped(), "a deleted topic is not a failure");
        assert_eq!(deleted_topics(&slots), ["gone"]);
    }
}
