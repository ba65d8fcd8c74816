//! Failed-over consumer groups: how many records a group reads twice, or never,
//! when it moves to the target with the offsets a tool carried over.
//!
//! The source holds a keyed lz4 topic (batches of up to 50 records) and a topic
//! written in transactions, every third one aborted, both written by librdkafka.
//! Consumer groups (librdkafka, read_committed) read part of each topic, stopping
//! inside every partition at points of their own (one group reads everything),
//! and commit. Each tool then copies both topics into the emptied target and
//! carries the groups' offsets over: kafka-mirror `run --groups --until-caught-up`
//! (identity names), MirrorMaker 2 with checkpoints and `sync.group.offsets` every
//! second (its defaults otherwise: `DefaultReplicationPolicy`, an offset sync
//! every `offset.lag.max` = 100 records). Once kafka-mirror has exited, or
//! MirrorMaker 2's target groups hold an offset for every partition and nothing
//! has moved for [`SETTLE`] (or every record is copied and nothing has moved
//! for [`GIVE_UP`]), the tool is stopped and every group resumes on the
//! target (read_committed, `auto.offset.reset=earliest`) and reads to the end.
//! Every key is unique, so each record read on the target is known: read on the
//! source before (re-read), due, or aborted on the source.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_mirror::cluster::{CommittedOffsets, GroupClient};
use kafka_testkit::{
    consume_group_with_librdkafka, produce_with_librdkafka, Compression, Isolation, MeteredChild,
    ProduceOpts,
};

use crate::kafka::{delete_topics_except, Admin, Ends};
use crate::lab::Lab;
use crate::run::Runner;
use crate::settings::Settings;
use crate::tools::{Route, Tool, MM2_SOURCE_ALIAS};

/// The keyed topic, written without transactions.
const PLAIN_TOPIC: &str = "failover-lz4";
/// The topic written in transactions, some aborted.
const TXN_TOPIC: &str = "failover-txn";
const PARTITIONS: u32 = 3;
/// The transactions `TXN_TOPIC` is written in; every third is aborted.
const TRANSACTIONS: u64 = 15;
/// At most this many records per batch: batches of dozens of records, so
/// committed offsets fall inside them.
const BATCH_RECORDS: &str = "50";
/// Groups `failover-g1` .. `failover-g<GROUPS>`; the last reads everything.
const GROUPS: u32 = 4;
const GROUP_PREFIX: &str = "failover-g";
/// A `max_records` no partition reaches: the resumed groups read to the end.
const READ_TO_THE_END: u64 = i64::MAX as u64;
/// How long MirrorMaker 2's target groups and topics must stay unchanged
/// (ten of its sync intervals) before it counts as done.
const SETTLE: Duration = Duration::from_secs(10);
/// How long they must stay unchanged, every record copied, while some group
/// partition still has no offset: MirrorMaker 2 may never translate an offset
/// below its first offset sync. Those partitions count as "without an offset".
const GIVE_UP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(1);
/// How long a tool may take to stop once done.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// One record written to the source.
#[derive(Debug, Clone)]
struct Written {
    topic: String,
    partition: i32,
    /// In a committed transaction, or in none.
    committed: bool,
}

/// A consumer group's reading on the source.
#[derive(Debug)]
struct SourceGroup {
    id: String,
    /// Keys of the records it read (and committed).
    read: HashSet<Vec<u8>>,
    /// The offsets it committed (after the last record it read), by partition.
    committed: BTreeMap<(String, i32), i64>,
    /// It read everything: a consumer keeping up when the source is lost.
    caught_up: bool,
}

/// The section's source topics and groups, written once before any tool runs.
#[derive(Debug)]
pub(crate) struct FailoverData {
    pub(crate) topics: Vec<String>,
    /// Every record, by its unique key.
    records: HashMap<Vec<u8>, Written>,
    /// Records readable with read_committed, per source partition.
    committed: BTreeMap<(String, i32), u64>,
    /// The source's end offsets.
    ends: Ends,
    groups: Vec<SourceGroup>,
}

