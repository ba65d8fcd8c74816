//! Replication delay at a steady, moderate produce rate: for each tool, the time from
//! a record's append on the source to its append on the target, both taken from
//! LogAppendTime topics (the brokers' clocks, one machine) and matched by the record's
//! unique key; and to its arrival at a read_committed consumer of the target, which
//! waits for a transaction's commit (exactly-once). The source's own
//! produce-to-consume delay, seen by a librdkafka consumer, is the reference.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use kafka_testkit::{
    consume_latency, dump_topic, generate_with_librdkafka, receive_times, Compression, Generate,
};

use crate::lab::{join, Lab};
use crate::report::percentile;
use crate::run::Runner;
use crate::settings::Settings;
use crate::tools::{Route, Tool};

/// The source topic written during each run (recreated every time).
pub(crate) const TOPIC: &str = "latency";

const LOG_APPEND_TIME: (&str, &str) = ("message.timestamp.type", "LogAppendTime");

/// How long the target's consumer may outlast production (a tool's lag, its stop),
/// and how long without a record ends it once records came.
const CONSUMER_SLACK_S: f64 = 60.0;
const CONSUMER_IDLE_S: f64 = 5.0;

/// Runs every tool at `settings.latency_rate` and returns the report section.
pub(crate) fn section(runner: &Runner<'_>, settings: &Settings) -> Result<String> {
    let lab = runner.lab;
    let seconds = production_seconds(settings);
    let amount = Generate::Rate {
        per_second: settings.latency_rate,
        seconds,
    };
    let mut text = format!(
        "### Replication delay at {} records/s ({} s measured after {} s of warm-up)\n\n\
         | | appended on the target: p50 ms | p99 ms | max ms | received by a read_committed consumer: p50 ms | p99 ms | max ms | records |\n\
         |---|---|---|---|---|---|---|---|\n",
        settings.latency_rate, settings.latency_seconds, settings.latency_warmup_s
    );

    eprintln!("bench: latency: the source's own produce-to-consume delay");
    recreate_source_topic(lab, settings.partitions)?;
    let bootstrap = lab.source.bootstrap();
    let reference = thread::scope(|s| {
        let consumer = s.spawn(|| {
            consume_latency(
                &bootstrap,
                TOPIC,
                seconds + 2.0,
                f64::from(settings.latency_warmup_s),
            )
        });
        let producer =
            s.spawn(|| generate_with_librdkafka(&bootstrap, TOPIC, Compression::Lz4, amount, 7));
        join(producer)?;
        join(consumer)
    })?;
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let _ = writeln!(
        text,
        "| source only: produce → librdkafka consumer | | | | {} | {} | {} | {} |",
        ms(reference.p50_ms),
        ms(reference.p99_ms),
        ms(reference.max_ms),
        reference.records
    );

    // (p50, p99) of the delay until a consumer received each record, by tool.
    let mut visible: Vec<(Tool, f64, f64)> = Vec::new();
    for &tool in &settings.tools {
        let label = format!("latency-{}", tool.name());
        eprintln!("bench: {label}");
        match tool_delays(runner, tool, settings, amount, &label) {
            Ok(mut delays) => {
                let records = delays.appended.len();
                let [appended, received] = [&mut delays.appended, &mut delays.received]
                    .map(|d| [0.50, 0.99, 1.0].map(|q| percentile(d, q)));
                if let [Some(p50), Some(p99), _] = received {
                    visible.push((tool, p50, p99));
                }
                let _ = writeln!(
                    text,
                    "| {} | {} | {} | {} | {} | {} | {} | {records} |",
                    tool.name(),
                    ms(appended[0]),
                    ms(appended[1]),
                    ms(appended[2]),
                    ms(received[0]),
                    ms(received[1]),
                    ms(received[2]),
                );
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                let first = format!("{e:#}");
                let _ = writeln!(
                    text,
                    "| {} | failed: {} | | | | | | |",
                    tool.name(),
                    first.lines().next().unwrap_or("")
                );
            }
        }
    }
    text.push_str(&format!(
        "\nSource and target topics use LogAppendTime ({} partitions, lz4, unique keys). Appended: target append \
         time − source append time of the same key, both read back with confluent-kafka. Received: when a \
         confluent-kafka consumer of the target (read_committed, subscribed before production starts) got the \
         record − its source append time; one clock, this machine's. Tools as in the throughput table.\n",
        settings.partitions
    ));
    for &(eos, p50, p99) in &visible {
        let base = eos
            .without_exactly_once()
            .and_then(|base| visible.iter().find(|(t, _, _)| *t == base));
        if let Some(&(base, base_p50, base_p99)) = base {
            let _ = writeln!(
                text,
                "- {}: exactly-once adds {:+.0} ms at p50 and {:+.0} ms at p99 before a read_committed \
                 consumer receives a record (against {}).",
                eos.name(),
                p50 - base_p50,
                p99 - base_p99,
                base.name()
            );
        }
    }
    Ok(text)
}

