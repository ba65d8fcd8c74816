//! The fetch stage: one Fetch in flight per fetcher of a source broker (as
//! many fetchers as the broker's fetch window says, each with its share of
//! the broker's partitions), carrying every partition of its share that has
//! room; and the answers, whose records go to each partition's intake.
//!
//! Room is decided twice: a partition is asked for only while its queue holds
//! less than two Fetches' worth of its share (which grows with the broker's
//! fetch window), so one slow target partition cannot take the whole budget
//! from the others, and a Fetch asks for at most its share of the
//! bytes left in the global budget (so memory stays bounded whatever the two
//! clusters' speeds, and no fetcher is starved by the ones ahead of it).
//! With `max_bytes_per_sec` set, the throttle has the last word: a Fetch asks
//! for no more than its tokens, or waits (`throttle.rs`).
//!
//! [`FetchStage`] owns what only fetching needs: the fetchers in flight, their
//! fetch sessions, the brokers' fetch windows, the bytes reserved by Fetches
//! in flight, the rotation cursor and the flow's throttle. It decides and returns [`FetchJob`]s;
//! the engine sends them and hands back the answers. Whether a Fetch error
//! is worth a retry is decided in one place, [`classify_fetch_error`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::error::Cause;
use super::fetch_window::{FetchAnswer, FetchWindow};
use super::intake;
use super::metadata::MetadataView;
use super::positions;
use super::slots::{SlotId, SlotOffset, Slots, Status};
use super::stats::Counters;
use super::throttle::Throttle;
use crate::batch::AbortedTransactions;
use crate::cluster::{response_partitions, ClusterError, FetchSession, PartitionFetch, Role};
use crate::config::{IsolationLevel, ReplicationConfig};
use crate::net::FrameMemory;

/// One of a source broker's fetchers: `(broker, n)`, `n` below the count of
/// the broker's [`FetchWindow`]. Each has its own connection and fetch
/// session, and a partition goes to the same one while the count holds.
pub(super) type Fetcher = (i32, usize);

/// A Fetch to send: on which fetcher, the request, the slots it asks for
/// and from which offset, and the bytes it holds of the budget.
#[derive(Debug)]
pub(super) struct FetchJob {
    pub(super) fetcher: Fetcher,
    pub(super) request: FetchRequest,
    pub(super) asked: Vec<SlotOffset>,
    pub(super) reserved: usize,
    /// The most the answer could hold but for the budget and the throttle:
    /// `fetch_max_bytes`, or its partitions' limits if they add up to less.
    pub(super) capacity: usize,
}

/// The answer to a [`FetchJob`].
#[derive(Debug)]
pub(super) struct FetchReply {
    pub(super) fetcher: Fetcher,
    /// Slots asked for and the offset asked.
    pub(super) asked: Vec<SlotOffset>,
    pub(super) reserved: usize,
    /// As in the [`FetchJob`].
    pub(super) capacity: usize,
    /// From sending the Fetch to its answer.
    pub(super) elapsed: Duration,
    /// The connection's round trip with no data and no waiting, if known.
    pub(super) round_trip: Option<Duration>,
    pub(super) result: Result<FetchResponse, ClusterError>,
}

/// What the stage reads and owns nothing of.
#[derive(Clone, Copy)]
pub(super) struct FetchContext<'a> {
    pub(super) config: &'a ReplicationConfig,
    pub(super) meta: &'a MetadataView,
    /// Where the source's Fetch responses live.
    pub(super) memory: &'a FrameMemory,
    /// A source broker's round trip, once a connection to it measured one.
    pub(super) round_trip: &'a dyn Fn(i32) -> Option<Duration>,
}

/// What a Fetch error means, for a whole response or one partition of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchErrorKind {
    /// The fetch session was evicted or fell out of step: the next Fetch
    /// opens a new one, at once.
    SessionLost,
    /// The fetch offset is not in the source's log: find out why.
    OutOfRange,
    /// A metadata refresh and a retry can fix it.
    Retry,
    /// No retry fixes it.
    Fatal,
}

/// Decides what a Fetch error code means.
pub(super) fn classify_fetch_error(error: ResponseError) -> FetchErrorKind {
    match error {
        ResponseError::FetchSessionIdNotFound
        | ResponseError::InvalidFetchSessionEpoch
        | ResponseError::FetchSessionTopicIdError => FetchErrorKind::SessionLost,
        ResponseError::OffsetOutOfRange => FetchErrorKind::OutOfRange,
        ResponseError::NotLeaderOrFollower
        | ResponseError::LeaderNotAvailable
        | ResponseError::FencedLeaderEpoch
        | ResponseError::UnknownLeaderEpoch
        | ResponseError::UnknownTopicOrPartition
        | ResponseError::UnknownTopicId
        | ResponseError::InconsistentTopicId
        | ResponseError::ReplicaNotAvailable
        | ResponseError::KafkaStorageError
        | ResponseError::OffsetNotAvailable
        | ResponseError::NotCoordinator => FetchErrorKind::Retry,
        error if error.is_retriable() => FetchErrorKind::Retry,
        _ => FetchErrorKind::Fatal,
    }
}

/// Bytes held against the budget: what the partition queues hold (`queued`:
/// fetched, not yet checkpointed; summed from the partitions so it cannot
/// drift), or the source's Fetch responses still in memory if that is more:
/// a response lives until the last of its batches is acknowledged.
pub(super) fn held(queued: usize, memory: &FrameMemory) -> usize {
    queued.max(memory.live_bytes())
}

