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
//! The work runs as one spawned request like any other, and its answer adds
//! slots to the engine. A run with `until_caught_up` copies what the source
//! held at the start and so skips the refresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::{Engine, Event, Slot, Status};
use super::startup::target_specs;
use super::MirrorError;
use crate::cluster::{Cluster, Metadata, OffsetSpec, Role};
use crate::config::Flow;
use crate::topics::{ensure_topics, sync_configs, TopicSpec};

/// When the next topic refresh is due, and whether one is running.
#[derive(Debug)]
pub(super) struct TopicRefresh {
    next: Instant,
    in_flight: bool,
}

impl TopicRefresh {
    /// The first refresh comes one interval after startup, which did the same work.
    pub(super) fn new(started: Instant, interval: Duration) -> Self {
        TopicRefresh {
            next: started + interval,
            in_flight: false,
        }
    }
}

/// What a refresh found and made ready on the target.
#[derive(Debug)]
pub(super) struct Refreshed {
    source_meta: Metadata,
    target_meta: Metadata,
    /// Selected source topics and their target topics, all existing and led.
    specs: Vec<(String, TopicSpec)>,
}

impl Engine {
    /// Starts a topic refresh when one is due.
    pub(super) fn start_topic_refresh(&mut self, now: Instant) {
        let refresh = &mut self.topic_refresh;
        if refresh.next > now
            || refresh.in_flight
            || self.options.until_caught_up
            || self.draining.is_some()
        {
            return;
        }
        refresh.in_flight = true;
        let (flow, source, target) = (
            self.config.clone(),
            self.source.clone(),
            self.target.clone(),
        );
        self.spawn(async move {
            Event::TopicsRefreshed {
                result: refresh_topics(&flow, &source, &target).await,
            }
        });
    }

    /// Adds the partitions the source gained, and takes the fresh metadata.
    pub(super) fn on_topics_refreshed(&mut self, result: Result<Refreshed, MirrorError>) {
        self.topic_refresh.in_flight = false;
        self.topic_refresh.next = Instant::now() + self.config.topic_refresh_interval;
        let Refreshed {
            source_meta,
            target_meta,
            specs,
        } = match result {
            Ok(refreshed) => refreshed,
            Err(e) => {
                tracing::warn!(flow = %self.config.name, error = %e, "topic refresh failed; trying again at the next interval");
                return;
            }
        };
        for (source_name, spec) in &specs {
            let Some(topic) = source_meta.topics.get(source_name) else {
                continue;
            };
            let name: Arc<str> = source_name.as_str().into();
            let mut new_topic = true;
            for &partition in topic.partitions.keys() {
                if self.index.contains_key(&(name.clone(), partition)) {
                    new_topic = false;
                    continue;
                }
                tracing::info!(flow = %self.config.name, topic = %name, partition, target = %spec.name, "new source partition; copying it from its start");
                self.index
                    .insert((name.clone(), partition), self.slots.len());
                self.slots.push(Slot::new(
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
        self.detect_recreated_topics(&source_meta);
        self.set_metadata(Role::Source, source_meta);
        self.set_metadata(Role::Target, target_meta);
    }
}

/// Lists the source, and creates, grows and reconfigures the target topics to match.
async fn refresh_topics(
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
