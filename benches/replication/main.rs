//! End-to-end replication benchmark: kafka-mirror against MirrorMaker 2 (defaults
//! and tuned) and MirrorMaker 1, on two real local Kafka clusters.
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
//!   counted by a proxy the target broker advertises, not by the tool.
//! - **limit**: what the same brokers do alone, fetch-only on the source and
//!   produce-only (the same batches) on the target; kafka-mirror's MB/s over the
//!   smaller is its efficiency.
//!
//! It writes a markdown report (default `target/bench/replication.md`) and prints it.

mod kafka;
mod lab;
mod limit;
mod report;
mod run;
mod settings;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use kafka_testkit::DEFAULT_KAFKA_VERSION;

use crate::lab::{DataSet, Lab};
use crate::report::{machine, Report, ToolSummary};
use crate::run::{describe, Measured, Runner};
use crate::settings::{Section, Settings};
use crate::tools::{Route, Tool, Tools};

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
    let tools = Tools::prepare(&settings.tools)?;
    let lab = Lab::start(Vec::new(), Vec::new())?;
    let mut report = Report::default();
    report.push(&format!(
        "Made by `{}`.\n\nMachine: {}; both brokers, the producers and the tool share it. \
         Kafka {DEFAULT_KAFKA_VERSION}, two single-broker KRaft clusters on loopback (heap 768 MiB each).",
        settings.command_line(),
        machine()
    ));

    eprintln!("bench: writing {} MiB into the source", settings.data_mib);
    let data = DataSet::write(&lab, "bench", settings.data_mib, settings.partitions)?;
    eprintln!("bench: data set: {}", describe(&data));
    report.push(&format!(
        "Data set: {}; topics `bench-lz4` and `bench-zstd`, {} partitions each, written by librdkafka \
         (confluent-kafka; JSON order events of 200 B–3 kB, keys, 1–3 headers; acks=all, linger.ms=20, batch.size=128 KiB).",
        describe(&data),
        settings.partitions
    ));
    let runner = Runner {
        lab: &lab,
        tools: &tools,
        keep_source: data.topics.clone(),
        timeout: Duration::from_secs(settings.run_timeout_s),
    };

    let mut mirror_mb_s = None;
    if settings.runs(Section::Throughput) {
        let route = Route {
            source: lab.source.bootstrap(),
            target: lab.metered.addr().to_string(),
            topics: data.topics.clone(),
            partitions: data.partitions,
        };
        let mut results: Vec<(Tool, Result<Measured, String>)> = Vec::new();
        for rep in 1..=settings.reps {
            for &tool in &settings.tools {
                let label = format!("{}-{rep}", tool.name());
                eprintln!("bench: {label}");
                let r = runner
                    .run(tool, &route, &data, &lab.metered, &label)
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
        let summaries: Vec<ToolSummary> = settings
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
            .collect();
        mirror_mb_s = summaries
            .iter()
            .find(|s| s.tool == Tool::KafkaMirror && !s.mb_s.is_empty())
            .map(ToolSummary::median_mb_s);
        let mut text = format!(
            "### Throughput, {} run(s) per tool, alternating\n\n{}\n",
            settings.reps,
            report::throughput_table(&summaries, data.stored_bytes)
        );
        for &tool in &settings.tools {
            text.push_str(&format!("- {}: {}\n", tool.name(), tool.describe()));
        }
        text.push_str(
            "\nMB = 10^6 bytes of stored record batches; time from the tool's start (JVM start included) \
             until the target's end offsets reach the source's. CPU and peak RSS: the tool's process tree, from /proc. \
             \"MB sent to target\": every byte the tool sent to the target broker, counted by a proxy the broker advertises.\n",
        );
        report.push(&text);
    }

    if settings.runs(Section::Limit) {
        report.push(&limit::section(&lab, &data, mirror_mb_s)?);
    }

    let out = settings.out.clone().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/replication.md")
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, report.text()).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", report.text());
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}
