//! The board: the latest snapshot of each flow, as its engine published it.
//!
//! Each flow's engine stays the only owner of its pipeline state: from its
//! tick (at most every [`PUBLISH_INTERVAL`]) and on changes of its phase or
//! its links to the clusters, it builds a [`FlowView`] and publishes it here.
//! Readers (the HTTP endpoint, the metrics, the progress display) only ever
//! read those snapshots, so they cannot slow or lock the data path. The only
//! way back is a flow's pause switch, which its engine reads at its next turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::sync::watch;

/// How often an engine publishes its view at most, changes of phase or of
/// its links to the clusters aside.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Partitions a readiness reason names one by one; the rest are counted.
const NAMED_STOPPED: usize = 10;

/// The snapshots of every flow of the run: a cheap handle, cloned for each
/// reader and each flow.
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flows: RwLock<BTreeMap<String, Entry>>,
    /// The run's loop ended (every flow finished).
    finished: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    view: Arc<FlowView>,
    pause: watch::Sender<bool>,
}

/// A flow the board does not know.
#[derive(Debug, thiserror::Error)]
#[error("no flow named `{0}`")]
pub struct UnknownFlow(pub String);

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Board::default()
    }

    /// Adds a flow about to start (phase [`FlowPhase::Starting`]) and
    /// returns the handle its engine publishes through. A flow of that name
    /// already there is replaced.
    pub fn register(&self, name: &str) -> FlowHandle {
        let (pause, paused) = watch::channel(false);
        let view = Arc::new(FlowView::starting(name));
        write(&self.inner.flows).insert(name.to_owned(), Entry { view, pause });
        FlowHandle {
            board: self.clone(),
            name: name.to_owned(),
            paused,
        }
    }

    /// Every flow's latest view, by name.
    pub fn flows(&self) -> Vec<Arc<FlowView>> {
        read(&self.inner.flows)
            .values()
            .map(|entry| entry.view.clone())
            .collect()
    }

    /// One flow's latest view.
    pub fn flow(&self, name: &str) -> Option<Arc<FlowView>> {
        read(&self.inner.flows)
            .get(name)
            .map(|entry| entry.view.clone())
    }

    /// Pauses (`true`) or resumes a flow: its engine stops or starts
    /// fetching at its next turn; what it fetched still lands and is
    /// checkpointed.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<(), UnknownFlow> {
        let flows = read(&self.inner.flows);
        let entry = flows
            .get(name)
            .ok_or_else(|| UnknownFlow(name.to_owned()))?;
        entry.pause.send_replace(paused);
        Ok(())
    }

    /// Why the run is not ready: every flow's reasons, each prefixed with
    /// its name; empty when ready (and with no flow yet, not ready).
    pub fn not_ready(&self) -> Vec<String> {
        let flows = read(&self.inner.flows);
        if flows.is_empty() {
            return vec!["no flow has started yet".to_owned()];
        }
        flows
            .values()
            .flat_map(|entry| {
                let name = &entry.view.name;
                entry
                    .view
                    .ready_reasons
                    .iter()
                    .map(move |reason| format!("flow `{name}`: {reason}"))
            })
            .collect()
    }

    /// Marks the run's loop as ended.
    pub fn finish(&self) {
        self.inner.finished.store(true, Ordering::Relaxed);
    }

    /// Whether the run's loop still runs (it has not ended).
    pub fn is_running(&self) -> bool {
        !self.inner.finished.load(Ordering::Relaxed)
    }
}

/// A flow's end of the board: where its engine publishes, and the pause
/// switch it reads.
#[derive(Debug)]
pub struct FlowHandle {
    board: Board,
    name: String,
    paused: watch::Receiver<bool>,
}

impl FlowHandle {
    /// Replaces the flow's view.
    pub fn publish(&self, view: FlowView) {
        if let Some(entry) = write(&self.board.inner.flows).get_mut(&self.name) {
            entry.view = Arc::new(view);
        }
    }