impl FailoverData {
    /// Writes both topics (`per_partition` records in each partition, counting
    /// aborted ones) and lets the groups read part of them and commit.
    pub(crate) fn write(lab: &Lab, per_partition: u64) -> Result<FailoverData> {
        let bootstrap = lab.source.bootstrap();
        let topics = vec![PLAIN_TOPIC.to_string(), TXN_TOPIC.to_string()];
        for topic in &topics {
            lab.source.create_topic(topic, PARTITIONS, 1, &[])?;
        }
        let opts = |count: u64, key_prefix: String| ProduceOpts {
            count,
            partitions: Some(PARTITIONS),
            compression: Compression::Lz4,
            key_prefix,
            config: vec![("batch.num.messages".into(), BATCH_RECORDS.into())],
            ..ProduceOpts::default()
        };
        let mut records = HashMap::new();
        let mut remember = |topic: &str, written: Vec<kafka_testkit::DumpedRecord>, committed| {
            for r in written {
                let key = r.key.context("produce.py wrote a record without a key")?;
                let record = Written {
                    topic: topic.to_string(),
                    partition: r.partition,
                    committed,
                };
                anyhow::ensure!(records.insert(key, record).is_none(), "a key written twice");
            }
            Ok(())
        };
        let plain = produce_with_librdkafka(
            &bootstrap,
            PLAIN_TOPIC,
            &opts(per_partition * u64::from(PARTITIONS), "lz4".into()),
        )?;
        remember(PLAIN_TOPIC, plain, true)?;
        let per_transaction = (per_partition / TRANSACTIONS).max(1) * u64::from(PARTITIONS);
        for transaction in 0..TRANSACTIONS {
            let abort = transaction % 3 == 1;
            let written = produce_with_librdkafka(
                &bootstrap,
                TXN_TOPIC,
                &ProduceOpts {
                    transactional_id: Some("failover-bench".into()),
                    abort,
                    ..opts(per_transaction, format!("txn{transaction}"))
                },
            )?;
            remember(TXN_TOPIC, written, !abort)?;
        }
        let mut committed: BTreeMap<(String, i32), u64> = BTreeMap::new();
        for r in records.values().filter(|r| r.committed) {
            *committed.entry((r.topic.clone(), r.partition)).or_default() += 1;
        }
        let groups = (1..=GROUPS)
            .map(|g| read_on_source(lab, g, &committed, &records))
            .collect::<Result<_>>()?;
        Ok(FailoverData {
            ends: lab.src_admin.end_offsets(&lab.rt, &topics)?,
            topics,
            records,
            committed,
            groups,
        })
    }
}

/// Group `g` reads part of each topic (all of it for the last group) and
/// commits: librdkafka shares a partial read out between the partitions, so it
/// stops inside every one.
fn read_on_source(
    lab: &Lab,
    g: u32,
    committed: &BTreeMap<(String, i32), u64>,
    records: &HashMap<Vec<u8>, Written>,
) -> Result<SourceGroup> {
    let id = format!("{GROUP_PREFIX}{g}");
    let mut keys = HashSet::new();
    let mut committed_offsets = BTreeMap::new();
    for (i, topic) in [PLAIN_TOPIC, TXN_TOPIC].into_iter().enumerate() {
        let total: u64 = committed
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, &n)| n)
            .sum();
        let want = stop_point(g, i as u32, total);
        let read = consume_group_with_librdkafka(
            &lab.source.bootstrap(),
            &id,
            topic,
            want,
            Isolation::ReadCommitted,
        )?;
        anyhow::ensure!(
            read.len() as u64 == want,
            "{id} read {} records of {topic} on the source, {want} asked",
            read.len()
        );
        for r in read {
            let key = r.key.context("a record without a key")?;
            let written = records
                .get(&key)
                .with_context(|| format!("{id} read a record nobody wrote"))?;
            anyhow::ensure!(written.committed, "{id} read an aborted record");
            committed_offsets.insert((topic.to_string(), r.partition), r.offset + 1);
            keys.insert(key);
        }
    }
    Ok(SourceGroup {
        id,
        read: keys,
        committed: committed_offsets,
        caught_up: g == GROUPS,
    })
}

/// How many of a topic's `records` group `g` reads: all for the last group; for
/// the others between a fifth and nine tenths, different for each group and
/// topic (`i`). Each partition gets about a third (a record more or less), so
/// the third is kept 10 or more from a multiple of 100: no group stops where an
/// offset sync every 100 records might fall by chance.
fn stop_point(g: u32, i: u32, records: u64) -> u64 {
    if g == GROUPS {
        return records;
    }
    let tenths = (g * 3 + i * 5) % 8 + 2;
    let mut n = records * u64::from(tenths) / 10;
    while !(10..=90).contains(&(n / u64::from(PARTITIONS) % 100)) {
        n += 1;
    }
    n
}

/// The name `tool` gives `topic` on the target when it carries groups over.
fn target_topic(tool: Tool, topic: &str) -> String {
    match tool {
        Tool::Mm2 | Tool::Mm2Eos | Tool::Mm2Tuned => format!("{MM2_SOURCE_ALIAS}.{topic}"),
        Tool::KafkaMirror | Tool::KafkaMirrorEos | Tool::KafkaMirrorInstances(_) | Tool::Mm1 => {
            topic.to_string()
        }
    }
}

