//! One measured replication run: empty the target, start the tool (every
//! instance of it, for a variant of several), poll the
//! target's end offsets (last stable offsets and committed records for a tool
//! that writes in transactions) until it holds everything, stop the tool.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use kafka_testkit::{CountingProxy, Finished, MeteredChild, Usage};

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
    /// CPU and memory of the tool's process tree at that moment (summed over
    /// the trees of a variant of several instances).
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
        proxy.reset_counters();
        let processes = Processes::spawn(tools, tool, route, &dir, label)?;
        let started = Instant::now();
        let source_ends = during()?;
        let mut first_record = None;
        let (usage, wire_to_target, records) = loop {
            thread::sleep(POLL);
            let exited = processes.any_exited();
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
                let (usage, wire) = (processes.usage(), proxy.bytes_to_upstream());
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
                    "{} exited before the target caught up; {}",
                    tool.name(),
                    processes.log_tails()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} had not caught up after {timeout:?}; {}",
                    tool.name(),
                    processes.log_tails()
                );
            }
        };
        let idle_cpu_seconds = (!idle_for.is_zero()).then(|| {
            thread::sleep(idle_for);
            processes.usage().cpu_seconds - usage.cpu_seconds
        });
        let peak_rss_kib = processes.usage().peak_rss_kib;
        processes.stop(tool.is_kafka_mirror())?;
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

/// The processes of one run: one per instance of the tool, started together,
/// each writing its own log.
struct Processes {
    /// Each instance and its log file.
    children: Vec<(MeteredChild, PathBuf)>,
}

impl Processes {
    fn spawn(tools: &Tools, tool: Tool, route: &Route, dir: &Path, label: &str) -> Result<Self> {
        let mut children = Vec::new();
        for instance in 1..=tool.instances() {
            let log_path = match instance {
                1 => dir.join("tool.log"),
                n => dir.join(format!("tool-{n}.log")),
            };
            let log = File::create(&log_path)?;
            let mut cmd = tools.command(tool, route, dir, label)?;
            cmd.stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            children.push((MeteredChild::spawn(cmd)?, log_path));
        }
        Ok(Processes { children })
    }

    fn any_exited(&self) -> bool {
        self.children.iter().any(|(c, _)| c.has_exited())
    }

    /// CPU and peak RSS summed over the instances' process trees (the RSS sum is
    /// of each tree's own peak); the wall time of the first one started.
    fn usage(&self) -> Usage {
        self.children
            .iter()
            .map(|(c, _)| c.usage())
            .reduce(|sum, u| Usage {
                wall: sum.wall,
                cpu_seconds: sum.cpu_seconds + u.cpu_seconds,
                peak_rss_kib: sum.peak_rss_kib + u.peak_rss_kib,
            })
            .unwrap_or_default()
    }

    /// The last lines of every log, for an error message.
    fn log_tails(&self) -> String {
        self.children
            .iter()
            .map(|(_, path)| log_tail(path))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every instance at once (SIGTERM, SIGKILL after [`STOP_GRACE`]);
    /// with `must_succeed`, an exit other than 0 is an error.
    fn stop(self, must_succeed: bool) -> Result<()> {
        let stopped: Vec<(Result<Finished>, PathBuf)> = thread::scope(|scope| {
            let stopping: Vec<_> = self
                .children
                .into_iter()
                .map(|(child, path)| (scope.spawn(move || child.stop(STOP_GRACE)), path))
                .collect();
            stopping
                .into_iter()
                .map(|(handle, path)| {
                    let finished = handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("stopping the tool panicked")));
                    (finished, path)
                })
                .collect()
        });
        for (finished, path) in stopped {
            let status = finished?.status;
            if must_succeed && !status.success() {
                bail!("the tool exited with {status}; {}", log_tail(&path));
            }
        }
        Ok(())
    }
}

/// The last 30 lines of the log at `path`, after its name.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{}:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
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
    let days = data.age.as_secs() / (24 * 3600);
    let age = if days > 0 {
        format!(", CreateTime {days} days back (a backfill)")
    } else {
        String::new()
    };
    format!(
        "{} records, {:.1} MB stored ({:.1} MB raw), {} topics, {} partitions{age}",
        data.records,
        data.stored_bytes as f64 / 1e6,
        data.raw_bytes as f64 / 1e6,
        data.topics.len(),
        data.partitions
    )
}