/// One tool's delays in ms for the records appended after the warm-up, in the
/// same order: until appended on the target, and until received there.
struct Delays {
    appended: Vec<f64>,
    received: Vec<f64>,
}

fn tool_delays(
    runner: &Runner<'_>,
    tool: Tool,
    settings: &Settings,
    amount: Generate,
    label: &str,
) -> Result<Delays> {
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
    let seconds = production_seconds(settings);
    let target_bootstrap = lab.target.bootstrap();
    let received = thread::scope(|s| {
        let mut consumer = None;
        runner.run_while(tool, &route, &lab.metered, label, Duration::ZERO, || {
            // The target topic exists by now: the harness created it.
            consumer = Some(s.spawn(|| {
                receive_times(
                    &target_bootstrap,
                    TOPIC,
                    seconds + CONSUMER_SLACK_S,
                    CONSUMER_IDLE_S,
                )
            }));
            generate_with_librdkafka(&lab.source.bootstrap(), TOPIC, Compression::Lz4, amount, 7)?;
            lab.src_admin.end_offsets(&lab.rt, &topics)
        })?;
        consumer.map_or(Ok(Vec::new()), join)
    })?;
    let received: HashMap<Vec<u8>, f64> = received
        .into_iter()
        .filter_map(|r| Some((r.key?, r.received_ms)))
        .collect();
    let source = dump_topic(&lab.source.bootstrap(), TOPIC).context("reading the source")?;
    let target = dump_topic(&lab.target.bootstrap(), TOPIC).context("reading the target")?;
    let appended: HashMap<&[u8], i64> = target
        .iter()
        .filter_map(|r| Some((r.key.as_deref()?, r.timestamp)))
        .collect();
    let start = source.iter().map(|r| r.timestamp).min().unwrap_or(0)
        + i64::from(settings.latency_warmup_s) * 1000;
    let mut delays = Delays {
        appended: Vec::new(),
        received: Vec::new(),
    };
    for r in source.iter().filter(|r| r.timestamp >= start) {
        let key = r.key.as_deref().context("a record without a key")?;
        let name = || String::from_utf8_lossy(key).into_owned();
        let at = appended
            .get(key)
            .with_context(|| format!("{} is not on the target", name()))?;
        let got = received.get(key).with_context(|| {
            format!(
                "{} did not reach the target's read_committed consumer",
                name()
            )
        })?;
        delays.appended.push((at - r.timestamp) as f64);
        delays.received.push(got - r.timestamp as f64);
    }
    Ok(delays)
}

/// How long each run produces: the warm-up (records appended before it are not
/// measured: it covers the tools' start, a JVM and Connect's task assignment
/// take seconds), then what is measured.
fn production_seconds(settings: &Settings) -> f64 {
    f64::from(settings.latency_warmup_s + settings.latency_seconds)
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
