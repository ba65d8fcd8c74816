//! Replication delay at a steady, moderate produce rate: for each tool, the time from
//! a record's append on the source to its append on the target, both taken from
//! LogAppendTime topics (the brokers' clocks, one machine) and matched by the record's
//! unique key. The source's own produce-to-consume delay, seen by a librdkafka
//! consumer, is the reference.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use kafka_testkit::{consume_latency, dump_topic, generate_with_librdkafka, Compression, Generate};

use crate::lab::{join, Lab};
use crate::report::percentile;
use crate::run::Runner;
use crate::settings::Settings;
use crate::tools::{Route, Tool};

/// The source topic written during each run (recreated every time).
pub(crate) const TOPIC: &str = "latency";
/// Records appended this long after production starts are measured; the ones before
/// cover the tools' start (a JVM and Connect's task assignment take seconds).
const WARMUP_S: u32 = 20;

const LOG_APPEND_TIME: (&str, &str) = ("message.timestamp.type", "LogAppendTime");

/// Runs every tool at `settings.latency_rate` and returns the report section.
pub(crate) fn section(runner: &Runner<'_>, settings: &Settings) -> Result<String> {
    let lab = runner.lab;
    let seconds = f64::from(WARMUP_S + settings.latency_seconds);
    let amount = Generate::Rate {
        per_second: settings.latency_rate,
        seconds,
    };
    let mut text = format!(
        "### Replication delay at {} records/s ({} s measured after {WARMUP_S} s of warm-up)\n\n\
         | | p50 ms | p99 ms | max ms | records |\n|---|---|---|---|---|\n",
        settings.latency_rate, settings.latency_seconds
    );

    eprintln!("bench: latency: the source's own produce-to-consume delay");
    recreate_source_topic(lab, settings.partitions)?;
    let bootstrap = lab.source.bootstrap();
    let reference = thread::scope(|s| {
        let consumer =
            s.spawn(|| consume_latency(&bootstrap, TOPIC, seconds + 2.0, f64::from(WARMUP_S)));
        let producer =
            s.spawn(|| generate_with_librdkafka(&bootstrap, TOPIC, Compression::Lz4, amount, 7));
        join(producer)?;
        join(consumer)
    })?;
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let _ = writeln!(
        text,
        "| source only: produce → librdkafka consumer | {} | {} | {} | {} |",
        ms(reference.p50_ms),
        ms(reference.p99_ms),
        ms(reference.max_ms),
        reference.records
    );

    for &tool in &settings.tools {
        let label = format!("latency-{}", tool.name());
        eprintln!("bench: {label}");
        match tool_delays(runner, tool, settings, amount, &label) {
            Ok(mut delays) => {
                let _ = writeln!(
                    text,
                    "| {} | {} | {} | {} | {} |",
                    tool.name(),
                    ms(percentile(&mut delays, 0.50)),
                    ms(percentile(&mut delays, 0.99)),
                    ms(percentile(&mut delays, 1.0)),
                    delays.len()
                );
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                let first = format!("{e:#}");
                let _ = writeln!(
                    text,
                    "| {} | failed: {} | | | |",
                    tool.name(),
                    first.lines().next().unwrap_or("")
                );
            }
        }
    }
    text.push_str(&format!(
        "\nSource and target topics use LogAppendTime ({} partitions, lz4, unique keys); delay = target append time − \
         source append time of the same key, read back with confluent-kafka. Tools as in the throughput table.\n",
        settings.partitions
    ));
    Ok(text)
}

/// One tool's delays in ms, for records appended after the warm-up.
fn tool_delays(
    runner: &Runner<'_>,
    tool: Tool,
    settings: &Settings,
    amount: Generate,
    label: &str,
) -> Result<Vec<f64>> {
    let lab = runner.lab;
    recreate_source_topic(lab, settings.partitions)?;
    let route = Route {
        source: lab.source.bootstrap(),
        target: lab.metered.addr().to_string(),
        topics: vec![TOPIC.to_string()],
        partitions_per_topic: settings.partitions,
        target_configs: vec![(LOG_APPEND_TIME.0.into(), LOG_APPEND_TIME.1.into())],
        groups: None,
    };
    let topics = route.topics.clone();
    runner.run_while(tool, &route, &lab.metered, label, Duration::ZERO, || {
        generate_with_librdkafka(&lab.source.bootstrap(), TOPIC, Compression::Lz4, amount, 7)?;
        lab.src_admin.end_offsets(&lab.rt, &topics)
    })?;
    let source = dump_topic(&lab.source.bootstrap(), TOPIC).context("reading the source")?;
    let target = dump_topic(&lab.target.bootstrap(), TOPIC).context("reading the target")?;
    let appended: HashMap<&[u8], i64> = target
        .iter()
        .filter_map(|r| Some((r.key.as_deref()?, r.timestamp)))
        .collect();
    let start = source.iter().map(|r| r.timestamp).min().unwrap_or(0) + i64::from(WARMUP_S) * 1000;
    source
        .iter()
        .filter(|r| r.timestamp >= start)
        .map(|r| {
            let key = r.key.as_deref().context("a record without a key")?;
            let at = appended.get(key).with_context(|| {
                format!("{} is not on the target", String::from_utf8_lossy(key))
            })?;
            Ok((at - r.timestamp) as f64)
        })
        .collect()
}

fn recreate_source_topic(lab: &Lab, partitions: u32) -> Result<()> {
    if lab
        .src_admin
        .user_topics(&lab.rt)?
        .iter()
        .any(|t| t == TOPIC)
    {
        lab.source.delete_topic(TOPIC)?;
    }
    lab.source
        .create_topic(TOPIC, partitions, 1, &[LOG_APPEND_TIME])
}