    /// Whether the flow is to stop fetching.
    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Where a flow is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowPhase {
    /// Connecting, loading metadata and checkpoints.
    Starting,
    Running,
    /// Paused over the HTTP endpoint: not fetching.
    Paused,
    /// Letting what is in flight land before the run ends.
    Draining,
    Done,
}

/// Whether the flow's last requests to each cluster got answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Connected {
    pub source: bool,
    pub target: bool,
}

/// One flow as its engine last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub name: String,
    pub phase: FlowPhase,
    pub connected: Connected,
    /// Why the flow is not ready (unreachable cluster, stopped partitions,
    /// still starting); empty when ready.
    pub ready_reasons: Vec<String>,
    pub partitions: Vec<PartitionView>,
    /// Totals since the run began, by source topic.
    pub topics: Vec<TopicTotals>,
    /// Bytes held against the memory budget.
    pub in_flight_bytes: u64,
    pub budget_bytes: u64,
    /// The flow's bandwidth limit; `None` when unthrottled.
    pub throttle_bytes_per_sec: Option<u64>,
    /// Since the last checkpoint was stored (or the flow started).
    #[serde(serialize_with = "seconds")]
    pub checkpoint_age: Option<Duration>,
    /// Since the last consumer group offset sync, when the flow syncs groups.
    #[serde(serialize_with = "seconds")]
    pub group_sync_age: Option<Duration>,
    /// With `--until-caught-up`: offsets still to copy up to where the run
    /// ends (the source's end when it began); progress is records copied
    /// against records copied plus this.
    pub to_copy: Option<u64>,
    /// Operations retried after a failure, by kind (`fetch`, `produce`, ...).
    pub retries: BTreeMap<String, u64>,
    /// Requests that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Exactly-once mode's transactions.
    pub transactions: Transactions,
    /// The last error seen, for a person reading `/status`.
    pub last_error: Option<String>,
}

impl FlowView {
    /// A flow not running yet: nothing known but its name.
    pub fn starting(name: &str) -> Self {
        FlowView {
            name: name.to_owned(),
            phase: FlowPhase::Starting,
            connected: Connected::default(),
            ready_reasons: vec!["starting: connecting, loading metadata and checkpoints".into()],
            partitions: Vec::new(),
            topics: Vec::new(),
            in_flight_bytes: 0,
            budget_bytes: 0,
            throttle_bytes_per_sec: None,
            checkpoint_age: None,
            group_sync_age: None,
            to_copy: None,
            retries: BTreeMap::new(),
            errors: BTreeMap::new(),
            transactions: Transactions::default(),
            last_error: None,
        }
    }

    /// Why a running flow in this state is not ready: a cluster it cannot
    /// reach, partitions stopped; none when ready.
    pub fn readiness(
        phase: FlowPhase,
        connected: Connected,
        partitions: &[PartitionView],
    ) -> Vec<String> {
        let mut reasons = Vec::new();
        if phase == FlowPhase::Starting {
            reasons.push("starting: connecting, loading metadata and checkpoints".into());
        }
        if !connected.source {
            reasons.push("the source cluster does not answer".into());
        }
        if !connected.target {
            reasons.push("the target cluster does not answer".into());
        }
        let stopped: Vec<&PartitionView> = partitions
            .iter()
            .filter(|p| matches!(p.state, PartitionState::Stopped { .. }))
            .collect();
        for partition in stopped.iter().take(NAMED_STOPPED) {
            if let PartitionState::Stopped { error } = &partition.state {
                reasons.push(format!(
                    "partition {}-{} stopped: {error}",
                    partition.topic, partition.partition
                ));
            }
        }
        if stopped.len() > NAMED_STOPPED {
            reasons.push(format!(
                "and {} more partitions stopped",
                stopped.len() - NAMED_STOPPED
            ));
        }
        reasons
    }
}

/// What one source partition is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionState {
    /// Copying, with records left to copy (or its end not known yet).
    Copying,
    /// Everything the source held at its last answer is copied.
    CaughtUp,
    /// Its flow is paused.
    Paused,
    /// Stopped with an error an operator must act on.
    Stopped { error: String },
    /// Another instance of the mirror's name copies it.
    Unowned,
    /// Its source topic was deleted while running.
    Deleted,
}