/// What one group resuming on the target read, against what it should have.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Group partitions (committed on the source).
    partitions: u64,
    /// Committed records the group had not read on the source.
    to_read: u64,
    /// Records read on the target.
    read: u64,
    /// Of those, read on the source already.
    re_read: u64,
    /// Records due and not read on the target.
    missed: u64,
    /// Records read on the target that were aborted on the source.
    aborted: u64,
    /// The most records re-read in one group partition.
    most_re_read: u64,
    /// The same for the group that had read everything.
    caught_up_re_read: u64,
    /// Group partitions without an offset on the target when the group resumed.
    without_offset: u64,
}

impl Count {
    fn add(&mut self, other: &Count) {
        self.partitions += other.partitions;
        self.to_read += other.to_read;
        self.read += other.read;
        self.re_read += other.re_read;
        self.missed += other.missed;
        self.aborted += other.aborted;
        self.most_re_read = self.most_re_read.max(other.most_re_read);
        self.caught_up_re_read = self.caught_up_re_read.max(other.caught_up_re_read);
        self.without_offset += other.without_offset;
    }
}

/// Runs every tool that carries groups over (kafka-mirror, MirrorMaker 2) and
/// returns the report section.
pub(crate) fn section(
    runner: &Runner<'_>,
    settings: &Settings,
    data: &FailoverData,
) -> Result<String> {
    let lz4_records = data
        .records
        .values()
        .filter(|r| r.topic == PLAIN_TOPIC)
        .count();
    let txn_records = data.records.len() - lz4_records;
    let aborted = data.records.values().filter(|r| !r.committed).count();
    let mut text = format!(
        "### Consumer groups failed over: records read twice or missed\n\n\
         Source: `{PLAIN_TOPIC}`, {lz4_records} keyed records; `{TXN_TOPIC}`, {txn_records} keyed records written in \
         {TRANSACTIONS} transactions, every third aborted ({aborted} records); {PARTITIONS} partitions each, lz4, \
         batches of up to {BATCH_RECORDS} records, written by librdkafka. {GROUPS} consumer groups (librdkafka, \
         read_committed) each read part of each topic, stopping inside every partition at points of their own, \
         and commit; the last one reads everything (a consumer keeping up when the source is lost). Each tool \
         copies both topics into the emptied target and carries the groups over; then each group resumes on the \
         target (librdkafka, read_committed, auto.offset.reset=earliest) and reads to the end.\n\n\
         | tool | topic | group partitions | records left to read | read on the target | re-read | missed | \
         aborted on the source, read | most re-read in one partition | the same, by the caught-up group |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    let tools: Vec<Tool> = settings
        .tools
        .iter()
        .copied()
        .filter(|t| matches!(t, Tool::KafkaMirror | Tool::Mm2))
        .collect();
    for &tool in &tools {
        let label = format!("failover-{}", tool.name());
        eprintln!("bench: {label}");
        match measure(runner, tool, data, &label) {
            Ok(by_topic) => {
                let mut total = Count::default();
                for (topic, count) in &by_topic {
                    total.add(count);
                    eprintln!("bench: {label}: {topic}: {count:?}");
                    row(&mut text, tool, topic, count);
                }
                row(&mut text, tool, "both", &total);
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                let first = format!("{e:#}");
                let _ = writeln!(
                    text,
                    "| {} | failed: {} | | | | | | | | |",
                    tool.name(),
                    first.lines().next().unwrap_or("")
                );
            }
        }
    }
    if tools.is_empty() {
        text.push_str("| (BENCH_TOOLS names neither kafka-mirror nor mm2) | | | | | | | | | |\n");
    }
    let _ = write!(
        text,
        "\n- kafka-mirror: `run --groups '{GROUP_PREFIX}.*' --until-caught-up`, identity names, \
         default settings (the last group sync runs once caught up)\n\
         - mm2: connect-mirror {}, dedicated mode, `emit.checkpoints.enabled` and \
         `sync.group.offsets.enabled` with both intervals at 1 s, otherwise its defaults \
         (DefaultReplicationPolicy: target topics `{MM2_SOURCE_ALIAS}.<topic>`; `offset.lag.max` 100); \
         stopped once its target groups had held the same offsets for {} s \
         ({} s when some group partition still had none)\n\n\
         \"Re-read\": records the group had read (and committed) on the source and read again on the target; \
         \"missed\": committed records it had not read on the source and did not read on the target; \
         \"aborted on the source, read\": records of aborted transactions the group reads on the target, \
         which it never saw on the source; \"records left to read\": committed records the groups had not read on \
         the source, what each should read on the target exactly once. Records are matched by their unique keys.\n",
        kafka_testkit::MIRROR_MAKER2_VERSION,
        SETTLE.as_secs(),
        GIVE_UP.as_secs()
    );
    Ok(text)
}

fn row(text: &mut String, tool: Tool, topic: &str, c: &Count) {
    let partitions = if c.without_offset > 0 {
        format!("{} ({} without an offset)", c.partitions, c.without_offset)
    } else {
        c.partitions.to_string()
    };
    let _ = writeln!(
        text,
        "| {} | {topic} | {partitions} | {} | {} | {} | {} | {} | {} | {} |",
        tool.name(),
        c.to_read,
        c.read,
        c.re_read,
        c.missed,
        c.aborted,
        c.most_re_read,
        c.caught_up_re_read
    );
}

/// One tool: carries the groups over, then resumes each on the target and
/// counts, by source topic.
fn measure(
    runner: &Runner<'_>,
    tool: Tool,
    data: &FailoverData,
    label: &str,
) -> Result<BTreeMap<String, Count>> {
    let lab = runner.lab;
    let target_offsets = carry_over(runner, tool, data, label)?;
    let mut counts: BTreeMap<String, Count> = BTreeMap::new();
    for group in &data.groups {
        let offsets = target_offsets.get(&group.id);
        let mut seen: HashSet<&[u8]> = HashSet::new();
        // Per source partition.
        let mut re_read: BTreeMap<(&str, i32), u64> = BTreeMap::new();
        for topic in &data.topics {
            let read = consume_group_with_librdkafka(
                &lab.target.bootstrap(),
                &group.id,
                &target_topic(tool, topic),
                READ_TO_THE_END,
                Isolation::ReadCommitted,
            )?;
            for r in &read {
                let key = r.key.as_deref().context("a record without a key")?;
                let (key, written) = data
                    .records
                    .get_key_value(key)
                    .with_context(|| format!("{} read a record nobody wrote", group.id))?;
                anyhow::ensure!(
                    written.topic == *topic && written.partition == r.partition,
                    "{} read a record of {}-{} in {topic}-{} on the target",
                    group.id,
                    written.topic,
                    written.partition,
                    r.partition
                );
                anyhow::ensure!(
                    seen.insert(key),
                    "{} read a record twice on the target",
                    group.id
                );
                let count = counts.entry(topic.clone()).or_default();
                count.read += 1;
                if !written.committed {
                    count.aborted += 1;
                } else if group.read.contains(key) {
                    count.re_read += 1;
                    *re_read.entry((topic, r.partition)).or_default() += 1;
                }
            }
        }
        for (key, written) in data.records.iter().filter(|(_, w)| w.committed) {
            let count = counts.entry(written.topic.clone()).or_default();
            if !group.read.contains(key) {
                count.to_read += 1;
                if !seen.contains(key.as_slice()) {
                    count.missed += 1;
                }
            }
        }
        for ((topic, partition), source_offset) in &group.committed {
            let count = counts.entry(topic.clone()).or_default();
            count.partitions += 1;
            let target = offsets.and_then(|o| o.get(&(target_topic(tool, topic), *partition)));
            if target.is_none() {
                count.without_offset += 1;
            }
            let n = re_read
                .get(&(topic.as_str(), *partition))
                .copied()
                .unwrap_or(0);
            count.most_re_read = count.most_re_read.max(n);
            if group.caught_up {
                count.caught_up_re_read = count.caught_up_re_read.max(n);
            }
            eprintln!(
                "bench: {label}: {} {topic}-{partition}: committed {source_offset} of {} on the source, {} on the target; re-read {n}",
                group.id,
                data.ends.get(&(topic.clone(), *partition)).copied().unwrap_or(-1),
                target.map_or("none".to_string(), |t| t.offset.to_string())
            );
        }
    }
    Ok(counts)
}

/// Empties the target, runs `tool` until it has carried the groups over, stops
/// it and returns the target groups' offsets as it left them.
fn carry_over(
    runner: &Runner<'_>,
    tool: Tool,
    data: &FailoverData,
    label: &str,
) -> Result<BTreeMap<String, CommittedOffsets>> {
    let lab = runner.lab;
    delete_topics_except(&lab.rt, &lab.dst_admin, &lab.target, &[])?;
    delete_topics_except(&lab.rt, &lab.src_admin, &lab.source, &runner.keep_source)?;
    // The broker drops a group's offsets of deleted topics: an earlier run's
    // must be gone before the next tool carries the groups over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while group_offsets(lab, &lab.dst_admin, data)?
        .values()
        .any(|o| !o.is_empty())
    {
        if Instant::now() > deadline {
            bail!("the target groups still hold offsets of deleted topics after 60 s");
        }
        thread::sleep(POLL);
    }
    let route = Route {
        source: lab.source.bootstrap(),
        target: lab.target.bootstrap(),
        topics: data.topics.clone(),
        partitions_per_topic: PARTITIONS,
        target_configs: Vec::new(),
        groups: Some(format!("{GROUP_PREFIX}.*")),
    };
    let dir = lab.dir.path().join(label);
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("tool.log");
    let log = File::create(&log_path)?;
    let mut cmd = runner.tools.command(tool, &route, &dir, label)?;
    cmd.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let child = MeteredChild::spawn(cmd)?;
    let started = Instant::now();
    let log_tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let mut last: Option<(Ends, BTreeMap<String, CommittedOffsets>)> = None;
    let mut unchanged_since = Instant::now();
    // What the target lacked at the last look, for the error on a timeout.
    let mut lacking: Vec<String> = Vec::new();
    loop {
        thread::sleep(POLL);
        if tool == Tool::KafkaMirror && child.has_exited() {
            let finished = child.wait()?;
            if !finished.status.success() {
                bail!(
                    "kafka-mirror exited with {}; {}:\n{}",
                    finished.status,
                    log_path.display(),
                    log_tail()
                );
            }
            return group_offsets(lab, &lab.dst_admin, data);
        }
        if child.has_exited() {
            bail!(
                "{} exited; {}:\n{}",
                tool.name(),
                log_path.display(),
                log_tail()
            );
        }
        if started.elapsed() > runner.timeout {
            bail!(
                "{} had not carried the groups over after {:?} (missing: {}); {}:\n{}",
                tool.name(),
                runner.timeout,
                lacking.join(", "),
                log_path.display(),
                log_tail()
            );
        }
        if tool == Tool::KafkaMirror {
            continue;
        }
        let target_topics: Vec<String> =
            data.topics.iter().map(|t| target_topic(tool, t)).collect();
        let now = (
            lab.dst_admin.end_offsets(&lab.rt, &target_topics)?,
            group_offsets(lab, &lab.dst_admin, data)?,
        );
        if last.as_ref() != Some(&now) {
            unchanged_since = Instant::now();
        }
        let (records, offsets) = missing(tool, data, &now.0, &now.1);
        let quiet = unchanged_since.elapsed();
        let done =
            records.is_empty() && ((offsets.is_empty() && quiet >= SETTLE) || quiet >= GIVE_UP);
        lacking = records.into_iter().chain(offsets).collect();
        last = Some(now);
        if done {
            child.stop(STOP_GRACE)?;
            return Ok(last.map(|(_, offsets)| offsets).unwrap_or_default());
        }
    }
}

/// What the target still lacks: partitions holding fewer records than their
/// source partition's committed ones, and group partitions without an offset.
/// Both empty once the tool has carried everything over.
fn missing(
    tool: Tool,
    data: &FailoverData,
    ends: &Ends,
    offsets: &BTreeMap<String, CommittedOffsets>,
) -> (Vec<String>, Vec<String>) {
    let mut records = Vec::new();
    for ((topic, partition), &n) in &data.committed {
        let copy = target_topic(tool, topic);
        let end = ends.get(&(copy.clone(), *partition)).copied().unwrap_or(0);
        if end < n as i64 {
            records.push(format!("{copy}-{partition} holds {end} of {n} records"));
        }
    }
    let mut group_offsets = Vec::new();
    for g in &data.groups {
        for (t, p) in g.committed.keys() {
            let key = (target_topic(tool, t), *p);
            if !offsets.get(&g.id).is_some_and(|o| o.contains_key(&key)) {
                group_offsets.push(format!("{} has no offset for {}-{p}", g.id, key.0));
            }
        }
    }
    (records, group_offsets)
}

/// The committed offsets of every group of the section on one cluster.
fn group_offsets(
    lab: &Lab,
    admin: &Admin,
    data: &FailoverData,
) -> Result<BTreeMap<String, CommittedOffsets>> {
    lab.rt.block_on(async {
        let mut client = GroupClient::new(admin.cluster().clone()).await?;
        let mut all = BTreeMap::new();
        for g in &data.groups {
            all.insert(g.id.clone(), client.committed_offsets(&g.id).await?);
        }
        Ok(all)
    })
}