/// The fetch stage's own state.
#[derive(Debug, Default)]
pub(super) struct FetchStage {
    in_flight: HashSet<Fetcher>,
    /// The incremental fetch session of each fetcher.
    sessions: HashMap<Fetcher, FetchSession>,
    /// How many Fetches each source broker gets at once.
    windows: HashMap<i32, FetchWindow>,
    /// Bytes reserved by Fetch requests in flight.
    reserved: usize,
    /// Where the next round of partitions starts.
    cursor: usize,
    /// `max_bytes_per_sec`: what the Fetches may ask for.
    throttle: Throttle,
}

impl FetchStage {
    /// A stage whose Fetches `throttle` holds back.
    pub(super) fn new(throttle: Throttle) -> Self {
        FetchStage {
            throttle,
            ..FetchStage::default()
        }
    }

    /// The flow's throttle.
    pub(super) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The memory budget: `in_flight_bytes`, plus `fetch_max_bytes` for each
    /// Fetch the windows budget ([`FetchWindow::budgeted_fetches`]: a long
    /// round trip keeps more data on the way), up to four times
    /// `in_flight_bytes`.
    pub(super) fn budget(&self, config: &ReplicationConfig) -> usize {
        let fetches: usize = self
            .windows
            .values()
            .map(FetchWindow::budgeted_fetches)
            .sum();
        (config.in_flight_bytes + fetches * config.fetch_max_bytes).min(4 * config.in_flight_bytes)
    }

    /// The Fetches to start now: one on every fetcher that has none in
    /// flight and partitions with room, while the budget lasts.
    pub(super) fn start(
        &mut self,
        slots: &mut Slots,
        cx: FetchContext<'_>,
        counters: &mut Counters,
        now: Instant,
    ) -> Vec<FetchJob> {
        let config = cx.config;
        let partition_bytes = config.partition_fetch_bytes;
        let mut by_fetcher: BTreeMap<Fetcher, Vec<SlotId>> = BTreeMap::new();
        let mut leaderless = false;
        let count = slots.len();
        // Rotate the starting partition: a broker fills a response in request
        // order, so a fixed order would favour the first partitions.
        self.cursor = (self.cursor + 1) % count.max(1);
        let cursor = self.cursor;
        let ids: Vec<SlotId> = slots.ids().collect();
        for k in 0..count {
            let id = ids[(k + cursor) % count];
            let slot = &slots[id];
            if !slot.status.is_copying() || slot.fetching || slot.fetch_backoff.waiting(now) {
                continue;
            }
            match cx.meta.source().leader(&slot.topic, slot.partition) {
                Some(leader) => {
                    let window = self.window(leader, cx, now);
                    let fetcher = (leader, id.index() % window.fetchers());
                    let room = 2 * window.partition_bytes(partition_bytes, config.fetch_max_bytes);
                    if slot.state.budgeted_bytes(config.exactly_once) < room
                        && !self.in_flight.contains(&fetcher)
                    {
                        by_fetcher.entry(fetcher).or_default().push(id);
                    }
                }
                None => leaderless = true,
            }
        }
        if leaderless {
            cx.meta.want_refresh(Role::Source);
        }
        // Copying batches out does not change what the queues hold.
        let queued = slots.queued_bytes(config.exactly_once);
        self.detach_stalled_batches(slots, cx, counters, queued);
        let held = held(queued, cx.memory);
        // The free budget is split between the fetchers that want to fetch,
        // and the first to go rotates: taken in a fixed order, the first
        // fetchers would take the whole budget every time it frees up.
        let budget = self.budget(config);
        let free = budget.saturating_sub(held + self.reserved);
        let share = (free / by_fetcher.len().max(1))
            .max(partition_bytes)
            .min(config.fetch_max_bytes);
        let first = self.cursor % by_fetcher.len().max(1);
        let mut waiting: Vec<(Fetcher, Vec<SlotId>)> = by_fetcher.into_iter().collect();
        waiting.rotate_left(first);
        let mut jobs = Vec::new();
        for (fetcher, ids) in waiting {
            let free = budget.saturating_sub(held + self.reserved);
            if free < partition_bytes {
                break;
            }
            // The throttle's tokens go to the fetchers in turn, as the budget does.
            let max_bytes = self.throttle.grant(now, share.min(free));
            if max_bytes == 0 {
                break;
            }
            let each = self
                .window(fetcher.0, cx, now)
                .partition_bytes(partition_bytes, config.fetch_max_bytes);
            let partitions: Vec<PartitionFetch> = ids
                .iter()
                .map(|&id| {
                    let slot = &slots[id];
                    PartitionFetch {
                        topic: slot.topic.to_string(),
                        topic_id: slot.source_topic_id,
                        partition: slot.partition,
                        offset: slot.state.fetch_offset,
                        last_fetched_epoch: slot.epochs.last(),
                        leader_epoch: cx
                            .meta
                            .source()
                            .partition(&slot.topic, slot.partition)
                            .map_or(-1, |p| p.leader_epoch),
                        // Lossless: at most `fetch_max_bytes`, checked to fit.
                        max_bytes: each as i32,
                    }
                })
                .collect();
            let request = self.sessions.entry(fetcher).or_default().request(
                &partitions,
                config.isolation_level.wire_value(),
                config.fetch_max_wait(),
                max_bytes as i32,
            );
            let asked: Vec<SlotOffset> = ids
                .iter()
                .map(|&id| (id, slots[id].state.fetch_offset))
                .collect();
            for &id in &ids {
                slots[id].fetching = true;
            }
            self.in_flight.insert(fetcher);
            self.reserved += max_bytes;
            jobs.push(FetchJob {
                fetcher,
                request,
                capacity: config.fetch_max_bytes.min(asked.len() * each),
                asked,
                reserved: max_bytes,
            });
        }
        jobs
    }

