//! One measured replication run: empty the target, start the tool, poll the
//! target's end offsets (last stable offsets and committed records for a tool
//! that writes in transactions) until it holds everything, stop the tool.

use std::fs::File;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kafka_testkit::{CountingProxy, MeteredChild, Usage};

use crate::committed::committed_records;
use crate::kafka::{delete_topics_except, offsets_by_kafka_tool, per_topic, Ends};
use crate::lab::{DataSet, Lab};
use crate::tools::{Route, Tool, Tools};

/// How often the target's end offsets are read.
const POLL: Duration = Duration::from_millis(100);
/// How long a tool may take to stop once it has caught up.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// From the tool's start until the harness saw the target caught up.
    pub(crate) wall: Duration,
    /// From the first record seen on the target until caught up: the copy rate
    /// without the tool's start-up (JVM, Connect's task assignment, topic creation).
    pub(crate) copying: Duration,
    /// CPU and memory of the tool's process tree at that moment.
    pub(crate) usage: Usage,
    /// Bytes the tool sent to the target broker, counted by the proxy.
    pub(crate) wire_to_target: u64,
    /// Records on the target beyond the source's (duplicates; committed ones for a
    /// transactional tool).
    pub(crate) extra_records: i64,
    /// CPU seconds spent in the idle time after catching up, if asked for.
    pub(crate) idle_cpu_seconds: Option<f64>,
}

/// What every run shares.
pub(crate) struct Runner<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) tools: &'a Tools,
    /// The source topics to keep (tools' own topics there, such as MirrorMaker 2's
    /// offset syncs, are deleted before each run).
    pub(crate) keep_source: Vec<String>,
    /// A run not caught up by then has failed.
    pub(crate) timeout: Duration,
}

impl Runner<'_> {
    /// Runs `tool` once along `route` and measures it until the target holds what
    /// `data` holds.
    pub(crate) fn run(
        &self,
        tool: Tool,
        route: &Route,
        data: &DataSet,
        proxy: &CountingProxy,
        label: &str,
    ) -> Result<Measured> {
        self.run_while(tool, route, proxy, label, Duration::ZERO, || {
            Ok(data.ends.clone())
        })
    }

    /// Runs `tool` once along `route`; `during` runs once the tool has started (to
    /// produce while it copies) and returns the source's end offsets the target must
    /// reach. `proxy` is the one the target address of `route` passes through. Once
    /// caught up, the tool is left running for `idle_for` and its CPU in that time
    /// is measured too.
    pub(crate) fn run_while(
        &self,
        tool: Tool,
        route: &Route,
        proxy: &CountingProxy,
        label: &str,
        idle_for: Duration,
        during: impl FnOnce() -> Result<Ends>,
    ) -> Result<Measured> {
        let Runner {
            lab,
            tools,
            keep_source,
            timeout,
        } = self;
        let timeout = *timeout;
        delete_topics_except(&lab.rt, &lab.dst_admin, &lab.target, &[])?;
        delete_topics_except(&lab.rt, &lab.src_admin, &lab.source, keep_source)?;
        if tool.needs_target_topics() || !route.target_configs.is_empty() {
            let configs: Vec<(&str, &str)> = route
                .target_configs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for topic in &route.topics {
                lab.target
                    .create_topic(topic, route.partitions_per_topic, 1, &configs)?;
            }
        }
        let dir = lab.dir.path().join(label);
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join("tool.log");
        let log = File::create(&log_path)?;
        let mut cmd = tools.command(tool, route, &dir, label)?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        proxy.reset_counters();
        let child = MeteredChild::spawn(cmd)?;
        let started = Instant::now();
        let source_ends = during()?;
        let log_tail = || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let mut first_record = None;
        let (usage, wire_to_target, records) = loop {
            thread::sleep(POLL);
            let exited = child.has_exited();
            // How far a consumer can read: a transactional tool's data counts
            // once committed.
            let ends = if tool.is_transactional() {
                lab.dst_admin.stable_offsets(&lab.rt, &route.topics)?
            } else {
                lab.dst_admin.end_offsets(&lab.rt, &route.topics)?
            };
            if first_record.is_none() && ends.values().any(|&e| e > 0) {
                first_record = Some(started.elapsed());
            }
            if caught_up(tool, &source_ends, &ends) {
                // Taken now: the count below is the harness's time, not the tool's.
                let (usage, wire) = (child.usage(), proxy.bytes_to_upstream());
                let records = if tool.is_transactional() {
                    // Its offsets count the transaction markers too.
                    let records = committed_records(&lab.target.log_dir(0), &ends)?;
                    let total = |e: &Ends| e.values().sum::<i64>();
                    eprintln!(
                        "bench: {label}: {} committed records, {} offsets of markers or aborted records",
                        total(&records),
                        total(&ends) - total(&records)
                    );
                    records
                } else {
                    ends
                };
                if caught_up(tool, &source_ends, &records) {
                    break (usage, wire, records);
                }
            }
            if exited {
                bail!(
                    "{} exited before the target caught up; {}:\n{}",
                    tool.name(),
                    log_path.display(),
                    log_tail()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} had not caught up after {timeout:?}; {}:\n{}",
                    tool.name(),
                    log_path.display(),
                    log_tail()
                );
            }
        };
        let idle_cpu_seconds = (!idle_for.is_zero()).then(|| {
            thread::sleep(idle_for);
            child.usage().cpu_seconds - usage.cpu_seconds
        });
        let peak_rss_kib = child.usage().peak_rss_kib;
        let finished = child.stop(STOP_GRACE)?;
        if tool.is_kafka_mirror() && !finished.status.success() {
            bail!(
                "kafka-mirror exited with {}:\n{}",
                finished.status,
                log_tail()
            );
        }
        let by_kafka = offsets_by_kafka_tool(&lab.target, &route.topics)?;
        for (topic, want) in per_topic(&source_ends) {
            let got = by_kafka.get(topic).copied().unwrap_or(0);
            if got < want {
                bail!("Kafka's GetOffsetShell counts {got} records in {topic} on the target, the source has {want}");
            }
        }
        let source_total: i64 = source_ends.values().sum();
        let target_total: i64 = records.values().sum();
        Ok(Measured {
            wall: usage.wall,
            copying: usage
                .wall
                .saturating_sub(first_record.unwrap_or_default())
                .max(POLL),
            usage: Usage {
                peak_rss_kib,
                ..usage
            },
            wire_to_target,
            extra_records: target_total - source_total,
            idle_cpu_seconds,
        })
    }
}

/// Whether the target holds at least what the source holds: per partition, or per
/// topic for a tool that re-partitions.
fn caught_up(tool: Tool, source: &Ends, target: &Ends) -> bool {
    if tool.keeps_partitions() {
        source
            .iter()
            .all(|(tp, end)| target.get(tp).is_some_and(|t| t >= end))
    } else {
        let target = per_topic(target);
        per_topic(source)
            .iter()
            .all(|(t, end)| target.get(t).is_some_and(|n| n >= end))
    }
}

/// The total of `data`, for messages.
pub(crate) fn describe(data: &DataSet) -> String {
    format!(
        "{} records, {:.1} MB stored ({:.1} MB raw), {} topics, {} partitions",
        data.records,
        data.stored_bytes as f64 / 1e6,
        data.raw_bytes as f64 / 1e6,
        data.topics.len(),
        data.partitions
    )
}
