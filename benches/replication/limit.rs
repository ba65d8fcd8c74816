//! What the two brokers manage with this data, the ceiling for any replicator on
//! this machine: the source's fetch-only rate and the target's produce-only rate for
//! the same batches, each alone, and both at once (a copy with no replicator logic).
//!
//! All use kafka-mirror's own protocol layer (`cluster`, `batch`) rather than
//! Kafka's perf tools: `kafka-consumer-perf-test` decompresses every record and
//! `kafka-producer-perf-test` makes its own data and batches, so neither measures
//! moving *these* stored batches. The loops here do only what the brokers must:
//! - fetch: one Fetch at a time for every unfinished partition (64 MiB per
//!   response, 8 MiB per partition), batches split without copying;
//! - produce: the fetched batches, rewritten beforehand (base offset 0, no producer
//!   id) so the clock sees only the wire and the broker, one batch per partition per
//!   Produce (Kafka's rule), acks=all, 5 requests pipelined on the connection;
//! - both at once: the fetch loop over the source while the produce loop sends the
//!   batches of the first pass, in one process, as a replicator's two halves run.
//!   Each alone has a broker and the machine to itself; a replicator never does,
//!   so this is the fair ceiling, and its CPU per GB (the bench process's) is the
//!   floor of what moving these bytes through user space costs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_mirror::batch::{split_batches, Fetched, ProducerStamp, RecordBatch};
use kafka_mirror::cluster::{
    fetch_request, produce_request, response_partitions, Cluster, PartitionFetch, TopicNames,
};
use kafka_mirror::net::splice::{Splice, Splices};
use kafka_protocol::messages::ProduceRequest;
use kafka_testkit::own_cpu_seconds;

use crate::kafka::delete_topics_except;
use crate::lab::{DataSet, Lab};
use crate::report::median;

const FETCH_MAX_BYTES: i32 = 64 << 20;
const PARTITION_MAX_BYTES: i32 = 8 << 20;
const IN_FLIGHT: usize = 5;

/// A Produce request and the splices its frame is encoded with.
type Produce = (ProduceRequest, Splices);

type Batches = BTreeMap<(String, i32), VecDeque<Splice>>;

/// kafka-mirror's median rates from the throughput section: end to end, and from
/// the first record on the target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MirrorRates {
    pub(crate) end_to_end: f64,
    pub(crate) copying: f64,
}