    /// A partition whose target is slow or down keeps its batches, and each
    /// keeps its whole Fetch response alive although the other partitions'
    /// batches in it are long gone. When the responses in memory pass the
    /// budget and hold over twice what the queues do, the batches of the
    /// sparsest responses are copied out, so one stalled partition cannot
    /// stop the others from fetching. Sparsest first, and only responses
    /// less than half in use, until they are within half the budget: each
    /// copied byte frees at least two, and the copies are few (they are
    /// counted in the run summary).
    fn detach_stalled_batches(
        &self,
        slots: &mut Slots,
        cx: FetchContext<'_>,
        counters: &mut Counters,
        queued: usize,
    ) {
        let memory = cx.memory;
        let live = memory.live_bytes();
        let budget = self.budget(cx.config);
        if live <= budget || live <= 2 * queued {
            return;
        }
        // Each response's length and the bytes our batches use of it.
        let mut responses: HashMap<usize, (usize, usize)> = HashMap::new();
        for batch in slots.all().flat_map(|slot| slot.state.batches()) {
            if let Some((start, len)) = memory.frame_of(batch.as_bytes()) {
                responses.entry(start).or_insert((len, 0)).1 += batch.len();
            }
        }
        let mut by_use: Vec<(usize, usize, usize)> = responses
            .into_iter()
            .map(|(start, (len, used))| (start, len, used))
            .collect();
        // Ascending used / len, compared without division.
        by_use.sort_unstable_by(|a, b| (a.2 * b.1).cmp(&(b.2 * a.1)));
        let goal = budget / 2;
        let mut freed = 0;
        let mut evacuated = HashSet::new();
        for (start, len, used) in by_use {
            if live.saturating_sub(freed) <= goal || 2 * used > len {
                break;
            }
            evacuated.insert(start);
            freed += len;
        }
        let copied: usize = slots
            .all_mut()
            .map(|slot| {
                slot.state.detach_batches(|batch| {
                    memory
                        .frame_of(batch.as_bytes())
                        .is_some_and(|(start, _)| evacuated.contains(&start))
                })
            })
            .sum();
        counters.bytes_copied += copied as u64;
        tracing::debug!(
            copied,
            responses = evacuated.len(),
            responses_before = live,
            responses_after = memory.live_bytes(),
            "batches copied out of the Fetch responses they kept alive"
        );
    }

    /// Applies a Fetch answer: each partition's records go to its intake,
    /// each partition's error to its retry or stop. While `draining`, the
    /// answer only frees what the Fetch held. The throttle is charged the
    /// complete batches taken in.
    pub(super) fn answered(
        &mut self,
        slots: &mut Slots,
        cx: FetchContext<'_>,
        counters: &mut Counters,
        reply: FetchReply,
        draining: bool,
        now: Instant,
    ) {
        let granted = reply.reserved;
        let taken = self.take_answer(slots, cx, counters, reply, draining, now);
        self.throttle.settle(now, granted, taken);
    }

    /// [`FetchStage::answered`]; returns the bytes of the batches taken in.
    fn take_answer(
        &mut self,
        slots: &mut Slots,
        cx: FetchContext<'_>,
        counters: &mut Counters,
        reply: FetchReply,
        draining: bool,
        now: Instant,
    ) -> usize {
        let FetchReply {
            fetcher,
            asked,
            reserved,
            capacity,
            elapsed,
            round_trip,
            result,
        } = reply;
        self.in_flight.remove(&fetcher);
        self.reserved -= reserved;
        for &(id, _) in &asked {
            slots[id].fetching = false;
        }
        let broker = fetcher.0;
        let session = self.sessions.entry(fetcher).or_default();
        let response = match result {
            Ok(response) => {
                session.answered(&response);
                response
            }
            Err(e) => {
                session.reset();
                tracing::warn!(broker, error = %e, "Fetch failed; retrying after a metadata refresh");
                fetch_failed(slots, cx, &asked, now);
                return 0;
            }
        };
        if let Some(error) = response.error_code.err() {
            if classify_fetch_error(error) == FetchErrorKind::SessionLost {
                tracing::debug!(broker, ?error, "fetch session reset");
            } else {
                tracing::warn!(broker, ?error, "source broker refused the Fetch");
                fetch_failed(slots, cx, &asked, now);
            }
            return 0;
        }
        if draining {
            return 0;
        }
        let answer = FetchAnswer {
            bytes: response
                .responses
                .iter()
                .flat_map(|topic| &topic.partitions)
                .filter_map(|partition| partition.records.as_ref())
                .map(bytes::Bytes::len)
                .sum(),
            capacity: reserved.min(capacity),
            short_of_budget: 2 * reserved < capacity,
            elapsed,
            round_trip,
        };
        tracing::trace!(
            broker,
            fetcher = fetcher.1,
            bytes = answer.bytes,
            capacity = answer.capacity,
            reserved,
            ?elapsed,
            "Fetch answered"
        );
        self.note_answer(broker, cx, answer, counters, now);
        let asked: HashMap<SlotId, i64> = asked.into_iter().collect();
        let mut taken = 0;
        for (topic, data) in response_partitions(response, cx.meta.names(Role::Source)) {
            let Some(id) = slots.find(&topic, data.partition_index) else {
                continue;
            };
            let slot = &mut slots[id];
            // The end is news whatever the position asked: it feeds the lag.
            if data.error_code.is_ok() {
                slot.source_end = Some(match cx.config.isolation_level {
                    IsolationLevel::ReadCommitted if data.last_stable_offset >= 0 => {
                        data.last_stable_offset
                    }
                    _ => data.high_watermark,
                });
            }
            // Data for a position the partition has since left (a reset) is stale.
            if asked.get(&id) != Some(&slot.state.fetch_offset) || !slot.status.is_copying() {
                continue;
            }
            if data.error_code.is_ok() && data.diverging_epoch.epoch >= 0 {
                let diverged = &data.diverging_epoch;
                positions::source_diverged(
                    slot,
                    cx.config.on_data_loss,
                    counters,
                    diverged.epoch,
                    diverged.end_offset,
                );
                continue;
            }
            if let Some(error) = data.error_code.err() {
                match classify_fetch_error(error) {
                    FetchErrorKind::OutOfRange => {
                        slot.status = Status::CheckingLoss { asked: false };
                    }
                    FetchErrorKind::SessionLost | FetchErrorKind::Retry => {
                        tracing::debug!(topic = %slot.topic, partition = slot.partition, ?error, "Fetch refused; retrying after a metadata refresh");
                        slot.fetch_backoff.fail(now);
                        cx.meta.want_refresh(Role::Source);
                    }
                    FetchErrorKind::Fatal => {
                        let offset = slot.state.fetch_offset;
                        let error = slot.error(Cause::FetchRefused { error, offset });
                        slot.stop(error);
                    }
                }
                continue;
            }
            slot.fetch_backoff.reset();
            let aborted = match cx.config.isolation_level {
                IsolationLevel::ReadCommitted => AbortedTransactions::new(
                    data.aborted_transactions.as_deref().unwrap_or_default(),
                ),
                IsolationLevel::ReadUncommitted => AbortedTransactions::new(&[]),
            };
            let records = data.records.unwrap_or_default();
            match intake::take_records(slot, &records, aborted, counters) {
                Ok(bytes) => taken += bytes,
                Err(error) => slot.stop(error),
            }
        }
        taken
    }

