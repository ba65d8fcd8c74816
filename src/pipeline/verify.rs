//! `kafka-mirror verify`: whether each selected partition's copy on the
//! target holds the source's committed records, in order.
//!
//! For every partition of every flow, both logs are read from their log
//! start to their end as of the start of the check (the source with the
//! flow's isolation level, read_committed by default, the target
//! read_committed; control batches never count, nor aborted transactions
//! under read_committed), each
//! side by a task of its own that streams Fetch responses into a small
//! bounded channel; a third task per partition compares the two streams
//! record by record. Offsets are not compared (the target assigns its own);
//! each record's timestamp, key, value and headers are, as a CRC-32C digest
//! of their encoded bytes. The first record where the streams part, or where
//! one ends before the other, is reported with its offset on each side.
//! Partitions are checked a few at a time, so memory stays bounded by a few
//! Fetch responses per partition under way, whatever the topic's size.
//!
//! `--sample N` decodes and compares the records of every Nth source batch
//! only; the records of the other batches are counted (from batch headers,
//! without decompressing) and the target's matching records, found by their
//! position in the stream, skipped. Counts are always compared in full.
//! Sends Metadata, ListOffsets and Fetch only, and writes nothing anywhere.
//!
//! Whole logs are compared, so run it once the copy is caught up (a mirror
//! still copying shows as a shorter target); `run --until-caught-up
//! --verify` does, reading each source partition only up to where the run
//! copied it (the source may have grown since). Expect a difference where
//! the two logs legitimately hold different spans: a copy that started at
//! `latest` or a timestamp, retention that removed more on one side, a
//! target compacted again. A leader that moves meanwhile is looked up
//! again; a Fetch that keeps failing ends the check with an error rather
//! than a verdict.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::ResponseError;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::lifecycle::selected_partitions;
use super::startup::offsets_of;
use super::stats::FlowPartition;
use super::{MirrorError, Targets};
use crate::backoff::Backoff;
use crate::batch::{
    for_each_record, split_batches, AbortedTransactions, BatchError, BatchFate, Fetched,
    RecordBatch,
};
use crate::cluster::{
    fetch_request, response_partitions, Cluster, ClusterError, Metadata, OffsetSpec,
    PartitionFetch, TopicNames,
};
use crate::config::MirrorConfig;

/// READ_COMMITTED on the wire.
const READ_COMMITTED: i8 = 1;
/// Bytes of one partition per Fetch.
const FETCH_BYTES: i32 = 1 << 20;
/// Fetch responses read ahead per partition side.
const READ_AHEAD: usize = 2;
/// Partitions checked at once.
const PARTITIONS_AT_ONCE: usize = 8;
/// Failed Fetches in a row before a side gives up, and the backoff between.
const FAILURES: u32 = 8;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);
/// Fetches in a row that may return nothing before a side gives up.
const EMPTY_FETCHES: u32 = 40;

/// How to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Compare the records of every Nth source batch (1: every record).
    pub sample: u32,
    /// Source partitions read only up to this offset (a run's
    /// [`Summary::source_ends`](super::Summary::source_ends)); the others
    /// up to their end when the check begins.
    pub source_ends: BTreeMap<FlowPartition, i64>,
}

/// How far a check has come, for a progress display: each flow's entry is
/// added as its check begins (flows are checked one after the other).
#[derive(Debug, Clone, Default)]
pub struct VerifyProgress(Arc<Mutex<Vec<Arc<FlowCounters>>>>);

/// One flow's counters, updated by its partitions' readers.
#[derive(Debug, Default)]
struct FlowCounters {
    name: String,
    /// Source offsets to read, all partitions together, once known.
    offsets_total: OnceLock<u64>,
    /// Source offsets read so far.
    offsets_read: AtomicU64,
    /// Record bytes fetched from both clusters.
    bytes_read: AtomicU64,
    done: AtomicBool,
}

/// One flow's progress, as [`VerifyProgress::flows`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCheckProgress {
    /// The flow's name.
    pub name: String,
    /// Source offsets read so far, of [`offsets_total`](Self::offsets_total).
    pub offsets_read: u64,
    /// Source offsets to read; none while the flow's bounds are looked up.
    pub offsets_total: Option<u64>,
    /// Record bytes fetched from both clusters.
    pub bytes_read: u64,
    /// The flow's check is over.
    pub done: bool,
}