/// Runs the loops `reps` times and returns the report section (medians).
pub(crate) fn section(
    lab: &Lab,
    data: &DataSet,
    reps: u32,
    mirror: Option<MirrorRates>,
) -> Result<String> {
    let mb = data.stored_bytes as f64 / 1e6;
    let rate = |time: Duration| mb / time.as_secs_f64();
    let (mut fetch_mb_s, mut produce_mb_s, mut copy_mb_s, mut copy_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=reps {
        let passes = passes(lab, data, rep)?;
        fetch_mb_s.push(rate(passes.fetch));
        produce_mb_s.push(rate(passes.produce));
        copy_mb_s.push(rate(passes.copy));
        copy_cpu.push(passes.copy_cpu_seconds / (mb / 1e3));
    }
    let (fetch_mb_s, produce_mb_s) = (median(&mut fetch_mb_s), median(&mut produce_mb_s));
    let (copy_mb_s, copy_cpu) = (median(&mut copy_mb_s), median(&mut copy_cpu));
    let alone = fetch_mb_s.min(produce_mb_s);
    let mut text = format!(
        "### Limit of these brokers for this data (median of {reps})\n\n\
         | | MB/s | CPU s/GB |\n|---|---|---|\n\
         | source, fetch only | {fetch_mb_s:.1} | |\n\
         | target, produce only (the same batches) | {produce_mb_s:.1} | |\n\
         | both at once (fetch the source while producing to the target) | {copy_mb_s:.1} | {copy_cpu:.2} |\n"
    );
    if let Some(m) = mirror {
        for (what, value) in [
            ("end to end (throughput table)", m.end_to_end),
            ("after the first record", m.copying),
        ] {
            let _ = writeln!(
                text,
                "| kafka-mirror, {what} | {value:.1} = {:.0}% of the smaller alone, {:.0}% of both at once | |",
                100.0 * value / alone,
                100.0 * value / copy_mb_s
            );
        }
    }
    text.push_str(
        "\nFetch and produce loops written with kafka-mirror's own protocol layer: one Fetch at a time \
         (64 MiB, 8 MiB per partition); new batch headers written before the clock starts, one batch per \
         partition per Produce, sent spliced as kafka-mirror sends them, acks=all, 5 requests pipelined. \
         Kafka's perf tools would decompress or re-batch the data. \"Both at once\" runs the two loops \
         together in one process, as a replicator's halves run; its CPU is the bench process's, \
         with no replicator logic: a floor for moving these bytes through user space.\n",
    );
    Ok(text)
}

/// How long each pass took.
struct Passes {
    fetch: Duration,
    produce: Duration,
    copy: Duration,
    copy_cpu_seconds: f64,
}

/// A fetch-only pass over the source, a produce-only pass of what it fetched into
/// emptied target topics, then both at once.
fn passes(lab: &Lab, data: &DataSet, rep: u32) -> Result<Passes> {
    eprintln!("bench: limit-{rep}: fetch-only from the source");
    let started = Instant::now();
    let batches = fetch_checked(lab, data)?;
    let fetch = started.elapsed();

    eprintln!("bench: limit-{rep}: produce-only into the target");
    let requests = produce_requests(lab, data, batches.clone())?;
    let started = Instant::now();
    lab.rt
        .block_on(produce_all(lab.dst_admin.cluster(), requests))
        .context("produce-only loop")?;
    let produce = started.elapsed();

    eprintln!("bench: limit-{rep}: fetch and produce at once");
    let requests = produce_requests(lab, data, batches)?;
    let (started, cpu_before) = (Instant::now(), own_cpu_seconds()?);
    // This time the fetched batches are only counted: a replicator lets go of
    // them once produced, so their memory is reused instead of growing.
    let mut fetched = 0;
    let (fetch_result, produced) = lab.rt.block_on(async {
        tokio::join!(
            fetch_all(lab.src_admin.cluster(), data, |_, batch| {
                fetched += batch.as_bytes().len() as u64;
                Ok(())
            }),
            produce_all(lab.dst_admin.cluster(), requests)
        )
    });
    let copy = started.elapsed();
    let copy_cpu_seconds = own_cpu_seconds()? - cpu_before;
    produced.context("produce loop, with the fetch loop")?;
    fetch_result.context("fetch loop, with the produce loop")?;
    check_fetched(fetched, data)?;
    Ok(Passes {
        fetch,
        produce,
        copy,
        copy_cpu_seconds,
    })
}

/// The fetch loop, keeping every batch with the header it will be produced with,
/// checked to have read every stored byte.
fn fetch_checked(lab: &Lab, data: &DataSet) -> Result<Batches> {
    let mut batches = Batches::new();
    let mut fetched = 0;
    lab.rt
        .block_on(fetch_all(lab.src_admin.cluster(), data, |key, batch| {
            fetched += batch.as_bytes().len() as u64;
            let header = batch.produce_header(ProducerStamp::NONE);
            let splice = Splice::new(batch.as_bytes().clone(), header)
                .context("a batch is longer than its header")?;
            batches.entry(key.clone()).or_default().push_back(splice);
            Ok(())
        }))
        .context("fetch-only loop")?;
    check_fetched(fetched, data)?;
    Ok(batches)
}

fn check_fetched(fetched: u64, data: &DataSet) -> Result<()> {
    anyhow::ensure!(
        fetched == data.stored_bytes,
        "fetched {fetched} bytes of batches, the source stores {}",
        data.stored_bytes
    );
    Ok(())
}

/// Fetches every partition of `data` from offset 0 to its end, handing each batch
/// to `on_batch` in order.
async fn fetch_all(
    cluster: &Arc<Cluster>,
    data: &DataSet,
    mut on_batch: impl FnMut(&(String, i32), RecordBatch) -> Result<()>,
) -> Result<()> {
    let metadata = cluster.metadata().await?;
    let names_by_id = TopicNames::of(&metadata);
    let mut next: BTreeMap<(String, i32), i64> =
        data.ends.keys().map(|tp| (tp.clone(), 0)).collect();
    loop {
        let mut by_leader: BTreeMap<i32, Vec<PartitionFetch>> = BTreeMap::new();
        for ((topic, partition), offset) in &next {
            if *offset >= data.ends[&(topic.clone(), *partition)] {
                continue;
            }
            let leader = metadata
                .leader(topic, *partition)
                .ok_or_else(|| anyhow!("{topic}-{partition} has no leader"))?;
            by_leader.entry(leader).or_default().push(PartitionFetch {
                topic: topic.clone(),
                topic_id: metadata.topics[topic].id,
                partition: *partition,
                offset: *offset,
                last_fetched_epoch: -1,
                leader_epoch: -1,
                max_bytes: PARTITION_MAX_BYTES,
            });
        }
        if by_leader.is_empty() {
            return Ok(());
        }
        for (leader, partitions) in by_leader {
            let request =
                fetch_request(&partitions, 0, Duration::from_millis(100), FETCH_MAX_BYTES);
            let response = cluster.send(leader, request).await?;
            for (topic, partition) in response_partitions(response, &names_by_id) {
                if partition.error_code != 0 {
                    bail!(
                        "fetching {topic}-{}: error code {}",
                        partition.partition_index,
                        partition.error_code
                    );
                }
                let key = (topic.to_string(), partition.partition_index);
                let Some(records) = partition.records else {
                    continue;
                };
                for batch in split_batches(&records) {
                    let batch = batch.with_context(|| format!("a batch of {}-{}", key.0, key.1))?;
                    // The bench writes its data with a 4.x producer: v2 batches only.
                    let Fetched::Batch(batch) = batch else {
                        bail!("{}-{} holds old-format messages", key.0, key.1);
                    };
                    if let Some(n) = next.get_mut(&key) {
                        *n = batch.next_offset();
                    }
                    on_batch(&key, batch)?;
                }
            }
        }
    }
}

/// Empties the target topics, then builds Produce requests carrying batch i of
/// every partition, in order.
fn produce_requests(
    lab: &Lab,
    data: &DataSet,
    mut batches: Batches,
) -> Result<Vec<(i32, Produce)>> {
    delete_topics_except(&lab.rt, &lab.dst_admin, &lab.target, &[])?;
    for topic in &data.topics {
        lab.target
            .create_topic(topic, data.partitions_per_topic, 1, &[])?;
    }
    lab.dst_admin
        .wait_ready(&lab.rt, &data.topics, data.partitions as usize)?;
    let metadata = lab.dst_admin.metadata(&lab.rt)?;
    let mut requests = Vec::new();
    loop {
        let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<(i32, Splice)>>> = BTreeMap::new();
        for ((topic, partition), queue) in batches.iter_mut() {
            if let Some(batch) = queue.pop_front() {
                let leader = metadata
                    .leader(topic, *partition)
                    .ok_or_else(|| anyhow!("target {topic}-{partition} has no leader"))?;
                by_leader
                    .entry(leader)
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push((*partition, batch));
            }
        }
        if by_leader.is_empty() {
            return Ok(requests);
        }
        for (leader, topics) in by_leader {
            let request = produce_request(&metadata, topics, 30_000);
            requests.push((leader, request));
        }
    }
}

/// Sends the requests in order, at most `IN_FLIGHT` unanswered, and checks every answer.
async fn produce_all(cluster: &Arc<Cluster>, requests: Vec<(i32, Produce)>) -> Result<()> {
    let mut pending = VecDeque::new();
    for (leader, (request, splices)) in requests {
        if pending.len() >= IN_FLIGHT {
            check(pending.pop_front())?.await?;
        }
        let response = cluster.enqueue_spliced(leader, request, splices).await?;
        pending.push_back(Box::pin(async move {
            let response = response.response().await.map_err(|e| anyhow!("{e}"))?;
            for topic in response.responses {
                for p in topic.partition_responses {
                    if p.error_code != 0 {
                        bail!(
                            "producing to {}-{}: error code {}",
                            topic.name.0,
                            p.index,
                            p.error_code
                        );
                    }
                }
            }
            Ok(())
        }));
    }
    while let Some(p) = pending.pop_front() {
        p.await?;
    }
    Ok(())
}

fn check<T>(item: Option<T>) -> Result<T> {
    item.ok_or_else(|| anyhow!("no request in flight"))
}
