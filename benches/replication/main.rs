//! End-to-end replication benchmark: kafka-mirror against MirrorMaker 2 (defaults
//! and tuned) and MirrorMaker 1, on two real local Kafka clusters. kafka-mirror and
//! MirrorMaker 2 also run exactly-once (`kafka-mirror-eos`, `mm2-eos`), reported
//! against themselves without it. `kafka-mirror-x2` and `kafka-mirror-x3` (opt-in)
//! start two or three kafka-mirror processes with the same name, which share the
//! partitions, reported against one.
//!
//!     cargo bench --bench replication
//!     BENCH_DATA_MB=100 BENCH_TOOLS=kafka-mirror,mm2 BENCH_REPS=1 cargo bench --bench replication
//!
//! Sections (`BENCH_SECTIONS`, see `settings.rs` for every variable):
//! - **throughput**: a data set of JSON-like records with keys and headers (lz4 and
//!   zstd topics, librdkafka) is copied by each tool in turn (A B C A B C) into
//!   emptied target topics. MB/s is the source's stored bytes over the time from the
//!   tool's start until the target's end offsets reach the source's; CPU and peak RSS
//!   of the tool's process tree come from /proc; the bytes sent to the target are
//!   counted by a proxy the target broker advertises, not by the tool. A tool that
//!   writes in transactions is caught up when the target's committed records (counted
//!   in its segment files up to the last stable offsets) reach the source's.
//! - **limit**: what the same brokers do alone, fetch-only on the source and
//!   produce-only (the same batches) on the target; kafka-mirror's MB/s over the
//!   smaller is its efficiency.
//! - **wan**: the same through toxiproxy in front of both clusters (latency each way
//!   and a bandwidth cap), MB/s as a fraction of the cap.
//! - **sweep**: throughput at several round-trip times, no cap.
//! - **latency**: append-to-append delay at a steady produce rate, and the delay
//!   until a read_committed consumer of the target receives each record.
//! - **idle**: thousands of partitions holding little data, copied and then left
//!   idle: CPU while idle and peak memory.
//! - **failover**: consumer groups read part of the source and commit; kafka-mirror
//!   and MirrorMaker 2 each copy the data and carry the groups over; each group
//!   resumes on the target, and the records it reads twice or misses are counted.
//! - **verify**: kafka-mirror copies the throughput data set, then `kafka-mirror
//!   verify` compares source and target record by record, in full and with
//!   `--sample 10`: MB read, wall and CPU time, MB/s per core, peak RSS.
//!
//! `BENCH_SMOKE=1` runs every section once on a few MB with kafka-mirror and
//! MirrorMaker 2, then reads the report back and checks it (CI's smoke).
//!
//! It writes a markdown report (default `target/bench/replication.md`, the smoke's
//! `target/bench/replication-smoke.md`) and prints it.

mod committed;
mod failover;
mod idle;
mod kafka;
mod lab;
mod latency;
mod limit;
mod report;
mod run;
mod settings;
mod tools;
mod verify;
mod wan;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use kafka_testkit::DEFAULT_KAFKA_VERSION;