/// One source partition as its engine last saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub state: PartitionState,
    /// The next source offset to copy: everything before it is acknowledged.
    pub next_offset: i64,
    /// The source's end (high watermark, or last stable offset under
    /// read_committed) in the latest Fetch answer; `None` before one.
    pub end_offset: Option<i64>,
    pub lag_records: Option<u64>,
    /// How old the oldest record not yet copied is; `None` when unknown.
    pub lag_seconds: Option<f64>,
    /// The instance copying it, when the instances of the name share them.
    pub owner: Option<String>,
}

/// One source topic's totals since the run began.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicTotals {
    pub topic: String,
    pub records: u64,
    pub bytes: u64,
    pub batches: u64,
    /// Batches re-encoded (compacted with gaps, LogAppendTime, trimmed).
    pub reencoded: u64,
    /// Batches built from old-format messages.
    pub up_converted: u64,
    pub skipped_control: u64,
    pub skipped_aborted: u64,
    pub skipped_empty: u64,
    /// Refused by the target and skipped by policy.
    pub skipped_refused: u64,
}

/// Exactly-once mode's transactions so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Transactions {
    pub committed: u64,
    pub aborted: u64,
}

/// A partition's lag, from what the engine knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The source's end from the latest Fetch answer.
    pub end_offset: Option<i64>,
    /// The next offset to copy (everything before it acknowledged).
    pub next_offset: i64,
    /// The timestamp (ms) of the oldest record fetched and not yet copied.
    pub oldest_unacked_ms: Option<i64>,
    /// The newest record timestamp (ms) copied so far.
    pub copied_ms: Option<i64>,
}

impl Lag {
    /// Records between the next offset to copy and the source's end.
    pub fn records(&self) -> Option<u64> {
        let end = self.end_offset?;
        Some(u64::try_from(end - self.next_offset).unwrap_or(0))
    }

    /// How old the oldest record not yet copied is at `now_ms`: 0 when
    /// caught up; from its timestamp when it was fetched; else at most as
    /// old as the newest record copied (the next one was written after it);
    /// `None` with records left and no timestamp to go by. A timestamp
    /// ahead of the clock counts as 0.
    pub fn seconds(&self, now_ms: i64) -> Option<f64> {
        let records = self.records()?;
        if records == 0 {
            return Some(0.0);
        }
        let since = self
            .oldest_unacked_ms
            .or(self.copied_ms)
            .filter(|&ms| ms >= 0)?;
        Some((now_ms - since).max(0) as f64 / 1000.0)
    }
}

fn seconds<S: Serializer>(age: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    age.map(|age| age.as_secs_f64()).serialize(serializer)
}

