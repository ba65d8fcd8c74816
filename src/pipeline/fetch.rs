//! The fetch stage: one Fetch in flight per fetcher of a source broker (as
//! many fetchers as the broker's fetch window says, each with its share of
//! the broker's partitions), carrying every partition of its share that has
//! room, and the split of its answer into batches (messages in the old
//! formats, magic 0 and 1, up-converted to v2 first).
//!
//! Room is decided twice: a partition is asked for only while its queue holds
//! less than two fetches' worth (so one slow target partition cannot take the
//! whole budget from the others), and a Fetch asks for at most its share of the
//! bytes left in the global budget (so memory stays bounded whatever the two
//! clusters' speeds, and no fetcher is starved by the ones ahead of it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::ResponseError;

use super::engine::{Engine, Event, Fetcher, Status};
use super::fetch_window::{FetchAnswer, FetchWindow};
use crate::batch::{
    reencode, split_batches, AbortedTransactions, BatchError, BatchFate, Fetched, LegacyMessages,
    RecordBatch, TimestampType,
};
use crate::cluster::{response_partitions, ClusterError, PartitionFetch, Role};
use crate::config::IsolationLevel;

impl Engine {
    /// Starts a Fetch on every fetcher that has none in flight.
    pub(super) fn start_fetches(&mut self, now: Instant) {
        let config = self.config.clone();
        let replication = &config.replication;
        let partition_bytes = replication.partition_fetch_bytes;
        let mut by_fetcher: BTreeMap<Fetcher, Vec<usize>> = BTreeMap::new();
        let mut leaderless = false;
        let count = self.slots.len();
        // Rotate the starting partition: a broker fills a response in request
        // order, so a fixed order would favour the first partitions.
        self.fetch_cursor = (self.fetch_cursor + 1) % count.max(1);
        let cursor = self.fetch_cursor;
        for i in (0..count).map(|k| (k + cursor) % count) {
            let slot = &self.slots[i];
            if slot.status != Status::Copying
                || slot.fetching
                || slot.fetch_backoff.waiting(now)
                || slot.state.held_bytes() >= 2 * partition_bytes
            {
                continue;
            }
            match self.source_meta.leader(&slot.topic, slot.partition) {
                Some(leader) => {
                    let fetcher = (leader, i % self.fetch_window(leader).fetchers());
                    if !self.fetches_in_flight.contains(&fetcher) {
                        by_fetcher.entry(fetcher).or_default().push(i);
                    }
                }
                None => leaderless = true,
            }
        }
        if leaderless {
            self.want_refresh(Role::Source);
        }
        // Copying batches out does not change what the queues hold.
        let queued = self.queued_bytes();
        self.detach_stalled_batches(queued);
        let held = self.held_given(queued);
        // The free budget is split between the fetchers that want to fetch,
        // and the first to go rotates: taken in a fixed order, the first
        // fetchers would take the whole budget every time it frees up.
        let budget = self.budget();
        let free = budget.saturating_sub(held + self.reserved);
        let share = (free / by_fetcher.len().max(1))
            .max(partition_bytes)
            .min(replication.fetch_max_bytes);
        let first = self.fetch_cursor % by_fetcher.len().max(1);
        let mut waiting: Vec<(Fetcher, Vec<usize>)> = by_fetcher.into_iter().collect();
        waiting.rotate_left(first);
        for (fetcher, slots) in waiting {
            let free = budget.saturating_sub(held + self.reserved);
            if free < partition_bytes {
                break;
            }
            let max_bytes = share.min(free);
            let partitions: Vec<PartitionFetch> = slots
                .iter()
                .map(|&i| {
                    let slot = &self.slots[i];
                    PartitionFetch {
                        topic: slot.topic.to_string(),
                        topic_id: slot.source_topic_id,
                        partition: slot.partition,
                        offset: slot.state.fetch_offset,
                        leader_epoch: self
                            .source_meta
                            .partition(&slot.topic, slot.partition)
                            .map_or(-1, |p| p.leader_epoch),
                        max_bytes: partition_bytes as i32,
                    }
                })
                .collect();
            let request = self.fetch_sessions.entry(fetcher).or_default().request(
                &partitions,
                replication.isolation_level.wire_value(),
                replication.fetch_max_wait(),
                max_bytes as i32,
            );
            let asked: Vec<(usize, i64)> = slots
                .iter()
                .map(|&i| (i, self.slots[i].state.fetch_offset))
                .collect();
            for &i in &slots {
                self.slots[i].fetching = true;
            }
            self.fetches_in_flight.insert(fetcher);
            self.reserved += max_bytes;
            let source = self.source.clone();
            let (broker, nth) = fetcher;
            self.spawn(async move {
                let sent = Instant::now();
                let result = source.send_on(broker, nth, request).await;
                Event::Fetched {
                    fetcher,
                    asked,
                    reserved: max_bytes,
                    elapsed: sent.elapsed(),
                    result,
                }
            });
        }
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
    fn detach_stalled_batches(&mut self, queued: usize) {
        let memory = self.source.frame_memory().clone();
        let live = memory.live_bytes();
        if live <= self.budget() || live <= 2 * queued {
            return;
        }
        // Each response's length and the bytes our batches use of it.
        let mut responses: HashMap<usize, (usize, usize)> = HashMap::new();
        for batch in self.slots.iter().flat_map(|slot| slot.state.batches()) {
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
        let goal = self.budget() / 2;
        let mut freed = 0;
        let mut evacuated = HashSet::new();
        for (start, len, used) in by_use {
            if live.saturating_sub(freed) <= goal || 2 * used > len {
                break;
            }
            evacuated.insert(start);
            freed += len;
        }
        let copied: usize = self
            .slots
            .iter_mut()
            .map(|slot| {
                slot.state.detach_batches(|batch| {
                    memory
                        .frame_of(batch.as_bytes())
                        .is_some_and(|(start, _)| evacuated.contains(&start))
                })
            })
            .sum();
        self.counters.bytes_copied += copied as u64;
        tracing::debug!(
            copied,
            responses = evacuated.len(),
            responses_before = live,
            responses_after = memory.live_bytes(),
            "batches copied out of the Fetch responses they kept alive"
        );
    }

    pub(super) fn on_fetched(
        &mut self,
        fetcher: Fetcher,
        asked: Vec<(usize, i64)>,
        reserved: usize,
        elapsed: Duration,
        result: Result<FetchResponse, ClusterError>,
    ) {
        self.fetches_in_flight.remove(&fetcher);
        self.reserved -= reserved;
        for &(i, _) in &asked {
            self.slots[i].fetching = false;
        }
        let now = Instant::now();
        let broker = fetcher.0;
        let session = self.fetch_sessions.entry(fetcher).or_default();
        let response = match result {
            Ok(response) => {
                session.answered(&response);
                response
            }
            Err(e) => {
                session.reset();
                tracing::warn!(broker, error = %e, "Fetch failed; retrying after a metadata refresh");
                self.fetch_failed(&asked, now);
                return;
            }
        };
        match response.error_code.err() {
            None => {}
            // The session was evicted or fell out of step: the next Fetch
            // opens a new one, at once.
            Some(
                error @ (ResponseError::FetchSessionIdNotFound
                | ResponseError::InvalidFetchSessionEpoch
                | ResponseError::FetchSessionTopicIdError),
            ) => {
                tracing::debug!(broker, ?error, "fetch session reset");
                return;
            }
            Some(error) => {
                tracing::warn!(broker, ?error, "source broker refused the Fetch");
                self.fetch_failed(&asked, now);
                return;
            }
        }
        if self.draining.is_some() {
            return;
        }
        self.note_fetch_answer(fetcher, &response, &asked, reserved, elapsed, now);
        let asked_offsets: std::collections::HashMap<usize, i64> = asked.into_iter().collect();
        for (topic, data) in response_partitions(response, &self.source_names) {
            let Some(&i) = self
                .index
                .get(&(topic.as_str().into(), data.partition_index))
            else {
                continue;
            };
            let slot = &self.slots[i];
            // Data for a position the partition has since left (a reset) is stale.
            if asked_offsets.get(&i) != Some(&slot.state.fetch_offset)
                || slot.status != Status::Copying
            {
                continue;
            }
            self.on_partition_data(i, data, now);
        }
    }

    /// The fetch window of a source broker, opened on first use.
    fn fetch_window(&mut self, broker: i32) -> &mut FetchWindow {
        let fixed = self.config.replication.fetchers_per_broker;
        self.fetch_windows
            .entry(broker)
            .or_insert_with(|| FetchWindow::new(fixed))
    }

    /// Tells the broker's fetch window how full the answer was and how long
    /// it took.
    fn note_fetch_answer(
        &mut self,
        (broker, _): Fetcher,
        response: &FetchResponse,
        asked: &[(usize, i64)],
        reserved: usize,
        elapsed: Duration,
        now: Instant,
    ) {
        let bytes = response
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .filter_map(|partition| partition.records.as_ref())
            .map(bytes::Bytes::len)
            .sum();
        let replication = &self.config.replication;
        let capacity = replication
            .fetch_max_bytes
            .min(asked.len() * replication.partition_fetch_bytes);
        let answer = FetchAnswer {
            bytes,
            capacity: reserved.min(capacity),
            short_of_budget: 2 * reserved < capacity,
            elapsed,
            round_trip: self.source.round_trip(broker),
        };
        let window = self.fetch_window(broker);
        let before = window.fetchers();
        window.answered(now, answer);
        let fetchers = window.fetchers();
        self.counters.most_fetchers = self.counters.most_fetchers.max(fetchers);
        if fetchers != before {
            tracing::debug!(
                broker,
                fetchers,
                round_trip = ?answer.round_trip,
                "fetch window changed"
            );
        }
    }

    fn fetch_failed(&mut self, asked: &[(usize, i64)], now: Instant) {
        for &(i, _) in asked {
            self.slots[i].fetch_backoff.fail(now);
        }
        self.want_refresh(Role::Source);
    }

    fn on_partition_data(&mut self, i: usize, data: PartitionData, now: Instant) {
        match data.error_code.err() {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => {
                self.slots[i].status = Status::CheckingLoss { asked: false };
                return;
            }
            Some(error) if is_retriable_fetch_error(error) => {
                let slot = &mut self.slots[i];
                tracing::debug!(topic = %slot.topic, partition = slot.partition, ?error, "Fetch refused; retrying after a metadata refresh");
                slot.fetch_backoff.fail(now);
                self.want_refresh(Role::Source);
                return;
            }
            Some(error) => {
                let slot = &self.slots[i];
                let reason = format!(
                    "source answered {error:?} to a Fetch of {}-{} at offset {}",
                    slot.topic, slot.partition, slot.state.fetch_offset
                );
                self.stop(i, reason);
                return;
            }
        }
        self.slots[i].fetch_backoff.reset();
        let records = data.records.unwrap_or_default();
        let mut aborted = match self.config.replication.isolation_level {
            IsolationLevel::ReadCommitted => {
                AbortedTransactions::new(data.aborted_transactions.as_deref().unwrap_or_default())
            }
            IsolationLevel::ReadUncommitted => AbortedTransactions::new(&[]),
        };
        for item in split_batches(&records) {
            let outcome = match item {
                Ok(Fetched::Batch(batch)) => self.on_batch(i, batch, &mut aborted),
                Ok(Fetched::Legacy(messages)) => self.on_legacy(i, &messages, &mut aborted),
                Err(e) => Err(self.unusable(i, &e)),
            };
            if let Err(reason) = outcome {
                self.stop(i, reason);
                return;
            }
        }
    }

    /// Up-converts old-format entries and takes each resulting batch.
    fn on_legacy(
        &mut self,
        i: usize,
        messages: &LegacyMessages,
        aborted: &mut AbortedTransactions,
    ) -> Result<(), String> {
        let batches = messages.up_convert().map_err(|e| {
            let slot = &self.slots[i];
            format!(
                "cannot up-convert the magic {} messages at offset {} of {}-{}: {e}",
                messages.magic(),
                messages.base_offset(),
                slot.topic,
                slot.partition
            )
        })?;
        self.counters.up_converted_batches += batches.len() as u64;
        for batch in batches {
            self.on_batch(i, batch, aborted)?;
        }
        Ok(())
    }

    /// Checks one fetched batch and queues it (re-encoded if it must be) or
    /// skips it; `Err` is why the partition must stop.
    ///
    /// The CRC is checked here only when the batch is not sent as it is: the
    /// target broker checks the CRC of every batch it appends, and the
    /// patched CRC of a produced batch keeps any damage in the records
    /// visible to it ([`RecordBatch::produce_header`]), so checking a batch
    /// sent as it is would be a second pass over its bytes for nothing.
    /// Every other path decides from, or rewrites, bytes the CRC covers, so
    /// a damaged batch must be caught before.
    fn on_batch(
        &mut self,
        i: usize,
        batch: RecordBatch,
        aborted: &mut AbortedTransactions,
    ) -> Result<(), String> {
        // Bytes that cannot be read are reported as damage when they are.
        let fate = aborted
            .classify(&batch)
            .map_err(|e| self.unusable(i, &batch.verify_crc().err().unwrap_or(e)))?;
        // A batch that ends before the fetch position was asked for
        // earlier (the position fell inside a compressed batch).
        let behind = batch.next_offset() <= self.slots[i].state.fetch_offset;
        // Compaction left fewer records than offsets (the target refuses
        // that), or the records' timestamps are the source's append time (a
        // CreateTime target would show the producer's).
        let needs_reencoding =
            batch.has_offset_gaps() || batch.timestamp_type() == TimestampType::LogAppendTime;
        let sent_as_it_is =
            fate == BatchFate::Forward && !behind && batch.records_count() > 0 && !needs_reencoding;
        if !sent_as_it_is {
            batch.verify_crc().map_err(|e| self.unusable(i, &e))?;
        }
        if behind {
            return Ok(());
        }
        let slot = &mut self.slots[i];
        match fate {
            BatchFate::SkipControl => {
                self.counters.control_batches_skipped += 1;
                slot.state.push_skip(batch.next_offset());
            }
            BatchFate::SkipAborted => {
                self.counters.aborted_batches_skipped += 1;
                slot.state.push_skip(batch.next_offset());
            }
            BatchFate::Forward if batch.records_count() == 0 => {
                self.counters.empty_batches_skipped += 1;
                slot.state.push_skip(batch.next_offset());
            }
            BatchFate::Forward if needs_reencoding => {
                // The slow path. The checkpoint still moves past the source
                // batch's range.
                let reencoded = reencode(&batch).map_err(|e| {
                    format!(
                        "cannot re-encode the batch at offset {} of {}-{} \
                         ({} records for {} offsets, {:?}): {e}",
                        batch.base_offset(),
                        slot.topic,
                        slot.partition,
                        batch.records_count(),
                        i64::from(batch.last_offset_delta()) + 1,
                        batch.timestamp_type()
                    )
                })?;
                self.counters.reencoded_batches += 1;
                slot.state
                    .push_batch_with_next_offset(reencoded, batch.next_offset());
            }
            BatchFate::Forward => {
                slot.state.push_batch(batch);
            }
        }
        Ok(())
    }

    /// Why the partition stops on data it cannot use.
    fn unusable(&self, i: usize, e: &BatchError) -> String {
        let slot = &self.slots[i];
        format!(
            "unusable data from the source in {}-{} at offset {}: {e}",
            slot.topic, slot.partition, slot.state.fetch_offset
        )
    }
}

/// Fetch errors that a metadata refresh and a retry can fix.
fn is_retriable_fetch_error(error: ResponseError) -> bool {
    matches!(
        error,
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
            | ResponseError::NotCoordinator
    ) || error.is_retriable()
}
