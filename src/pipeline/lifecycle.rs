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
//!
//! [`TopicRefresh`] owns the schedule and the topic count; the work runs as
//! one request the engine spawns like any other ([`refresh_topics`]), and
//! its answer adds slots to the partition table. A run with
//! `until_caught_up` copies what the source held at the start and so skips
//! the refresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::{Slot, Slots, Status};
use super::MirrorError;
use crate::cluster::{Cluster, Metadata, OffsetSpec};
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

    /// Adds the partitions the source gained, each copied from its start,
    /// and hands back the fresh metadata for the engine to take in.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        flow: &str,
        result: Result<Refreshed, MirrorError>,
        now: Instant,
    ) -> Option<(Metadata, Metadata)> {
        self.in_flight = false;
        self.next = now + self.interval;
        let Refreshed {
            source_meta,
            target_meta,
            specs,
        } = match result {
            Ok(refreshed) => refreshed,
            Err(e) => {
                tracing::warn!(flow, error = %e, "topic refresh failed; trying again at the next interval");
                return None;
            }
        };
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
                tracing::info!(flow, topic = %name, partition, target = %spec.name, "new source partition; copying it from its start");
                slots.push(Slot::new(
                    name.clone(),
                    spec.name.as_str().into(),
                    partition,
                    topic.id,
                    0,
                    Status::Resolving {
                        spec: OffsetSpec::Earliest,
                        asked: false,
                    },
                ));
            }
            if new_topic {
                self.topic_count += 1;
            }
        }
        Some((source_meta, target_meta))
    }
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

/// The source topics the flow copies now, each with the target topic it
/// needs: the target name, the source's partition count and copyable configs.
pub(super) async fn target_specs(
    flow: &Flow,
    source: &Arc<Cluster>,
    source_meta: &Metadata,
) -> Result<Vec<(String, TopicSpec)>, TopicError> {
    let selected: Vec<String> = source_meta
        .topics
        .iter()
        .filter(|(name, topic)| topic.error.is_none() && flow.selects(name, topic.internal))
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