/// A poisoned lock only means a reader panicked; the snapshots are whole
/// values, never half written.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(end: Option<i64>, next: i64, oldest: Option<i64>, copied: Option<i64>) -> Lag {
        Lag {
            end_offset: end,
            next_offset: next,
            oldest_unacked_ms: oldest,
            copied_ms: copied,
        }
    }

    #[test]
    fn lag_in_records_is_end_minus_next_and_never_negative() {
        assert_eq!(lag(Some(100), 40, None, None).records(), Some(60));
        assert_eq!(lag(Some(100), 100, None, None).records(), Some(0));
        // An end from an older answer than the acknowledgement.
        assert_eq!(lag(Some(90), 100, None, None).records(), Some(0));
        assert_eq!(lag(None, 100, None, None).records(), None);
    }

    #[test]
    fn lag_in_seconds_is_the_age_of_the_oldest_record_not_copied() {
        let now = 50_000;
        // Caught up: 0 whatever was copied when.
        assert_eq!(lag(Some(10), 10, None, Some(1_000)).seconds(now), Some(0.0));
        // The oldest fetched and unacknowledged record decides.
        assert_eq!(
            lag(Some(20), 10, Some(44_000), Some(1_000)).seconds(now),
            Some(6.0)
        );
        // Nothing fetched: at most as old as the newest record copied.
        assert_eq!(
            lag(Some(20), 10, None, Some(45_500)).seconds(now),
            Some(4.5)
        );
        // Nothing to go by.
        assert_eq!(lag(Some(20), 10, None, None).seconds(now), None);
        assert_eq!(lag(None, 10, Some(1), None).seconds(now), None);
        // Clocks apart: never negative.
        assert_eq!(
            lag(Some(20), 10, Some(60_000), None).seconds(now),
            Some(0.0)
        );
    }

    fn partition(state: PartitionState) -> PartitionView {
        PartitionView {
            topic: "orders".into(),
            partition: 3,
            state,
            next_offset: 0,
            end_offset: Some(0),
            lag_records: Some(0),
            lag_seconds: Some(0.0),
            owner: None,
        }
    }

    #[test]
    fn a_flow_is_ready_once_running_connected_and_no_partition_stopped() {
        let both = Connected {
            source: true,
            target: true,
        };
        let copying = [partition(PartitionState::CaughtUp)];
        assert!(FlowView::readiness(FlowPhase::Running, both, &copying).is_empty());
        assert!(FlowView::readiness(FlowPhase::Paused, both, &copying).is_empty());
        let reasons = FlowView::readiness(FlowPhase::Starting, both, &copying);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("starting"), "{reasons:?}");
        let no_source = Connected {
            source: false,
            target: true,
        };
        assert_eq!(
            FlowView::readiness(FlowPhase::Running, no_source, &copying),
            ["the source cluster does not answer"]
        );
        let stopped = [
            partition(PartitionState::Copying),
            partition(PartitionState::Stopped {
                error: "records lost".into(),
            }),
        ];
        assert_eq!(
            FlowView::readiness(FlowPhase::Running, both, &stopped),
            ["partition orders-3 stopped: records lost"]
        );
        let many: Vec<_> = (0..NAMED_STOPPED + 3)
            .map(|_| partition(PartitionState::Stopped { error: "x".into() }))
            .collect();
        let reasons = FlowView::readiness(FlowPhase::Running, both, &many);
        assert_eq!(reasons.len(), NAMED_STOPPED + 1);
        assert_eq!(reasons.last().unwrap(), "and 3 more partitions stopped");
    }

    #[test]
    fn the_board_keeps_the_latest_view_and_the_pause_switch_of_each_flow() {
        let board = Board::new();
        assert_eq!(board.not_ready(), ["no flow has started yet"]);
        let handle = board.register("east");
        assert_eq!(board.flow("east").unwrap().phase, FlowPhase::Starting);
        assert_eq!(board.not_ready().len(), 1);
        assert!(board.not_ready()[0].starts_with("flow `east`: starting"));

        let mut view = FlowView::starting("east");
        view.phase = FlowPhase::Running;
        view.ready_reasons.clear();
        handle.publish(view);
        assert_eq!(board.flows().len(), 1);
        assert_eq!(board.flow("east").unwrap().phase, FlowPhase::Running);
        assert!(board.not_ready().is_empty());

        assert!(!handle.paused());
        board.set_paused("east", true).unwrap();
        assert!(handle.paused());
        board.set_paused("east", false).unwrap();
        assert!(!handle.paused());
        assert!(board.set_paused("west", true).is_err());

        assert!(board.is_running());
        board.finish();
        assert!(!board.is_running());
    }

    #[test]
    fn status_json_names_states_and_gives_ages_in_seconds() {
        let mut view = FlowView::starting("east");
        view.checkpoint_age = Some(Duration::from_millis(1500));
        view.partitions = vec![partition(PartitionState::Stopped {
            error: "gone".into(),
        })];
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["checkpoint_age"], 1.5);
        assert_eq!(json["phase"], "starting");
        assert_eq!(json["partitions"][0]["state"]["kind"], "stopped");
        assert_eq!(json["partitions"][0]["state"]["error"], "gone");
    }
}