    /// A source broker no longer leads any of our partitions: its window
    /// would hold its budget for good, since it gets no more answers.
    pub(super) fn keep_windows_of(&mut self, slots: &Slots, meta: &MetadataView) {
        let leaders: HashSet<i32> = slots
            .all()
            .filter_map(|slot| meta.source().leader(&slot.topic, slot.partition))
            .collect();
        self.windows.retain(|broker, _| leaders.contains(broker));
    }

    /// The fetch window of a source broker, opened on first use and sized
    /// to the link once the broker's round trip is known.
    fn window(&mut self, broker: i32, cx: FetchContext<'_>, now: Instant) -> &mut FetchWindow {
        let config = cx.config;
        let window = self
            .windows
            .entry(broker)
            .or_insert_with(|| FetchWindow::new(config.fetchers_per_broker));
        // Asked only until known: it is asked per partition.
        if window.wants_round_trip() {
            if let Some(round_trip) = (cx.round_trip)(broker) {
                let rate = link_rate(&self.throttle);
                window.link_measured(now, round_trip, rate, config.fetch_max_bytes);
                tracing::debug!(
                    broker,
                    fetchers = window.fetchers(),
                    ?round_trip,
                    "fetch window sized to the link"
                );
            }
        }
        window
    }

    /// Tells the broker's fetch window how full the answer was, how long it
    /// took and the broker's round trip now.
    fn note_answer(
        &mut self,
        broker: i32,
        cx: FetchContext<'_>,
        answer: FetchAnswer,
        counters: &mut Counters,
        now: Instant,
    ) {
        let rate = link_rate(&self.throttle);
        let window = self.window(broker, cx, now);
        let before = window.fetchers();
        if let Some(round_trip) = answer.round_trip {
            window.link_measured(now, round_trip, rate, cx.config.fetch_max_bytes);
        }
        window.answered(now, answer);
        let fetchers = window.fetchers();
        counters.most_fetchers = counters.most_fetchers.max(fetchers);
        if fetchers != before {
            tracing::debug!(
                broker,
                fetchers,
                round_trip = ?answer.round_trip,
                "fetch window changed"
            );
        }
    }
}

/// The link's rate the fetch windows size themselves for, bytes per second:
/// the throttle's, if set.
pub(super) fn link_rate(throttle: &Throttle) -> Option<f64> {
    throttle.rate().map(|rate| rate.bytes_per_second() as f64)
}

