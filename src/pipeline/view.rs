//! The flow's snapshot for the board (`crate::observe::board`): what the
//! engine shows of its state, built here so the engine only calls it.
//!
//! The observer owns what only the answers tell (whether each cluster
//! answered last, when a checkpoint was last stored, failed requests by
//! kind) and reads the rest from the partition table and the counters when
//! it publishes: at most every [`PUBLISH_INTERVAL`], and at once when the
//! flow's phase or its links to the clusters change.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::event::Event;
use super::produce::NoAnswer;
use super::slots::{Slot, Slots, Status};
use super::stats::Counters;
use crate::cluster::Role;
use crate::config::Flow;
use crate::observe::board::PUBLISH_INTERVAL;
use crate::observe::{
    Connected, FlowHandle, FlowPhase, FlowView, Lag, PartitionState, PartitionView, TopicTotals,
    Transactions,
};

/// What the engine hands the observer to publish from.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlowInputs<'a> {
    pub(super) config: &'a Flow,
    pub(super) phase: FlowPhase,
    pub(super) slots: &'a Slots,
    pub(super) counters: &'a Counters,
    pub(super) in_flight_bytes: usize,
    pub(super) budget_bytes: usize,
    /// This instance's member id, when the instances share the partitions.
    pub(super) owner: Option<&'a str>,
    /// With `until_caught_up`.
    pub(super) until_caught_up: bool,
    /// The flow's bandwidth limit, if any.
    pub(super) throttle_bytes_per_sec: Option<u64>,
}

/// The flow's end of the board, and what the answers told it.
#[derive(Debug)]
pub(super) struct FlowObserver {
    handle: FlowHandle,
    connected: Connected,
    last_error: Option<String>,
    /// Failed requests, by kind.
    errors: BTreeMap<&'static str, u64>,
    /// Failed Fetch requests: each is tried again.
    fetch_retries: u64,
    checkpoint_stored: Instant,
    group_synced: Option<Instant>,
    published: Option<(Instant, FlowPhase, Connected)>,
}

impl FlowObserver {
    /// The observer of a flow whose startup just reached both clusters and
    /// loaded its checkpoints.
    pub(super) fn new(handle: FlowHandle, now: Instant) -> Self {
        FlowObserver {
            handle,
            connected: Connected {
                source: true,
                target: true,
            },
            last_error: None,
            errors: BTreeMap::new(),
            fetch_retries: 0,
            checkpoint_stored: now,
            group_synced: None,
            published: None,
        }
    }

    /// Whether the flow is paused over the HTTP endpoint: it fetches nothing.
    pub(super) fn paused(&self) -> bool {
        self.handle.paused()
    }

    /// Takes in what an answer says about the clusters and the flow's
    /// progress.
    pub(super) fn observe(&mut self, event: &Event, now: Instant) {
        match event {
            Event::FetchAnswered(reply) => match &reply.result {
                Ok(_) => self.connected.source = true,
                Err(e) => {
                    self.connected.source = false;
                    self.fetch_retries += 1;
                    self.failed("fetch", e.to_string());
                }
            },
            Event::ProduceAnswered(reply) => match &reply.result {
                Ok(_) => self.connected.target = true,
                Err(NoAnswer::Failed(e)) => {
                    self.connected.target = false;
                    self.failed("produce", e.to_string());
                }
                Err(NoAnswer::LeaseEnded) => {}
            },
            Event::MetadataRefreshed { role, result } => {
                let answered = result.is_ok();
                match role {
                    Role::Source => self.connected.source = answered,
                    Role::Target => self.connected.target = answered,
                }
                if let Err(e) = result {
                    self.failed("metadata", e.to_string());
                }
            }
            Event::CheckpointWritten { result, .. } => match result {
                Ok(()) => self.checkpoint_stored = now,
                Err(e) => self.failed("checkpoint", e.to_string()),
            },
            Event::TransactionCommitted { result, .. } => match result {
                Ok(_) => self.checkpoint_stored = now,
                Err(e) => self.failed("transaction", e.to_string()),
            },
            Event::GroupsSynced { result } => match result {
                Ok(_) => self.group_synced = Some(now),
                Err(e) => self.failed("group_sync", e.to_string()),
            },
            _ => {}
        }
    }

    fn failed(&mut self, kind: &'static str, error: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.last_error = Some(error);
    }