use crate::failover::FailoverData;
use crate::lab::{DataSet, Lab};
use crate::report::{machine, Report, ToolSummary};
use crate::run::{describe, Measured, Runner};
use crate::settings::{Section, Settings};
use crate::tools::{Route, Tool, Tools};
use crate::wan::Wan;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replication bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    eprintln!("bench: {settings:?}");
    let tools = Tools::prepare(&settings)?;
    let wan = if settings.runs(Section::Wan) || settings.runs(Section::Sweep) {
        Some(Wan::prepare()?)
    } else {
        None
    };
    let (source_extra, target_extra) = match &wan {
        Some(w) => (vec![w.source_listener()], vec![w.target_listener()]),
        None => (Vec::new(), Vec::new()),
    };
    let lab = Lab::start(source_extra, target_extra)?;
    if let Some(w) = &wan {
        w.connect(&lab)?;
    }
    let mut report = Report::default();
    report.push(&format!(
        "Made by `{}`.\n\nMachine: {}; both brokers, the producers and the tool share it. \
         Kafka {DEFAULT_KAFKA_VERSION}, two single-broker KRaft clusters on loopback (heap 768 MiB each).",
        settings.command_line(),
        machine()
    ));
    if settings.smoke {
        report.push(
            "A smoke run (`BENCH_SMOKE`): every section once on a few MB, to show that the harness \
             runs; its figures say nothing about speed.",
        );
    }

    let age = Duration::from_secs(u64::from(settings.data_age_days) * 24 * 3600);
    let write = |prefix: &str, mib: u64| -> Result<DataSet> {
        eprintln!("bench: writing {mib} MiB into {prefix}-*");
        let data = DataSet::write(&lab, prefix, mib, settings.partitions, age)?;
        eprintln!("bench: {prefix}: {}", describe(&data));
        Ok(data)
    };
    let main_data = if [Section::Throughput, Section::Limit, Section::Verify]
        .iter()
        .any(|&s| settings.runs(s))
    {
        Some(write("bench", settings.data_mib)?)
    } else {
        None
    };
    let wan_data = if settings.runs(Section::Wan) {
        Some(write("wan", settings.wan_data_mib)?)
    } else {
        None
    };
    let sweep_data = if settings.runs(Section::Sweep) {
        Some(write("sweep", settings.sweep_data_mib)?)
    } else {
        None
    };
    let idle_data = if settings.runs(Section::Idle) {
        let partitions = settings.idle_partitions.div_ceil(2);
        eprintln!("bench: creating the idle topics ({partitions} partitions each)");
        Some(DataSet::write(&lab, "idle", 1, partitions, age)?)
    } else {
        None
    };
    let failover_data = if settings.runs(Section::Failover) {
        eprintln!("bench: writing the failover topics and reading them with consumer groups");
        Some(FailoverData::write(&lab, settings.failover_records)?)
    } else {
        None
    };
    // The data just written is still being flushed to disk; the first run
    // would pay for that (77.5 MB/s against 161.5 for the next kafka-mirror run).
    let synced = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    anyhow::ensure!(synced.success(), "sync failed: {synced}");
    let mut keep_source = vec![latency::TOPIC.to_string()];
    for d in [&main_data, &wan_data, &sweep_data, &idle_data]
        .into_iter()
        .flatten()
    {
        keep_source.extend(d.topics.iter().cloned());
    }
    if let Some(d) = &failover_data {
        keep_source.extend(d.topics.iter().cloned());
    }
    let runner = Runner {
        lab: &lab,
        tools: &tools,
        keep_source,
        timeout: Duration::from_secs(settings.run_timeout_s),
    };

    if let Some(data) = &main_data {
        report.push(&format!(
            "Data set: {}; topics `bench-lz4` and `bench-zstd`, {} partitions each, written by librdkafka \
             (confluent-kafka; JSON order events of 200 B–3 kB, keys, 1–3 headers; acks=all, linger.ms=20, batch.size=128 KiB).",
            describe(data),
            settings.partitions
        ));
    }
    let mut mirror_rates = None;
    if let (true, Some(data)) = (settings.runs(Section::Throughput), &main_data) {
        let route = data.route(lab.source.bootstrap(), lab.metered.addr().to_string());
        let summaries = alternate(&runner, &settings, &route, data, &lab.metered, "lan")?;
        mirror_rates =
            report::succeeded(&summaries, Tool::KafkaMirror).map(|s| limit::MirrorRates {
                end_to_end: s.median_mb_s(),
                copying: s.copying_mb_s,
            });
        let mut text = format!(
            "### Throughput, {} run(s) per tool, alternating\n\n{}\n",
            settings.reps,
            report::throughput_table(&summaries, data.stored_bytes)
        );
        for &tool in &settings.tools {
            let _ = writeln!(
                text,
                "- {}: {}",
                tool.name(),
                tool.describe(tools.mirror_build())
            );
        }
        text.push_str(
            "\nMB = 10^6 bytes of stored record batches; time from the tool's start (JVM start included) \
             until the target's end offsets reach the source's (for a tool writing in transactions: its committed records, counted in \
             the target's segment files); \"after the first record\" starts the clock when the \
             target's first record appears instead (start-up left out). CPU and peak RSS: the tool's process tree, from /proc (summed over the processes of an `-xN` variant, each tree's own peak). \
             \"MB sent to target\": every byte the tool sent to the target broker, counted by a proxy the broker advertises.\n",
        );
        report.section(Section::Throughput, &text);
    }
    if let (true, Some(data)) = (settings.runs(Section::Limit), &main_data) {
        report.section(
            Section::Limit,
            &limit::section(&lab, data, settings.reps, mirror_rates)?,
        );
    }

    if let (Some(w), Some(data)) = (&wan, &wan_data) {
        let cap_mb_s = f64::from(settings.wan_cap_mbit) / 8.0;
        let mut text = format!(
            "### WAN: {} Mbit/s cap each way ({cap_mb_s:.1} MB/s), by round-trip time\n\n\
             Data set: {}. {}.\n\n\
             | tool | round trip | MB/s (median) | of the cap | MB/s after the first record | of the cap | MB sent to target |\n\
             |---|---|---|---|---|---|---|\n",
            settings.wan_cap_mbit,
            describe(data),
            wan::describe_link(settings.wan_legs, true)
        );
        for &rtt in &settings.wan_rtts_ms {
            w.set(settings.wan_legs, rtt, Some(settings.wan_cap_mbit))?;
            let label = format!("wan{rtt}");
            let summaries =
                alternate(&runner, &settings, &w.route(data), data, &w.metered, &label)?;
            for s in &summaries {
                if s.mb_s.is_empty() {
                    let _ = writeln!(text, "| {} | {rtt} ms | failed | | | | |", s.tool.name());
                } else {
                    let _ = writeln!(
                        text,
                        "| {} | {rtt} ms | {:.1} | {:.0}% | {:.1} | {:.0}% | {:.1} |",
                        s.tool.name(),
                        s.median_mb_s(),
                        100.0 * s.median_mb_s() / cap_mb_s,
                        s.copying_mb_s,
                        100.0 * s.copying_mb_s / cap_mb_s,
                        s.wire_mb
                    );
                }
            }
        }
        report.section(Section::Wan, &text);
    }

    if let (Some(w), Some(data)) = (&wan, &sweep_data) {
        let mut rows: Vec<(Tool, Vec<String>)> =
            settings.tools.iter().map(|&t| (t, Vec::new())).collect();
        for &rtt in &settings.rtts_ms {
            w.set(settings.wan_legs, rtt, None)?;
            let summaries = alternate(
                &runner,
                &settings,
                &w.route(data),
                data,
                &w.metered,
                &format!("rtt{rtt}"),
            )?;
            for (tool, cells) in rows.iter_mut() {
                let cell = summaries
                    .iter()
                    .find(|s| s.tool == *tool && !s.mb_s.is_empty())
                    .map_or("failed".to_string(), |s| {
                        format!("{:.1} ({:.1})", s.median_mb_s(), s.copying_mb_s)
                    });
                cells.push(cell);
            }
        }
        let mut text = format!(
            "### RTT sweep: MB/s by round-trip time (no bandwidth cap)\n\nData set: {}. {}. \
             Each cell: end to end (after the first record).\n\n| tool |",
            describe(data),
            wan::describe_link(settings.wan_legs, false)
        );
        for rtt in &settings.rtts_ms {
            let _ = write!(text, " {rtt} ms |");
        }
        text.push_str("\n|---|");
        text.push_str(&"---|".repeat(settings.rtts_ms.len()));
        text.push('\n');
        for (tool, cells) in &rows {
            let _ = writeln!(text, "| {} | {} |", tool.name(), cells.join(" | "));
        }
        report.section(Section::Sweep, &text);
    }

    if settings.runs(Section::Latency) {
        report.section(Section::Latency, &latency::section(&runner, &settings)?);
    }

    if let Some(data) = &idle_data {
        report.section(Section::Idle, &idle::section(&runner, &settings, data)?);
    }

    if let Some(data) = &failover_data {
        report.section(
            Section::Failover,
            &failover::section(&runner, &settings, data)?,
        );
    }

    if let (true, Some(data)) = (settings.runs(Section::Verify), &main_data) {
        report.section(Section::Verify, &verify::section(&runner, data)?);
    }

    // The smoke's own file: it must not replace a full run's report.
    let out = settings.out.clone().map(PathBuf::from).unwrap_or_else(|| {
        let name = if settings.smoke {
            "replication-smoke.md"
        } else {
            "replication.md"
        };
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench")
            .join(name)
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, report.text()).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", report.text());
    eprintln!("bench: report written to {}", out.display());
    if settings.smoke {
        let written = std::fs::read_to_string(&out)
            .with_context(|| format!("reading {} back", out.display()))?;
        report::check(&written, &settings.sections)?;
        eprintln!("bench: smoke: the report holds every section with numbers and no failed run");
    }
    Ok(())
}