/// A whole Fetch failed: its partitions wait, and the leaders are looked up again.
fn fetch_failed(slots: &mut Slots, cx: FetchContext<'_>, asked: &[SlotOffset], now: Instant) {
    for &(id, _) in asked {
        slots[id].fetch_backoff.fail(now);
    }
    cx.meta.want_refresh(Role::Source);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordBatch;
    use crate::cluster::Metadata;
    use crate::config::DataLossPolicy;
    use crate::pipeline::error::Cause;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::positions::Positions;
    use crate::pipeline::testing::{
        batch, batch_in_epoch, captured, captured_metadata, metadata, slot,
    };
    use crate::pipeline::throttle::Throttle;
    use kafka_protocol::messages::fetch_response::{
        EpochEndOffset, FetchableTopicResponse, PartitionData,
    };
    use uuid::Uuid;

    const TOPIC: Uuid = Uuid::from_u128(0x7);

    /// Partitions 0 and 1 led by broker 1, 2 by broker 2, 3 leaderless.
    fn table() -> (Slots, Metadata) {
        let mut slots = Slots::default();
        for partition in 0..4 {
            slots.push(slot("t", TOPIC, partition, 100 * i64::from(partition)));
        }
        let leaders = [(0, Some(1)), (1, Some(1)), (2, Some(2)), (3, None)];
        (slots, metadata("t", TOPIC, &leaders))
    }

    struct Fixture {
        config: ReplicationConfig,
        memory: FrameMemory,
        meta: MetadataView,
        slots: Slots,
        stage: FetchStage,
        counters: Counters,
        /// Every source broker's round trip.
        round_trip: Option<Duration>,
    }

    impl Fixture {
        fn new(config: ReplicationConfig) -> Self {
            let (slots, source) = table();
            Fixture::of(slots, source, config)
        }

        fn of(slots: Slots, source: Metadata, config: ReplicationConfig) -> Self {
            let mut meta = MetadataView::default();
            meta.set(Role::Source, source);
            Fixture {
                config,
                memory: FrameMemory::default(),
                meta,
                slots,
                stage: FetchStage::default(),
                counters: Counters::default(),
                round_trip: None,
            }
        }

        fn start(&mut self, now: Instant) -> Vec<FetchJob> {
            let round_trip = self.round_trip;
            let cx = FetchContext {
                config: &self.config,
                meta: &self.meta,
                memory: &self.memory,
                round_trip: &|_| round_trip,
            };
            self.stage
                .start(&mut self.slots, cx, &mut self.counters, now)
        }

        fn answer(
            &mut self,
            job: FetchJob,
            result: Result<FetchResponse, ClusterError>,
            now: Instant,
        ) {
            let round_trip = self.round_trip;
            let cx = FetchContext {
                config: &self.config,
                meta: &self.meta,
                memory: &self.memory,
                round_trip: &|_| round_trip,
            };
            let reply = FetchReply {
                fetcher: job.fetcher,
                asked: job.asked,
                reserved: job.reserved,
                capacity: job.capacity,
                elapsed: Duration::from_millis(5),
                round_trip,
                result,
            };
            self.stage
                .answered(&mut self.slots, cx, &mut self.counters, reply, false, now);
        }

        fn id(&self, partition: i32) -> SlotId {
            self.slots.find("t", partition).expect("slot")
        }
    }

    /// A Fetch v13+ answer naming the topic by id, one entry per partition.
    fn response(partitions: Vec<PartitionData>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic_id(TOPIC)
            .with_partitions(partitions)])
    }

    fn data(partition: i32, records: &[RecordBatch]) -> PartitionData {
        let bytes: Vec<u8> = records.iter().flat_map(|b| b.as_bytes().to_vec()).collect();
        PartitionData::default()
            .with_partition_index(partition)
            .with_records(Some(bytes.into()))
    }

    fn refused(partition: i32, error: ResponseError) -> PartitionData {
        PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(error.code())
    }

    /// (partition, offset) asked by each job, by broker.
    fn asked(f: &Fixture, jobs: &[FetchJob]) -> Vec<(i32, Vec<(i32, i64)>)> {
        jobs.iter()
            .map(|job| {
                let parts = job
                    .asked
                    .iter()
                    .map(|&(id, offset)| (f.slots[id].partition, offset))
                    .collect();
                (job.fetcher.0, parts)
            })
            .collect()
    }

    #[test]
    fn partitions_are_grouped_by_leader_and_a_leaderless_one_asks_for_metadata() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let jobs = f.start(now);
        let mut got = asked(&f, &jobs);
        // Sorted: the partition order rotates from one round to the next.
        for (_, partitions) in &mut got {
            partitions.sort();
        }
        got.sort();
        assert_eq!(got, [(1, vec![(0, 0), (1, 100)]), (2, vec![(2, 200)])]);
        assert_eq!(f.meta.due_refreshes(now), [Role::Source]);
        // Each request names the partitions and offsets its job asks for.
        for job in &jobs {
            let named: Vec<(i32, i64)> = job
                .request
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
                .collect();
            let wanted: Vec<(i32, i64)> = job
                .asked
                .iter()
                .map(|&(id, offset)| (f.slots[id].partition, offset))
                .collect();
            assert_eq!(named, wanted);
        }
        assert!(f.start(now).is_empty(), "one Fetch in flight per fetcher");
    }

    /// The throttle's tokens bound the flow's Fetches together, however many
    /// fetchers the windows give; an answer gives back what it did not bring.
    #[test]
    fn a_throttled_flow_asks_for_its_tokens_and_no_more() {
        let config = ReplicationConfig {
            fetchers_per_broker: Some(4),
            partition_fetch_bytes: 1000,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let now = Instant::now();
        // 10 kB/s with 1,000-byte partitions: a burst of 2,000 bytes.
        let rate = crate::config::ByteRate::new(10_000);
        f.stage = FetchStage::new(Throttle::new(rate, None, 1000, now));
        let jobs = f.start(now);
        let reserved: Vec<usize> = jobs.iter().map(|job| job.reserved).collect();
        assert_eq!(
            reserved,
            [2000],
            "one Fetch takes the burst, the other fetchers wait"
        );
        let job = jobs.into_iter().next().expect("one job");
        let (id, offset) = job.asked[0];
        let brought = batch(offset, 2);
        let partition = f.slots[id].partition;
        f.answer(
            job,
            Ok(response(vec![data(
                partition,
                std::slice::from_ref(&brought),
            )])),
            now,
        );
        let jobs = f.start(now);
        let reserved: Vec<usize> = jobs.iter().map(|job| job.reserved).collect();
        assert_eq!(reserved, [2000 - brought.len()]);
        let later = now + Duration::from_millis(50);
        assert!(f.start(later).is_empty(), "500 bytes: under half the burst");
        assert_eq!(f.stage.throttle().rate(), rate);
    }

    #[test]
    fn fetches_stay_within_the_budget() {
        let config = ReplicationConfig {
            partition_fetch_bytes: 1000,
            in_flight_bytes: 1500,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let now = Instant::now();
        let jobs = f.start(now);
        assert_eq!(
            jobs.len(),
            1,
            "the second broker's Fetch would pass the budget"
        );
        assert_eq!(jobs[0].reserved, 1000);
        assert!(
            f.start(now).is_empty(),
            "500 bytes left: less than one partition's"
        );
        let job = jobs.into_iter().next().expect("job");
        f.answer(job, Ok(response(Vec::new())), now);
        assert_eq!(f.stage.reserved, 0, "the answer frees what the Fetch held");
        let next = f.start(now);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].reserved, 1000);
    }

    #[test]
    fn a_long_round_trip_opens_the_window_and_each_partitions_share_before_the_first_fetch() {
        // (fetcher, partition limit of each partition asked) of each job.
        fn shape(jobs: &[FetchJob]) -> Vec<(Fetcher, Vec<i32>)> {
            let mut shape: Vec<(Fetcher, Vec<i32>)> = jobs
                .iter()
                .map(|job| {
                    let limits = job
                        .request
                        .topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.partition_max_bytes))
                        .collect();
                    (job.fetcher, limits)
                })
                .collect();
            shape.sort();
            shape
        }
        const MIB: i32 = 1 << 20;
        // 100 ms: three Fetches per broker (see `fetch_window`), so each of
        // partitions 0 and 1 goes on a connection of its own and may bring
        // three times `partition_fetch_bytes`.
        let mut f = Fixture::new(ReplicationConfig::default());
        f.round_trip = Some(Duration::from_millis(100));
        let jobs = f.start(Instant::now());
        assert_eq!(
            shape(&jobs),
            [
                ((1, 0), vec![3 * MIB]),
                ((1, 1), vec![3 * MIB]),
                ((2, 2), vec![3 * MIB])
            ]
        );
        // The budget holds every Fetch of the opened windows: three for each broker.
        let config = ReplicationConfig::default();
        assert_eq!(
            f.stage.budget(&config),
            config.in_flight_bytes + 6 * config.fetch_max_bytes
        );
        // On a LAN: one Fetch per broker, each partition its configured share.
        let mut f = Fixture::new(ReplicationConfig::default());
        f.round_trip = Some(Duration::from_micros(200));
        let jobs = f.start(Instant::now());
        assert_eq!(
            shape(&jobs),
            [((1, 0), vec![MIB, MIB]), ((2, 0), vec![MIB])]
        );
        assert_eq!(f.stage.budget(&config), config.in_flight_bytes);
    }

    #[test]
    fn a_partition_whose_queue_is_full_is_not_asked() {
        let config = ReplicationConfig {
            partition_fetch_bytes: 50,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let full = f.id(0);
        f.slots[full].state.push_batch(batch(0, 10));
        assert!(f.slots[full].state.budgeted_bytes(false) >= 100);
        let jobs = f.start(Instant::now());
        let asked: Vec<SlotId> = jobs
            .iter()
            .flat_map(|j| j.asked.iter().map(|a| a.0))
            .collect();
        assert!(!asked.contains(&full));
        assert!(asked.contains(&f.id(1)));
    }

    #[test]
    fn records_are_queued_and_stale_answers_skipped() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let job = f
            .start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 1)
            .expect("broker 1");
        // Partition 1 moved elsewhere while the Fetch was out (a reset).
        let moved = f.id(1);
        f.slots[moved].state.restart_at(500);
        let answer = response(vec![
            data(0, &[batch(0, 3), batch(3, 2)]),
            data(1, &[batch(100, 4)]),
        ]);
        f.answer(job, Ok(answer), now);
        let zero = &f.slots[f.id(0)];
        assert_eq!(zero.state.fetch_offset, 5);
        assert_eq!(zero.state.batches().count(), 2);
        assert!(!zero.fetching);
        let one = &f.slots[moved];
        assert_eq!(
            one.state.fetch_offset, 500,
            "data for the old position is dropped"
        );
        assert!(one.state.is_empty());
    }

    #[test]
    fn partition_errors_retry_check_for_loss_or_stop() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let job = f
            .start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 1)
            .expect("broker 1");
        // The leaderless partition's refresh goes and is answered.
        f.meta.due_refreshes(now);
        f.meta.refresh_answered(Role::Source, true);
        let answer = response(vec![
            refused(0, ResponseError::NotLeaderOrFollower),
            refused(1, ResponseError::TopicAuthorizationFailed),
        ]);
        f.answer(job, Ok(answer), now);

        let moved = &f.slots[f.id(0)];
        assert!(moved.status.is_copying());
        assert!(moved.fetch_backoff.waiting(now), "retried after a backoff");
        assert_eq!(moved.state.fetch_offset, 0, "from the same offset");
        assert_eq!(
            f.meta.due_refreshes(now + Duration::from_secs(1)),
            [Role::Source],
            "after a metadata refresh"
        );

        let Status::Stopped(error) = &f.slots[f.id(1)].status else {
            panic!("stopped: {:?}", f.slots[f.id(1)].status);
        };
        assert!(matches!(
            error.cause,
            Cause::FetchRefused {
                error: ResponseError::TopicAuthorizationFailed,
                offset: 100
            }
        ));

        // Once the backoff passed, partition 0 is asked again; out of range
        // sends it to the data-loss check.
        let later = now + Duration::from_secs(1);
        let job = f
            .start(later)
            .into_iter()
            .find(|j| j.fetcher.0 == 1)
            .expect("broker 1 again");
        assert_eq!(asked(&f, std::slice::from_ref(&job)), [(1, vec![(0, 0)])]);
        f.answer(
            job,
            Ok(response(vec![refused(0, ResponseError::OffsetOutOfRange)])),
            later,
        );
        assert!(matches!(
            f.slots[f.id(0)].status,
            Status::CheckingLoss { asked: false }
        ));
    }

    /// The leader change the capture made: node 0 led `moving`/0 at epoch
    /// 0, was stopped (node 1 took over at epoch 1) and came back as a
    /// follower, which fences a Fetch at the old epoch.
    #[test]
    fn a_fenced_leader_epoch_is_fetched_again_from_the_new_leader_after_a_refresh() {
        let before = captured_metadata("metadata-before-leader-change");
        let id = before.topics["moving"].id;
        let mut slots = Slots::default();
        let moving = slots.push(slot("moving", id, 0, 0));
        let mut f = Fixture::of(slots, before, ReplicationConfig::default());
        // (broker, offset, leader epoch) a job asks `moving`/0 at.
        let asked_at = |job: &FetchJob| {
            let partition = &job.request.topics[0].partitions[0];
            (
                job.fetcher.0,
                partition.fetch_offset,
                partition.current_leader_epoch,
            )
        };
        let now = Instant::now();
        let job = f.start(now).pop().expect("job");
        assert_eq!(asked_at(&job), (0, 0, 0), "the leader before");
        f.answer(
            job,
            Ok(captured::<FetchRequest>("fetch-old-leader-stale-epoch")),
            now,
        );
        let slot = &f.slots[moving];
        assert!(slot.status.is_copying());
        assert!(slot.fetch_backoff.waiting(now), "retried after a backoff");
        assert!(slot.state.is_empty());
        assert_eq!(f.meta.due_refreshes(now), [Role::Source], "after a refresh");

        f.meta.set(
            Role::Source,
            captured_metadata("metadata-after-leader-change"),
        );
        f.meta.refresh_answered(Role::Source, true);
        let later = now + Duration::from_secs(1);
        let job = f.start(later).pop().expect("asked again");
        assert_eq!(asked_at(&job), (1, 0, 1), "the new leader, its epoch");
        // Answered with the 4 records up to the high watermark: the capture
        // of node 0 serving a Fetch at epoch 1 as a follower (KIP-392), the
        // same records node 1 holds.
        let answer = captured::<FetchRequest>("fetch-old-leader-current-epoch");
        f.answer(job, Ok(answer), later);
        let slot = &f.slots[moving];
        assert_eq!(slot.state.fetch_offset, 4);
        assert_eq!(
            slot.state.batches().map(|b| b.records_count()).sum::<i32>(),
            4
        );
        assert!(f.meta.due_refreshes(later).is_empty());
    }

    #[test]
    fn a_failed_fetch_frees_its_budget_and_backs_its_partitions_off() {
        let config = ReplicationConfig {
            partition_fetch_bytes: 1000,
            in_flight_bytes: 1500,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let now = Instant::now();
        let job = f.start(now).into_iter().next().expect("job");
        let ids: Vec<SlotId> = job.asked.iter().map(|a| a.0).collect();
        let lost = ClusterError::UnknownBroker {
            role: Role::Source,
            broker: job.fetcher.0,
        };
        f.answer(job, Err(lost), now);
        for id in ids {
            assert!(f.slots[id].fetch_backoff.waiting(now));
            assert!(!f.slots[id].fetching);
        }
        assert_eq!(f.stage.reserved, 0);
        assert_eq!(f.start(now).len(), 1, "the other broker gets the budget");
    }

    #[test]
    fn a_lost_session_is_reopened_at_once() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let job = f
            .start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 2)
            .expect("broker 2");
        let opened = response(Vec::new()).with_session_id(9);
        f.answer(job, Ok(opened), now);
        let job = f
            .start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 2)
            .expect("broker 2");
        assert_eq!(job.request.session_id, 9, "incremental in the session");
        let lost =
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        f.answer(job, Ok(lost), now);
        let slot = &f.slots[f.id(2)];
        assert!(!slot.fetch_backoff.waiting(now), "no backoff");
        let job = f
            .start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 2)
            .expect("asked again at once");
        assert_eq!(
            (job.request.session_id, job.request.session_epoch),
            (0, 0),
            "a full request"
        );
    }

    /// Every partition of a request: (partition, fetch offset, last fetched epoch).
    fn epochs_asked(job: &FetchJob) -> Vec<(i32, i64, i32)> {
        let mut asked: Vec<(i32, i64, i32)> = job
            .request
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition, p.fetch_offset, p.last_fetched_epoch))
            .collect();
        asked.sort();
        asked
    }

    fn broker_one(f: &mut Fixture, now: Instant) -> FetchJob {
        f.start(now)
            .into_iter()
            .find(|j| j.fetcher.0 == 1)
            .expect("broker 1")
    }

    /// A partition whose data came in `epoch`, sent and acknowledged for
    /// `acked` batches and in flight for `in_flight` more (batches of 5 from 0).
    fn copied(f: &mut Fixture, batches: i64, acked: usize, in_flight: usize, now: Instant) {
        let job = broker_one(f, now);
        let fetched: Vec<RecordBatch> = (0..batches).map(|i| batch_in_epoch(i * 5, 5, 4)).collect();
        f.answer(job, Ok(response(vec![data(0, &fetched)])), now);
        let id = f.id(0);
        for _ in 0..acked {
            let sent = f.slots[id]
                .state
                .next_to_send(Writer::idempotent(7, 1), false)
                .expect("send");
            f.slots[id]
                .state
                .acked(sent.entry, sent.batch.base_offset());
        }
        for _ in 0..in_flight {
            f.slots[id]
                .state
                .next_to_send(Writer::idempotent(7, 1), false)
                .expect("send");
        }
    }

    fn diverged(epoch: i32, end_offset: i64) -> PartitionData {
        PartitionData::default()
            .with_partition_index(0)
            .with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset),
            )
    }

    #[test]
    fn fetches_carry_the_leader_epoch_of_the_last_batch_fetched() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        let job = broker_one(&mut f, now);
        assert_eq!(epochs_asked(&job), [(0, 0, -1), (1, 100, -1)], "none yet");
        let answer = response(vec![data(
            0,
            &[batch_in_epoch(0, 3, 4), batch_in_epoch(3, 2, 6)],
        )]);
        f.answer(job, Ok(answer), now);
        let job = broker_one(&mut f, now);
        assert!(
            epochs_asked(&job).contains(&(0, 5, 6)),
            "{:?}",
            epochs_asked(&job)
        );
    }

    /// The source's new leader says its log diverges from ours at offset 5:
    /// 5..9 are on the target (one batch acknowledged past 5, one in
    /// flight), 10..14 were fetched and never sent.
    #[test]
    fn a_diverged_source_log_stops_the_partition_with_the_copied_range_gone() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        copied(&mut f, 3, 1, 1, now);
        let job = broker_one(&mut f, now);
        assert!(epochs_asked(&job).contains(&(0, 15, 4)));
        f.answer(job, Ok(response(vec![diverged(4, 5)])), now);
        let slot = &f.slots[f.id(0)];
        let Status::Stopped(error) = &slot.status else {
            panic!("not stopped: {:?}", slot.status);
        };
        assert_eq!(
            error.to_string(),
            "source offsets 5..9 (5 offsets) of t-0 were copied but no longer exist on the \
             source: its log diverges from the copy at offset 5 (leader epoch 4 ends there; an \
             unclean leader election truncated it); restart with --on-data-loss continue to copy \
             on from offset 5"
        );
        assert_eq!(f.counters.offsets_truncated, 5);
        assert_eq!(
            slot.state.fetch_offset, 10,
            "the batch fetched and never sent is dropped"
        );
    }

    #[test]
    fn with_continue_a_diverged_log_is_copied_on_from_where_it_diverges() {
        let config = ReplicationConfig {
            on_data_loss: DataLossPolicy::Continue,
            ..ReplicationConfig::default()
        };
        let mut f = Fixture::new(config);
        let now = Instant::now();
        copied(&mut f, 3, 1, 1, now);
        let id = f.id(0);
        let job = broker_one(&mut f, now);
        f.answer(job, Ok(response(vec![diverged(4, 5)])), now);
        assert_eq!(f.counters.offsets_truncated, 5);
        let jobs = f.start(now);
        assert!(
            !jobs.iter().any(|j| j.asked.iter().any(|a| a.0 == id)),
            "not fetched while the batch in flight is unanswered"
        );
        for job in jobs {
            f.answer(job, Ok(response(Vec::new())), now);
        }
        // The batch in flight lands (it is part of the range reported) and
        // is checkpointed; then copying goes on from the divergence point.
        let mut positions = Positions::new(DataLossPolicy::Continue, None);
        let entry = f.slots[id]
            .state
            .next_to_send(Writer::idempotent(7, 1), false);
        assert!(entry.is_none(), "nothing more is sent");
        // Entry 1: the second batch, source offsets 5..10, on the target at 5.
        f.slots[id].state.acked(1, 5);
        assert_eq!(f.slots[id].state.committed(), 10);
        f.slots[id].state.checkpoint_stored(10);
        positions.due_lookups(&mut f.slots, &MetadataView::default(), now);
        let slot = &f.slots[id];
        assert!(slot.status.is_copying(), "{:?}", slot.status);
        assert_eq!(slot.state.fetch_offset, 5);
        assert_eq!(slot.state.committed(), 5, "the checkpoint goes back to 5");
        let job = broker_one(&mut f, now);
        assert!(
            epochs_asked(&job).contains(&(0, 5, 4)),
            "{:?}",
            epochs_asked(&job)
        );
    }

    /// Only batches never sent were above the divergence point: the target
    /// holds nothing the source lost, so copying just goes on from there.
    #[test]
    fn a_divergence_above_what_was_sent_drops_the_unsent_batches_quietly() {
        let mut f = Fixture::new(ReplicationConfig::default());
        let now = Instant::now();
        copied(&mut f, 3, 1, 0, now);
        let job = broker_one(&mut f, now);
        f.answer(job, Ok(response(vec![diverged(4, 5)])), now);
        let slot = &f.slots[f.id(0)];
        assert!(slot.status.is_copying(), "{:?}", slot.status);
        assert_eq!(slot.state.fetch_offset, 5);
        assert_eq!(f.counters.offsets_truncated, 0);
    }

    #[test]
    fn fetch_errors_are_classified_once() {
        use FetchErrorKind::*;
        for (error, kind) in [
            (ResponseError::FetchSessionIdNotFound, SessionLost),
            (ResponseError::InvalidFetchSessionEpoch, SessionLost),
            (ResponseError::OffsetOutOfRange, OutOfRange),
            (ResponseError::NotLeaderOrFollower, Retry),
            (ResponseError::FencedLeaderEpoch, Retry),
            (ResponseError::UnknownLeaderEpoch, Retry),
            (ResponseError::UnknownTopicId, Retry),
            (ResponseError::KafkaStorageError, Retry),
            (ResponseError::RequestTimedOut, Retry),
            (ResponseError::TopicAuthorizationFailed, Fatal),
            (ResponseError::CorruptMessage, Retry),
            (ResponseError::UnsupportedVersion, Fatal),
        ] {
            assert_eq!(classify_fetch_error(error), kind, "{error:?}");
        }
    }
}