    /// Publishes the flow's view if it is due: [`PUBLISH_INTERVAL`] since
    /// the last, or the phase or the links to the clusters changed.
    pub(super) fn publish_if_due(&mut self, inputs: FlowInputs<'_>, now: Instant) {
        let due = self.published.is_none_or(|(at, phase, connected)| {
            now.duration_since(at) >= PUBLISH_INTERVAL
                || phase != inputs.phase
                || connected != self.connected
        });
        if due {
            self.publish(inputs, now);
        }
    }

    /// Publishes the flow's view now.
    pub(super) fn publish(&mut self, inputs: FlowInputs<'_>, now: Instant) {
        self.handle.publish(self.view(inputs, now, unix_millis()));
        self.published = Some((now, inputs.phase, self.connected));
    }

    fn view(&self, inputs: FlowInputs<'_>, now: Instant, now_ms: i64) -> FlowView {
        let FlowInputs {
            config,
            phase,
            slots,
            counters,
            ..
        } = inputs;
        let paused = phase == FlowPhase::Paused;
        let partitions: Vec<PartitionView> = slots
            .all()
            .map(|slot| partition_view(slot, paused, inputs.owner, now_ms))
            .collect();
        let mut errors: BTreeMap<String, u64> = self
            .errors
            .iter()
            .map(|(kind, count)| ((*kind).to_owned(), *count))
            .collect();
        let stopped = slots.all().filter(|s| s.status.is_stopped()).count() as u64;
        if stopped > 0 {
            errors.insert("partition_stopped".into(), stopped);
        }
        let retries = [
            ("fetch", self.fetch_retries),
            ("produce", counters.produce_retries),
            ("producer_id", counters.producer_renewals),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_owned(), count))
        .collect();
        let to_copy = inputs.until_caught_up.then(|| {
            slots
                .all()
                .filter(|s| !s.status.is_stopped())
                .filter_map(|s| s.caught_up_at.map(|end| end - s.state.committed()))
                .map(|left| u64::try_from(left).unwrap_or(0))
                .sum()
        });
        FlowView {
            name: config.name.clone(),
            phase,
            connected: self.connected,
            ready_reasons: FlowView::readiness(phase, self.connected, &partitions),
            topics: topic_totals(slots),
            partitions,
            in_flight_bytes: inputs.in_flight_bytes as u64,
            budget_bytes: inputs.budget_bytes as u64,
            throttle_bytes_per_sec: inputs.throttle_bytes_per_sec,
            checkpoint_age: Some(now.duration_since(self.checkpoint_stored)),
            group_sync_age: config
                .groups
                .as_ref()
                .and(self.group_synced)
                .map(|at| now.duration_since(at)),
            to_copy,
            retries,
            errors,
            transactions: Transactions {
                committed: counters.transactions_committed,
                aborted: counters.transactions_aborted,
            },
            last_error: self.last_error.clone(),
        }
    }
}

/// One partition's view.
fn partition_view(slot: &Slot, paused: bool, owner: Option<&str>, now_ms: i64) -> PartitionView {
    let lag = Lag {
        end_offset: slot.source_end,
        next_offset: slot.state.committed(),
        oldest_unacked_ms: slot.state.oldest_unacked_timestamp(),
        copied_ms: slot.state.copied_timestamp(),
    };
    let lag_records = lag.records();
    let state = match &slot.status {
        Status::Stopped(error) => PartitionState::Stopped {
            error: error.to_string(),
        },
        Status::Unowned | Status::Revoking => PartitionState::Unowned,
        Status::Deleted => PartitionState::Deleted,
        _ if paused => PartitionState::Paused,
        _ if lag_records == Some(0) => PartitionState::CaughtUp,
        _ => PartitionState::Copying,
    };
    let owned = !matches!(state, PartitionState::Unowned);
    PartitionView {
        topic: slot.topic.to_string(),
        partition: slot.partition,
        state,
        next_offset: lag.next_offset,
        end_offset: lag.end_offset,
        lag_records,
        lag_seconds: lag.seconds(now_ms),
        owner: owner.filter(|_| owned).map(str::to_owned),
    }
}

/// The partitions' tallies summed by topic, in topic order.
fn topic_totals(slots: &Slots) -> Vec<TopicTotals> {
    let mut topics: BTreeMap<&str, TopicTotals> = BTreeMap::new();
    for slot in slots.all() {
        let t = topics.entry(&slot.topic).or_insert_with(|| TopicTotals {
            topic: slot.topic.to_string(),
            ..TopicTotals::default()
        });
        let tally = &slot.tally;
        t.records += tally.records;
        t.bytes += tally.bytes;
        t.batches += tally.batches;
        t.reencoded += tally.reencoded;
        t.up_converted += tally.up_converted;
        t.skipped_control += tally.skipped_control;
        t.skipped_aborted += tally.skipped_aborted;
        t.skipped_empty += tally.skipped_empty;
        t.skipped_refused += tally.skipped_refused;
    }
    topics.into_values().collect()
}