/// Runs every tool `settings.reps` times, alternating (A B C A B C), and summarises.
fn alternate(
    runner: &Runner<'_>,
    settings: &Settings,
    route: &Route,
    data: &DataSet,
    proxy: &kafka_testkit::CountingProxy,
    section: &str,
) -> Result<Vec<ToolSummary>> {
    let mut results: Vec<(Tool, Result<Measured, String>)> = Vec::new();
    for rep in 1..=settings.reps {
        for &tool in &settings.tools {
            let label = format!("{section}-{}-{rep}", tool.name());
            eprintln!("bench: {label}");
            let r = runner
                .run(tool, route, data, proxy, &label)
                .map_err(|e| format!("{e:#}"));
            match &r {
                Ok(m) => eprintln!(
                    "bench: {label}: {:.1} MB/s, {:.2} CPU s, peak RSS {:.0} MiB, {:.1} MB sent",
                    data.stored_bytes as f64 / 1e6 / m.wall.as_secs_f64(),
                    m.usage.cpu_seconds,
                    m.usage.peak_rss_kib as f64 / 1024.0,
                    m.wire_to_target as f64 / 1e6
                ),
                Err(e) => eprintln!("bench: {label} FAILED: {e}"),
            }
            results.push((tool, r));
        }
    }
    Ok(settings
        .tools
        .iter()
        .map(|&tool| {
            let runs: Vec<&Result<Measured, String>> = results
                .iter()
                .filter(|(t, _)| *t == tool)
                .map(|(_, r)| r)
                .collect();
            ToolSummary::new(tool, data.stored_bytes, &runs)
        })
        .collect())
}