impl VerifyProgress {
    /// Every flow whose check has begun, in config order.
    pub fn flows(&self) -> Vec<FlowCheckProgress> {
        self.lock()
            .iter()
            .map(|flow| FlowCheckProgress {
                name: flow.name.clone(),
                offsets_read: flow.offsets_read.load(Ordering::Relaxed),
                offsets_total: flow.offsets_total.get().copied(),
                bytes_read: flow.bytes_read.load(Ordering::Relaxed),
                done: flow.done.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn begin(&self, name: &str) -> Arc<FlowCounters> {
        let flow = Arc::new(FlowCounters {
            name: name.to_owned(),
            ..FlowCounters::default()
        });
        self.lock().push(flow.clone());
        flow
    }

    fn bytes_read(&self) -> u64 {
        self.lock()
            .iter()
            .map(|flow| flow.bytes_read.load(Ordering::Relaxed))
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<FlowCounters>>> {
        // The counters are atomics: a panic elsewhere leaves nothing half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `verify` found, for every flow.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// One entry per flow, in config order.
    pub flows: Vec<FlowVerify>,
    /// Record bytes fetched from both clusters.
    pub bytes_read: u64,
    /// How long the check took.
    pub seconds: f64,
}

/// One flow's partitions.
#[derive(Debug, Clone, Serialize)]
pub struct FlowVerify {
    /// The flow's name.
    pub name: String,
    /// Every selected partition, in topic and partition order.
    pub partitions: Vec<PartitionVerify>,
}

/// One partition on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionVerify {
    /// The source topic.
    pub topic: String,
    /// Its copy's name on the target (the rename policy applied).
    pub target_topic: String,
    /// The partition.
    pub partition: i32,
    /// What the source holds.
    pub source: SideSummary,
    /// What the target holds.
    pub target: SideSummary,
    /// Records whose contents were compared (all of them without --sample).
    pub compared: u64,
    /// Where the two part; none when they agree.
    pub difference: Option<Difference>,
}

/// One side of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideSummary {
    /// Committed records.
    pub records: u64,
    /// Offset of the first one (a batch's first offset for a batch that
    /// --sample did not decode).
    pub first_offset: Option<i64>,
    /// Offset of the last one (likewise).
    pub last_offset: Option<i64>,
    /// CRC-32C over the compared records' digests, in order.
    pub checksum: u32,
}

/// The first place where the copy differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What differs.
    pub kind: DifferenceKind,
    /// The source record there (none when the source ended first).
    pub source_offset: Option<i64>,
    /// The target record there (none when the target ended first).
    pub target_offset: Option<i64>,
}

/// How a copy differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The records at the same position differ in timestamp, key, value or headers.
    Contents,
    /// The target holds fewer records.
    TargetShorter,
    /// The target holds more records.
    TargetLonger,
    /// The target has no such partition.
    TargetMissing,
}

/// Why a partition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A cluster could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A batch could not be read.
    #[error("{topic}-{partition}: {source}")]
    Batch {
        topic: String,
        partition: i32,
        #[source]
        source: BatchError,
    },
    /// The leader refused the Fetch.
    #[error("{topic}-{partition}: the leader answered the Fetch with {error:?}")]
    Refused {
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    /// A partition's check ended without an answer (it panicked).
    #[error("a partition's check stopped: {0}")]
    Stopped(String),
    /// The partition has no leader, or its log did not reach its end.
    #[error("{topic}-{partition}: {reason}")]
    Unreadable {
        topic: String,
        partition: i32,
        reason: String,
    },
}

impl VerifyReport {
    /// Whether every partition's copy agrees.
    pub fn agrees(&self) -> bool {
        self.flows
            .iter()
            .flat_map(|f| &f.partitions)
            .all(|p| p.difference.is_none())
    }

    /// Fetched record bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_read as f64 / self.seconds.max(1e-3)
    }
}

/// Compares every flow's selected partitions on both clusters.
pub async fn verify(
    config: MirrorConfig,
    options: VerifyOptions,
) -> Result<VerifyReport, MirrorError> {
    verify_observed(config, options, &VerifyProgress::default()).await
}