/// For the metrics bench (`benches/observe.rs`): the engine's per-tick
/// work at a partition count no test cluster holds.
#[cfg(feature = "test-support")]
pub(super) mod test_support {
    use std::sync::Arc;
    use std::time::Instant;

    use uuid::Uuid;

    use super::super::slots::{Slot, Slots, Status};
    use super::super::stats::Counters;
    use super::{FlowInputs, FlowObserver};
    use crate::config::{Flow, MirrorConfig};
    use crate::observe::{Board, FlowPhase};

    /// A running flow of `topics × partitions` source partitions, all
    /// caught up (at this size most partitions are idle; each then has all
    /// three per-partition series), whose view the engine's own code builds
    /// and publishes to a board.
    #[derive(Debug)]
    pub struct SyntheticFlow {
        config: Flow,
        slots: Slots,
        counters: Counters,
        observer: FlowObserver,
    }

    impl SyntheticFlow {
        /// Registers the flow `name` on `board` (nothing published yet).
        pub fn new(board: &Board, name: &str, topics: usize, partitions: i32) -> Self {
            let toml = format!(
                "name = \"{name}\"\n[source]\nbootstrap_servers = \"a:1\"\n[target]\nbootstrap_servers = \"b:1\"\n"
            );
            let config = MirrorConfig::from_toml(&toml)
                .and_then(|config| config.flows())
                .expect("a valid flow")
                .remove(0);
            let mut slots = Slots::default();
            for t in 0..topics {
                let topic: Arc<str> = format!("topic-{t:03}").into();
                for partition in 0..partitions {
                    let id = Uuid::from_u128(t as u128);
                    let mut slot = Slot::new(
                        topic.clone(),
                        topic.clone(),
                        partition,
                        id,
                        1_000,
                        Status::Copying,
                    );
                    slot.source_end = Some(1_000);
                    slots.push(slot);
                }
            }
            let now = Instant::now();
            SyntheticFlow {
                observer: FlowObserver::new(board.register(name), now),
                config,
                slots,
                counters: Counters::default(),
            }
        }

        /// Builds the flow's view and publishes it, as the engine's tick does.
        pub fn publish(&mut self) {
            let inputs = FlowInputs {
                config: &self.config,
                phase: FlowPhase::Running,
                slots: &self.slots,
                counters: &self.counters,
                in_flight_bytes: 0,
                budget_bytes: 64 << 20,
                owner: None,
                until_caught_up: false,
                throttle_bytes_per_sec: None,
            };
            self.observer.publish(inputs, Instant::now());
        }
    }
}