/// [`verify`], counting its progress on `progress` as it goes.
pub async fn verify_observed(
    config: MirrorConfig,
    options: VerifyOptions,
    progress: &VerifyProgress,
) -> Result<VerifyReport, MirrorError> {
    config.validate()?;
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(PARTITIONS_AT_ONCE));
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let counters = progress.begin(&flow.name);
        let (source, target) = targets.flow_clusters(&flow)?;
        let source_meta = Arc::new(source.metadata().await?);
        let target_meta = Arc::new(target.metadata().await?);
        let partitions = selected_partitions(&flow, &source_meta);
        let copies: Vec<(String, i32)> = partitions
            .iter()
            .map(|(topic, p)| (flow.target_topic(topic), *p))
            .filter(|(topic, p)| target_meta.partition(topic, *p).is_some())
            .collect();
        // The source is read as the flow copies it; the target as its
        // consumers would, read_committed (an exactly-once copy is
        // transactional there).
        let isolation = flow.replication.isolation_level.wire_value();
        let bounds = |cluster, meta, wanted: Vec<(String, i32)>, isolation| async move {
            let starts = offsets_of(
                cluster,
                meta,
                wanted.clone(),
                OffsetSpec::Earliest,
                isolation,
            );
            let ends = offsets_of(cluster, meta, wanted, OffsetSpec::Latest, isolation);
            Ok::<_, MirrorError>((starts.await?, ends.await?))
        };
        let (source_starts, mut source_ends) =
            bounds(&source, &source_meta, partitions.clone(), isolation).await?;
        for ((topic, partition), end) in &mut source_ends {
            let key = FlowPartition {
                flow: flow.name.clone(),
                topic: topic.clone(),
                partition: *partition,
            };
            if let Some(&copied_to) = options.source_ends.get(&key) {
                *end = (*end).min(copied_to);
            }
        }
        let to_read: i64 = source_ends
            .iter()
            .map(|(key, end)| (end - source_starts.get(key).copied().unwrap_or(*end)).max(0))
            .sum();
        // Set once, here, as the flow's check begins.
        let _ = counters
            .offsets_total
            .set(u64::try_from(to_read).unwrap_or(0));
        let (target_starts, target_ends) =
            bounds(&target, &target_meta, copies, READ_COMMITTED).await?;
        let mut checks = JoinSet::new();
        for (index, (topic, partition)) in partitions.into_iter().enumerate() {
            let target_topic = flow.target_topic(&topic);
            let key = (topic.clone(), partition);
            let copy = (target_topic.clone(), partition);
            let source_log = Log {
                cluster: source.clone(),
                metadata: source_meta.clone(),
                topic: topic.clone(),
                partition,
                start: source_starts[&key],
                end: source_ends[&key],
                isolation,
                counters: counters.clone(),
                counts_offsets: true,
            };
            let target_log = target_starts.get(&copy).map(|&start| Log {
                cluster: target.clone(),
                metadata: target_meta.clone(),
                topic: target_topic.clone(),
                partition,
                start,
                end: target_ends[&copy],
                isolation: READ_COMMITTED,
                counters: counters.clone(),
                counts_offsets: false,
            });
            let limit = limit.clone();
            let sample = options.sample;
            checks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = check_partition(source_log, target_log, sample).await;
                (index, topic, target_topic, partition, result)
            });
        }
        let mut checked = Vec::new();
        while let Some(joined) = checks.join_next().await {
            let (index, topic, target_topic, partition, result) =
                joined.map_err(|e| VerifyError::Stopped(e.to_string()))?;
            let comparison = result?;
            tracing::info!(
                %topic,
                partition,
                records = comparison.source.records,
                agrees = comparison.difference.is_none(),
                "partition checked"
            );
            checked.push((
                index,
                PartitionVerify {
                    topic,
                    target_topic,
                    partition,
                    source: comparison.source,
                    target: comparison.target,
                    compared: comparison.compared,
                    difference: comparison.difference,
                },
            ));
        }
        checked.sort_by_key(|(index, _)| *index);
        counters.done.store(true, Ordering::Relaxed);
        flows.push(FlowVerify {
            name: flow.name,
            partitions: checked.into_iter().map(|(_, p)| p).collect(),
        });
    }
    Ok(VerifyReport {
        flows,
        bytes_read: progress.bytes_read(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One side of a partition, and the range to read.
struct Log {
    cluster: Arc<Cluster>,
    metadata: Arc<Metadata>,
    topic: String,
    partition: i32,
    start: i64,
    end: i64,
    /// READ_COMMITTED or READ_UNCOMMITTED on the wire.
    isolation: i8,
    counters: Arc<FlowCounters>,
    /// The source side: its offsets are the check's progress.
    counts_offsets: bool,
}

/// What a side's reader sends: the committed batches of one Fetch response.
type Batches = Result<Vec<RecordBatch>, VerifyError>;

/// Reads both sides of a partition at once and compares them.
async fn check_partition(
    source: Log,
    target: Option<Log>,
    sample: u32,
) -> Result<Comparison, VerifyError> {
    let source_from = (source.start, (source.topic.clone(), source.partition));
    let (source_tx, source_rx) = mpsc::channel(READ_AHEAD);
    let mut readers = JoinSet::new();
    readers.spawn(read_log(source, source_tx));
    let Some(target) = target else {
        let mut source = Stream::new(source_rx, source_from.0, source_from.1);
        source.skip_rest().await?;
        return Ok(Comparison {
            difference: Some(Difference {
                kind: DifferenceKind::TargetMissing,
                source_offset: source.summary.first_offset,
                target_offset: None,
            }),
            source: source.summary,
            ..Comparison::default()
        });
    };
    let target_from = (target.start, (target.topic.clone(), target.partition));
    let (target_tx, target_rx) = mpsc::channel(READ_AHEAD);
    readers.spawn(read_log(target, target_tx));
    compare(
        Stream::new(source_rx, source_from.0, source_from.1),
        Stream::new(target_rx, target_from.0, target_from.1),
        sample,
    )
    .await
}

/// Sends the committed batches of `log` from its start to its end, one
/// Fetch response at a time; stops early when the receiver is gone.
async fn read_log(log: Log, tx: mpsc::Sender<Batches>) {
    let result = read_into(&log, &tx).await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

async fn read_into(log: &Log, tx: &mpsc::Sender<Batches>) -> Result<(), VerifyError> {
    let unreadable = |reason: String| VerifyError::Unreadable {
        topic: log.topic.clone(),
        partition: log.partition,
        reason,
    };
    let Some(topic_id) = log.metadata.topics.get(&log.topic).map(|t| t.id) else {
        return Err(unreadable("not in the cluster's metadata".to_owned()));
    };
    let names = TopicNames::from_iter([(topic_id, log.topic.clone())]);
    let mut leader = log.metadata.leader(&log.topic, log.partition);
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
    let mut failures = 0;
    let mut offset = log.start;
    let mut empty = 0;
    while offset < log.end {
        let fetch = PartitionFetch {
            topic: log.topic.clone(),
            topic_id,
            partition: log.partition,
            offset,
            last_fetched_epoch: -1,
            leader_epoch: -1,
            max_bytes: FETCH_BYTES,
        };
        let request = fetch_request(
            &[fetch],
            log.isolation,
            Duration::from_millis(100),
            FETCH_BYTES,
        );
        // A leader that moved, or a broker that went away, is looked up
        // again and tried after a backoff, a few times.
        let answer = match leader {
            None => Err("no leader".to_owned()),
            Some(broker) => match log.cluster.send(broker, request).await {
                Err(e) if e.is_retriable() => Err(e.to_string()),
                Err(e) => return Err(e.into()),
                Ok(response) => match response_partitions(response, &names).next() {
                    None => Err("the Fetch answer did not name it".to_owned()),
                    Some((_, data)) => match data.error_code.err() {
                        None => Ok(data),
                        Some(error) if error.is_retriable() => Err(format!("{error:?}")),
                        Some(error) => {
                            return Err(VerifyError::Refused {
                                topic: log.topic.clone(),
                                partition: log.partition,
                                error,
                            })
                        }
                    },
                },
            },
        };
        let data = match answer {
            Ok(data) => {
                backoff.reset();
                failures = 0;
                data
            }
            Err(why) => {
                failures += 1;
                if failures >= FAILURES {
                    return Err(unreadable(format!("{why}, {failures} times in a row")));
                }
                tracing::debug!(topic = %log.topic, partition = log.partition, %why, "fetching again");
                backoff.fail(Instant::now());
                if let Some(until) = backoff.until() {
                    tokio::time::sleep_until(until.into()).await;
                }
                leader = log
                    .cluster
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.leader(&log.topic, log.partition));
                continue;
            }
        };
        let records = data.records.unwrap_or_default();
        log.counters
            .bytes_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut aborted =
            AbortedTransactions::new(data.aborted_transactions.as_deref().unwrap_or_default());
        let batch_error = |source| VerifyError::Batch {
            topic: log.topic.clone(),
            partition: log.partition,
            source,
        };
        let mut committed = Vec::new();
        let before = offset;
        for fetched in split_batches(&records) {
            let batches = match fetched.map_err(batch_error)? {
                Fetched::Batch(batch) => vec![batch],
                Fetched::Legacy(messages) => messages.up_convert().map_err(batch_error)?,
            };
            for batch in batches {
                if batch.next_offset() <= offset || batch.base_offset() >= log.end {
                    continue;
                }
                offset = batch.next_offset();
                let fate = aborted.classify(&batch).map_err(batch_error)?;
                if fate == BatchFate::Forward && batch.records_count() > 0 {
                    committed.push(batch);
                }
            }
        }
        if offset == before {
            empty += 1;
            if empty >= EMPTY_FETCHES {
                return Err(unreadable(format!(
                    "the log ends at {offset}, before {}, its end when the check began",
                    log.end
                )));
            }
            continue;
        }
        empty = 0;
        if log.counts_offsets {
            let read = offset.min(log.end) - before.min(log.end);
            log.counters
                .offsets_read
                .fetch_add(u64::try_from(read).unwrap_or(0), Ordering::Relaxed);
        }
        if tx.send(Ok(committed)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// One record as compared: where it is, and a digest of what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest {
    offset: i64,
    value: u64,
}

/// The CRC-32C of a record's timestamp, key, value and headers, with their length.
fn digest(batch: &RecordBatch, from: i64) -> Result<Vec<Digest>, BatchError> {
    let mut digests = Vec::with_capacity(usize::try_from(batch.records_count()).unwrap_or(0));
    for_each_record(batch, |record| {
        if record.offset < from {
            return;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&record.timestamp.to_be_bytes()),
            record.contents,
        );
        digests.push(Digest {
            offset: record.offset,
            value: (u64::from(crc) << 32) | (record.contents.len() as u64 & 0xffff_ffff),
        });
    })?;
    Ok(digests)
}

/// One side's batches as a stream of records, decoded only when asked for.
struct Stream {
    rx: mpsc::Receiver<Batches>,
    batches: VecDeque<RecordBatch>,
    decoded: VecDeque<Digest>,
    /// Records below this offset (the log start, inside a batch) are not there.
    from: i64,
    /// The topic and partition, for errors.
    name: (String, i32),
    summary: SideSummary,
}

impl Stream {
    fn new(rx: mpsc::Receiver<Batches>, from: i64, name: (String, i32)) -> Self {
        Self {
            rx,
            batches: VecDeque::new(),
            decoded: VecDeque::new(),
            from,
            name,
            summary: SideSummary::default(),
        }
    }

    /// The next batch not yet taken, none at the end of the log.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, VerifyError> {
        loop {
            if let Some(batch) = self.batches.pop_front() {
                return Ok(Some(batch));
            }
            match self.rx.recv().await {
                None => return Ok(None),
                Some(batches) => self.batches.extend(batches?),
            }
        }
    }

    fn decode(&self, batch: &RecordBatch) -> Result<Vec<Digest>, VerifyError> {
        digest(batch, self.from).map_err(|source| VerifyError::Batch {
            topic: self.name.0.clone(),
            partition: self.name.1,
            source,
        })
    }

    fn count(&mut self, first: i64, last: i64, records: u64) {
        self.summary.first_offset.get_or_insert(first);
        self.summary.last_offset = Some(last);
        self.summary.records += records;
    }

    /// The next record, decoded.
    async fn next_record(&mut self) -> Result<Option<Digest>, VerifyError> {
        while self.decoded.is_empty() {
            let Some(batch) = self.next_batch().await? else {
                return Ok(None);
            };
            self.decoded = self.decode(&batch)?.into();
        }
        let record = self.decoded.pop_front();
        if let Some(record) = record {
            self.count(record.offset, record.offset, 1);
        }
        Ok(record)
    }

    /// Counts the next `n` records without comparing them, decoding only a
    /// batch that holds some of them and some after; returns how many there were.
    async fn skip(&mut self, mut n: u64) -> Result<u64, VerifyError> {
        let wanted = n;
        while n > 0 {
            if let Some(record) = self.decoded.pop_front() {
                self.count(record.offset, record.offset, 1);
                n -= 1;
                continue;
            }
            let Some(batch) = self.next_batch().await? else {
                break;
            };
            let count = u64::try_from(batch.records_count()).unwrap_or(0);
            if count <= n && batch.base_offset() >= self.from {
                self.count(batch.base_offset(), batch.last_offset(), count);
                n -= count;
            } else {
                self.decoded = self.decode(&batch)?.into();
            }
        }
        Ok(wanted - n)
    }

    /// Counts everything left.
    async fn skip_rest(&mut self) -> Result<(), VerifyError> {
        while self.skip(u64::MAX).await? > 0 {}
        Ok(())
    }
}

/// Both sides of a partition, compared.
#[derive(Debug, Default)]
struct Comparison {
    source: SideSummary,
    target: SideSummary,
    compared: u64,
    difference: Option<Difference>,
}

/// Walks the source's batches, comparing the records of every `sample`th
/// with the target's records at the same position, and skipping the others
/// on both sides; at the first difference, only counts the rest.
async fn compare(
    mut source: Stream,
    mut target: Stream,
    sample: u32,
) -> Result<Comparison, VerifyError> {
    let mut difference = None;
    let mut compared = 0;
    let mut index: u64 = 0;
    'batches: while let Some(batch) = source.next_batch().await? {
        let sampled = index % u64::from(sample.max(1)) == 0;
        index += 1;
        if !sampled {
            let count = u64::try_from(batch.records_count()).unwrap_or(0);
            if count > 0 && batch.base_offset() >= source.from {
                source.count(batch.base_offset(), batch.last_offset(), count);
                let skipped = target.skip(count).await?;
                if skipped < count {
                    difference = Some(Difference {
                        kind: DifferenceKind::TargetShorter,
                        source_offset: Some(batch.base_offset() + skipped as i64),
                        target_offset: None,
                    });
                    break;
                }
                continue;
            }
        }
        source.decoded = source.decode(&batch)?.into();
        while !source.decoded.is_empty() {
            let Some(ours) = source.next_record().await? else {
                break;
            };
            let Some(theirs) = target.next_record().await? else {
                difference = Some(Difference {
                    kind: DifferenceKind::TargetShorter,
                    source_offset: Some(ours.offset),
                    target_offset: None,
                });
                break 'batches;
            };
            compared += 1;
            for side in [(&mut source, ours), (&mut target, theirs)] {
                let (stream, record) = side;
                stream.summary.checksum =
                    crc32c::crc32c_append(stream.summary.checksum, &record.value.to_be_bytes());
            }
            if ours.value != theirs.value {
                difference = Some(Difference {
                    kind: DifferenceKind::Contents,
                    source_offset: Some(ours.offset),
                    target_offset: Some(theirs.offset),
                });
                break 'batches;
            }
        }
    }
    if difference.is_none() {
        if let Some(extra) = target.next_record().await? {
            difference = Some(Difference {
                kind: DifferenceKind::TargetLonger,
                source_offset: None,
                target_offset: Some(extra.offset),
            });
        }
    }
    source.skip_rest().await?;
    target.skip_rest().await?;
    Ok(Comparison {
        source: source.summary,
        target: target.summary,
        compared,
        difference,
    })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            let differ = flow
                .partitions
                .iter()
                .filter(|p| p.difference.is_some())
                .count();
            writeln!(
                f,
                "flow {}: {} partitions, {}",
                flow.name,
                flow.partitions.len(),
                if differ == 0 {
                    "all agree".to_owned()
                } else {
                    format!("{differ} differ")
                }
            )?;
            for p in &flow.partitions {
                let side = |s: &SideSummary| match (s.first_offset, s.last_offset) {
                    (Some(first), Some(last)) => format!(
                        "{} records, offsets {first}..={last}, checksum {:08x}",
                        s.records, s.checksum
                    ),
                    _ => "no records".to_owned(),
                };
                let verdict = match &p.difference {
                    None => "agrees".to_owned(),
                    Some(d) => format!("DIFFERS: {d}"),
                };
                writeln!(
                    f,
                    "  {}-{} -> {}-{}: {verdict}",
                    p.topic, p.partition, p.target_topic, p.partition
                )?;
                writeln!(f, "    source: {}", side(&p.source))?;
                writeln!(f, "    target: {}", side(&p.target))?;
            }
        }
        writeln!(
            f,
            "read {:.1} MB in {:.1} s ({:.1} MB/s)",
            self.bytes_read as f64 / 1e6,
            self.seconds,
            self.bytes_per_second() / 1e6
        )
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at =
            |offset: Option<i64>| offset.map_or("its end".to_owned(), |o| format!("offset {o}"));
        match self.kind {
            DifferenceKind::Contents => write!(
                f,
                "records differ from source {} / target {}",
                at(self.source_offset),
                at(self.target_offset)
            ),
            DifferenceKind::TargetShorter => write!(
                f,
                "the target ends where the source has {}",
                at(self.source_offset)
            ),
            DifferenceKind::TargetLonger => write!(
                f,
                "the target has more records, from {}",
                at(self.target_offset)
            ),
            DifferenceKind::TargetMissing => write!(f, "the target has no such partition"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::batch::test_support::{data_records, encode, BatchSpec, Content};

    /// Records of these values, each keyed and timestamped by its value
    /// alone, so batch boundaries and offsets do not change them.
    fn contents(values: &[&str]) -> Vec<Content> {
        values
            .iter()
            .map(|v| {
                (
                    Some(Bytes::from(format!("key-{v}"))),
                    Some(Bytes::from(v.to_string())),
                    vec![("h".to_owned(), Some(Bytes::from_static(b"x")))],
                )
            })
            .collect()
    }

    /// A side holding `values` in batches of `per_batch` records from `base`.
    fn side(values: &[&str], base: i64, per_batch: usize, compression: Compression) -> Stream {
        side_with_timestamps(values, base, per_batch, compression, |_| 0)
    }

    /// [`side`], record `i`'s timestamp moved by `shift(i)` ms.
    fn side_with_timestamps(
        values: &[&str],
        base: i64,
        per_batch: usize,
        compression: Compression,
        shift: impl Fn(usize) -> i64,
    ) -> Stream {
        let (tx, rx) = mpsc::channel(values.len() + 1);
        let all = contents(values);
        for (n, chunk) in all.chunks(per_batch).enumerate() {
            let spec = BatchSpec {
                base_offset: base + (n * per_batch) as i64,
                ..BatchSpec::default()
            };
            let mut records = data_records(&spec, chunk);
            for (i, record) in records.iter_mut().enumerate() {
                let value = record.value.as_ref().expect("a value");
                record.timestamp =
                    1_700_000_000_000 + i64::from(value[0]) + shift(n * per_batch + i);
            }
            let batch = RecordBatch::parse(encode(&records, compression)).expect("a batch");
            tx.try_send(Ok(vec![batch])).expect("room");
        }
        Stream::new(rx, base, ("t".to_owned(), 0))
    }

    const TEN: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

    async fn run(source: &[&str], target: &[&str], sample: u32) -> Comparison {
        // Offsets and batch boundaries differ between the sides, as they may
        // between clusters; codecs too.
        compare(
            side(source, 100, 3, Compression::Lz4),
            side(target, 7, 4, Compression::None),
            sample,
        )
        .await
        .expect("readable")
    }

    #[tokio::test]
    async fn equal_streams_agree_with_equal_checksums() {
        let c = run(&TEN, &TEN, 1).await;
        assert_eq!(c.difference, None);
        assert_eq!(c.compared, 10);
        assert_eq!(c.source.records, 10);
        assert_eq!(c.target.records, 10);
        assert_eq!(
            (c.source.first_offset, c.source.last_offset),
            (Some(100), Some(109))
        );
        assert_eq!(
            (c.target.first_offset, c.target.last_offset),
            (Some(7), Some(16))
        );
        assert_eq!(c.source.checksum, c.target.checksum);
    }

    #[tokio::test]
    async fn one_extra_target_record_is_found_where_the_source_ends() {
        let mut longer = TEN.to_vec();
        longer.push("k");
        let c = run(&TEN, &longer, 1).await;
        assert_eq!(
            c.difference,
            Some(Difference {
                kind: DifferenceKind::TargetLonger,
                source_offset: None,
                target_offset: Some(17),
            })
        );
        assert_eq!((c.source.records, c.target.records), (10, 11));
    }

    #[tokio::test]
    async fn one_value_differing_is_found_at_its_offsets() {
        let mut changed = TEN.to_vec();
        changed[4] = "E";
        let c = run(&TEN, &changed, 1).await;
        assert_eq!(
            c.difference,
            Some(Difference {
                kind: DifferenceKind::Contents,
                source_offset: Some(104),
                target_offset: Some(11),
            })
        );
        // Counted to the end all the same.
        assert_eq!((c.source.records, c.target.records), (10, 10));
        assert_ne!(c.source.checksum, c.target.checksum);
    }

    #[tokio::test]
    async fn one_timestamp_differing_is_found() {
        let target = side_with_timestamps(&TEN, 0, 5, Compression::Zstd, |i| i64::from(i == 8));
        let c = compare(side(&TEN, 100, 3, Compression::None), target, 1)
            .await
            .expect("readable");
        assert_eq!(
            c.difference,
            Some(Difference {
                kind: DifferenceKind::Contents,
                source_offset: Some(108),
                target_offset: Some(8),
            })
        );
    }

    #[tokio::test]
    async fn a_shorter_target_is_found_at_the_first_missing_record() {
        let c = run(&TEN, &TEN[..6], 1).await;
        assert_eq!(
            c.difference,
            Some(Difference {
                kind: DifferenceKind::TargetShorter,
                source_offset: Some(106),
                target_offset: None,
            })
        );
        assert_eq!((c.source.records, c.target.records), (10, 6));
    }

    #[tokio::test]
    async fn sampling_compares_every_nth_source_batch_and_counts_all() {
        // Source batches of 3: [a b c] [d e f] [g h i] [j]; every 2nd
        // compares the first and third.
        let c = run(&TEN, &TEN, 2).await;
        assert_eq!(c.difference, None);
        assert_eq!(c.compared, 6);
        assert_eq!((c.source.records, c.target.records), (10, 10));
        // A difference in a skipped batch is not seen; one in a sampled is.
        let mut changed = TEN.to_vec();
        changed[4] = "E";
        assert_eq!(run(&TEN, &changed, 2).await.difference, None);
        changed[7] = "H";
        let found = run(&TEN, &changed, 2).await.difference.expect("found");
        assert_eq!(found.source_offset, Some(107));
        // Counts are compared in full.
        let mut longer = TEN.to_vec();
        longer.push("k");
        assert_eq!(
            run(&TEN, &longer, 2).await.difference.map(|d| d.kind),
            Some(DifferenceKind::TargetLonger)
        );
    }

    #[tokio::test]
    async fn a_source_record_below_the_log_start_is_not_there() {
        // The source's log starts inside its first batch (DeleteRecords).
        let mut source = side(&TEN, 100, 3, Compression::Gzip);
        source.from = 101;
        let c = compare(source, side(&TEN[1..], 0, 4, Compression::None), 1)
            .await
            .expect("readable");
        assert_eq!(c.difference, None);
        assert_eq!(c.source.records, 9);
    }

    fn report(difference: Option<Difference>) -> VerifyReport {
        let summary = |first, last| SideSummary {
            records: 10,
            first_offset: Some(first),
            last_offset: Some(last),
            checksum: 0xabcd,
        };
        VerifyReport {
            flows: vec![FlowVerify {
                name: "default".to_owned(),
                partitions: vec![PartitionVerify {
                    topic: "orders".to_owned(),
                    target_topic: "src.orders".to_owned(),
                    partition: 2,
                    source: summary(100, 109),
                    target: summary(7, 16),
                    compared: 10,
                    difference,
                }],
            }],
            bytes_read: 2_000_000,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_report_names_each_partition_and_where_it_differs() {
        let agreeing = report(None);
        assert!(agreeing.agrees());
        assert_eq!(
            agreeing.to_string(),
            "flow default: 1 partitions, all agree\n  \
             orders-2 -> src.orders-2: agrees\n    \
             source: 10 records, offsets 100..=109, checksum 0000abcd\n    \
             target: 10 records, offsets 7..=16, checksum 0000abcd\n\
             read 2.0 MB in 1.0 s (2.0 MB/s)\n"
        );
        let differing = report(Some(Difference {
            kind: DifferenceKind::Contents,
            source_offset: Some(104),
            target_offset: Some(11),
        }));
        assert!(!differing.agrees());
        let text = differing.to_string();
        assert!(
            text.starts_with("flow default: 1 partitions, 1 differ\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "orders-2 -> src.orders-2: DIFFERS: records differ from source offset 104 / target offset 11\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&differing).expect("json");
        assert_eq!(
            json["flows"][0]["partitions"][0]["difference"],
            serde_json::json!({"kind": "contents", "source_offset": 104, "target_offset": 11})
        );
    }
}