/// The wall clock in milliseconds, which record timestamps are in.
fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterError;
    use crate::config::MirrorConfig;
    use crate::observe::Board;
    use crate::pipeline::error::Cause;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::{batch, slot};
    use uuid::Uuid;

    /// The newest timestamp of `testing::batch(_, 2)`'s records.
    const BATCH_NEWEST_MS: i64 = 1_700_000_000_001;

    fn flow() -> Flow {
        let config = MirrorConfig::from_toml(
            "name = \"dr\"\n[source]\nbootstrap_servers = \"a:1\"\n[target]\nbootstrap_servers = \"b:1\"\n",
        )
        .expect("valid");
        config.flows().expect("flows").remove(0)
    }

    fn inputs<'a>(
        config: &'a Flow,
        slots: &'a Slots,
        counters: &'a Counters,
        phase: FlowPhase,
    ) -> FlowInputs<'a> {
        FlowInputs {
            config,
            phase,
            slots,
            counters,
            in_flight_bytes: 10,
            budget_bytes: 100,
            owner: None,
            until_caught_up: false,
            throttle_bytes_per_sec: Some(5_000),
        }
    }

    #[test]
    fn the_view_shows_each_partitions_lag_state_and_its_topics_totals() {
        let config = flow();
        let id = Uuid::from_u128(7);
        let mut slots = Slots::default();
        // Caught up: the source's end is where copying is.
        let caught_up = slots.push(slot("orders", id, 0, 40));
        slots[caught_up].source_end = Some(40);
        // Copied 0..2 (acknowledged), fetched 2..4, the source holds 10.
        let behind = slots.push(slot("orders", id, 1, 0));
        let state = &mut slots[behind].state;
        state.push_batch(batch(0, 2));
        state.push_batch(batch(2, 2));
        let writer = Writer::idempotent(1, 0);
        let first = state.next_to_send(writer, false).expect("a batch").entry;
        let mut counters = Counters::default();
        let acked = slots[behind].state.acked(first, 0);
        let slot_behind = &mut slots[behind];
        counters.landed(&mut slot_behind.tally, acked);
        slot_behind.source_end = Some(10);
        // Never fetched.
        slots.push(slot("payments", id, 0, 0));
        let stopped = slots.push(slot("payments", id, 1, 5));
        let error = slots[stopped].error(Cause::DeletedBeforeCopied { from: 5, to: 9 });
        slots[stopped].stop(error);

        let board = Board::new();
        let observer = FlowObserver::new(board.register("dr"), Instant::now());
        let now_ms = BATCH_NEWEST_MS + 3_000;
        let view = observer.view(
            inputs(&config, &slots, &counters, FlowPhase::Running),
            Instant::now(),
            now_ms,
        );
        let p = &view.partitions;
        assert_eq!(p.len(), 4);
        assert_eq!(
            (&p[0].state, p[0].lag_records, p[0].lag_seconds),
            (&PartitionState::CaughtUp, Some(0), Some(0.0))
        );
        assert_eq!((p[1].next_offset, p[1].end_offset), (2, Some(10)));
        assert_eq!(p[1].lag_records, Some(8));
        // The oldest record not copied is the fetched batch's first.
        assert_eq!(p[1].lag_seconds, Some(3.001));
        assert_eq!(p[1].state, PartitionState::Copying);
        assert_eq!((p[2].lag_records, p[2].lag_seconds), (None, None));
        assert!(matches!(p[3].state, PartitionState::Stopped { .. }));
        assert_eq!(view.ready_reasons.len(), 1, "{:?}", view.ready_reasons);
        assert!(view.ready_reasons[0].contains("payments-1 stopped"));
        assert_eq!(view.errors.get("partition_stopped"), Some(&1));
        assert_eq!(
            view.topics
                .iter()
                .map(|t| (t.topic.as_str(), t.records))
                .collect::<Vec<_>>(),
            [("orders", 2), ("payments", 0)]
        );
        assert_eq!(view.throttle_bytes_per_sec, Some(5_000));
        assert_eq!((view.in_flight_bytes, view.budget_bytes), (10, 100));

        // Paused, the partitions that copy show it.
        let paused = observer.view(
            inputs(&config, &slots, &counters, FlowPhase::Paused),
            Instant::now(),
            now_ms,
        );
        assert_eq!(paused.partitions[1].state, PartitionState::Paused);
        assert!(matches!(
            paused.partitions[3].state,
            PartitionState::Stopped { .. }
        ));
    }

    #[test]
    fn an_unanswered_cluster_is_published_at_once_and_its_answer_clears_it() {
        let config = flow();
        let (slots, counters) = (Slots::default(), Counters::default());
        let board = Board::new();
        let start = Instant::now();
        let mut observer = FlowObserver::new(board.register("dr"), start);
        let running = inputs(&config, &slots, &counters, FlowPhase::Running);
        observer.publish_if_due(running, start);
        assert!(board.not_ready().is_empty(), "{:?}", board.not_ready());

        let down = Event::MetadataRefreshed {
            role: Role::Source,
            result: Err(ClusterError::Unreachable {
                role: Role::Source,
                attempts: "a:1: connection refused".into(),
            }),
        };
        observer.observe(&down, start);
        // Within the publish interval, but the link changed.
        observer.publish_if_due(running, start);
        let view = board.flow("dr").expect("published");
        assert!(!view.connected.source);
        assert_eq!(
            board.not_ready(),
            ["flow `dr`: the source cluster does not answer"]
        );
        assert_eq!(view.errors.get("metadata"), Some(&1));
        assert!(view.last_error.as_deref().unwrap().contains("unreachable"));

        let metadata = crate::pipeline::testing::metadata("orders", Uuid::from_u128(1), &[]);
        observer.observe(
            &Event::MetadataRefreshed {
                role: Role::Source,
                result: Ok(metadata),
            },
            start,
        );
        observer.publish_if_due(running, start);
        assert!(board.not_ready().is_empty());
    }
}
